//! Tests of the coalescer ([`super`]).

use super::fuzzing::tcp_segment;
use super::*;

fn run(pkts: &[Vec<u8>]) -> (Vec<Vec<u8>>, Written) {
    let mut c = Coalescer::new();
    let mut out = Vec::new();
    let (w, e) = c.write_batch(pkts.iter().map(|p| p.as_slice()), |b| {
        out.push(b.to_vec());
        Ok(b.len())
    });
    assert!(e.is_none());
    (out, w)
}

/// What the kernel does with a TSO write: the segments back, with
/// their checksums completed from the partial one.
fn resegment(w: &[u8]) -> Vec<Vec<u8>> {
    let (h, p) = w.split_at(VNET_HDR_LEN);
    if h[1] == 0 {
        return vec![p.to_vec()];
    }
    let hlen = usize::from(u16::from_ne_bytes([h[2], h[3]]));
    let gso = usize::from(u16::from_ne_bytes([h[4], h[5]]));
    let seq0 = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
    let body = &p[hlen..];
    let n = body.len().div_ceil(gso);
    (0..n)
        .map(|i| {
            let chunk = &body[i * gso..((i + 1) * gso).min(body.len())];
            let flags = if i + 1 == n { p[33] } else { p[33] & !TCP_PSH };
            tcp_segment(seq0 + (i * gso) as u32, chunk, flags, &p[40..hlen])
        })
        .collect()
}

#[test]
fn a_burst_of_one_flow_becomes_one_tso_write_that_segments_back() {
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let pkts: Vec<Vec<u8>> = (0..5u32)
        .map(|i| {
            let flags = if i == 4 { TCP_ACK | TCP_PSH } else { TCP_ACK };
            let len = if i == 4 { 300 } else { 1000 };
            tcp_segment(1000 + i * 1000, &vec![i as u8; len], flags, &opts)
        })
        .collect();
    let (out, w) = run(&pkts);
    assert_eq!(
        w,
        Written {
            writes: 1,
            failed: 0
        }
    );
    let h = &out[0][..VNET_HDR_LEN];
    assert_eq!((h[0], h[1]), (F_NEEDS_CSUM, GSO_TCPV4));
    assert_eq!(u16::from_ne_bytes([h[4], h[5]]), 1000);
    let p = &out[0][VNET_HDR_LEN..];
    assert_eq!(p.len(), 52 + 4300);
    assert_eq!(encap::checksum::internet_checksum(&p[..20]), 0);
    // The kernel finishes the checksum from the partial one: the sum
    // from csum_start, field included, complemented.
    let mut q = p.to_vec();
    let mut c = Checksum::new();
    c.add_bytes(&q[20..]);
    q[36..38].copy_from_slice(&c.finish().to_be_bytes());
    assert!(tcp_checksum_ok(&q));
    let back = resegment(&out[0]);
    // IP ids differ (the kernel makes its own); compare the rest.
    let strip = |v: &Vec<u8>| [&v[..4], &v[6..10], &v[12..]].concat();
    assert_eq!(
        back.iter().map(strip).collect::<Vec<_>>(),
        pkts.iter().map(strip).collect::<Vec<_>>()
    );
}

