//! Edges of the wire layer that mutation testing found unpinned: frames
//! exactly as long as their headers, MAC address predicates and text,
//! the flow hash's spread over every field (a weak hash still "works", so
//! only a distribution test can tell), port range bounds, and the IPv6
//! pseudo-header sum.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use encap::MacAddr;
use encap::checksum::{Checksum, pseudo_header_v6};
use encap::ethernet::EthernetFrame;
use encap::flow::{FlowHasher, FlowKey, PortRange};

#[test]
fn a_frame_of_just_its_headers_parses_with_an_empty_payload() {
    let mut plain = [0u8; 14];
    plain[12..14].copy_from_slice(&[0x08, 0x00]);
    let f = EthernetFrame::new_checked(&plain[..]).unwrap();
    assert!(f.payload().is_empty());
    assert!(EthernetFrame::new_checked(&plain[..13]).is_err());
    // One VLAN tag, nothing after it: 18 bytes.
    let mut tagged = [0u8; 18];
    tagged[12..14].copy_from_slice(&[0x81, 0x00]);
    tagged[16..18].copy_from_slice(&[0x08, 0x00]);
    let f = EthernetFrame::new_checked(&tagged[..]).unwrap();
    assert!(f.payload().is_empty());
    assert!(EthernetFrame::new_checked(&tagged[..17]).is_err());
}

#[test]
fn the_payload_is_writable_in_place() {
    let mut b = [0u8; 20];
    b[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut f = EthernetFrame::new_checked(&mut b[..]).unwrap();
    assert_eq!(f.payload_mut().len(), 6);
    f.payload_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6]);
    assert_eq!(b[14..], [1, 2, 3, 4, 5, 6]);
}

#[test]
fn mac_addresses_know_their_group_bit_and_print_as_text() {
    let m = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
    assert!(!m.is_multicast());
    assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
    assert!(MacAddr::BROADCAST.is_multicast());
    assert_eq!(format!("{m:?}"), "02:42:ac:11:00:02");
    assert_eq!(m.to_string(), "02:42:ac:11:00:02");
    let e = "02:42".parse::<MacAddr>().unwrap_err();
    assert!(
        e.to_string().contains("`02:42` is not a MAC address"),
        "{e}"
    );
}

fn key(src: u32, dst: u32, sp: u16, dp: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: IpAddr::V4(Ipv4Addr::from_bits(src)),
        dst: IpAddr::V4(Ipv4Addr::from_bits(dst)),
        protocol: proto,
        src_port: sp,
        dst_port: dp,
    }
}

/// Distinct values of `f(i) % 4096` over 4096 inputs: ~2590 if uniform.
fn spread(f: impl Fn(u32) -> u32) -> usize {
    (0..4096).map(|i| f(i) % 4096).collect::<HashSet<_>>().len()
}

