//! The table across a restart: what is carried on, and what is refused.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use persist::Opened;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::tests::{F, NODE, OUTSIDE, POD_A, POD_B, echo, ends, secs, snat, tcp, udp};
use crate::{Accepted, CtState, DropReason, Origin, Verdict};

const EPOCH: [u8; 16] = [1; 16];

fn path(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nat-state-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d.join("conntrack-0.state")
}

fn cfg() -> ConntrackConfig {
    ConntrackConfig {
        max_entries: 64,
        ..ConntrackConfig::default()
    }
}

fn open(p: &std::path::Path, now: Duration) -> (Conntrack, Restored, Opened) {
    let s = snat();
    let (region, how) = Region::open(p, &spec(&cfg(), Some(&s), EPOCH)).unwrap();
    let (ct, r) = Conntrack::with_state(cfg(), Some(s), region, now);
    (ct, r, how)
}

fn accept(v: Verdict) -> Accepted {
    match v {
        Verdict::Accept(a) => a,
        other => panic!("{other:?}"),
    }
}

/// What must survive of each entry (its `service_gen` does not).
fn shape(ct: &Conntrack) -> Vec<(Tuple, Tuple, ProtoState, bool, u64, u32)> {
    let mut v: Vec<_> = ct
        .entries()
        .map(|e| {
            (
                e.orig,
                e.reply,
                e.proto,
                e.seen_reply,
                e.expires_ms(),
                e.service,
            )
        })
        .collect();
    v.sort_by_key(|x| (x.0, x.1));
    v
}

/// A masqueraded TCP connection (handshake and 100 bytes), a UDP exchange
/// and a ping from POD_A. Returns the TCP flow's translated port and the
/// pod's next sequence number.
fn flows(ct: &mut Conntrack, t: Duration) -> (u16, u32) {
    let mut p = tcp(POD_A, 40000, OUTSIDE, 80, F::Syn, 1000, 0, b"");
    accept(ct.process(t, &mut p, Origin::Pod));
    let (_, port, _, _) = ends(&p);
    let mut p = tcp(OUTSIDE, 80, NODE, port, F::SynAck, 5000, 1001, b"");
    accept(ct.process(t, &mut p, Origin::Uplink));
    let mut p = tcp(POD_A, 40000, OUTSIDE, 80, F::Ack, 1001, 5001, &[7; 100]);
    accept(ct.process(t, &mut p, Origin::Pod));
    let mut p = udp(POD_A, 5353, OUTSIDE, 53, b"q");
    accept(ct.process(t, &mut p, Origin::Pod));
    let (_, uport, _, _) = ends(&p);
    let mut p = udp(OUTSIDE, 53, NODE, uport, b"a");
    accept(ct.process(t, &mut p, Origin::Uplink));
    let mut p = echo(POD_A, OUTSIDE, 7, true);
    accept(ct.process(t, &mut p, Origin::Pod));
    (port, 1101)
}

