//! Replays the committed `pipeline`, `tun_gro`, `tap_gso` and `policy_verdict` fuzz corpora and
//! regressions (`fuzz/corpus/<target>`, `fuzz/regressions/<target>`) under
//! `cargo test`.

use std::fs;
use std::path::Path;

/// Runs `harness` on every input of `target`; at least `min` must exist.
fn replay(target: &str, min: usize, harness: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| harness(&data));
            assert!(r.is_ok(), "{} fails the {target} harness", path.display());
            n += 1;
        }
    }
    assert!(n >= min, "the {target} seed corpus is missing ({n} inputs)");
}

#[test]
fn pipeline_corpus_replays_clean() {
    replay("pipeline", 10, |d| {
        let _ = dataplane::harness::pipeline(d);
    });
}

#[test]
fn tun_gro_corpus_replays_clean() {
    replay("tun_gro", 5, dataplane::port::gro::fuzzing::harness);
}

#[test]
fn tap_gso_corpus_replays_clean() {
    replay("tap_gso", 5, dataplane::port::gso::fuzzing::harness);
}

#[test]
fn policy_verdict_corpus_replays_clean() {
    replay("policy_verdict", 50, dataplane::policy_rig::fuzz_verdict);
}
