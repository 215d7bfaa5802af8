//! Replays the committed `pipeline` fuzz corpus and regressions
//! (`fuzz/corpus/pipeline`, `fuzz/regressions/pipeline`) under `cargo test`.

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
