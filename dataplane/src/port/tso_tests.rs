//! [`super::accept`], [`super::finish`] and [`super::header`] on their own.

use super::*;
use crate::port::gro::fuzzing::{tcp_segment, vxlan_wrap};

fn hdr(flags: u8, gso_type: u8, size: u16, start: u16, offset: u16) -> VnetHdr {
    VnetHdr {
        flags,
        gso_type,
        gso_size: size,
        csum_start: start,
        csum_offset: offset,
    }
}

/// A 10-segment burst of 1000-byte payloads, as one IPv4 packet.
fn burst() -> Vec<u8> {
    tcp_segment(7, &[0x42; 10_000], 0x18, &[])
}

#[test]
fn accept_takes_tcp_tso_partial_at_the_tcp_header_only() {
    let mut p = burst();
    let g = accept(&hdr(1, 1, 1000, 20, 16), &mut p, false);
    assert_eq!(
        g,
        Some(Gso {
            size: 1000,
            tunnel: false
        })
    );
    // Not partial, elsewhere, another GSO type, a single segment: cut.
    for h in [
        hdr(0, 1, 1000, 20, 16),
        hdr(1, 1, 1000, 24, 16),
        hdr(1, 1, 1000, 20, 6),
        hdr(1, 5, 1000, 20, 16),
        hdr(1, 4, 1000, 20, 16),
        hdr(1, 0x81, 1000, 20, 16),
        hdr(1, 1, 10_000, 20, 16),
        hdr(1, 1, 0, 20, 16),
    ] {
        assert_eq!(accept(&h, &mut p, false), None, "{h:?}");
    }
    // Lengths that disagree with the frame.
    let mut short = p.clone();
    short.truncate(5000);
    assert_eq!(accept(&hdr(1, 1, 1000, 20, 16), &mut short, false), None);
    // Too large to be encapsulated later.
    let mut huge = tcp_segment(7, &vec![0; 65_535 - 40], 0x10, &[]);
    assert_eq!(accept(&hdr(1, 1, 1000, 20, 16), &mut huge, false), None);
}

#[test]
fn accept_takes_a_tunnel_burst_and_clears_its_outer_udp_checksum() {
    let mut f = vxlan_wrap(&burst());
    f[40..42].copy_from_slice(&[0xab, 0xcd]);
    let h = hdr(1 | 8, 0x21, 1000, 64 + 20, 16);
    assert_eq!(
        accept(&h, &mut f, true),
        Some(Gso {
            size: 1000,
            tunnel: true
        })
    );
    assert_eq!(&f[40..42], &[0, 0]);
    // The same header on a frame that is not VXLAN-shaped.
    let mut plain = burst();
    assert_eq!(accept(&h, &mut plain, true), None);
}

#[test]
fn finish_sets_the_pseudo_header_sum_from_the_final_headers() {
    let mut b = Buf::big(0);
    b.fill(&burst());
    b.set_gso(Some(Gso {
        size: 1000,
        tunnel: false,
    }));
    // A NAT rewrite of the destination, as the pipeline's incremental
    // update would leave the field: anything.
    b.data_mut()[19] = 9;
    b.data_mut()[36..38].copy_from_slice(&[1, 2]);
    assert!(finish(&mut b, false));
    let p = b.data();
    let want = pseudo_header_v4([10, 244, 1, 2].into(), [10, 244, 2, 9].into(), 6, 10_020).sum();
    assert_eq!(u16::from_be_bytes([p[36], p[37]]), want);
    assert!(b.gso().is_some());
    let h = header(p, false, b.gso().unwrap()).unwrap();
    assert_eq!(
        VnetHdr::parse(&h),
        Some(hdr(1, 1, 1000, 20, 16)),
        "TSO, partial at the TCP header"
    );
    assert_eq!(u16::from_ne_bytes([h[2], h[3]]), 40, "hdr_len");
    assert_eq!(&h[10..], &[0; 14]);
}

#[test]
fn finish_turns_a_one_segment_burst_into_a_whole_packet() {
    let mut b = Buf::big(0);
    let seg = tcp_segment(7, &[0x42; 900], 0x18, &[]);
    let mut partial = seg.clone();
    partial[36..38].copy_from_slice(&[0, 0]);
    b.fill(&partial);
    b.set_gso(Some(Gso {
        size: 1000,
        tunnel: false,
    }));
    assert!(finish(&mut b, false));
    assert_eq!(b.gso(), None);
    assert_eq!(b.data(), &seg[..], "the checksum complete");
}

#[test]
fn finish_refuses_what_is_not_a_tcp_super_packet() {
    let mut b = Buf::big(0);
    let mut udp = burst();
    udp[9] = 17;
    b.fill(&udp);
    b.set_gso(Some(Gso {
        size: 1000,
        tunnel: false,
    }));
    assert!(!finish(&mut b, false));
    b.fill(&burst());
    b.set_gso(Some(Gso {
        size: 1000,
        tunnel: true,
    }));
    assert!(!finish(&mut b, true), "not VXLAN");
    let mut plain = Buf::new();
    plain.fill(&[1, 2, 3]);
    assert!(finish(&mut plain, false), "no Gso: left alone");
}

#[test]
fn a_tunnel_header_names_the_outer_and_inner_offsets() {
    let f = vxlan_wrap(&burst());
    let h = header(
        &f,
        true,
        Gso {
            size: 1000,
            tunnel: true,
        },
    )
    .unwrap();
    assert_eq!(VnetHdr::parse(&h), Some(hdr(1, 0x21, 1000, 84, 16)));
    assert_eq!(u16::from_ne_bytes([h[2], h[3]]), 104, "hdr_len");
    assert_eq!(u16::from_ne_bytes([h[20], h[21]]), 34, "outer UDP header");
    assert_eq!(u16::from_ne_bytes([h[22], h[23]]), 64, "inner IP header");
    assert_eq!(
        segment_ip_len(
            &f,
            true,
            Gso {
                size: 1000,
                tunnel: true
            }
        ),
        Some(1040)
    );
}