#[test]
fn the_flow_hash_spreads_every_field_and_keeps_its_symmetry() {
    // VXLAN's outer source port comes from this hash: receivers spread
    // flows over their queues by it.
    for h in [FlowHasher::new(7), FlowHasher::symmetric(7)] {
        let fields: [(&str, &dyn Fn(u32) -> FlowKey); 5] = [
            ("src", &|i| key(0x0af4_0000 + i, 0xc633_6407, 40000, 53, 17)),
            ("dst", &|i| key(0x0af4_0102, 0xc633_0000 + i, 40000, 53, 17)),
            ("sport", &|i| {
                key(0x0af4_0102, 0xc633_6407, i as u16, 53, 17)
            }),
            ("dport", &|i| {
                key(0x0af4_0102, 0xc633_6407, 40000, i as u16, 17)
            }),
            ("proto", &|i| {
                key(0x0af4_0102, 0xc633_6407, (i >> 8) as u16, 53, i as u8)
            }),
        ];
        for (name, k) in fields {
            let n = spread(|i| h.hash(&k(i)));
            assert!(n > 2300, "{name}: {n} of 4096 distinct ({h:?})");
            // The raw-field entry point agrees with the key one.
            let f = k(5);
            let (IpAddr::V4(s), IpAddr::V4(d)) = (f.src, f.dst) else {
                unreachable!()
            };
            assert_eq!(
                h.hash_v4(s.to_bits(), d.to_bits(), f.protocol, f.src_port, f.dst_port),
                h.hash(&f)
            );
        }
    }
    assert!(FlowHasher::symmetric(1).is_symmetric());
    assert!(!FlowHasher::new(1).is_symmetric());
    // IPv6: every field spreads, and the symmetric hasher is symmetric.
    let v6 = |i: u32, sp: u16| FlowKey {
        src: IpAddr::V6(Ipv6Addr::from_bits(0xfd00_u128 << 112 | u128::from(i))),
        dst: IpAddr::V6(Ipv6Addr::from_bits(0xfd00_u128 << 112 | 0xffff_0000)),
        protocol: 6,
        src_port: sp,
        dst_port: 443,
    };
    for h in [FlowHasher::new(3), FlowHasher::symmetric(3)] {
        assert!(spread(|i| h.hash(&v6(i, 1000))) > 2300, "v6 address");
        assert!(spread(|i| h.hash(&v6(1, i as u16))) > 2300, "v6 port");
    }
    let s = FlowHasher::symmetric(3);
    let k = v6(9, 1000);
    let r = FlowKey {
        src: k.dst,
        dst: k.src,
        src_port: k.dst_port,
        dst_port: k.src_port,
        ..k
    };
    assert_eq!(s.hash(&k), s.hash(&r));
    assert_ne!(FlowHasher::new(3).hash(&k), FlowHasher::new(3).hash(&r));
    // Raw bytes (ARP): each 8-byte word and the tail count.
    let hb = FlowHasher::new(1);
    assert!(spread(|i| hb.hash_bytes(&u64::from(i).to_le_bytes())) > 2300);
    assert!(spread(|i| hb.hash_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, i as u8, (i >> 8) as u8])) > 2300);
}

#[test]
fn a_port_range_holds_exactly_its_ends_and_what_lies_between() {
    let r = PortRange::new(32768, 60999).unwrap();
    for (p, inside) in [
        (32767, false),
        (32768, true),
        (45000, true),
        (60999, true),
        (61000, false),
    ] {
        assert_eq!(r.contains(p), inside, "{p}");
    }
}

#[test]
fn the_ipv6_pseudo_header_sums_its_fields() {
    let (s, d) = (
        "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
        "2001:db8::2".parse::<Ipv6Addr>().unwrap(),
    );
    let mut want = Checksum::new();
    want.add_bytes(&s.octets());
    want.add_bytes(&d.octets());
    want.add_bytes(&100u32.to_be_bytes());
    want.add_bytes(&[0, 0, 0, 17]);
    assert_eq!(pseudo_header_v6(s, d, 17, 100).sum(), want.sum());
    assert_ne!(pseudo_header_v6(s, d, 17, 100).sum(), 0);
}

#[test]
fn each_decap_drop_has_its_own_counter_name() {
    // The names are the Prometheus label values operators alert on.
    use encap::vxlan::DecapDrop;
    let names: Vec<&str> = DecapDrop::ALL.iter().map(|d| d.name()).collect();
    assert!(
        names.iter().all(|n| n.starts_with("vxlan_") && n.len() > 6),
        "{names:?}"
    );
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len());
    assert_eq!(DecapDrop::Malformed.name(), "vxlan_malformed");
    assert_eq!(DecapDrop::BadIpChecksum.name(), "vxlan_bad_ip_checksum");
}

#[test]
fn wire_errors_say_what_is_wrong_and_with_which_value() {
    use encap::vxlan::{DecapError, EncapError, Vni};
    let e = DecapError::NotUdp { protocol: 6 };
    assert_eq!(e.to_string(), "vxlan decap: outer protocol 6 is not UDP");
    let e = DecapError::BadIpChecksum { found: 0x1234 };
    assert!(e.to_string().contains("0x1234"), "{e}");
    let e = EncapError::Headroom {
        needed: 50,
        available: 10,
    };
    assert_eq!(
        e.to_string(),
        "vxlan encap: needs 50 bytes of headroom, has 10"
    );
    assert_eq!(Vni::new(4096).unwrap().to_string(), "4096");
}
