//! Differential test of the rewrites NAT will make: for random packets
//! (built by etherparse, which computes its checksums independently), rewrite
//! addresses, ports and echo identifiers through the views' incremental
//! setters, and compare every checksum bit for bit with a full recomputation.

use std::net::Ipv4Addr;

use encap::icmp::IcmpPacket;
use encap::ipv4::Ipv4Packet;
use encap::tcp::TcpPacket;
use encap::udp::UdpPacket;
use etherparse::PacketBuilder;
use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};

/// A random IPv4 packet (no Ethernet header): TCP, UDP or ICMP echo.
fn random_ipv4(rng: &mut StdRng) -> (Vec<u8>, u8) {
    let mut payload = vec![0u8; rng.random_range(0..200)];
    rng.fill_bytes(&mut payload);
    let (src, dst): ([u8; 4], [u8; 4]) = (rng.random(), rng.random());
    let ip = PacketBuilder::ipv4(src, dst, rng.random_range(1..=255));
    let mut out = Vec::new();
    let proto = [6u8, 17, 1][rng.random_range(0..3)];
    match proto {
        6 => ip
            .tcp(rng.random(), rng.random(), rng.random(), rng.random())
            .write(&mut out, &payload),
        17 => ip.udp(rng.random(), rng.random()).write(&mut out, &payload),
        _ => ip
            .icmpv4_echo_request(rng.random(), rng.random())
            .write(&mut out, &payload),
    }
    .unwrap();
    (out, proto)
}

#[test]
fn incremental_rewrites_equal_full_recompute() {
    let mut rng = StdRng::seed_from_u64(41);
    let mut udp_zero_seen = 0;
    for i in 0..20_000 {
        let (mut pkt, proto) = random_ipv4(&mut rng);
        // Sometimes a UDP packet arrives without a checksum (allowed on IPv4).
        let udp_no_checksum = proto == 17 && rng.random_bool(0.2);
        let hl = Ipv4Packet::new_checked(&pkt[..]).unwrap().header_len();
        if udp_no_checksum {
            UdpPacket::new_checked(&mut pkt[hl..])
                .unwrap()
                .set_checksum(0);
        }
        let new_src = Ipv4Addr::from_bits(rng.random());
        let new_dst = Ipv4Addr::from_bits(rng.random());
        let new_port: u16 = rng.random();
        let new_ttl: u8 = rng.random();

        // SNAT-style rewrite, incrementally.
        let mut ip = Ipv4Packet::new_checked(&mut pkt[..]).unwrap();
        let (old_src, old_dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(new_src);
        ip.set_dst_addr(new_dst);
        ip.set_ttl(new_ttl);
        let l4 = &mut pkt[hl..];
        match proto {
            6 => {
                let mut t = TcpPacket::new_checked(&mut *l4).unwrap();
                t.update_addr_v4(old_src, new_src);
                t.update_addr_v4(old_dst, new_dst);
                t.set_src_port(new_port);
            }
            17 => {
                let mut u = UdpPacket::new_checked(&mut *l4).unwrap();
                u.update_addr_v4(old_src, new_src);
                u.update_addr_v4(old_dst, new_dst);
                u.set_dst_port(new_port);
            }
            _ => IcmpPacket::new_checked_v4(&mut *l4)
                .unwrap()
                .set_echo_ident(new_port),
        }

        // Full recomputation on a copy, compared bit for bit.
        let mut full = pkt.clone();
        Ipv4Packet::new_checked(&mut full[..])
            .unwrap()
            .fill_checksum();
        assert_eq!(
            pkt[10..12],
            full[10..12],
            "packet {i}: IPv4 header checksum"
        );
        let l4_full = &mut full[hl..];
        match proto {
            6 => {
                TcpPacket::new_checked(&mut *l4_full)
                    .unwrap()
                    .fill_checksum_v4(new_src, new_dst);
                let t = TcpPacket::new_checked(&pkt[hl..]).unwrap();
                assert_eq!(
                    t.checksum(),
                    TcpPacket::new_checked(&*l4_full).unwrap().checksum(),
                    "packet {i}: TCP"
                );
                assert!(t.verify_checksum_v4(new_src, new_dst));
            }
            17 => {
                let u = UdpPacket::new_checked(&pkt[hl..]).unwrap();
                if udp_no_checksum {
                    assert_eq!(
                        u.checksum(),
                        0,
                        "packet {i}: a zero UDP checksum stays zero"
                    );
                    udp_zero_seen += 1;
                } else {
                    UdpPacket::new_checked(&mut *l4_full)
                        .unwrap()
                        .fill_checksum_v4(new_src, new_dst);
                    let want = UdpPacket::new_checked(&*l4_full).unwrap().checksum();
                    assert_eq!(u.checksum(), want, "packet {i}: UDP");
                    assert_ne!(
                        u.checksum(),
                        0,
                        "a computed UDP checksum is never sent as zero"
                    );
                }
                assert!(u.verify_checksum_v4(new_src, new_dst));
            }
            _ => {
                IcmpPacket::new_checked_v4(&mut *l4_full)
                    .unwrap()
                    .fill_checksum_v4();
                let m = IcmpPacket::new_checked_v4(&pkt[hl..]).unwrap();
                assert_eq!(
                    m.checksum(),
                    IcmpPacket::new_checked_v4(&*l4_full).unwrap().checksum(),
                    "packet {i}: ICMP"
                );
                assert!(m.verify_checksum_v4());
            }
        }
    }
    assert!(udp_zero_seen > 100);
}