#[test]
fn gaps_other_flows_bad_checksums_and_non_candidates_are_written_alone() {
    let a = tcp_segment(1, &[1; 100], TCP_ACK, &[]);
    let gap = tcp_segment(500, &[2; 100], TCP_ACK, &[]);
    let mut other = tcp_segment(201, &[3; 100], TCP_ACK, &[]);
    other[22..24].copy_from_slice(&5202u16.to_be_bytes());
    let mut corrupt = tcp_segment(101, &[4; 100], TCP_ACK, &[]);
    corrupt[60] ^= 1;
    let syn = tcp_segment(101, &[5; 100], 0x02, &[]);
    let pure_ack = tcp_segment(101, &[], TCP_ACK, &[]);
    for b in [gap, other, corrupt, syn, pure_ack] {
        let (out, w) = run(&[a.clone(), b.clone()]);
        assert_eq!(w.writes, 2);
        assert_eq!(out[0][..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
        assert_eq!(out[0][VNET_HDR_LEN..], a[..]);
        assert_eq!(out[1][VNET_HDR_LEN..], b[..]);
    }
    // After PSH, or after a short segment, the run is closed.
    let psh = tcp_segment(1, &[1; 100], TCP_ACK | TCP_PSH, &[]);
    let (_, w) = run(&[psh, tcp_segment(101, &[1; 100], TCP_ACK, &[])]);
    assert_eq!(w.writes, 2);
    let (_, w) = run(&[
        tcp_segment(1, &[1; 100], TCP_ACK, &[]),
        tcp_segment(101, &[1; 50], TCP_ACK, &[]),
        tcp_segment(151, &[1; 100], TCP_ACK, &[]),
    ]);
    assert_eq!(w.writes, 2);
    // Malformed bytes pass through untouched, an empty packet too (the
    // kernel refuses it, and the failed write counts it).
    let (out, w) = run(&[vec![0x45, 0, 0], vec![]]);
    assert_eq!(w.writes, 2);
    assert_eq!(out[1], [0; VNET_HDR_LEN]);
    assert_eq!(out[0][VNET_HDR_LEN..], [0x45, 0, 0]);
}

/// The first segment of a run is checked only when a second one joins
/// (a lone segment is written as it came): a corrupt head must not be
/// merged with the sound segments after it, which go on as a run.
#[test]
fn a_corrupt_first_segment_is_written_alone_and_the_rest_merge() {
    let mut head = tcp_segment(1, &[1; 100], TCP_ACK, &[]);
    head[70] ^= 0x10;
    assert!(!tcp_checksum_ok(&head));
    let rest: Vec<Vec<u8>> = (1..4u32)
        .map(|i| tcp_segment(1 + i * 100, &[1; 100], TCP_ACK, &[]))
        .collect();
    let mut pkts = vec![head.clone()];
    pkts.extend(rest.iter().cloned());
    let (out, w) = run(&pkts);
    assert_eq!(w.writes, 2, "the head alone, then one run of three");
    assert_eq!(out[0][..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
    assert_eq!(out[0][VNET_HDR_LEN..], head[..]);
    assert_eq!(out[1][1], GSO_TCPV4);
    let strip = |v: &Vec<u8>| [&v[..4], &v[6..10], &v[12..]].concat();
    assert_eq!(
        resegment(&out[1]).iter().map(strip).collect::<Vec<_>>(),
        rest.iter().map(strip).collect::<Vec<_>>()
    );
    // A corrupt head with nothing after it is written as it came.
    let (out, w) = run(std::slice::from_ref(&head));
    assert_eq!((w.writes, &out[0][VNET_HDR_LEN..]), (1, &head[..]));
}

/// Recomputes the IPv4 header and TCP checksums of `p` after an edit.
fn refix(p: &mut [u8]) {
    p[10..12].copy_from_slice(&[0, 0]);
    let ipc = encap::checksum::internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&ipc.to_be_bytes());
    p[36..38].copy_from_slice(&[0, 0]);
    let ip: &[u8; 20] = p[..20].try_into().unwrap();
    let (src, dst) = addrs(ip);
    let mut c = pseudo_header_v4(src, dst, 6, (p.len() - 20) as u16);
    c.add_bytes(&p[20..]);
    let tc = c.finish();
    p[36..38].copy_from_slice(&tc.to_be_bytes());
}

/// A second segment that continues the first's sequence but differs in
/// one header byte the kernel requires equal (tcp_gro_receive's flush
/// conditions) is not merged; one that differs only where segments
/// may (IP id and checksum, TCP checksum) is.
#[test]
fn only_segments_of_one_flow_with_equal_headers_merge() {
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let a = tcp_segment(1, &[7; 100], TCP_ACK, &opts);
    let hlen = 52;
    for at in (0..2)
        .chain(6..10)
        .chain(12..24)
        .chain(28..36)
        .chain(40..hlen)
    {
        if at == 9 || at == 32 || at == 33 {
            continue; // protocol, data offset and flags: not candidates then
        }
        let mut b = tcp_segment(101, &[7; 100], TCP_ACK, &opts);
        b[at] ^= 0x04;
        refix(&mut b);
        let (_, w) = run(&[a.clone(), b]);
        assert_eq!(w.writes, 2, "merged although byte {at} differs");
    }
    // The IP id may differ, and so may the urgent pointer (URG is
    // never set in a candidate; Linux compares neither).
    for at in [4, 5, 38, 39] {
        let mut b = tcp_segment(101, &[7; 100], TCP_ACK, &opts);
        b[at] ^= 0x5a;
        refix(&mut b);
        let (_, w) = run(&[a.clone(), b]);
        assert_eq!(w.writes, 1, "byte {at} may differ");
    }
    // Another flow whose sequence number happens to continue this one's.
    let mut other = tcp_segment(101, &[7; 100], TCP_ACK, &opts);
    other[22..24].copy_from_slice(&5202u16.to_be_bytes());
    refix(&mut other);
    assert_eq!(run(&[a.clone(), other]).1.writes, 2);
}

#[test]
fn what_is_not_a_whole_plain_tcp_segment_is_written_alone() {
    let a = tcp_segment(1, &[1; 100], TCP_ACK, &[]);
    type Edit = fn(&mut Vec<u8>);
    let edits: [(&str, Edit); 5] = [
        ("more fragments", |p| p[6] |= 0x20),
        ("fragment offset", |p| p[7] = 1),
        ("URG", |p| p[33] |= 0x20),
        ("IP options", |p| p[0] = 0x46),
        ("length beyond the buffer", |p| p[3] = p[3].wrapping_add(4)),
    ];
    for (what, edit) in edits {
        let mut b = tcp_segment(101, &[1; 100], TCP_ACK, &[]);
        edit(&mut b);
        if what != "IP options" {
            refix(&mut b);
        }
        let (out, w) = run(&[a.clone(), b.clone()]);
        assert_eq!(w.writes, 2, "{what}");
        assert_eq!(out[1][VNET_HDR_LEN..], b[..], "{what}: written as it came");
        assert!(candidate(&b, Layout::TUN).is_none(), "{what}");
    }
    assert!(candidate(&a, Layout::TUN).is_some());
}

/// A run may fill an IPv4 packet exactly (65535 bytes), and a segment
/// larger than the run's size may not join it.
#[test]
fn a_run_fills_an_ipv4_packet_exactly_and_no_larger_segment_joins() {
    // 40 header bytes + 5 x 13099 = 65535.
    let pkts: Vec<Vec<u8>> = (0..5u32)
        .map(|i| tcp_segment(1 + i * 13099, &vec![3; 13099], TCP_ACK, &[]))
        .collect();
    let (out, w) = run(&pkts);
    assert_eq!(w.writes, 1, "exactly the limit fits");
    assert_eq!(out[0].len() - VNET_HDR_LEN, MAX_IP);
    let (_, w) = run(&[
        tcp_segment(1, &[1; 100], TCP_ACK, &[]),
        tcp_segment(101, &[1; 101], TCP_ACK, &[]),
    ]);
    assert_eq!(w.writes, 2, "a larger segment starts a new run");
}

#[test]
fn a_failed_write_counts_every_segment_in_it() {
    let pkts: Vec<Vec<u8>> = (0..3u32)
        .map(|i| tcp_segment(1 + i * 100, &[0; 100], TCP_ACK, &[]))
        .collect();
    let mut c = Coalescer::new();
    let (w, e) = c.write_batch(pkts.iter().map(|p| p.as_slice()), |_| {
        Err(io::Error::other("down"))
    });
    assert_eq!(
        w,
        Written {
            writes: 1,
            failed: 3
        }
    );
    assert!(e.is_some());
}

#[test]
fn a_packet_larger_than_ipv4_allows_is_counted_not_written() {
    let mut c = Coalescer::new();
    let big = vec![0u8; MAX_IP + 1];
    let (w, e) = c.write_batch([big.as_slice()], |_| Ok(0));
    assert_eq!(
        w,
        Written {
            writes: 0,
            failed: 1
        }
    );
    assert!(e.is_some());
}

#[test]
fn the_run_stops_below_the_ipv4_length_limit() {
    let pkts: Vec<Vec<u8>> = (0..50u32)
        .map(|i| tcp_segment(1 + i * 1400, &[9; 1400], TCP_ACK, &[]))
        .collect();
    let (out, w) = run(&pkts);
    assert_eq!(w.writes, 2);
    assert!(out.iter().all(|o| o.len() - VNET_HDR_LEN <= MAX_IP));
    assert_eq!(out.iter().map(|o| resegment(o).len()).sum::<usize>(), 50);
}

/// `inner` (an IPv4 packet) in a VXLAN frame 192.168.77.1:sport ->
/// 192.168.77.2:8472, VNI 1, as the pipeline's encapsulation writes it.
fn vxlan(inner: &[u8], sport: u16, id: u16) -> Vec<u8> {
    let mut f = vec![0u8; VXLAN_OUTER];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12] = 0x08;
    f[14] = 0x45;
    let ip_len = (20 + 8 + 8 + 14 + inner.len()) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20] = 0x40;
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[192, 168, 77, 1]);
    f[30..34].copy_from_slice(&[192, 168, 77, 2]);
    let c = encap::checksum::internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&8472u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f[42] = 0x08;
    f[48] = 1;
    f[50..56].copy_from_slice(&[0x0a, 0x58, 0, 0, 0, 2]);
    f[56..62].copy_from_slice(&[0x0a, 0x58, 0, 0, 0, 1]);
    f[62] = 0x08;
    f.extend_from_slice(inner);
    f
}

