//! Tests of the receive side's cutting ([`super`]).

use super::*;
use crate::port::gro::{Coalescer, Layout, TUNNEL_HDR_LEN};

const ACK: u8 = 0x10;

/// `n` segments of one flow with TCP timestamps, the last `last` bytes
/// ([`fuzzing::burst`]).
fn burst(n: usize, last: usize, tunnel: bool) -> Vec<Vec<u8>> {
    fuzzing::burst(n, last, &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 4], tunnel, 0)
}

/// The one write a coalescer of `lay` makes of `frames`.
fn merged(frames: &[Vec<u8>], lay: Layout) -> Vec<u8> {
    let mut writes = Vec::new();
    let (w, e) = Coalescer::with_layout(lay).write_batch(frames.iter().map(Vec::as_slice), |b| {
        writes.push(b.to_vec());
        Ok(b.len())
    });
    assert!(e.is_none());
    assert_eq!(w.writes, 1, "one super-packet");
    writes.remove(0)
}

fn cut(read: &[u8]) -> Result<Vec<Vec<u8>>, Refused> {
    let h = VnetHdr::parse(read).unwrap();
    let frame = &read[TUNNEL_HDR_LEN..];
    let plan = Plan::new(&h, frame)?;
    let mut out = vec![0u8; 2048];
    Ok((0..plan.count())
        .map(|i| {
            let n = plan.segment(frame, i, &mut out).expect("segment");
            out[..n].to_vec()
        })
        .collect())
}

#[test]
fn a_tso_read_cuts_back_into_the_segments_that_made_it() {
    for last in [1400, 1, 999] {
        let frames = burst(30, last, false);
        let read = merged(&frames, Layout::ETHERNET);
        assert_eq!(cut(&read).unwrap(), frames, "last segment {last} bytes");
    }
}

#[test]
fn a_udp_tunnel_gso_read_cuts_back_into_vxlan_frames() {
    for last in [1400, 7] {
        let frames = burst(45, last, true);
        let read = merged(&frames, Layout::VXLAN);
        assert!(read.len() > 60_000);
        assert_eq!(cut(&read).unwrap(), frames, "last segment {last} bytes");
    }
}

#[test]
fn fin_and_psh_go_to_the_last_segment_cwr_stays_on_the_first() {
    let mut read = merged(&burst(3, 500, false), Layout::ETHERNET);
    // FIN, PSH and CWR on the super-packet, as a sender's TSO hands it.
    let flags = TUNNEL_HDR_LEN + 14 + 20 + 13;
    read[flags] |= TCP_FIN | TCP_PSH | TCP_CWR;
    let segs = cut(&read).unwrap();
    let f: Vec<u8> = segs.iter().map(|s| s[14 + 20 + 13]).collect();
    assert_eq!(f, [ACK | TCP_CWR, ACK, ACK | TCP_FIN | TCP_PSH]);
}

/// A frame whose TCP checksum holds only the pseudo-header's sum, as a
/// kernel peer with checksum offload on sends it.
fn partial(frame: &[u8], l4: usize) -> (VnetHdr, Vec<u8>) {
    let mut f = frame.to_vec();
    let ip = l4 - 20;
    let src = Ipv4Addr::new(f[ip + 12], f[ip + 13], f[ip + 14], f[ip + 15]);
    let dst = Ipv4Addr::new(f[ip + 16], f[ip + 17], f[ip + 18], f[ip + 19]);
    let len = (f.len() - l4) as u16;
    let p = pseudo_header_v4(src, dst, 6, len).sum();
    f[l4 + 16..l4 + 18].copy_from_slice(&p.to_be_bytes());
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: l4 as u16,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    (h, f)
}

#[test]
fn a_partial_checksum_is_finished_as_the_kernel_would() {
    for (frame, l4) in [
        (burst(1, 700, false).remove(0), 34),
        (burst(1, 700, true).remove(0), VXLAN_OUTER + 20),
    ] {
        let (h, f) = partial(&frame, l4);
        assert_ne!(f, frame, "the checksum is unfinished");
        let plan = Plan::new(&h, &f).unwrap();
        assert_eq!(plan.count(), 1);
        let mut out = vec![0u8; 2048];
        let n = plan.segment(&f, 0, &mut out).unwrap();
        assert_eq!(&out[..n], &frame[..]);
    }
}

