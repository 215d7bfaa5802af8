//! Replays the committed `conntrack_ops` fuzz corpus and crashers under
//! plain `cargo test` (see encap/tests/fuzz_regressions.rs for the parsers).

use std::fs;
use std::path::Path;

#[test]
fn conntrack_ops_corpus_and_crashers_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join("conntrack_ops")) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| nat::harness::conntrack_ops(&data));
            assert!(r.is_ok(), "{} fails the harness", path.display());
            n += 1;
        }
    }
    assert!(n >= 1, "no conntrack_ops seeds found");
}
