//! Scenario tests driven with virtual time: each asserts exact outcomes.

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::icmp::IcmpPacket;
use encap::ipv4::Ipv4Packet;
use encap::tcp::TcpPacket;
use encap::udp::UdpPacket;
use etherparse::PacketBuilder;

use crate::*;

pub(crate) const POD_A: [u8; 4] = [10, 244, 1, 2];
pub(crate) const POD_B: [u8; 4] = [10, 244, 1, 3];
pub(crate) const REMOTE_POD: [u8; 4] = [10, 244, 2, 9];
pub(crate) const SERVICE: [u8; 4] = [10, 96, 0, 10];
pub(crate) const NODE: [u8; 4] = [192, 0, 2, 10];
pub(crate) const OUTSIDE: [u8; 4] = [198, 51, 100, 7];
pub(crate) const ROUTER: [u8; 4] = [203, 0, 113, 1];

pub(crate) fn snat() -> SnatConfig {
    SnatConfig::new(
        vec!["10.244.1.0/24".parse().unwrap()],
        vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.96.0.0/12".parse().unwrap(),
        ],
        Ipv4Addr::from(NODE),
    )
}

fn ct_with(cfg: ConntrackConfig, s: SnatConfig) -> Conntrack {
    Conntrack::new(cfg, Some(s))
}

fn ct() -> Conntrack {
    ct_with(ConntrackConfig::default(), snat())
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[derive(Clone, Copy)]
pub(crate) enum F {
    Syn,
    SynAck,
    Ack,
    FinAck,
    RstAck,
}

#[allow(
    clippy::too_many_arguments,
    reason = "a packet literal: every field is named at the call"
)]
pub(crate) fn tcp(
    src: [u8; 4],
    sp: u16,
    dst: [u8; 4],
    dp: u16,
    f: F,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, 64240);
    let b = match f {
        F::Syn => b.syn(),
        F::SynAck => b.syn().ack(ack),
        F::Ack => b.ack(ack),
        F::FinAck => b.fin().ack(ack),
        F::RstAck => b.rst().ack(ack),
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub(crate) fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sp, dp)
        .write(&mut v, payload)
        .unwrap();
    v
}

pub(crate) fn echo(src: [u8; 4], dst: [u8; 4], id: u16, request: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ipv4(src, dst, 64);
    if request {
        b.icmpv4_echo_request(id, 1).write(&mut v, b"ping")
    } else {
        b.icmpv4_echo_reply(id, 1).write(&mut v, b"ping")
    }
    .unwrap();
    v
}

/// (src, sport, dst, dport) of a TCP/UDP packet, checking every checksum.
pub(crate) fn ends(p: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = Ipv4Packet::new_checked(p).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    match ip.protocol() {
        6 => {
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(t.verify_checksum_v4(s, d), "TCP checksum");
            (s, t.src_port(), d, t.dst_port())
        }
        17 => {
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(u.verify_checksum_v4(s, d), "UDP checksum");
            (s, u.src_port(), d, u.dst_port())
        }
        _ => {
            let m = IcmpPacket::new_checked_v4(ip.payload()).unwrap();
            assert!(m.verify_checksum_v4(), "ICMP checksum");
            (s, m.echo_ident(), d, 0)
        }
    }
}

fn accept(v: Verdict) -> Accepted {
    match v {
        Verdict::Accept(a) => a,
        Verdict::Drop(r) => panic!("dropped: {r:?}"),
        Verdict::Refused => panic!("refused without a service hook"),
    }
}

fn a(x: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(x)
}

/// A TCP handshake from `src:sp` to OUTSIDE:443 through `ct`; returns the
/// translated source port.
fn handshake(ct: &mut Conntrack, now: Duration, src: [u8; 4], sp: u16) -> u16 {
    let mut syn = tcp(src, sp, OUTSIDE, 443, F::Syn, 1000, 0, b"");
    let v = accept(ct.process(now, &mut syn, Origin::Pod));
    assert_eq!((v.state, v.translated), (CtState::New, true));
    let (s, nat_port, d, dp) = ends(&syn);
    assert_eq!((s, d, dp), (a(NODE), a(OUTSIDE), 443));
    let mut synack = tcp(OUTSIDE, 443, NODE, nat_port, F::SynAck, 5000, 1001, b"");
    let v = accept(ct.process(now, &mut synack, Origin::Uplink));
    assert_eq!((v.state, v.dir), (CtState::Established, Direction::Reply));
    assert_eq!(
        ends(&synack),
        (a(OUTSIDE), 443, a(src), sp),
        "reply reverse-translated to the pod"
    );
    let mut ack = tcp(src, sp, OUTSIDE, 443, F::Ack, 1001, 5001, b"GET /");
    accept(ct.process(now, &mut ack, Origin::Pod));
    assert_eq!(ends(&ack), (a(NODE), nat_port, a(OUTSIDE), 443));
    nat_port
}

