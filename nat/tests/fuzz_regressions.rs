//! Replays the committed `conntrack_ops` fuzz corpus and crashers under
//! plain `cargo test` (see encap/tests/fuzz_regressions.rs for the parsers),
//! and checks that the corpus exercises every origin and operation.

use std::fs;
use std::path::Path;

use nat::harness::{ORIGINS, conntrack_ops};

#[test]
fn conntrack_ops_corpus_and_crashers_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    let mut seen = nat::harness::Exercised::default();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join("conntrack_ops")) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| conntrack_ops(&data));
            match r {
                Ok(s) => seen.add(&s),
                Err(_) => panic!("{} fails the harness", path.display()),
            }
            n += 1;
        }
    }
    assert!(n >= 1, "no conntrack_ops seeds found");
    eprintln!("{n} inputs: {seen:?}");
    // Every origin gets raw bytes, and some of them parse far enough to
    // reach the state machine; the other operations run too.
    for (i, o) in ORIGINS.iter().enumerate() {
        assert!(seen.raw[i] > 0, "no raw packet from {o:?}");
        assert!(seen.raw_parsed[i] > 0, "no raw packet from {o:?} parsed");
    }
    assert!(seen.replies_checked > 0, "no reply checked");
    assert!(seen.corrupted_replies > 0, "no corrupted reply");
    assert!(seen.time_steps > 0, "no time step");
}

/// One hand-built sequence reaches each operation: a raw packet from each
/// origin, a translated flow, its reply corrupted, a time step.
#[test]
fn each_operation_is_reachable_from_a_known_input() {
    // A UDP datagram from the pod to an outside host, 28 bytes.
    let mut udp = vec![
        0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 244, 1, 2, 198, 51, 100, 1,
    ];
    udp.extend_from_slice(&[0xf0, 0x01, 0, 80, 0, 8, 0, 0]);
    let mut input = Vec::new();
    for o in 0..3u8 {
        input.push(o << 2); // op 0: raw, origin o
        input.push(udp.len() as u8);
        input.extend_from_slice(&udp);
    }
    // op 3: structured UDP (proto byte 1 % 3 == 1) to 198.51.100.x.
    input.extend_from_slice(&[3, 1, 0, 0, 1, 0, 0, 0, 0]);
    // op 1: the reply with byte 0 of its UDP ports flipped.
    input.extend_from_slice(&[1, 20, 0xff]);
    // op 2: a 30 s step.
    input.extend_from_slice(&[2, 30]);
    let s = conntrack_ops(&input);
    assert_eq!(s.raw, [1, 1, 1]);
    assert_eq!(s.raw_parsed, [1, 1, 1], "the harness mends the IPv4 header");
    assert_eq!((s.structured, s.replies_checked), (1, 1));
    assert_eq!((s.corrupted_replies, s.time_steps), (1, 1));
    // With bit 7 set the bytes go as they came: the zero checksum is
    // refused as malformed.
    let mut kept = Vec::new();
    for o in 0..3u8 {
        kept.push(0x80 | o << 2); // (32 + o) % 3: every origin once
        kept.push(udp.len() as u8);
        kept.extend_from_slice(&udp);
    }
    let s = conntrack_ops(&kept);
    assert_eq!(s.raw.iter().sum::<u32>(), 3);
    assert_eq!(s.raw_parsed, [0, 0, 0]);
}

/// The `state_loader` target's corpus and crashers, then generated inputs:
/// flows through a mirrored table, the file changed at random places, loaded
/// back. An unchanged file restores exactly the live entries; a changed one
/// restores only consistent entries (the harness asserts both), and some
/// inputs of each kind are accepted and some refused.
#[test]
fn state_loader_corpus_and_generated_inputs_pass() {
    use rand::{RngExt, SeedableRng};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join("state_loader")) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| nat::harness::state_loader(&data)).is_err() {
                panic!("{} fails the harness", path.display());
            }
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let (mut unchanged, mut restored_some, mut refused_some, mut torn_or_invalid) = (0, 0, 0, 0);
    for i in 0..600 {
        // Structured operations (op 3: a valid packet) mostly, so flows exist.
        let groups = rng.random_range(1..40u8);
        let mut data = vec![groups & 0x7f];
        for _ in 0..groups {
            let op = if rng.random_bool(0.7) {
                3
            } else {
                rng.random_range(0..4u8)
            };
            data.push(op);
            data.extend((0..3).map(|_| rng.random::<u8>()));
            if op == 3 {
                data.extend((0..5).map(|_| rng.random::<u8>()));
            }
        }
        // The op groups are counted in 4-byte units: pad to the count.
        data.truncate(1 + usize::from(groups & 0x7f) * 4);
        let changes = if i % 3 == 0 {
            0
        } else {
            rng.random_range(1..6)
        };
        for _ in 0..changes {
            // Mostly into the records (past the 4 KiB header).
            let at: u16 = if rng.random_bool(0.9) {
                rng.random_range(4096..4096 + 2 * 16 * 64)
            } else {
                rng.random_range(0..600)
            };
            data.extend(at.to_le_bytes());
            data.push(rng.random());
        }
        let got = std::panic::catch_unwind(|| nat::harness::state_loader(&data));
        let Ok(got) = got else {
            panic!("input {i} (changes {changes}): {data:?}");
        };
        match got {
            Some(r) => {
                if changes == 0 {
                    unchanged += 1;
                }
                if r.entries > 0 {
                    restored_some += 1;
                }
                if r.torn + r.invalid > 0 {
                    torn_or_invalid += 1;
                }
            }
            None => refused_some += 1,
        }
    }
    // Whole files of random bytes: refused.
    for _ in 0..200 {
        let mut data = vec![0x80u8];
        let n = rng.random_range(0..9000);
        data.extend((0..n).map(|_| rng.random::<u8>()));
        assert!(nat::harness::state_loader(&data).is_none());
    }
    eprintln!(
        "unchanged {unchanged} restored_some {restored_some} refused {refused_some} torn_or_invalid {torn_or_invalid}"
    );
    assert!(
        unchanged > 100 && restored_some > 100,
        "too few restores exercised"
    );
    assert!(refused_some > 0, "no changed header refused");
    assert!(torn_or_invalid > 0, "no changed record refused");
}
