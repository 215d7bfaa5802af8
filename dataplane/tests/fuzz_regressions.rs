//! Replays the committed `pipeline` and `tun_gro` fuzz corpora and
//! regressions (`fuzz/corpus/<target>`, `fuzz/regressions/<target>`) under
//! `cargo test`.

use std::fs;
use std::path::Path;

#[test]
fn pipeline_corpus_replays_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join("pipeline")) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| dataplane::harness::pipeline(&data));
            assert!(r.is_ok(), "{} fails the pipeline harness", path.display());
            n += 1;
        }
    }
    assert!(n >= 10, "the seed corpus is missing ({n} inputs)");
}

#[test]
fn tun_gro_corpus_replays_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join("tun_gro")) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| dataplane::port::gro::fuzzing::harness(&data));
            assert!(r.is_ok(), "{} fails the tun_gro harness", path.display());
            n += 1;
        }
    }
    assert!(n >= 5, "the seed corpus is missing ({n} inputs)");
}