fn tcp_state(ct: &Conntrack, src: [u8; 4], sp: u16) -> TcpState {
    let e = ct
        .entries()
        .find(|e| e.orig.src == a(src) && e.orig.src_port == sp)
        .expect("entry");
    match e.proto {
        ProtoState::Tcp { state, .. } => state,
        p => panic!("not TCP: {p:?}"),
    }
}

use crate::tcp::TcpState;

#[test]
fn masquerade_to_outside_and_replies_come_back() {
    let mut ct = ct();
    let port = handshake(&mut ct, secs(1), POD_A, 40000);
    assert!(
        snat().ports.contains(port),
        "translated into the SNAT range"
    );
    assert_eq!(tcp_state(&ct, POD_A, 40000), TcpState::Established);
    // UDP and ICMP echo too.
    let mut q = udp(POD_A, 5353, OUTSIDE, 53, b"query");
    accept(ct.process(secs(2), &mut q, Origin::Pod));
    let (s, up, _, _) = ends(&q);
    assert_eq!(s, a(NODE));
    let mut r = udp(OUTSIDE, 53, NODE, up, b"answer");
    accept(ct.process(secs(2), &mut r, Origin::Uplink));
    assert_eq!(ends(&r), (a(OUTSIDE), 53, a(POD_A), 5353));
    let mut ping = echo(POD_A, OUTSIDE, 77, true);
    accept(ct.process(secs(3), &mut ping, Origin::Pod));
    let (s, id, _, _) = ends(&ping);
    assert_eq!(s, a(NODE));
    let mut pong = echo(OUTSIDE, NODE, id, false);
    accept(ct.process(secs(3), &mut pong, Origin::Uplink));
    assert_eq!(ends(&pong), (a(OUTSIDE), 77, a(POD_A), 0));
    assert_eq!(ct.len(), 3);
    assert_eq!(ct.nat_ports_in_use(), 3);
}

#[test]
fn no_translation_towards_cluster_and_service_cidrs() {
    let mut ct = ct();
    for dst in [REMOTE_POD, SERVICE] {
        let mut p = tcp(POD_A, 40000, dst, 80, F::Syn, 1, 0, b"");
        let before = p.clone();
        let v = accept(ct.process(secs(1), &mut p, Origin::Pod));
        assert_eq!((v.state, v.translated), (CtState::New, false));
        assert_eq!(p, before, "not a byte changed");
    }
    assert_eq!(ct.nat_ports_in_use(), 0);
    // Unknown traffic from the uplink is not let in.
    let mut p = udp(OUTSIDE, 53, NODE, 61001, b"x");
    assert_eq!(
        ct.process(secs(1), &mut p, Origin::Uplink),
        Verdict::Drop(DropReason::NoEntry)
    );
    assert_eq!(ct.counters().drops[DropReason::NoEntry as usize], 1);
}

#[test]
fn same_source_port_from_two_pods_gets_two_ports() {
    let mut s = snat();
    s.ports = PortRange {
        min: 40000,
        max: 40010,
    };
    let mut ct = ct_with(ConntrackConfig::default(), s);
    let pa = handshake(&mut ct, secs(1), POD_A, 40000);
    let pb = handshake(&mut ct, secs(1), POD_B, 40000);
    assert_eq!(pa, 40000, "the first flow keeps its port");
    assert_ne!(pa, pb, "the second gets another");
    // Each reply reaches its own pod.
    for (pod, port) in [(POD_A, pa), (POD_B, pb)] {
        let mut r = tcp(OUTSIDE, 443, NODE, port, F::Ack, 5001, 1006, b"data");
        accept(ct.process(secs(2), &mut r, Origin::Uplink));
        assert_eq!(ends(&r), (a(OUTSIDE), 443, a(pod), 40000));
    }
}

