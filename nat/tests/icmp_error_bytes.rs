//! ICMP errors through SNAT, pinned byte for byte: what conntrack makes of
//! an error about a translated flow must be exactly the error the other
//! side would have sent with no NAT in between, every checksum included
//! (outer IP, ICMP, the quoted IP header, the quoted transport checksum
//! when the quote holds it). The expected packets are built from scratch
//! with etherparse, so an offset or a checksum step changed in
//! `rewrite_icmp_error` shows up as a byte that differs.

use std::net::Ipv4Addr;
use std::time::Duration;

use etherparse::{IpNumber, Ipv4Header, Ipv4Options, PacketBuilder};
use nat::{Conntrack, ConntrackConfig, CtState, Direction, Origin, SnatConfig, Verdict};

const POD: [u8; 4] = [10, 244, 1, 2];
const POD_B: [u8; 4] = [10, 244, 1, 3];
const NODE: [u8; 4] = [192, 0, 2, 10];
const OUTSIDE: [u8; 4] = [198, 51, 100, 7];
const ROUTER: [u8; 4] = [203, 0, 113, 1];

fn ct() -> Conntrack {
    Conntrack::new(
        ConntrackConfig::default(),
        Some(SnatConfig::new(
            vec!["10.244.1.0/24".parse().unwrap()],
            vec!["10.244.0.0/16".parse().unwrap()],
            Ipv4Addr::from(NODE),
        )),
    )
}

fn now() -> Duration {
    Duration::from_secs(5)
}

fn accept(v: Verdict) -> nat::Accepted {
    match v {
        Verdict::Accept(a) => a,
        Verdict::Drop(r) => panic!("dropped: {r:?}"),
        Verdict::Refused => panic!("refused without a service hook"),
    }
}

fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sp, dp)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn tcp_syn(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .tcp(sp, dp, 1000, 64240)
        .syn()
        .write(&mut v, payload)
        .unwrap();
    v
}

fn echo(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .icmpv4_echo_request(id, 7)
        .write(&mut v, b"ping payload")
        .unwrap();
    v
}

/// An ICMP error `from` -> `to` quoting `quote`.
fn error(from: [u8; 4], to: [u8; 4], ty: u8, code: u8, rest: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(from, to, 64)
        .icmpv4_raw(ty, code, rest)
        .write(&mut v, quote)
        .unwrap();
    v
}

/// Sends `pkt` from the pod; returns it as it left (translated).
fn out(ct: &mut Conntrack, pkt: &[u8]) -> Vec<u8> {
    let mut p = pkt.to_vec();
    let a = accept(ct.process(now(), &mut p, Origin::Pod));
    assert!(a.translated);
    assert_eq!(p[12..16], NODE);
    p
}

/// Processes the error `got` from `origin` and checks that it became
/// exactly `want`.
fn assert_rewritten(ct: &mut Conntrack, mut got: Vec<u8>, origin: Origin, want: &[u8]) {
    let a = accept(ct.process(now(), &mut got, origin));
    assert_eq!(a.state, CtState::Related);
    assert!(a.translated);
    let dir = if origin == Origin::Uplink {
        Direction::Reply
    } else {
        Direction::Original
    };
    assert_eq!(a.dir, dir);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "byte {i} differs:\n got {got:02x?}\nwant {want:02x?}");
    }
}

#[test]
fn udp_quotes_full_truncated_and_without_checksum() {
    let mut ct = ct();
    let sent = udp(POD, 40000, OUTSIDE, 53, b"query bytes");
    let left = out(&mut ct, &sent);
    // The whole datagram quoted, and only the first 8 bytes of UDP (RFC 792).
    for len in [left.len(), 28] {
        let got = error(ROUTER, NODE, 3, 3, [0; 4], &left[..len]);
        let want = error(ROUTER, POD, 3, 3, [0; 4], &sent[..len]);
        assert_rewritten(&mut ct, got, Origin::Uplink, &want);
    }
    // A datagram sent without a UDP checksum: the quote keeps 0.
    let mut bare = udp(POD, 40001, OUTSIDE, 53, b"q");
    bare[26..28].copy_from_slice(&[0, 0]);
    let left = out(&mut ct, &bare);
    assert_eq!(left[26..28], [0, 0], "no checksum stays none");
    let got = error(ROUTER, NODE, 11, 0, [0; 4], &left);
    let want = error(ROUTER, POD, 11, 0, [0; 4], &bare);
    assert_rewritten(&mut ct, got, Origin::Uplink, &want);
}