fn run_vxlan(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut c = Coalescer::with_layout(Layout::VXLAN);
    let mut out = Vec::new();
    let (w, e) = c.write_batch(frames.iter().map(Vec::as_slice), |b| {
        out.push(b.to_vec());
        Ok(b.len())
    });
    assert!(e.is_none());
    assert_eq!(w.writes, out.len());
    out
}

#[test]
fn vxlan_segments_of_a_flow_become_one_tunnel_gso_frame() {
    let segs: Vec<Vec<u8>> = (0..3u32)
        .map(|i| {
            vxlan(
                &tcp_segment(1 + i * 1000, &[i as u8; 1000], TCP_ACK, &[]),
                40000,
                i as u16,
            )
        })
        .collect();
    let out = run_vxlan(&segs);
    assert_eq!(out.len(), 1, "one write for the run");
    let (h, f) = out[0].split_at(TUNNEL_HDR_LEN);
    let u16at = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
    assert_eq!(
        (h[0], h[1]),
        (F_NEEDS_CSUM, GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4)
    );
    assert_eq!(
        usize::from(u16at(2)),
        VXLAN_OUTER + 40,
        "hdr_len: through the inner TCP header"
    );
    assert_eq!(u16at(4), 1000, "gso_size: the segments' payload");
    assert_eq!(
        (u16at(6), u16at(8)),
        (VXLAN_OUTER as u16 + 20, 16),
        "csum at the inner TCP"
    );
    assert_eq!(
        (u16at(20), u16at(22)),
        (34, VXLAN_OUTER as u16),
        "tunnel offsets"
    );
    // Outer IP and UDP lengths cover the whole frame; the outer header's
    // checksum is right; the outer headers are the first segment's.
    assert_eq!(
        usize::from(u16::from_be_bytes([f[16], f[17]])),
        f.len() - 14
    );
    assert_eq!(
        usize::from(u16::from_be_bytes([f[38], f[39]])),
        f.len() - 34
    );
    assert_eq!(encap::checksum::internet_checksum(&f[14..34]), 0);
    assert_eq!(f[..14], segs[0][..14]);
    assert_eq!(f[26..38], segs[0][26..38]);
    assert_eq!(f[40..VXLAN_OUTER], segs[0][40..VXLAN_OUTER]);
    // The inner packet: as the TUN layout merges it.
    let inner = &f[VXLAN_OUTER..];
    assert_eq!(
        usize::from(u16::from_be_bytes([inner[2], inner[3]])),
        inner.len()
    );
    assert_eq!(encap::checksum::internet_checksum(&inner[..20]), 0);
    let payload: Vec<u8> = segs
        .iter()
        .flat_map(|s| s[VXLAN_OUTER + 40..].to_vec())
        .collect();
    assert_eq!(inner[40..], payload[..]);
}