#[test]
fn port_exhaustion_fails_the_new_flow_and_keeps_the_old() {
    let mut s = snat();
    s.ports = PortRange {
        min: 61000,
        max: 61000,
    };
    let mut ct = ct_with(ConntrackConfig::default(), s);
    let port = handshake(&mut ct, secs(1), POD_A, 40000);
    assert_eq!(port, 61000);
    let mut syn = tcp(POD_B, 40000, OUTSIDE, 443, F::Syn, 1, 0, b"");
    assert_eq!(
        ct.process(secs(1), &mut syn, Origin::Pod),
        Verdict::Drop(DropReason::PortExhausted)
    );
    assert_eq!(ct.counters().drops[DropReason::PortExhausted as usize], 1);
    // The first flow still works both ways.
    let mut d = tcp(POD_A, 40000, OUTSIDE, 443, F::Ack, 1006, 5001, b"more");
    accept(ct.process(secs(2), &mut d, Origin::Pod));
    let mut r = tcp(OUTSIDE, 443, NODE, 61000, F::Ack, 5001, 1010, b"ok");
    accept(ct.process(secs(2), &mut r, Origin::Uplink));
    assert_eq!(ends(&r).2, a(POD_A));
    // Another destination can reuse the same port (the reply tuple differs).
    let mut other = udp(POD_B, 40000, ROUTER, 53, b"q");
    accept(ct.process(secs(3), &mut other, Origin::Pod));
    assert_eq!(ends(&other).1, 61000);
}

#[test]
fn icmp_frag_needed_reaches_the_pod_with_the_quote_translated_back() {
    let mut ct = ct();
    let port = handshake(&mut ct, secs(1), POD_A, 40000);
    // What left the node (translated), as a router quotes it: IP header +
    // the first 8 bytes of TCP (RFC 792), and once with the whole TCP header.
    let sent = tcp(NODE, port, OUTSIDE, 443, F::Ack, 1006, 5001, &[0x55; 1400]);
    for quote_len in [28, 60] {
        let mut err = Vec::new();
        PacketBuilder::ipv4(ROUTER, NODE, 64)
            .icmpv4_raw(3, 4, [0, 0, 0x05, 0x78])
            .write(&mut err, &sent[..quote_len])
            .unwrap();
        let v = accept(ct.process(secs(2), &mut err, Origin::Uplink));
        assert_eq!(
            (v.state, v.dir, v.translated),
            (CtState::Related, Direction::Reply, true)
        );
        let ip = Ipv4Packet::new_checked(&err[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.src_addr(), ip.dst_addr()),
            (a(ROUTER), a(POD_A)),
            "outer destination is the pod"
        );
        let m = IcmpPacket::new_checked_v4(ip.payload()).unwrap();
        assert!(m.verify_checksum_v4(), "ICMP checksum after the rewrite");
        assert_eq!(m.next_hop_mtu(), 1400);
        let q = Ipv4Packet::new_lax(m.payload()).unwrap();
        assert!(q.verify_checksum(), "quoted IP header checksum");
        assert_eq!((q.src_addr(), q.dst_addr()), (a(POD_A), a(OUTSIDE)));
        let qt = &m.payload()[20..];
        assert_eq!(
            u16::from_be_bytes([qt[0], qt[1]]),
            40000,
            "quoted source port is the pod's"
        );
        if quote_len == 60 {
            // The whole quoted TCP header: its checksum must match the
            // original packet's (what the pod computed), as if never NATed.
            let orig = tcp(
                POD_A,
                40000,
                OUTSIDE,
                443,
                F::Ack,
                1006,
                5001,
                &[0x55; 1400],
            );
            assert_eq!(
                &m.payload()[..40],
                &orig[..40],
                "quote equals the pod's own packet"
            );
        }
    }
    // An ICMP error quoting a flow we do not know is dropped and counted.
    let stray = tcp(NODE, 9, OUTSIDE, 443, F::Ack, 1, 1, b"");
    let mut err = Vec::new();
    PacketBuilder::ipv4(ROUTER, NODE, 64)
        .icmpv4_raw(11, 0, [0; 4])
        .write(&mut err, &stray[..28])
        .unwrap();
    assert_eq!(
        ct.process(secs(2), &mut err, Origin::Uplink),
        Verdict::Drop(DropReason::IcmpErrorNoEntry)
    );
}

#[test]
fn out_of_window_rst_leaves_the_entry_established() {
    let mut ct = ct();
    let port = handshake(&mut ct, secs(1), POD_A, 40000);
    let mut blind = tcp(
        OUTSIDE,
        443,
        NODE,
        port,
        F::RstAck,
        5001u32.wrapping_add(0x4000_0000),
        1006,
        b"",
    );
    assert_eq!(
        ct.process(secs(2), &mut blind, Origin::Uplink),
        Verdict::Drop(DropReason::TcpOutOfWindow)
    );
    assert_eq!(tcp_state(&ct, POD_A, 40000), TcpState::Established);
    // An in-window RST closes it.
    let mut rst = tcp(OUTSIDE, 443, NODE, port, F::RstAck, 5001, 1006, b"");
    accept(ct.process(secs(2), &mut rst, Origin::Uplink));
    assert_eq!(tcp_state(&ct, POD_A, 40000), TcpState::Close);
}