#[test]
fn a_udp_gso_read_cuts_into_datagrams_with_their_checksums() {
    let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    let mut f = vec![0u8; 14 + 28];
    f[12] = 0x08;
    f[14] = 0x45;
    f[22] = 64;
    f[23] = 17;
    f[26..34].copy_from_slice(&[10, 244, 1, 2, 10, 244, 2, 2]);
    f[34..38].copy_from_slice(&[0x13, 0x88, 0x13, 0x89]);
    f.extend_from_slice(&payload);
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        gso_size: 1000,
        csum_start: 34,
        csum_offset: 6,
    };
    let plan = Plan::new(&h, &f).unwrap();
    assert_eq!(plan.count(), 3);
    let mut got = Vec::new();
    let mut out = vec![0u8; 2048];
    for i in 0..3 {
        let n = plan.segment(&f, i, &mut out).unwrap();
        let d = &out[..n];
        assert_eq!(internet_checksum(&d[14..34]), 0, "IP header {i}");
        assert_eq!(usize::from(u16_at(d, 16).unwrap()), n - 14);
        assert_eq!(usize::from(u16_at(d, 38).unwrap()), n - 34);
        let mut c = pseudo_header_v4(
            [10, 244, 1, 2].into(),
            [10, 244, 2, 2].into(),
            17,
            (n - 34) as u16,
        );
        c.add_bytes(&d[34..]);
        assert_eq!(c.finish(), 0, "UDP checksum {i}");
        got.extend_from_slice(&d[42..]);
    }
    assert_eq!(got, payload);
}

#[test]
fn headers_the_kernel_would_not_write_are_refused() {
    let read = merged(&burst(3, 100, true), Layout::VXLAN);
    let (hdr, frame) = read.split_at(TUNNEL_HDR_LEN);
    let h = VnetHdr::parse(hdr).unwrap();
    // IPv6 TCP, UFO: not cut here.
    for t in [4, 3] {
        let g = VnetHdr { gso_type: t, ..h };
        assert_eq!(Plan::new(&g, frame), Err(Refused::GsoType(t)));
    }
    // Tunnel GSO on a frame that is not VXLAN over IPv4.
    let plain = merged(&burst(3, 100, false), Layout::ETHERNET);
    assert_eq!(
        Plan::new(&h, &plain[TUNNEL_HDR_LEN..]),
        Err(Refused::Malformed)
    );
    // A zero segment size; a checksum offset past the end; too short.
    assert_eq!(
        Plan::new(&VnetHdr { gso_size: 0, ..h }, frame),
        Err(Refused::Malformed)
    );
    let past = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: frame.len() as u16 - 1,
        csum_offset: 0,
        ..VnetHdr::default()
    };
    assert_eq!(Plan::new(&past, frame), Err(Refused::Malformed));
    assert_eq!(Plan::new(&h, &frame[..13]), Err(Refused::Malformed));
    // A buffer too small for a segment, and an index past the count.
    let plan = Plan::new(&h, frame).unwrap();
    assert_eq!(plan.segment(frame, 0, &mut [0u8; 100]), None);
    assert_eq!(plan.segment(frame, plan.count(), &mut [0u8; 4096]), None);
}

#[test]
fn random_headers_and_bytes_never_panic() {
    // xorshift: no dependency for a few random bytes.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    let good = merged(&burst(4, 300, true), Layout::VXLAN);
    let mut out = vec![0u8; 2048];
    for _ in 0..20_000 {
        let mut r = good.clone();
        for _ in 0..1 + next(5) {
            let at = next(r.len().min(120));
            r[at] = next(256) as u8;
        }
        if next(5) == 0 {
            r.truncate(next(r.len()));
        }
        if next(10) == 0 {
            r.iter_mut().for_each(|b| *b = next(256) as u8);
        }
        let Some(h) = VnetHdr::parse(&r) else {
            continue;
        };
        let Some(frame) = r.get(TUNNEL_HDR_LEN..) else {
            continue;
        };
        if let Ok(plan) = Plan::new(&h, frame) {
            for i in 0..plan.count().min(64) {
                if let Some(n) = plan.segment(frame, i, &mut out) {
                    assert!(n <= plan.max_frame());
                }
            }
        }
    }
}
