//! Conntrack behaviour that mutation testing found unpinned: the timeout
//! each protocol state gets (and when an entry counts as replied), the
//! counters, strict TCP pickup, the untranslated flow whose reply tuple is
//! another flow's original, port choice (the pod's own port when free,
//! random offsets otherwise), and the per-worker port slices.

use std::net::Ipv4Addr;
use std::time::Duration;

use etherparse::PacketBuilder;
use nat::{
    Conntrack, ConntrackConfig, DropReason, Entry, Origin, PortRange, SnatConfig, Timeouts, Verdict,
};

const POD: [u8; 4] = [10, 244, 1, 2];
const NODE: [u8; 4] = [192, 0, 2, 10];
const OUTSIDE: [u8; 4] = [198, 51, 100, 7];

fn snat() -> SnatConfig {
    SnatConfig::new(
        vec!["10.244.1.0/24".parse().unwrap()],
        vec!["10.244.0.0/16".parse().unwrap()],
        Ipv4Addr::from(NODE),
    )
}

fn ct() -> Conntrack {
    Conntrack::new(ConntrackConfig::default(), Some(snat()))
}

fn at(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sp, dp)
        .write(&mut v, b"x")
        .unwrap();
    v
}

fn accepted(v: Verdict) -> nat::Accepted {
    match v {
        Verdict::Accept(a) => a,
        Verdict::Drop(r) => panic!("dropped: {r:?}"),
        Verdict::Refused => panic!("refused without a service hook"),
    }
}

fn only(ct: &Conntrack) -> Entry {
    let v: Vec<Entry> = ct.entries().cloned().collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v[0]
}

fn send(ct: &mut Conntrack, now: Duration, pkt: &[u8], o: Origin) -> Vec<u8> {
    let mut p = pkt.to_vec();
    accepted(ct.process(now, &mut p, o));
    p
}

fn translated_port(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[20], p[21]])
}

#[test]
fn each_state_gets_its_timeout_and_replied_means_a_reply_was_seen() {
    let t = Timeouts::default();
    let mut ct = ct();
    assert!(ct.is_empty());
    let q = udp(POD, 40000, OUTSIDE, 53);
    let out = send(&mut ct, at(1), &q, Origin::Pod);
    assert!(!ct.is_empty());
    assert_eq!(only(&ct).expires(), at(1) + t.udp_unreplied);
    // More datagrams the same way: still unreplied.
    send(&mut ct, at(2), &q, Origin::Pod);
    send(&mut ct, at(3), &q, Origin::Pod);
    assert!(!only(&ct).seen_reply);
    assert_eq!(only(&ct).expires(), at(3) + t.udp_unreplied);
    // The reply: replied from then on, in both directions.
    let reply = udp(OUTSIDE, 53, NODE, translated_port(&out));
    send(&mut ct, at(4), &reply, Origin::Uplink);
    assert!(only(&ct).seen_reply);
    assert_eq!(only(&ct).expires(), at(4) + t.udp_replied);
    send(&mut ct, at(5), &q, Origin::Pod);
    assert_eq!(only(&ct).expires(), at(5) + t.udp_replied);

    // An echo: ICMP's timeout on creation and on every later packet.
    let mut ct = Conntrack::new(ConntrackConfig::default(), Some(snat()));
    let mut ping = Vec::new();
    PacketBuilder::ipv4(POD, OUTSIDE, 64)
        .icmpv4_echo_request(9, 1)
        .write(&mut ping, b"p")
        .unwrap();
    send(&mut ct, at(1), &ping, Origin::Pod);
    assert_eq!(only(&ct).expires(), at(1) + t.icmp);
    send(&mut ct, at(2), &ping, Origin::Pod);
    assert_eq!(only(&ct).expires(), at(2) + t.icmp);
    assert_ne!(t.icmp, t.other, "the two must differ for this test");

    // Another protocol (GRE, 47): the generic timeout.
    let mut ct = Conntrack::new(ConntrackConfig::default(), Some(snat()));
    let mut gre = Vec::new();
    PacketBuilder::ipv4(POD, OUTSIDE, 64)
        .write(&mut gre, etherparse::IpNumber(47), &[0; 8])
        .unwrap();
    send(&mut ct, at(1), &gre, Origin::Pod);
    send(&mut ct, at(2), &gre, Origin::Pod);
    assert_eq!(only(&ct).expires(), at(2) + t.other);
}

#[test]
fn counters_count_creations_and_expiries() {
    let mut ct = ct();
    for sp in [40000, 40001, 40002] {
        send(&mut ct, at(1), &udp(POD, sp, OUTSIDE, 53), Origin::Pod);
    }
    assert_eq!(ct.counters().created, 3);
    assert_eq!(ct.counters().expired, 0);
    // Found expired on lookup: removed and counted, then created anew.
    let late = at(1) + Timeouts::default().udp_unreplied + at(1);
    send(&mut ct, late, &udp(POD, 40000, OUTSIDE, 53), Origin::Pod);
    assert_eq!(ct.counters().expired, 1);
    assert_eq!(ct.counters().created, 4);
}

