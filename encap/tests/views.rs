//! The wire views read and write every field as etherparse (the reference
//! here) builds it: getters against known packets, setters and checksum
//! updates checked by a full verification afterwards, IPv6 checksums
//! accepted when right and refused when one byte is wrong. Mutation testing
//! found these accessors unpinned: the pipeline uses few of them, but
//! every one is public API and several feed conntrack and the ICMP paths.

use std::net::{Ipv4Addr, Ipv6Addr};

use encap::icmp::IcmpPacket;
use encap::ipv4::Ipv4Packet;
use encap::ipv6::Ipv6Packet;
use encap::tcp::{TcpFlags, TcpPacket};
use encap::udp::UdpPacket;
use etherparse::PacketBuilder;

const S6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const D6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

#[test]
fn ipv4_fields_read_as_written() {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 33)
        .udp(1, 2)
        .write(&mut v, b"abc")
        .unwrap();
    v[4..6].copy_from_slice(&0x1234u16.to_be_bytes()); // ident
    v[6] = 0x40; // DF, offset 0
    let mut ip = Ipv4Packet::new_unchecked(&mut v[..]);
    ip.fill_checksum();
    assert_eq!(ip.ident(), 0x1234);
    assert!(ip.dont_frag() && !ip.more_frags() && !ip.is_fragment());
    assert_eq!(ip.ttl(), 33);
    ip.set_src_addr(Ipv4Addr::new(192, 0, 2, 9));
    ip.set_dst_addr(Ipv4Addr::new(198, 51, 100, 9));
    ip.set_ttl(7);
    assert!(ip.verify_checksum(), "setters keep the checksum right");
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.ttl()),
        (
            Ipv4Addr::new(192, 0, 2, 9),
            Ipv4Addr::new(198, 51, 100, 9),
            7
        )
    );
    // A later fragment: offset 185 * 8 bytes, MF clear, DF clear.
    v[6..8].copy_from_slice(&185u16.to_be_bytes());
    let ip = Ipv4Packet::new_unchecked(&v[..]);
    assert!(!ip.dont_frag());
    assert_eq!(ip.frag_offset(), 185 * 8, "in bytes");
    assert!(ip.is_fragment());
    v[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF, offset 0
    assert!(Ipv4Packet::new_unchecked(&v[..]).is_fragment());
    // A header whose IHL points past the buffer is refused; one that ends
    // exactly at it is taken.
    let h = &v[..20];
    assert!(Ipv4Packet::new_lax(h).is_ok());
    assert!(Ipv4Packet::new_checked(&v[..19]).is_err());
}

#[test]
fn tcp_fields_and_checksums_v4_and_v6() {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 443, 0x0102_0304, 4321)
        .ack(0x0506_0708)
        .urg(99)
        .write(&mut v, b"payload")
        .unwrap();
    let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let mut t = TcpPacket::new_checked(&mut v[20..]).unwrap();
    assert_eq!(
        (t.seq(), t.ack(), t.window(), t.urgent()),
        (0x0102_0304, 0x0506_0708, 4321, 99)
    );
    assert_eq!(t.flags(), TcpFlags::ACK | TcpFlags::URG);
    assert!(t.verify_checksum_v4(s, d));
    t.set_src_port(1234);
    t.set_dst_port(80);
    assert_eq!((t.src_port(), t.dst_port()), (1234, 80));
    assert!(
        t.verify_checksum_v4(s, d),
        "port setters update the checksum"
    );
    // IPv6.
    let mut v = Vec::new();
    PacketBuilder::ipv6(S6.octets(), D6.octets(), 64)
        .tcp(40000, 443, 1, 1000)
        .write(&mut v, b"six")
        .unwrap();
    let mut t = TcpPacket::new_checked(&mut v[40..]).unwrap();
    assert!(t.verify_checksum_v6(S6, D6));
    assert!(!t.verify_checksum_v6(S6, S6), "wrong pseudo-header");
    let n6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99);
    t.update_addr_v6(S6, n6);
    assert!(
        t.verify_checksum_v6(n6, D6),
        "address update keeps it right"
    );
    let last = v.len() - 1;
    v[last] ^= 1;
    assert!(
        !TcpPacket::new_checked(&v[40..])
            .unwrap()
            .verify_checksum_v6(n6, D6)
    );
    assert_eq!(
        (TcpFlags::SYN | TcpFlags::SYN).0,
        TcpFlags::SYN.0,
        "flags combine by or"
    );
}