#[test]
fn tcp_quotes_with_and_without_the_checksum() {
    let mut ct = ct();
    let sent = tcp_syn(POD, 40000, OUTSIDE, 443, b"");
    let left = out(&mut ct, &sent);
    // 8 bytes of TCP (no checksum in the quote), 18 (just the checksum),
    // the whole header.
    for len in [28, 20 + 18, left.len()] {
        let got = error(ROUTER, NODE, 3, 4, [0, 0, 0x05, 0x78], &left[..len]);
        let want = error(ROUTER, POD, 3, 4, [0, 0, 0x05, 0x78], &sent[..len]);
        assert_rewritten(&mut ct, got, Origin::Uplink, &want);
    }
}

#[test]
fn a_quoted_echo_gets_its_identifier_and_checksum_back() {
    let mut ct = ct();
    // Two pods ping the same host with the same identifier: the second
    // one's is translated (the first keeps its own, as Linux does).
    let first = echo(POD, OUTSIDE, 0x1234);
    out(&mut ct, &first);
    let sent = echo(POD_B, OUTSIDE, 0x1234);
    let left = out(&mut ct, &sent);
    assert_ne!(left[24..26], sent[24..26], "the identifier was translated");
    for len in [left.len(), 28, 26] {
        let got = error(ROUTER, NODE, 11, 0, [0; 4], &left[..len]);
        let want = if len >= 28 {
            error(ROUTER, POD_B, 11, 0, [0; 4], &sent[..len])
        } else {
            // Too short to hold the identifier: only the addresses change.
            let mut q = left[..len].to_vec();
            q[12..16].copy_from_slice(&POD_B);
            let mut h = Ipv4Header::from_slice(&q[..20]).unwrap().0;
            h.header_checksum = h.calc_header_checksum();
            q[..20].copy_from_slice(&h.to_bytes());
            error(ROUTER, POD_B, 11, 0, [0; 4], &q)
        };
        assert_rewritten(&mut ct, got, Origin::Uplink, &want);
    }
}

#[test]
fn a_quoted_ip_header_with_options_is_walked_past() {
    // A pod packet with 4 bytes of IP options (a quoted header of 24
    // bytes): the ports after it must be found and restored.
    let mut ct = ct();
    let payload = b"opt";
    let mut h =
        Ipv4Header::new((8 + payload.len()) as u16, 64, IpNumber::UDP, POD, OUTSIDE).unwrap();
    h.options = Ipv4Options::try_from(&[1u8, 1, 1, 0][..]).unwrap();
    h.set_payload_len(8 + payload.len()).unwrap();
    h.header_checksum = h.calc_header_checksum();
    let mut sent = h.to_bytes().to_vec();
    let u = etherparse::UdpHeader::with_ipv4_checksum(40000, 53, &h, payload).unwrap();
    sent.extend_from_slice(&u.to_bytes());
    sent.extend_from_slice(payload);
    let left = out(&mut ct, &sent);
    let got = error(ROUTER, NODE, 3, 3, [0; 4], &left);
    let want = error(ROUTER, POD, 3, 3, [0; 4], &sent);
    assert_rewritten(&mut ct, got, Origin::Uplink, &want);
}

