//! Replays every committed fuzz input under plain `cargo test`: the seed
//! corpora (`fuzz/corpus/<target>/`) and the crashers fuzzing has found
//! (`fuzz/regressions/<target>/`, one file each, kept forever).
//!
//! The fuzz targets and this test call the same `encap::harness` functions,
//! so an input that once crashed a target fails here if the bug comes back.

use std::fs;
use std::path::Path;

type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 4] = [
    ("parse_chain", encap::harness::parse_chain),
    ("vxlan_decap", encap::harness::vxlan_decap),
    ("icmp_quoted", encap::harness::icmp_quoted),
    ("encap_roundtrip", encap::harness::encap_roundtrip),
];

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind);
    let mut n = 0;
    for (target, harness) in TARGETS {
        let dir = root.join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| harness(&data));
            assert!(r.is_ok(), "{target}: {} fails its harness", path.display());
            n += 1;
        }
    }
    n
}

/// Replays the seed corpora and every crasher; requires the corpora to be there.
#[test]
fn corpora_and_crashers_pass_every_harness() {
    // Every target has seeds (the generator is encap/examples/fuzz_seeds.rs).
    for (target, _) in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let count = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert!(
            count > 0,
            "no seed corpus for {target} in {}",
            dir.display()
        );
    }
    assert!(replay("corpus") + replay("regressions") >= TARGETS.len());
}
