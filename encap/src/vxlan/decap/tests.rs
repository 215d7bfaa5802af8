//! Decapsulation tests: one per drop reason, the RFC 6040 table, encap ->
//! decap identity, and the outer source port's stability and spread.

use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::*;
use crate::flow::{FlowHasher, FlowKey, PortRange};
use crate::testutil::{endpoint, random_frame, udp4};
use crate::vxlan::{EncapTemplate, OVERHEAD, encapsulate};

/// Encapsulates `inner` with the default config; returns the outer frame.
fn encap(inner: &[u8], cfg: &VxlanConfig) -> Vec<u8> {
    let mut buf = vec![0u8; OVERHEAD];
    buf.extend_from_slice(inner);
    let end = buf.len();
    let r = encapsulate(
        &mut buf,
        OVERHEAD..end,
        &EncapTemplate::new(cfg, &endpoint()),
    )
    .unwrap();
    buf[r].to_vec()
}

fn sample_outer() -> Vec<u8> {
    encap(
        &udp4([10, 244, 1, 2], [10, 244, 2, 3], 40000, 80, b"payload"),
        &VxlanConfig::default(),
    )
}

/// Offsets in an untagged outer frame.
const IP: usize = 14;
const UDP: usize = 34;
const VX: usize = 42;

fn refix_ip(f: &mut [u8]) {
    Ipv4Packet::new_unchecked(&mut f[IP..]).fill_checksum();
}

fn decap_err(f: &mut [u8]) -> DecapError {
    decapsulate(f, &VxlanConfig::default()).unwrap_err()
}

#[test]
fn decap_returns_vni_outer_addresses_and_inner() {
    let inner = udp4([10, 244, 1, 2], [10, 244, 2, 3], 40000, 80, b"payload");
    let mut f = encap(&inner, &VxlanConfig::default());
    let d = decapsulate(&mut f, &VxlanConfig::default()).unwrap();
    assert_eq!(d.vni.get(), 1);
    assert_eq!(d.outer_src, endpoint().local_ip);
    assert_eq!(d.outer_dst, endpoint().remote_ip);
    assert_eq!(d.inner, OVERHEAD..f.len());
    assert_eq!(d.inner_frame(&f), &inner[..]);
}

