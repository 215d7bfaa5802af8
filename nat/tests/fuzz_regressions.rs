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