#[test]
fn strict_tcp_pickup_takes_only_a_bare_syn() {
    let cfg = ConntrackConfig {
        tcp_loose: false,
        ..ConntrackConfig::default()
    };
    let tcp = |syn: bool, ack: bool| {
        let mut v = Vec::new();
        let b = PacketBuilder::ipv4(POD, OUTSIDE, 64).tcp(40000, 443, 1, 1000);
        let b = if syn { b.syn() } else { b };
        let b = if ack { b.ack(1) } else { b };
        b.write(&mut v, b"").unwrap();
        v
    };
    for (syn, ack, ok) in [
        (true, false, true),
        (true, true, false),
        (false, true, false),
    ] {
        let mut ct = Conntrack::new(cfg.clone(), Some(snat()));
        let mut p = tcp(syn, ack);
        let v = ct.process(at(1), &mut p, Origin::Pod);
        if ok {
            accepted(v);
        } else {
            assert_eq!(
                v,
                Verdict::Drop(DropReason::TcpNotSyn),
                "syn {syn} ack {ack}"
            );
        }
    }
}

#[test]
fn an_untranslated_flow_whose_reply_is_another_flows_original_is_refused() {
    // The pod's flow to the outside is translated. A packet from the
    // outside host's address to the pod's original tuple (not a pod:
    // no SNAT applies) would have the pod's flow as its reply tuple.
    let mut ct = ct();
    send(&mut ct, at(1), &udp(POD, 40000, OUTSIDE, 53), Origin::Pod);
    let mut p = udp(OUTSIDE, 53, POD, 40000);
    assert_eq!(
        ct.process(at(1), &mut p, Origin::Pod),
        Verdict::Drop(DropReason::PortExhausted)
    );
    assert_eq!(ct.len(), 1);
}

#[test]
fn the_pods_own_port_is_kept_when_in_range_and_free() {
    let mut s = snat();
    s.random_fully = false;
    let mut ct = Conntrack::new(ConntrackConfig::default(), Some(s.clone()));
    let out = send(&mut ct, at(1), &udp(POD, 62000, OUTSIDE, 53), Origin::Pod);
    assert_eq!(translated_port(&out), 62000, "in range and free: kept");
    // Another pod with the same port to the same host: a different one.
    let out = send(
        &mut ct,
        at(1),
        &udp([10, 244, 1, 3], 62000, OUTSIDE, 53),
        Origin::Pod,
    );
    assert_ne!(translated_port(&out), 62000);
    // A port outside the range is never kept.
    let out = send(&mut ct, at(1), &udp(POD, 40000, OUTSIDE, 53), Origin::Pod);
    assert!(s.ports.contains(translated_port(&out)));
}

#[test]
fn translated_ports_start_at_random_offsets() {
    // Linux --random-fully style: 64 flows from distinct pods to one host
    // get ports spread over the range, not the first 64 in a row (a fixed
    // or stuck random source would give that).
    let mut ct = ct();
    let mut ports: Vec<u16> = (0..64u8)
        .map(|i| {
            let out = send(
                &mut ct,
                at(1),
                &udp([10, 244, 1, 10 + i], 40000, OUTSIDE, 53),
                Origin::Pod,
            );
            translated_port(&out)
        })
        .collect();
    let range = snat().ports;
    assert!(ports.iter().all(|p| range.contains(*p)));
    assert_ne!(
        ports[0], range.min,
        "the first probe is not the range's start"
    );
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 64, "distinct");
    let span = ports[63] - ports[0];
    assert!(span > 1000, "ports bunched in {span}: {ports:?}");
    let runs = ports.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(runs < 32, "{runs} consecutive pairs: sequential allocation");
}

#[test]
fn worker_slices_partition_the_range_and_name_their_owner() {
    let range = PortRange {
        min: 61000,
        max: 65535,
    };
    assert_eq!(range.len(), 4536);
    assert!(!range.is_empty());
    let slice = |w: (u16, u16)| {
        let mut s = snat();
        s.worker = w;
        (s.slice(range), s)
    };
    let (a, sa) = slice((0, 2));
    let (b, _) = slice((1, 2));
    assert_eq!((a.min, a.max), (61000, 63267));
    assert_eq!((b.min, b.max), (63268, 65535));
    let (c, _) = slice((1, 3));
    assert_eq!((c.min, c.max), (62512, 64023));
    for (port, owner) in [
        (61000, Some(0)),
        (63267, Some(0)),
        (63268, Some(1)),
        (65535, Some(1)),
        (60999, None),
    ] {
        assert_eq!(sa.owner_of(range, port), owner, "port {port}");
    }
    let (_, s3) = slice((0, 3));
    assert_eq!(s3.owner_of(range, 62511), Some(0));
    assert_eq!(s3.owner_of(range, 62512), Some(1));
    assert_eq!(s3.owner_of(range, 65535), Some(2));
    // 4536 ports over 5 workers: 907 each, and the one left over is the
    // last worker's, in its slice and as its owner.
    let (e, s5) = slice((4, 5));
    assert_eq!(
        (e.min, e.max),
        (64628, 65535),
        "the remainder is the last's"
    );
    assert_eq!(slice((3, 5)).0.max, 64627);
    assert_eq!(s5.owner_of(range, 65535), Some(4));
    assert_eq!(s5.owner_of(range, 65534), Some(4));
    assert_eq!(s5.owner_of(range, 64627), Some(3));
}