#[test]
fn an_error_from_the_pod_about_a_reply_leaves_as_the_node() {
    // The pod refuses a reply (port unreachable): its error quotes the
    // reply as the pod saw it and must leave quoting it as the outside
    // sent it, from the node's address.
    let mut ct = ct();
    let sent = udp(POD, 40000, OUTSIDE, 53, b"query");
    let left = out(&mut ct, &sent);
    let port = u16::from_be_bytes([left[20], left[21]]);
    let reply_wire = udp(OUTSIDE, 53, NODE, port, b"answer!");
    let mut reply_pod = reply_wire.clone();
    accept(ct.process(now(), &mut reply_pod, Origin::Uplink));
    assert_eq!(reply_pod, udp(OUTSIDE, 53, POD, 40000, b"answer!"));
    for len in [reply_pod.len(), 28] {
        let got = error(POD, OUTSIDE, 3, 3, [0; 4], &reply_pod[..len]);
        let want = error(NODE, OUTSIDE, 3, 3, [0; 4], &reply_wire[..len]);
        assert_rewritten(&mut ct, got, Origin::Pod, &want);
    }
}

/// A payload word for which `build(word)`'s checksum field (at `at`) is
/// `want`, found by trying them all.
fn word_for(want: u16, at: usize, build: impl Fn(u16) -> Vec<u8>) -> u16 {
    (0..=u16::MAX)
        .find(|&w| build(w)[at..at + 2] == want.to_be_bytes())
        .unwrap_or_else(|| panic!("no payload gives checksum {want:#06x}"))
}

#[test]
fn checksums_that_come_to_zero_keep_their_meaning() {
    // UDP: a computed zero is sent as 0xffff (0 means "no checksum"). A
    // pod datagram whose translated checksum computes to zero must leave
    // with 0xffff: learn the translated port, then pick the payload.
    let port = {
        let left = out(&mut ct(), &udp(POD, 40000, OUTSIDE, 53, &[0, 0]));
        u16::from_be_bytes([left[20], left[21]])
    };
    let translated = |w: u16| udp(NODE, port, OUTSIDE, 53, &w.to_be_bytes());
    let w = word_for(0xffff, 26, translated);
    let left = out(&mut ct(), &udp(POD, 40000, OUTSIDE, 53, &w.to_be_bytes()));
    assert_eq!(left, translated(w), "sent as 0xffff, not as 'no checksum'");

    // Quoted in an ICMP error: a TCP checksum that is 0x0000 in the pod's
    // packet comes back as 0x0000 (not 0xffff, which only UDP uses), and a
    // UDP one of 0xffff as 0xffff (not 0, which would say "none").
    let tcp_with = |w: u16| tcp_syn(POD, 40000, OUTSIDE, 443, &w.to_be_bytes());
    let sent = tcp_with(word_for(0x0000, 36, tcp_with));
    let mut ct = ct();
    let left = out(&mut ct, &sent);
    let got = error(ROUTER, NODE, 3, 4, [0, 0, 0x05, 0x78], &left);
    let want = error(ROUTER, POD, 3, 4, [0, 0, 0x05, 0x78], &sent);
    assert_rewritten(&mut ct, got, Origin::Uplink, &want);
    let udp_with = |w: u16| udp(POD, 40001, OUTSIDE, 53, &w.to_be_bytes());
    let sent = udp_with(word_for(0xffff, 26, udp_with));
    let left = out(&mut ct, &sent);
    let got = error(ROUTER, NODE, 3, 3, [0; 4], &left);
    let want = error(ROUTER, POD, 3, 3, [0; 4], &sent);
    assert_rewritten(&mut ct, got, Origin::Uplink, &want);
}

#[test]
fn icmp_that_is_neither_echo_nor_error_is_tracked_not_refused() {
    // A timestamp request (type 13): no identifier to translate, not an
    // error with a quote; it is tracked as "other", never malformed.
    let mut v = Vec::new();
    PacketBuilder::ipv4(POD, OUTSIDE, 64)
        .icmpv4_raw(13, 0, [0, 1, 0, 2])
        .write(&mut v, &[0; 12])
        .unwrap();
    let a = accept(ct().process(now(), &mut v, Origin::Pod));
    assert_eq!(a.state, CtState::New);
}