#[test]
fn udp_ports_and_checksums_v4_and_v6() {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(5353, 53)
        .write(&mut v, b"q")
        .unwrap();
    let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let mut u = UdpPacket::new_checked(&mut v[20..]).unwrap();
    u.set_src_port(1000);
    u.set_dst_port(2000);
    assert_eq!((u.src_port(), u.dst_port()), (1000, 2000));
    assert!(u.verify_checksum_v4(s, d));
    let mut v = Vec::new();
    PacketBuilder::ipv6(S6.octets(), D6.octets(), 64)
        .udp(5353, 53)
        .write(&mut v, b"q6")
        .unwrap();
    let mut u = UdpPacket::new_checked(&mut v[40..]).unwrap();
    assert!(u.verify_checksum_v6(S6, D6));
    assert!(!u.verify_checksum_v6(D6, S6.octets().map(|b| b ^ 1).into()));
    let n6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x77);
    u.update_addr_v6(D6, n6);
    assert!(u.verify_checksum_v6(S6, n6));
    // RFC 8200: a zero UDP checksum over IPv6 is invalid, not "none".
    v[46..48].copy_from_slice(&[0, 0]);
    assert!(
        !UdpPacket::new_checked(&v[40..])
            .unwrap()
            .verify_checksum_v6(S6, n6)
    );
}

#[test]
fn icmp_fields_v4_and_v6() {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(0x1111, 0x2222)
        .write(&mut v, b"ping")
        .unwrap();
    let m = IcmpPacket::new_checked_v4(&v[20..]).unwrap();
    assert_eq!(
        (m.echo_ident(), m.echo_seq(), m.code()),
        (0x1111, 0x2222, 0)
    );
    assert!(m.verify_checksum_v4() && m.is_echo() && !m.is_error());
    let mut bad = v.clone();
    bad[27] ^= 1;
    assert!(
        !IcmpPacket::new_checked_v4(&bad[20..])
            .unwrap()
            .verify_checksum_v4()
    );
    let mut u = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_raw(3, 13, [0; 4])
        .write(&mut u, &v[..28])
        .unwrap();
    let m = IcmpPacket::new_checked_v4(&u[20..]).unwrap();
    assert_eq!(m.code(), 13);
    assert!(m.is_error());
    // ICMPv6: an error (type 1..=127) quoting a TCP packet, and an echo.
    let mut quoted = Vec::new();
    PacketBuilder::ipv6(S6.octets(), D6.octets(), 64)
        .tcp(40000, 443, 1, 1000)
        .write(&mut quoted, b"")
        .unwrap();
    let mut e = Vec::new();
    PacketBuilder::ipv6(D6.octets(), S6.octets(), 64)
        .icmpv6_raw(1, 4, [0; 4])
        .write(&mut e, &quoted)
        .unwrap();
    let m = IcmpPacket::new_checked_v6(&e[40..]).unwrap();
    assert!(m.is_error() && !m.is_echo());
    assert!(m.verify_checksum_v6(D6, S6));
    assert!(!m.verify_checksum_v6(D6, D6), "wrong pseudo-header");
    let q = m.quoted().unwrap();
    assert_eq!((q.ip_offset, q.l4_offset, q.protocol), (8, 48, 6));
    assert_eq!(q.src, std::net::IpAddr::V6(S6));
    let mut echo6 = Vec::new();
    PacketBuilder::ipv6(S6.octets(), D6.octets(), 64)
        .icmpv6_echo_request(7, 8)
        .write(&mut echo6, b"x")
        .unwrap();
    let m = IcmpPacket::new_checked_v6(&echo6[40..]).unwrap();
    assert!(m.is_echo() && !m.is_error());
    assert_eq!((m.echo_ident(), m.echo_seq()), (7, 8));
    // Type 128 (echo request) is informational, 127 the last error type.
    let mut t127 = echo6.clone();
    t127[40] = 127;
    assert!(IcmpPacket::new_checked_v6(&t127[40..]).unwrap().is_error());
}

#[test]
fn ipv6_fields_and_setters() {
    let mut v = Vec::new();
    PacketBuilder::ipv6(S6.octets(), D6.octets(), 42)
        .udp(1, 2)
        .write(&mut v, b"abcd")
        .unwrap();
    let mut p = Ipv6Packet::new_checked(&mut v[..]).unwrap();
    assert_eq!(p.hop_limit(), 42);
    assert_eq!(p.payload().len(), 12);
    assert_eq!(&p.payload()[8..], b"abcd");
    p.set_hop_limit(9);
    p.set_ecn(encap::Ecn::Ce);
    assert_eq!(p.hop_limit(), 9);
    assert_eq!(p.ecn(), encap::Ecn::Ce);
    assert_eq!(p.traffic_class() & 0xfc, 0, "DSCP untouched");
    // The fixed header alone is enough for a lax view; one byte less is not.
    assert!(Ipv6Packet::new_lax(&v[..40]).is_ok());
    assert!(Ipv6Packet::new_lax(&v[..39]).is_err());
}