#[test]
fn udp_expires_at_30s_unreplied_and_120s_replied() {
    let mut ct = ct();
    let mut q = udp(POD_A, 1111, OUTSIDE, 53, b"q");
    accept(ct.process(secs(100), &mut q, Origin::Pod));
    let mut q2 = udp(POD_A, 2222, OUTSIDE, 53, b"q");
    accept(ct.process(secs(100), &mut q2, Origin::Pod));
    let p2 = ends(&q2).1;
    let mut r = udp(OUTSIDE, 53, NODE, p2, b"r");
    accept(ct.process(secs(101), &mut r, Origin::Uplink));
    let key1 = Tuple {
        src: a(POD_A),
        dst: a(OUTSIDE),
        src_port: 1111,
        dst_port: 53,
        proto: 17,
    };
    let key2 = Tuple {
        src_port: 2222,
        ..key1
    };
    assert!(ct.lookup(secs(129), &key1).is_some());
    assert!(ct.lookup(secs(130), &key1).is_none(), "unreplied: 30 s");
    assert!(ct.lookup(secs(220), &key2).is_some());
    assert!(
        ct.lookup(secs(221), &key2).is_none(),
        "replied: 120 s after the last packet"
    );
    // Expiry sweeps them out of the table.
    while ct.handle_timeout(secs(300)) > 0 {}
    for _ in 0..4 {
        ct.handle_timeout(secs(300));
    }
    assert_eq!(ct.len(), 0);
    assert_eq!(ct.counters().expired, 2);
}

#[test]
fn time_wait_expiry_frees_the_port() {
    let mut s = snat();
    s.ports = PortRange {
        min: 61000,
        max: 61000,
    };
    let mut ct = ct_with(ConntrackConfig::default(), s);
    let port = handshake(&mut ct, secs(1), POD_A, 40000);
    // Orderly close: FIN from the pod, ACK+FIN from outside, last ACK.
    let mut fin = tcp(POD_A, 40000, OUTSIDE, 443, F::FinAck, 1006, 5001, b"");
    accept(ct.process(secs(2), &mut fin, Origin::Pod));
    let mut finack = tcp(OUTSIDE, 443, NODE, port, F::FinAck, 5001, 1007, b"");
    accept(ct.process(secs(2), &mut finack, Origin::Uplink));
    let mut last = tcp(POD_A, 40000, OUTSIDE, 443, F::Ack, 1007, 5002, b"");
    accept(ct.process(secs(2), &mut last, Origin::Pod));
    assert_eq!(tcp_state(&ct, POD_A, 40000), TcpState::TimeWait);
    // While in TIME_WAIT the only port is taken...
    let mut other = tcp(POD_B, 40000, OUTSIDE, 443, F::Syn, 1, 0, b"");
    assert_eq!(
        ct.process(secs(100), &mut other, Origin::Pod),
        Verdict::Drop(DropReason::PortExhausted)
    );
    // ...and 120 s after the last packet it is free again.
    for _ in 0..10 {
        ct.handle_timeout(secs(122));
    }
    assert_eq!(ct.len(), 0);
    let mut other = tcp(POD_B, 40000, OUTSIDE, 443, F::Syn, 1, 0, b"");
    accept(ct.process(secs(122), &mut other, Origin::Pod));
    assert_eq!(ends(&other).1, 61000);
}