#[test]
fn vxlan_frames_of_other_tunnels_or_with_udp_checksums_stay_alone() {
    let seg = |i: u32| tcp_segment(1 + i * 1000, &[7; 1000], TCP_ACK, &[]);
    // Another source port: another flow's hash, another tunnel 5-tuple.
    let other_port = [vxlan(&seg(0), 40000, 1), vxlan(&seg(1), 40001, 2)];
    // A UDP checksum: Linux's vxlan sends none over IPv4; one here would
    // be wrong once merged.
    let mut summed = [vxlan(&seg(0), 40000, 1), vxlan(&seg(1), 40000, 2)];
    for f in &mut summed {
        f[40] = 0x12;
    }
    // Another VNI.
    let mut vni = [vxlan(&seg(0), 40000, 1), vxlan(&seg(1), 40000, 2)];
    vni[1][48] = 2;
    for (what, frames) in [("port", other_port), ("udp checksum", summed), ("vni", vni)] {
        let out = run_vxlan(&frames);
        assert_eq!(out.len(), 2, "{what}: not merged");
        for (o, f) in out.iter().zip(&frames) {
            assert_eq!(
                o[..TUNNEL_HDR_LEN],
                [0; TUNNEL_HDR_LEN],
                "{what}: empty header"
            );
            assert_eq!(o[TUNNEL_HDR_LEN..], f[..], "{what}: written as it came");
        }
    }
}

#[test]
fn a_vxlan_run_stops_short_of_the_outer_ip_limit() {
    // 1400-byte segments: 46 fit in 64 KiB of inner packet, fewer once
    // the 50 bytes of outer headers count against the outer IP's 16 bits.
    let frames: Vec<Vec<u8>> = (0..60u32)
        .map(|i| {
            vxlan(
                &tcp_segment(1 + i * 1400, &[1; 1400], TCP_ACK, &[]),
                40000,
                i as u16,
            )
        })
        .collect();
    let out = run_vxlan(&frames);
    assert!(out.len() >= 2);
    for o in &out {
        let f = &o[TUNNEL_HDR_LEN..];
        assert!(f.len() - 14 <= 65535, "outer IP length fits: {}", f.len());
    }
    let payload: usize = out
        .iter()
        .map(|o| o.len() - TUNNEL_HDR_LEN - VXLAN_OUTER - 40)
        .sum();
    assert_eq!(payload, 60 * 1400, "every byte in exactly one write");
}
