//! Replays the committed `lb_table` fuzz corpus and crashers under plain
//! `cargo test`, and checks that the corpus reaches every outcome.

use std::fs;
use std::path::Path;

use lb::harness::{Exercised, table_ops};

#[test]
fn lb_table_corpus_and_crashers_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let (mut n, mut seen) = (0, Exercised::default());
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join("lb_table")) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            let s = std::panic::catch_unwind(|| table_ops(&data))
                .unwrap_or_else(|_| panic!("{} fails the harness", path.display()));
            seen.upserts += s.upserts;
            seen.removes += s.removes;
            seen.dnat += s.dnat;
            seen.reject += s.reject;
            seen.drop += s.drop;
            seen.not_service += s.not_service;
            seen.rebuilds += s.rebuilds;
            n += 1;
        }
    }
    assert!(n >= 10, "{n} lb_table seeds");
    eprintln!("{n} inputs: {seen:?}");
    for (what, v) in [
        ("upsert", seen.upserts),
        ("remove", seen.removes),
        ("dnat", seen.dnat),
        ("reject", seen.reject),
        ("drop", seen.drop),
        ("not a service", seen.not_service),
        ("rebuild comparison", seen.rebuilds),
    ] {
        assert!(v > 0, "the corpus never reaches {what}");
    }
}

/// A known input reaches a DNAT: a port with a ready endpoint, then a
/// pod's flow to its ClusterIP.
#[test]
fn a_known_input_balances() {
    // op 0: upsert name 0, flags 0 (port 53), TCP, VIP 10.96.0.1, one
    // endpoint (ready).
    let mut input = vec![0, 0, 0, 0, 0, 1, 0, 0b0011];
    // op 2: src pod 10.244.1.2 (3), dst VIP 10.96.0.1 (0), TCP, sport 9,
    // dport 53, time.
    input.extend_from_slice(&[2, 3, 0, 0, 9, 0, 0]);
    // op 3: compare with a rebuilt table.
    input.push(3);
    let ex = table_ops(&input);
    assert_eq!((ex.upserts, ex.dnat, ex.rebuilds), (1, 1, 1), "{ex:?}");
}