#[test]
fn table_limit_holds_exactly_n_and_a_syn_flood_evicts_no_established_flow() {
    let cfg = ConntrackConfig {
        max_entries: 8,
        early_drop_budget: 64,
        ..ConntrackConfig::default()
    };
    let mut ct = ct_with(cfg, snat());
    for i in 0..4 {
        handshake(&mut ct, secs(1), POD_A, 40000 + i);
    }
    // A flood of SYNs from another pod, never answered.
    for i in 0..1000u16 {
        let mut syn = tcp(POD_B, 1024 + i, OUTSIDE, 443, F::Syn, 7, 0, b"");
        accept(ct.process(secs(2), &mut syn, Origin::Pod));
        assert!(ct.len() <= 8);
    }
    assert_eq!(ct.len(), 8, "the limit holds exactly");
    for i in 0..4 {
        assert_eq!(
            tcp_state(&ct, POD_A, 40000 + i),
            TcpState::Established,
            "established flow {i} survived"
        );
    }
    assert_eq!(ct.counters().early_dropped, 1000 - 4);
    // With only replied entries left, a new flow is refused and counted.
    let cfg = ConntrackConfig {
        max_entries: 2,
        ..ConntrackConfig::default()
    };
    let mut ct = ct_with(cfg, snat());
    handshake(&mut ct, secs(1), POD_A, 1);
    handshake(&mut ct, secs(1), POD_A, 2);
    let mut syn = tcp(POD_B, 3, OUTSIDE, 443, F::Syn, 7, 0, b"");
    assert_eq!(
        ct.process(secs(1), &mut syn, Origin::Pod),
        Verdict::Drop(DropReason::TableFull)
    );
    assert_eq!(ct.len(), 2);
}

#[test]
fn tcp_without_syn_is_picked_up_only_when_loose() {
    let mut strict = ct_with(
        ConntrackConfig {
            tcp_loose: false,
            ..ConntrackConfig::default()
        },
        snat(),
    );
    let mut p = tcp(POD_A, 40000, OUTSIDE, 443, F::Ack, 1, 1, b"mid-stream");
    assert_eq!(
        strict.process(secs(1), &mut p, Origin::Pod),
        Verdict::Drop(DropReason::TcpNotSyn)
    );
    let mut loose = ct();
    let mut p = tcp(POD_A, 40000, OUTSIDE, 443, F::Ack, 1, 1, b"mid-stream");
    assert_eq!(
        accept(loose.process(secs(1), &mut p, Origin::Pod)).state,
        CtState::New
    );
    assert_eq!(tcp_state(&loose, POD_A, 40000), TcpState::Established);
}

/// The drop reasons the scenarios above do not reach, each counted; and
/// the reason list indexes the counters it names.
#[test]
fn malformed_fragment_and_invalid_state_drops_are_counted() {
    let mut ct = ct();
    let mut bad = udp(POD_A, 1, OUTSIDE, 2, b"x");
    bad[10] ^= 0xff;
    assert_eq!(
        ct.process(secs(1), &mut bad, Origin::Pod),
        Verdict::Drop(DropReason::Malformed)
    );
    let mut frag = udp(POD_A, 1, OUTSIDE, 2, b"x");
    frag[6] = 0x20; // MF: a first fragment
    Ipv4Packet::new_checked(&mut frag[..])
        .unwrap()
        .fill_checksum();
    assert_eq!(
        ct.process(secs(1), &mut frag, Origin::Pod),
        Verdict::Drop(DropReason::Fragment)
    );
    let port = handshake(&mut ct, secs(1), POD_A, 40000);
    let mut syn_reply = tcp(OUTSIDE, 443, NODE, port, F::Syn, 1, 0, b"");
    assert_eq!(
        ct.process(secs(1), &mut syn_reply, Origin::Uplink),
        Verdict::Drop(DropReason::TcpInvalidState)
    );
    for r in [
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::TcpInvalidState,
    ] {
        assert_eq!(ct.counters().drops[r as usize], 1, "{}", r.name());
    }
    let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i, "ALL is in counter-index order");
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        DropReason::ALL.len(),
        "counter names are unique"
    );
}

#[test]
fn huge_configured_timeouts_and_late_clocks_do_not_panic() {
    let t = Timeouts {
        udp_unreplied: Duration::MAX,
        udp_replied: Duration::MAX,
        ..Timeouts::default()
    };
    let mut ct = ct_with(
        ConntrackConfig {
            timeouts: t,
            ..ConntrackConfig::default()
        },
        snat(),
    );
    // Ten years of uptime plus a Duration::MAX timeout saturates, not panics.
    let late = secs(10 * 365 * 86_400);
    let mut q = udp(POD_A, 1, OUTSIDE, 53, b"q");
    accept(ct.process(late, &mut q, Origin::Pod));
    let key = Tuple {
        src: a(POD_A),
        dst: a(OUTSIDE),
        src_port: 1,
        dst_port: 53,
        proto: 17,
    };
    assert!(
        ct.lookup(late + secs(1_000_000), &key).is_some(),
        "a huge timeout means never expiring"
    );
    // The end of time itself: still no panic.
    let mut q2 = udp(POD_A, 2, OUTSIDE, 53, b"q");
    let _ = ct.process(Duration::MAX, &mut q2, Origin::Pod);
    ct.handle_timeout(Duration::MAX);
}