#[test]
fn each_drop_reason() {
    let base = sample_outer();
    type Case = (&'static str, fn(&mut Vec<u8>), DecapDrop);
    let cases: [Case; 13] = [
        (
            "truncated udp",
            |f| f.truncate(UDP + 4),
            DecapDrop::Malformed,
        ),
        (
            "arp",
            |f| f[12..14].copy_from_slice(&[0x08, 0x06]),
            DecapDrop::NotIpv4,
        ),
        ("ip checksum", |f| f[IP + 10] ^= 1, DecapDrop::BadIpChecksum),
        (
            "fragment",
            |f| {
                f[IP + 6] = 0x20;
                refix_ip(f)
            },
            DecapDrop::Fragment,
        ),
        (
            "tcp",
            |f| {
                f[IP + 9] = 6;
                refix_ip(f)
            },
            DecapDrop::NotUdp,
        ),
        (
            "port 4789",
            |f| f[UDP + 2..UDP + 4].copy_from_slice(&4789u16.to_be_bytes()),
            DecapDrop::WrongPort,
        ),
        (
            "udp length",
            |f| {
                let l = u16::from_be_bytes([f[UDP + 4], f[UDP + 5]]) - 1;
                f[UDP + 4..UDP + 6].copy_from_slice(&l.to_be_bytes())
            },
            DecapDrop::UdpLength,
        ),
        (
            "udp checksum",
            |f| f[UDP + 6] = 0x12,
            DecapDrop::BadUdpChecksum,
        ),
        ("no I flag", |f| f[VX] = 0, DecapDrop::NoIFlag),
        ("reserved flag", |f| f[VX] |= 0x80, DecapDrop::ReservedBits),
        ("vni 2", |f| f[VX + 6] = 2, DecapDrop::UnknownVni),
        (
            "inner too short",
            |f| {
                f.truncate(OVERHEAD + 13);
                let ip_len = (f.len() - IP) as u16;
                f[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
                refix_ip(f);
                f[UDP + 4..UDP + 6].copy_from_slice(&(ip_len - 20).to_be_bytes())
            },
            DecapDrop::InnerTooShort,
        ),
        (
            "ce on not-ect",
            |f| {
                f[IP + 1] = 0x03;
                refix_ip(f)
            },
            DecapDrop::CeOnNotEct,
        ),
    ];
    let mut seen = Vec::new();
    for (name, corrupt, want) in cases {
        let mut f = base.clone();
        corrupt(&mut f);
        let before = f.clone();
        assert_eq!(
            decapsulate_fast(&f, &VxlanConfig::default()),
            None,
            "{name}: fast path declines"
        );
        let e = decap_err(&mut f);
        assert_eq!(e.drop_kind(), want, "{name}: {e}");
        assert_eq!(f, before, "{name}: a dropped frame is left untouched");
        seen.push(want);
    }
    // Every declared reason is reachable (a counter never incremented is a defect).
    for k in DecapDrop::ALL {
        assert!(seen.contains(&k), "no test reaches {}", k.name());
        assert_eq!(DecapDrop::ALL[k as usize], k);
    }
}

#[test]
fn reserved_bits_can_be_ignored_per_rfc() {
    let mut f = sample_outer();
    f[VX] |= 0x80;
    f[VX + 7] = 0xff;
    let cfg = VxlanConfig {
        reserved_bits: ReservedBits::Ignore,
        ..VxlanConfig::default()
    };
    assert!(decapsulate(&mut f, &cfg).is_ok());
}

#[test]
fn nonzero_udp_checksum_is_verified_and_accepted() {
    let mut f = sample_outer();
    let (s, d) = (endpoint().local_ip, endpoint().remote_ip);
    UdpPacket::new_checked(&mut f[UDP..])
        .unwrap()
        .fill_checksum_v4(s, d);
    assert!(decapsulate(&mut f, &VxlanConfig::default()).is_ok());
}

#[test]
fn vlan_tagged_outer_and_outer_options_decapsulate() {
    let f = sample_outer();
    // Insert an 802.1Q tag after the MACs.
    let mut tagged = f[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    tagged.extend_from_slice(&f[12..]);
    let d = decapsulate(&mut tagged, &VxlanConfig::default()).unwrap();
    assert_eq!(d.inner_frame(&tagged), &f[OVERHEAD..]);
    // Outer IPv4 with a 4-byte option (IHL 6).
    let mut opt = f[..IP + 20].to_vec();
    opt.extend_from_slice(&[1, 1, 1, 0]);
    opt.extend_from_slice(&f[IP + 20..]);
    opt[IP] = 0x46;
    let tl = (opt.len() - IP) as u16;
    opt[IP + 2..IP + 4].copy_from_slice(&tl.to_be_bytes());
    refix_ip(&mut opt);
    let d = decapsulate(&mut opt, &VxlanConfig::default()).unwrap();
    assert_eq!(d.inner_frame(&opt), &f[OVERHEAD..]);
}

#[test]
fn ethernet_padding_after_the_outer_packet_is_not_inner_data() {
    let mut f = sample_outer();
    let real = f.len();
    f.extend_from_slice(&[0xee; 10]);
    let d = decapsulate(&mut f, &VxlanConfig::default()).unwrap();
    assert_eq!(d.inner.end, real);
}

/// RFC 6040 section 4.2, Figure 4, cell by cell.
#[test]
fn decap_ecn_table() {
    use Ecn::*;
    let table = [
        // inner,  [outer Not-ECT, ECT(0), ECT(1), CE]
        (NotEct, [Some(NotEct), Some(NotEct), Some(NotEct), None]),
        (Ect0, [Some(Ect0), Some(Ect0), Some(Ect1), Some(Ce)]),
        (Ect1, [Some(Ect1), Some(Ect1), Some(Ect1), Some(Ce)]),
        (Ce, [Some(Ce), Some(Ce), Some(Ce), Some(Ce)]),
    ];
    for (inner, row) in table {
        for (outer, want) in [NotEct, Ect0, Ect1, Ce].into_iter().zip(row) {
            assert_eq!(
                decap_ecn(inner, outer),
                want,
                "inner {inner:?} outer {outer:?}"
            );
        }
    }
}

#[test]
fn outer_ce_marks_inner_ipv4_in_place_with_valid_checksum() {
    let mut inner = udp4([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, b"x");
    Ipv4Packet::new_checked(&mut inner[14..])
        .unwrap()
        .set_ecn(Ecn::Ect0);
    let mut f = encap(&inner, &VxlanConfig::default());
    assert_eq!(f[IP + 1] & 3, Ecn::Ect0 as u8, "encap copies ECT(0)");
    // A congested underlay router marks the outer header CE.
    f[IP + 1] |= 3;
    refix_ip(&mut f);
    let d = decapsulate(&mut f, &VxlanConfig::default()).unwrap();
    let ip = Ipv4Packet::new_checked(&d.inner_frame(&f)[14..]).unwrap();
    assert_eq!(ip.ecn(), Ecn::Ce);
    assert!(ip.verify_checksum());
}

#[test]
fn outer_ect1_on_inner_ipv6_ect0_becomes_ect1() {
    let mut rng = StdRng::seed_from_u64(21);
    let inner = loop {
        let f = random_frame(&mut rng, 20);
        if f[12..14] == [0x86, 0xdd] {
            break f;
        }
    };
    let mut inner = inner;
    Ipv6Packet::new_checked(&mut inner[14..])
        .unwrap()
        .set_ecn(Ecn::Ect0);
    let mut f = encap(&inner, &VxlanConfig::default());
    f[IP + 1] = (f[IP + 1] & !3) | Ecn::Ect1 as u8;
    refix_ip(&mut f);
    let d = decapsulate(&mut f, &VxlanConfig::default()).unwrap();
    let ip = Ipv6Packet::new_checked(&d.inner_frame(&f)[14..]).unwrap();
    assert_eq!(ip.ecn(), Ecn::Ect1);
}

/// Encap then decap is the identity, over random frames, sizes up to a 1500
/// MTU, VNIs, ports and endpoints; the outer headers are valid and the
/// source port is in range.
#[test]
fn encap_then_decap_is_the_identity() {
    let mut rng = StdRng::seed_from_u64(22);
    for i in 0..3_000 {
        let inner = random_frame(&mut rng, 1400);
        let cfg = VxlanConfig {
            vni: Vni::new(rng.random_range(0..=Vni::MAX)).unwrap(),
            dst_port: if rng.random_bool(0.5) { 8472 } else { 4789 },
            ttl: rng.random_range(1..=255),
            src_ports: PortRange::new(10000, rng.random_range(10000..=65535)).unwrap(),
            ..VxlanConfig::default()
        };
        let headroom = OVERHEAD + rng.random_range(0..64);
        let mut buf = vec![0u8; headroom];
        buf.extend_from_slice(&inner);
        let end = buf.len();
        let r = encapsulate(
            &mut buf,
            headroom..end,
            &EncapTemplate::new(&cfg, &endpoint()),
        )
        .unwrap();
        assert_eq!(r, headroom - OVERHEAD..end);
        let mut outer = buf[r].to_vec();
        let ip = Ipv4Packet::new_checked(&outer[IP..]).unwrap();
        assert!(
            ip.verify_checksum() && ip.dont_frag() && ip.ttl() == cfg.ttl,
            "frame {i}"
        );
        let general = decapsulate_general(&mut outer.clone(), &cfg);
        let d = decapsulate(&mut outer, &cfg).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!(Ok(&d), general.as_ref(), "fast and general paths agree");
        assert_eq!(d.inner_frame(&outer), &inner[..], "frame {i}");
        assert!(cfg.src_ports.contains(d.outer_src_port));
    }
}

fn outer_src_port(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[UDP], f[UDP + 1]])
}

#[test]
fn source_port_is_stable_per_flow_and_differs_between_flows() {
    let cfg = VxlanConfig::default();
    // Same flow, different payloads and sizes: one port.
    let ports: Vec<u16> = (0..50)
        .map(|n| {
            outer_src_port(&encap(
                &udp4(
                    [10, 244, 1, 2],
                    [10, 244, 2, 3],
                    40000,
                    53,
                    &vec![n as u8; n * 20],
                ),
                &cfg,
            ))
        })
        .collect();
    assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    // Another source port: (almost surely) another outer port.
    let other = outer_src_port(&encap(
        &udp4([10, 244, 1, 2], [10, 244, 2, 3], 40001, 53, b""),
        &cfg,
    ));
    assert_ne!(other, ports[0]);
    // The reply direction gets the same port with the (default) symmetric hash.
    let reply = outer_src_port(&encap(
        &udp4([10, 244, 2, 3], [10, 244, 1, 2], 53, 40000, b""),
        &cfg,
    ));
    assert_eq!(reply, ports[0]);
    // Non-IP frames (ARP) hash their MACs: stable too.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(
        outer_src_port(&encap(&arp, &cfg)),
        outer_src_port(&encap(&arp, &cfg))
    );
}

/// Pearson's chi-square statistic of `ports` over `bins` equal bins of `range`.
fn chi_square(ports: &[u16], range: PortRange, bins: usize) -> f64 {
    let width = f64::from(range.max() - range.min()) + 1.0;
    let mut counts = vec![0u64; bins];
    for p in ports {
        let b = (f64::from(p - range.min()) / width * bins as f64) as usize;
        counts[b.min(bins - 1)] += 1;
    }
    let expected = ports.len() as f64 / bins as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

/// The outer source ports of 100,000 distinct pod flows spread evenly over
/// the range: chi-square over 100 bins (99 degrees of freedom) under the
/// 0.1% critical value 148.2. The same test rejects a skewed assignment, so
/// it can fail.
#[test]
fn source_ports_spread_evenly_chi_square() {
    let cfg = VxlanConfig::default();
    let mut rng = StdRng::seed_from_u64(23);
    let mut ports = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        // Realistic flows: pod CIDR sources, a few services, ephemeral ports.
        let inner = udp4(
            [10, 244, rng.random_range(0..4), rng.random_range(2..250)],
            [10, 96, 0, rng.random_range(1..20)],
            rng.random_range(32768..61000),
            [53, 80, 443][rng.random_range(0..3)],
            b"",
        );
        ports.push(outer_src_port(&encap(&inner, &cfg)));
    }
    let chi = chi_square(&ports, cfg.src_ports, 100);
    assert!(chi < 148.2, "chi-square {chi:.1} over 99 dof");
    // Sanity: a hash of the destination only (20 values) is rejected.
    let h = FlowHasher::new(1);
    let skewed: Vec<u16> = (0..100_000u32)
        .map(|i| {
            let k = FlowKey {
                src: [0, 0, 0, 0].into(),
                dst: [10, 96, 0, (i % 20) as u8].into(),
                protocol: 17,
                src_port: 0,
                dst_port: 0,
            };
            cfg.src_ports.pick(h.hash(&k))
        })
        .collect();
    assert!(chi_square(&skewed, cfg.src_ports, 100) > 148.2);
}

/// The fast path takes the common frame, and whatever it accepts the
/// general path accepts with the same result: every header byte flipped
/// by each bit (IP checksum refixed or not), for both reserved-bit modes.
#[test]
fn the_fast_path_agrees_with_the_general_path_byte_by_byte() {
    let good = sample_outer();
    let strict = VxlanConfig::default();
    assert!(
        decapsulate_fast(&good, &strict).is_some(),
        "the common frame takes the fast path"
    );
    let lax = VxlanConfig {
        reserved_bits: ReservedBits::Ignore,
        ..strict
    };
    let mut taken = 0;
    for cfg in [strict, lax] {
        for i in 0..OVERHEAD {
            for x in [1u8, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0xff] {
                for fix in [false, true] {
                    let mut f = good.clone();
                    f[i] ^= x;
                    if fix {
                        refix_ip(&mut f);
                    }
                    let Some(fast) = decapsulate_fast(&f, &cfg) else {
                        continue;
                    };
                    taken += 1;
                    let general = decapsulate_general(&mut f.clone(), &cfg);
                    assert_eq!(Ok(fast), general, "byte {i} ^ {x:#04x}, refixed {fix}");
                }
            }
        }
        // Cut short: never taken.
        for n in 0..good.len() {
            assert!(decapsulate_fast(&good[..n], &cfg).is_none(), "{n} bytes");
        }
    }
    assert!(taken > 0, "some mutated frames still take the fast path");
}

/// Encapsulation's bounds, each at its edge, and the outer header checksum
/// over every TOS and many lengths (the sum's second fold is reached).
#[test]
fn encapsulation_bounds_and_outer_checksum() {
    use crate::vxlan::{EncapError, InnerMeta, encapsulate_with};
    let tmpl = EncapTemplate::new(&VxlanConfig::default(), &endpoint());
    let meta = InnerMeta { hash: 1, tos: 0 };
    let mut buf = vec![0u8; OVERHEAD + 14];
    let n = buf.len();
    assert!(encapsulate_with(&mut buf, OVERHEAD..n, &tmpl, meta).is_ok());
    assert!(matches!(
        encapsulate_with(&mut buf, OVERHEAD..OVERHEAD, &tmpl, meta),
        Err(EncapError::InnerTooShort { len: 0 })
    ));
    assert!(matches!(
        encapsulate_with(
            &mut buf,
            Range {
                start: OVERHEAD + 1,
                end: OVERHEAD,
            },
            &tmpl,
            meta
        ),
        Err(EncapError::BadRange { .. })
    ));
    assert!(matches!(
        encapsulate_with(&mut buf, OVERHEAD..n + 1, &tmpl, meta),
        Err(EncapError::BadRange { .. })
    ));
    assert!(matches!(
        encapsulate_with(&mut buf, OVERHEAD - 1..n, &tmpl, meta),
        Err(EncapError::Headroom { .. })
    ));
    // The largest inner frame fits an IPv4 packet exactly; one more does not.
    let max = usize::from(u16::MAX) - (OVERHEAD - 14);
    let mut big = vec![0u8; OVERHEAD + max + 1];
    let r = encapsulate_with(&mut big, OVERHEAD..OVERHEAD + max, &tmpl, meta).unwrap();
    assert_eq!(
        u16::from_be_bytes([big[r.start + 16], big[r.start + 17]]),
        u16::MAX
    );
    assert!(matches!(
        encapsulate_with(&mut big, OVERHEAD..OVERHEAD + max + 1, &tmpl, meta),
        Err(EncapError::TooLarge { .. })
    ));
    // The outer IPv4 checksum is right for every TOS and length tried.
    let mut rng = StdRng::seed_from_u64(77);
    for tos in 0..=255u8 {
        for _ in 0..8 {
            let len = rng.random_range(14..4000);
            let mut b = vec![0u8; OVERHEAD + len];
            let end = b.len();
            let meta = InnerMeta {
                hash: rng.random(),
                tos,
            };
            let r = encapsulate_with(&mut b, OVERHEAD..end, &tmpl, meta).unwrap();
            let ip = Ipv4Packet::new_checked(&b[r.start + 14..r.end]).unwrap();
            assert!(ip.verify_checksum(), "tos {tos} len {len}");
        }
    }
}

/// The shortest inner frame, a bare Ethernet header, decapsulates on both
/// paths; one byte less is refused.
#[test]
fn inner_frame_of_exactly_an_ethernet_header() {
    let inner = [2u8, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5];
    let f = encap(&inner, &VxlanConfig::default());
    let cfg = VxlanConfig::default();
    let d = decapsulate_general(&mut f.clone(), &cfg).unwrap();
    assert_eq!(d.inner, OVERHEAD..OVERHEAD + 14);
    assert_eq!(decapsulate(&mut f.clone(), &cfg).unwrap().inner, d.inner);
    // Cut the inner frame to 13 bytes, lengths and checksum refixed.
    let mut short = f[..f.len() - 1].to_vec();
    let ip_len = (short.len() - IP) as u16;
    short[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
    short[UDP + 4..UDP + 6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    refix_ip(&mut short);
    assert_eq!(
        decapsulate_general(&mut short.clone(), &cfg),
        Err(DecapError::InnerTooShort { len: 13 })
    );
    assert_eq!(
        decapsulate(&mut short, &cfg),
        Err(DecapError::InnerTooShort { len: 13 })
    );
}
