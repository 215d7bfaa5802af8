//! Replays the committed `service_objects` fuzz corpus and crashers under
//! plain `cargo test`, and checks that the corpus reaches every operation.

use std::fs;
use std::path::Path;

use ctrl::services_harness::{Exercised, service_objects};

#[test]
fn service_objects_corpus_and_crashers_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let (mut n, mut seen) = (0, Exercised::default());
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join("service_objects")) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            let s = std::panic::catch_unwind(|| service_objects(&data))
                .unwrap_or_else(|_| panic!("{} fails the harness", path.display()));
            seen.services += s.services;
            seen.slices += s.slices;
            seen.deletes += s.deletes;
            seen.raw_decoded += s.raw_decoded;
            seen.ports += s.ports;
            n += 1;
        }
    }
    assert!(n >= 10, "{n} service_objects seeds");
    eprintln!("{n} inputs: {seen:?}");
    for (what, v) in [
        ("a Service", seen.services),
        ("a slice", seen.slices),
        ("a delete", seen.deletes),
        ("raw JSON decoded", seen.raw_decoded),
        ("a published port", seen.ports),
    ] {
        assert!(v > 0, "the corpus never reaches {what}");
    }
}
