//! The `policy_compile` fuzz target's committed corpus and crashers,
//! replayed by plain `cargo test`, then 2,000 random inputs: every compiled
//! verdict agrees with the evaluation straight from the objects
//! (`policy::harness::compile` panics otherwise).

use std::fs;
use std::path::Path;

#[test]
fn policy_compile_corpus_and_random_inputs_pass() {
    use rand::{RngExt, SeedableRng};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join("policy_compile")) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| policy::harness::compile(&data)).is_err() {
                panic!("{} fails the harness", path.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the corpus is missing");
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    for _ in 0..2000 {
        let n = rng.random_range(0..400);
        let data: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        policy::harness::compile(&data);
    }
}
