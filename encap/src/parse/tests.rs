//! Parser tests, including a differential test against etherparse.

use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::*;
use crate::testutil::{random_frame, udp4};
use crate::{ErrorKind, ethernet::ethertype};

/// Our parser and etherparse's agree on addresses, protocol, ports and the
/// transport offset for thousands of random valid frames.
#[test]
fn agrees_with_etherparse_on_random_frames() {
    let mut rng = StdRng::seed_from_u64(11);
    for i in 0..5_000 {
        let f = random_frame(&mut rng, 300);
        let ours = parse_frame(&f).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        let theirs = SlicedPacket::from_ethernet(&f).unwrap();
        let ip = ours.ip.unwrap();
        let (src, dst, proto): (IpAddr, IpAddr, u8) = match theirs.net.unwrap() {
            NetSlice::Ipv4(v) => (
                v.header().source_addr().into(),
                v.header().destination_addr().into(),
                v.payload().ip_number.0,
            ),
            NetSlice::Ipv6(v) => (
                v.header().source_addr().into(),
                v.header().destination_addr().into(),
                v.payload().ip_number.0,
            ),
            NetSlice::Arp(_) => unreachable!(),
        };
        assert_eq!(
            (ip.src, ip.dst, ip.protocol),
            (src, dst, proto),
            "frame {i}"
        );
        match (theirs.transport.unwrap(), ip.l4) {
            (
                TransportSlice::Tcp(t),
                L4::Tcp {
                    src_port, dst_port, ..
                },
            ) => {
                assert_eq!(
                    (t.source_port(), t.destination_port()),
                    (src_port, dst_port)
                );
                assert_eq!(f.len() - t.slice().len(), ip.l4_offset);
            }
            (TransportSlice::Udp(u), L4::Udp { src_port, dst_port }) => {
                assert_eq!(
                    (u.source_port(), u.destination_port()),
                    (src_port, dst_port)
                );
                assert_eq!(f.len() - u.slice().len(), ip.l4_offset);
            }
            (
                TransportSlice::Icmpv4(m),
                L4::Icmp {
                    msg_type, echo_id, ..
                },
            ) => {
                assert_eq!(m.type_u8(), msg_type);
                assert_eq!(
                    echo_id,
                    Some(u16::from_be_bytes([m.slice()[4], m.slice()[5]]))
                );
            }
            (
                TransportSlice::Icmpv6(m),
                L4::Icmp {
                    msg_type, echo_id, ..
                },
            ) => {
                assert_eq!(m.type_u8(), msg_type);
                assert_eq!(
                    echo_id,
                    Some(u16::from_be_bytes([m.slice()[4], m.slice()[5]]))
                );
            }
            (t, l) => panic!("frame {i}: transport mismatch {t:?} vs {l:?}"),
        }
        assert_eq!(ip.end, f.len());
    }
}

#[test]
fn every_truncation_of_a_valid_frame_is_an_error_not_a_panic() {
    let mut rng = StdRng::seed_from_u64(12);
    for _ in 0..200 {
        let f = random_frame(&mut rng, 40);
        for cut in 0..f.len() {
            assert!(
                parse_frame(&f[..cut]).is_err(),
                "cut at {cut} of {}",
                f.len()
            );
        }
    }
}

#[test]
fn non_ip_frames_parse_without_ip() {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    f.extend_from_slice(&[0; 28]);
    let p = parse_frame(&f).unwrap();
    assert_eq!(
        (p.ethertype, p.ip, p.flow_key()),
        (ethertype::ARP, None, None)
    );
}

#[test]
fn bad_ipv4_header_checksum_is_reported_at_its_offset() {
    let mut f = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"x");
    f[14 + 10] ^= 0xff;
    let e = parse_frame(&f).unwrap_err();
    assert_eq!((e.layer, e.offset), (Layer::Ipv4, 24));
    assert!(matches!(e.kind, ErrorKind::BadChecksum { .. }));
}

#[test]
fn errors_in_l4_carry_frame_offsets() {
    let mut f = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"hello");
    // UDP length 7 (< 8): the field sits at 14 + 20 + 4.
    f[38] = 0;
    f[39] = 7;
    let e = parse_frame(&f).unwrap_err();
    assert_eq!((e.layer, e.offset), (Layer::Udp, 38));
    assert_eq!(
        e.kind,
        ErrorKind::BadField {
            field: "length",
            value: 7
        }
    );
}

#[test]
fn fragments() {
    let mut f = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 2000, &[7; 64]);
    // First fragment: MF set; the UDP length describes more than is here.
    let mut ip = Ipv4Packet::new_checked(&mut f[14..]).unwrap();
    let fl = 0x2000u16;
    ip.payload_mut()[4..6].copy_from_slice(&500u16.to_be_bytes());
    let b = ip.into_inner();
    b[6..8].copy_from_slice(&fl.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
    let p = parse_frame(&f).unwrap();
    let ip = p.ip.unwrap();
    assert_eq!(ip.fragment, Fragment::First);
    assert_eq!(
        ip.l4,
        L4::Udp {
            src_port: 1000,
            dst_port: 2000
        }
    );
    // Later fragment: no transport header read, ports zero in the key.
    f[14 + 6..14 + 8].copy_from_slice(&0x0010u16.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
    let p = parse_frame(&f).unwrap();
    assert_eq!(p.ip.unwrap().l4, L4::None);
    assert_eq!(p.flow_key().unwrap().src_port, 0);
}

#[test]
fn flow_key_of_icmp_echo_uses_the_identifier_both_ways() {
    let mut rng = StdRng::seed_from_u64(13);
    loop {
        let f = random_frame(&mut rng, 8);
        let p = parse_frame(&f).unwrap();
        if let Some(IpInfo {
            l4: L4::Icmp {
                echo_id: Some(id), ..
            },
            ..
        }) = p.ip
        {
            let k = p.flow_key().unwrap();
            assert_eq!((k.src_port, k.dst_port), (id, id));
            break;
        }
        let _: u8 = rng.random();
    }
}