#[test]
fn flows_carry_on_across_a_restart() {
    let p = path("carry");
    let (mut ct, r, how) = open(&p, secs(1));
    assert_eq!((how, r), (Opened::Fresh, Restored::default()));
    let (port, seq) = flows(&mut ct, secs(1));
    let before = shape(&ct);
    assert_eq!(before.len(), 3);
    drop(ct);

    let (mut ct, r, how) = open(&p, secs(2));
    assert_eq!(how, Opened::Restored);
    assert_eq!(
        r,
        Restored {
            entries: 3,
            ..Restored::default()
        }
    );
    assert_eq!(
        shape(&ct),
        before,
        "entries, translations, windows, expiries"
    );
    assert_eq!(ct.len(), 3);
    assert_eq!(ct.nat_ports_in_use(), 3);
    // The connection goes on: same translation, both ways.
    let mut d = tcp(POD_A, 40000, OUTSIDE, 80, F::Ack, seq, 5001, &[8; 100]);
    let a = accept(ct.process(secs(2), &mut d, Origin::Pod));
    assert_eq!(a.state, CtState::Established);
    assert_eq!(ends(&d), (NODE.into(), port, OUTSIDE.into(), 80));
    let mut back = tcp(OUTSIDE, 80, NODE, port, F::Ack, 5001, seq + 100, &[9; 10]);
    accept(ct.process(secs(2), &mut back, Origin::Uplink));
    assert_eq!(ends(&back), (OUTSIDE.into(), 80, POD_A.into(), 40000));
    // The port pool knows what is taken: another pod's flow with the same
    // source port gets another one.
    let mut b = tcp(POD_B, 40000, OUTSIDE, 80, F::Syn, 1, 0, b"");
    accept(ct.process(secs(2), &mut b, Origin::Pod));
    assert_ne!(ends(&b).1, port);
    // And the packets after the restart were written through as well.
    let after = shape(&ct);
    drop(ct);
    let (ct, r, _) = open(&p, secs(3));
    assert_eq!(r.entries, 4);
    assert_eq!(shape(&ct), after);
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn tcp_window_tracking_is_carried_on_not_reset() {
    let p = path("window");
    let (mut ct, _, _) = open(&p, secs(1));
    let (_, seq) = flows(&mut ct, secs(1));
    drop(ct);
    let (mut ct, _, _) = open(&p, secs(2));
    // Far beyond what the server's window allows: refused, as before the
    // restart. A tracker that had lost the windows would pick it up.
    let mut d = tcp(
        POD_A,
        40000,
        OUTSIDE,
        80,
        F::Ack,
        seq.wrapping_add(1 << 30),
        5001,
        b"x",
    );
    assert_eq!(
        ct.process(secs(2), &mut d, Origin::Pod),
        Verdict::Drop(DropReason::TcpOutOfWindow)
    );
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn expiry_times_hold_across_the_restart() {
    let p = path("expiry");
    let (mut ct, _, _) = open(&p, secs(1));
    flows(&mut ct, secs(1));
    let udp_replied = cfg().timeouts.udp_replied;
    drop(ct);
    // Past the UDP and ICMP timeouts, within TCP's: only TCP is left.
    let later = secs(1) + udp_replied + secs(1);
    assert!(later < secs(1) + cfg().timeouts.tcp_established);
    let (ct, r, _) = open(&p, later);
    assert_eq!((r.entries, r.expired), (1, 2));
    assert_eq!(ct.entries().next().unwrap().orig.proto, 6);
    drop(ct);
    // Expired records were cleared, not left to be counted again.
    let (_, r, _) = open(&p, later);
    assert_eq!((r.entries, r.expired), (1, 0));
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

fn region(ct: &mut Conntrack) -> &mut Region {
    &mut ct.mirror.as_mut().unwrap().region
}

/// The slot holding the entry whose original source port is `sport`.
fn slot_of(ct: &Conntrack, sport: u16) -> usize {
    ct.slots
        .iter()
        .position(|s| s.is_some_and(|e| e.orig.src_port == sport))
        .unwrap()
}

/// The record of `slot`'s newest whole dynamic copy.
fn newest_copy(ct: &mut Conntrack, slot: usize) -> usize {
    let r = region(ct);
    let (a, b) = (r.record(3 * slot).unwrap(), r.record(3 * slot + 1).unwrap());
    3 * slot + newest(a, b, None).unwrap().0
}

/// A kill lands while a packet's update is being written: the copy being
/// written is torn, the other holds the entry as of the packet before,
/// and the flow is carried on with that state (its next packet brings the
/// rest). With one dynamic record per slot the flow was lost.
#[test]
fn a_kill_mid_update_tears_one_copy_and_the_flow_carries_on() {
    for tear in ["head moved", "body half written"] {
        let p = path("kill-mid-update");
        let (mut ct, _, _) = open(&p, secs(1));
        let (port, seq) = flows(&mut ct, secs(1));
        let slot = slot_of(&ct, 40000);
        let before = shape(&ct);
        let copies = |ct: &mut Conntrack| -> Vec<Vec<u8>> {
            (0..2)
                .map(|i| region(ct).record(3 * slot + i).unwrap().to_vec())
                .collect()
        };
        let old = copies(&mut ct);
        // The next packet (the server's ACK with data, a later time).
        let mut d = tcp(OUTSIDE, 80, NODE, port, F::Ack, 5001, seq, &[1; 10]);
        accept(ct.process(secs(5), &mut d, Origin::Uplink));
        assert_ne!(shape(&ct), before, "the packet changed the entry");
        let new = copies(&mut ct);
        let written: Vec<usize> = (0..2).filter(|&i| old[i] != new[i]).collect();
        assert_eq!(written.len(), 1, "one copy written per packet");
        // Undo the end of that write, as a kill before it would have.
        let rec = region(&mut ct).record_mut(3 * slot + written[0]).unwrap();
        let tail = rec.len() - 4;
        rec[tail..].copy_from_slice(&old[written[0]][tail..]);
        if tear == "body half written" {
            rec[4 + 20..tail].copy_from_slice(&old[written[0]][4 + 20..tail]);
        }
        assert!(persist::torn(rec), "{tear}");
        drop(ct);
        let (mut ct, r, _) = open(&p, secs(6));
        assert_eq!((r.entries, r.torn), (3, 0), "{tear}: {r:?}");
        assert_eq!(shape(&ct), before, "{tear}: the state before the packet");
        // The flow goes on: the server's next segment (the state lags one
        // packet, which the window still takes), then the pod's ACK of
        // both, translated as before.
        let mut d = tcp(OUTSIDE, 80, NODE, port, F::Ack, 5011, seq, &[2; 10]);
        accept(ct.process(secs(6), &mut d, Origin::Uplink));
        let mut d = tcp(POD_A, 40000, OUTSIDE, 80, F::Ack, seq, 5021, b"x");
        accept(ct.process(secs(6), &mut d, Origin::Pod));
        assert_eq!(ends(&d).1, port, "{tear}");
        // And its updates go on alternating from the copy that was whole.
        let slot = slot_of(&ct, 40000);
        let whole = newest_copy(&mut ct, slot);
        assert_eq!(whole, 3 * slot + 1 - written[0], "{tear}");
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}

#[test]
fn a_slot_with_no_whole_copy_restores_empty() {
    let p = path("torn");
    let (mut ct, _, _) = open(&p, secs(1));
    flows(&mut ct, secs(1));
    let tcp_slot = slot_of(&ct, 40000);
    let udp_slot = slot_of(&ct, 5353);
    // Both dynamic copies torn (no one kill leaves this, but a file may).
    for i in [3 * tcp_slot, 3 * tcp_slot + 1] {
        region(&mut ct).record_mut(i).unwrap()[0] ^= 0x40;
    }
    // The static record rewritten for another entry (creation id differs).
    let rec = region(&mut ct).record_mut(3 * udp_slot + 2).unwrap();
    persist::write(rec, |b| b[0] ^= 1);
    drop(ct);
    let (ct, r, _) = open(&p, secs(2));
    assert_eq!((r.entries, r.torn), (1, 2), "{r:?}");
    assert_eq!(ct.entries().next().unwrap().orig.proto, 1);
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

/// Killed mid-create (the static record written, the first dynamic copy
/// torn): the entry was never made, and nothing is carried on for it.
#[test]
fn a_kill_mid_create_leaves_no_entry() {
    let p = path("mid-create");
    let (mut ct, _, _) = open(&p, secs(1));
    flows(&mut ct, secs(1));
    let slot = slot_of(&ct, 7);
    let rec = region(&mut ct).record_mut(3 * slot + 1).unwrap();
    assert!(persist::read(rec).is_none(), "an echo is never updated");
    let rec = region(&mut ct).record_mut(3 * slot).unwrap();
    let tail = rec.len() - 4;
    rec[tail..].copy_from_slice(&[0; 4]);
    drop(ct);
    let (ct, r, _) = open(&p, secs(2));
    assert_eq!((r.entries, r.torn), (2, 1), "{r:?}");
    assert!(ct.entries().all(|e| e.orig.proto != 1));
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn undecodable_fields_are_refused_one_by_one() {
    // (record: 0 dynamic (the newest copy), 1 static; body offset; value)
    let cases: [(&str, usize, usize, u8); 7] = [
        ("unknown kind", 1, 34, 9),
        ("kind not the protocol's", 1, 34, 1),
        ("orig and reply protocols differ", 1, 29, 17),
        ("TCP state out of range", 0, 12, 42),
        ("seen_reply not a bool", 0, 13, 2),
        ("window scale above 14", 0, 28, 15),
        ("window scale above 14 (reply)", 0, 41, 200),
    ];
    for (what, rec, at, v) in cases {
        let p = path("fields");
        let (mut ct, _, _) = open(&p, secs(1));
        flows(&mut ct, secs(1));
        let slot = slot_of(&ct, 40000);
        let i = match rec {
            0 => newest_copy(&mut ct, slot),
            _ => 3 * slot + 2,
        };
        let r = region(&mut ct).record_mut(i).unwrap();
        persist::write(r, |b| b[at] = v);
        drop(ct);
        let (ct, r, _) = open(&p, secs(2));
        assert_eq!((r.entries, r.invalid), (2, 1), "{what}: {r:?}");
        assert!(ct.entries().all(|e| e.orig.proto != 6), "{what}");
    }
    // An ICMP echo entry with a destination port in its reply tuple: no
    // echo reply would ever match it.
    let p = path("fields");
    let (mut ct, _, _) = open(&p, secs(1));
    flows(&mut ct, secs(1));
    let slot = slot_of(&ct, 7);
    let r = region(&mut ct).record_mut(3 * slot + 2).unwrap();
    persist::write(r, |b| b[27] = 143);
    drop(ct);
    let (_, r, _) = open(&p, secs(2));
    assert_eq!((r.entries, r.invalid), (2, 1));
    // A UDP entry claiming TCP state.
    let p = path("fields");
    let (mut ct, _, _) = open(&p, secs(1));
    flows(&mut ct, secs(1));
    let slot = slot_of(&ct, 5353);
    let i = newest_copy(&mut ct, slot);
    let r = region(&mut ct).record_mut(i).unwrap();
    persist::write(r, |b| b[12] = 3);
    drop(ct);
    let (_, r, _) = open(&p, secs(2));
    assert_eq!((r.entries, r.invalid), (2, 1));
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn a_tuple_held_twice_restores_once() {
    let p = path("dup");
    let (mut ct, _, _) = open(&p, secs(1));
    flows(&mut ct, secs(1));
    let slot = slot_of(&ct, 40000);
    let copy: Vec<Vec<u8>> = (0..3)
        .map(|i| region(&mut ct).record(3 * slot + i).unwrap().to_vec())
        .collect();
    for (i, c) in copy.iter().enumerate() {
        region(&mut ct)
            .record_mut(3 * 40 + i)
            .unwrap()
            .copy_from_slice(c);
    }
    region(&mut ct).raise_mark(3 * 41);
    drop(ct);
    let (mut ct, r, _) = open(&p, secs(2));
    assert_eq!((r.entries, r.duplicate), (3, 1), "{r:?}");
    // The table is consistent: every slot is either live or free, once.
    assert_eq!(ct.free.len() + ct.live, ct.slots.len());
    let mut d = tcp(POD_A, 40000, OUTSIDE, 80, F::Ack, 1101, 5001, b"x");
    accept(ct.process(secs(2), &mut d, Origin::Pod));
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn random_records_never_panic_and_restore_only_valid_entries() {
    let mut rng = rand::rng();
    for round in 0..40 {
        let s = snat();
        let sp = spec(&cfg(), Some(&s), EPOCH);
        let mut region = Region::anonymous(&sp).unwrap();
        for i in 0..region.records() {
            if rng.random_bool(0.7) {
                let rec = region.record_mut(i).unwrap();
                rng.fill(&mut rec[..]);
                // Mostly whole records (equal sequence words), so the
                // decoder, not the torn check, has to refuse them.
                if round % 2 == 0 {
                    let head: [u8; 4] = rec[..4].try_into().unwrap();
                    let n = rec.len();
                    rec[n - 4..].copy_from_slice(&head);
                }
            }
        }
        // Any high-water mark, past the end too.
        region.raise_mark(rng.random_range(0..region.records() + 10));
        let (mut ct, r) = Conntrack::with_state(cfg(), Some(s), region, secs(1));
        assert_eq!(ct.len(), r.entries);
        for e in ct.entries() {
            assert_eq!(e.orig.proto, e.reply.proto);
            match e.proto {
                ProtoState::Tcp { senders, .. } => {
                    assert_eq!(e.orig.proto, 6);
                    assert!(senders.iter().all(|s| s.scale <= 14));
                }
                ProtoState::Udp => assert_eq!(e.orig.proto, 17),
                ProtoState::Icmp => assert_eq!(e.orig.proto, 1),
                ProtoState::Other => assert!(![6, 17].contains(&e.orig.proto)),
            }
        }
        // Whatever came back, traffic and expiry run on it.
        for i in 0..50u16 {
            let mut p = tcp(POD_A, 1000 + i, OUTSIDE, 80, F::Syn, 1, 0, b"");
            let _ = ct.process(secs(2), &mut p, Origin::Pod);
            let mut p = udp(OUTSIDE, 53, NODE, 32768 + i, b"a");
            let _ = ct.process(secs(2), &mut p, Origin::Uplink);
        }
        ct.handle_timeout(secs(100_000));
    }
}

/// Entries whose records are whole and agree on the creation id, with
/// random contents: the decoder alone decides. Seeded, so a run is
/// repeatable: one region of 64 random entries can (rarely) decode none,
/// so "some decoded, some refused" is asserted over all the seeds.
#[test]
fn random_whole_slots_are_decoded_or_refused() {
    let (mut entries, mut invalid) = (0, 0);
    for seed in 0..16u64 {
        let r = random_whole_slots(&mut StdRng::seed_from_u64(seed));
        entries += r.entries;
        invalid += r.invalid;
    }
    assert!(
        entries > 0 && invalid > 0,
        "{entries} decoded, {invalid} refused"
    );
}

fn random_whole_slots(rng: &mut StdRng) -> Restored {
    let s = snat();
    let sp = spec(&cfg(), Some(&s), EPOCH);
    let mut region = Region::anonymous(&sp).unwrap();
    for slot in 0..region.records() / 3 {
        let id: u32 = rng.random();
        let kind = rng.random_range(0..5u8);
        let proto = [6u8, 17, 1, 47][rng.random_range(0..4)];
        let mut body = [0u8; RECORD - 8];
        rng.fill(&mut body[..]);
        body[..4].copy_from_slice(&id.to_le_bytes());
        body[16] = proto;
        body[29] = proto;
        body[34] = kind;
        persist::write(region.record_mut(3 * slot + 2).unwrap(), |b| {
            b.copy_from_slice(&body)
        });
        let mut d = [0u8; RECORD - 8];
        rng.fill(&mut d[..]);
        d[..4].copy_from_slice(&id.to_le_bytes());
        d[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
        d[13] = rng.random_range(0..2);
        d[28] = rng.random_range(0..15);
        d[41] = rng.random_range(0..15);
        if rng.random_bool(0.5) {
            d[12] = if proto == 6 {
                rng.random_range(0..10)
            } else {
                0xff
            };
        }
        persist::write(
            region
                .record_mut(3 * slot + rng.random_range(0..2))
                .unwrap(),
            |b| b.copy_from_slice(&d),
        );
    }
    let n = region.records();
    region.raise_mark(n);
    let (ct, r) = Conntrack::with_state(cfg(), Some(s), region, secs(1));
    // Every whole entry is either carried on or refused, and counted.
    assert_eq!(
        r.entries + r.invalid + r.duplicate,
        cfg().max_entries,
        "{r:?}"
    );
    assert_eq!(ct.len(), r.entries);
    r
}

/// A service flow made before the restart finds its service port again
/// from its frontend, and is not re-balanced.
#[test]
fn a_restored_service_flow_finds_its_service_port_again() {
    struct Svc;
    impl crate::Services for Svc {
        fn generation(&self) -> u32 {
            5
        }
        fn new_flow(&mut self, _: Duration, _: &Tuple) -> Option<crate::Nat> {
            Some(crate::Nat {
                dnat: Some((POD_B.into(), 8080)),
                masquerade: None,
                service: 3,
            })
        }
        fn still_serves(&mut self, _: u32, _: (Ipv4Addr, u16)) -> bool {
            false
        }
        fn service_of(&mut self, t: &Tuple) -> u32 {
            if t.dst_port == 53 { 11 } else { 0 }
        }
    }
    let p = path("svc");
    let (mut ct, _, _) = open(&p, secs(1));
    let mut q = udp(POD_A, 5000, [10, 96, 0, 10], 53, b"q");
    accept(ct.process_with(secs(1), &mut q, Origin::Pod, &mut Svc));
    assert_eq!(ends(&q).2, Ipv4Addr::from(POD_B));
    drop(ct);
    let (mut ct, r, _) = open(&p, secs(2));
    assert_eq!(r.entries, 1);
    // Under a new table whose `still_serves` says no, a UDP entry would be
    // replaced; restored, it keeps its backend and learns its new number.
    let mut q = udp(POD_A, 5000, [10, 96, 0, 10], 53, b"q");
    let a = accept(ct.process_with(secs(2), &mut q, Origin::Pod, &mut Svc));
    assert_eq!((a.state, a.service), (CtState::Established, 11));
    assert_eq!(ends(&q).2, Ipv4Addr::from(POD_B));
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn the_layout_names_the_settings_entries_depend_on() {
    let mut s = snat();
    let a = spec(&cfg(), Some(&s), EPOCH);
    s.worker = (1, 2);
    let b = spec(&cfg(), Some(&s), EPOCH);
    assert_ne!(a, b);
    assert!(b.params.contains(&("worker", 1)) && b.params.contains(&("workers", 2)));
    assert_eq!(a.records, 3 * cfg().max_entries);
    assert!(
        !spec(&cfg(), None, EPOCH)
            .params
            .iter()
            .any(|(n, _)| *n == "snat_addr")
    );
}

/// The restore reads only up to the writer's high-water mark: a sparse
/// file's untouched tail is never faulted in, and entries below the mark
/// all come back.
#[test]
fn the_restore_stops_at_the_high_water_mark() {
    let p = path("mark");
    let (mut ct, _, _) = open(&p, secs(1));
    assert_eq!(region(&mut ct).mark(), 0);
    flows(&mut ct, secs(1));
    // Three entries in slots 0..3: records 0..9.
    assert_eq!(region(&mut ct).mark(), 9);
    drop(ct);
    let (ct, r, _) = open(&p, secs(2));
    assert_eq!(r.entries, 3);
    drop(ct);
    // A record past the mark (written by no tracker) is not read.
    let (mut ct, _, _) = open(&p, secs(2));
    let copy: Vec<Vec<u8>> = (0..3)
        .map(|i| region(&mut ct).record(i).unwrap().to_vec())
        .collect();
    for (i, c) in copy.iter().enumerate() {
        region(&mut ct)
            .record_mut(30 + i)
            .unwrap()
            .copy_from_slice(c);
    }
    drop(ct);
    let (_, r, _) = open(&p, secs(3));
    assert_eq!((r.entries, r.duplicate), (3, 0));
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}
