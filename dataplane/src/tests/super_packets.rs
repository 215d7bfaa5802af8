//! Super-packets through the pipeline ([`crate::port::tso`]): a pod's TSO
//! burst leaves for a peer as one VXLAN frame through a port that takes
//! super-packets, or as its segments through one that does not; a peer's
//! tunnel burst reaches a pod whole, or cut. Every segment the kernel (or
//! the worker) would cut carries the original bytes and right checksums.

use super::*;
use crate::buf::Gso;
use crate::port::gso::Plan;
use crate::port::tso;
use crate::worker::SUPER_BUFFERS;

const MSS: u16 = 1400;

/// A worker with an uplink and POD's port, each taking super-packets or
/// not.
fn super_rig(up_takes: bool, pod_takes: bool) -> (Worker, FakeHandle, FakeHandle) {
    let routes = Routes::new(snapshot(&[2, 3]));
    let mut w = Worker::new(routes, ConntrackConfig::default(), None, BUFFERS);
    let (p, up) = FakePort::new("eth0", Framing::Ethernet);
    if up_takes {
        up.set_takes_gso();
    }
    w.add_port(Box::new(p), Role::Uplink);
    let (p, pod) = FakePort::new("pod-a", Framing::Ip);
    if pod_takes {
        pod.set_takes_gso();
    }
    w.add_port(Box::new(p), Role::Pod { ip: POD, mac: None });
    (w, up, pod)
}

fn run(w: &mut Worker) {
    for _ in 0..4 {
        w.poll(Duration::from_secs(10));
    }
    assert_eq!(w.free_buffers(), BUFFERS, "no buffer leaked");
    assert_eq!(w.free_big_buffers(), SUPER_BUFFERS, "no big buffer leaked");
}

fn payload_byte(i: usize) -> u8 {
    (i * 7 % 251) as u8
}

/// A TCP/IPv4 burst of `payload` bytes from `src` to `dst` as a pod's TSO
/// hands it over: lengths of the whole, checksum field holding only the
/// pseudo-header's sum, PSH on.
fn tso_burst(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> Vec<u8> {
    let total = 40 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&[0x12, 0x34]);
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = encap::checksum::internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..28].copy_from_slice(&1000u32.to_be_bytes());
    p[28..32].copy_from_slice(&1u32.to_be_bytes());
    p[32] = 0x50;
    p[33] = 0x18;
    p[34..36].copy_from_slice(&500u16.to_be_bytes());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = payload_byte(i);
    }
    let partial = encap::checksum::pseudo_header_v4(src, dst, 6, (total - 20) as u16).sum();
    p[36..38].copy_from_slice(&partial.to_be_bytes());
    p
}

/// Whether the TCP checksum of IPv4 packet `ip` (20-byte header) is right.
fn tcp_ok(ip: &[u8]) -> bool {
    let h = ip_of(ip);
    let mut c = encap::checksum::pseudo_header_v4(
        h.source_addr(),
        h.destination_addr(),
        6,
        (ip.len() - 20) as u16,
    );
    c.add_bytes(&ip[20..]);
    c.finish() == 0
}

/// Checks that the IP packets `segs` are the segments of a `payload`-byte
/// burst: right checksums and lengths, consecutive sequence numbers, the
/// payload's bytes in order, PSH on the last only.
fn assert_segments(segs: &[&[u8]], payload: usize) {
    assert_eq!(segs.len(), payload.div_ceil(usize::from(MSS)));
    let mut at = 0;
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(
            encap::checksum::internet_checksum(&s[..20]),
            0,
            "IP checksum"
        );
        assert_eq!(usize::from(ip_of(s).total_len()), s.len());
        assert!(tcp_ok(s), "TCP checksum of segment {i}");
        let seq = u32::from_be_bytes(s[24..28].try_into().unwrap());
        assert_eq!(seq, 1000 + at as u32);
        assert_eq!(
            s[33] & 0x08 != 0,
            i + 1 == segs.len(),
            "PSH on the last only"
        );
        for (k, b) in s[40..].iter().enumerate() {
            assert_eq!(*b, payload_byte(at + k));
        }
        at += s.len() - 40;
    }
    assert_eq!(at, payload);
}

#[test]
fn a_pods_tso_burst_leaves_for_a_peer_as_one_tunnel_super_packet() {
    let (mut w, up, pod) = super_rig(true, true);
    let payload = 60_000;
    let g = Gso {
        size: MSS,
        tunnel: false,
    };
    pod.inject_super(tso_burst(POD, REMOTE_POD, payload), g);
    run(&mut w);
    let sent = up.take_sent_with_gso();
    assert_eq!(sent.len(), 1, "one write");
    let (frame, gso) = &sent[0];
    let g = gso.expect("written whole");
    assert_eq!(
        g,
        Gso {
            size: MSS,
            tunnel: true
        }
    );
    // The header the TAP gets: TSO through the tunnel, partial at the
    // inner TCP header.
    let h = tso::vnet(frame, true, g).unwrap();
    assert_eq!((h.gso_type, h.gso_size), (0x21, MSS));
    assert_eq!((h.csum_start, h.csum_offset), (64 + 20, 16));
    // What the kernel would cut it into.
    let plan = Plan::new(&h, frame).unwrap();
    let mut segs = Vec::new();
    for i in 0..plan.count() {
        let mut out = vec![0u8; plan.max_frame()];
        let n = plan.segment(frame, i, &mut out).unwrap();
        out.truncate(n);
        let mut f = out.clone();
        let d = vxlan::decap::decapsulate(&mut f, &VxlanConfig::default()).unwrap();
        assert_eq!((d.outer_src, d.outer_dst), (node().ip, PEER));
        assert!(n - 14 <= 1500, "each segment fits the uplink MTU");
        segs.push(d.inner_frame(&f)[14..].to_vec());
    }
    let segs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
    assert_segments(&segs, payload);
    assert_eq!(ip_of(segs[0]).ttl(), 63);
    assert_eq!(
        w.counters.encapsulated, 43,
        "counted as the frames it carries"
    );
    assert_eq!((w.counters.super_whole, w.counters.super_cut), (1, 0));
    assert_eq!(w.counters.total_dropped(), 0);
}

#[test]
fn a_pods_tso_burst_is_cut_for_an_uplink_that_takes_no_super_packets() {
    let (mut w, up, pod) = super_rig(false, true);
    let payload = 20_000;
    let g = Gso {
        size: MSS,
        tunnel: false,
    };
    pod.inject_super(tso_burst(POD, REMOTE_POD, payload), g);
    run(&mut w);
    let sent = up.take_sent_with_gso();
    let inner: Vec<Vec<u8>> = sent
        .into_iter()
        .map(|(mut f, g)| {
            assert_eq!(g, None);
            assert!(f.len() - 14 <= 1500);
            let d = vxlan::decap::decapsulate(&mut f, &VxlanConfig::default()).unwrap();
            d.inner_frame(&f)[14..].to_vec()
        })
        .collect();
    let segs: Vec<&[u8]> = inner.iter().map(Vec::as_slice).collect();
    assert_segments(&segs, payload);
    assert_eq!((w.counters.super_whole, w.counters.super_cut), (0, 1));
    assert_eq!(w.counters.total_dropped(), 0);
}

#[test]
fn a_peers_tunnel_burst_reaches_a_pod_whole_or_cut() {
    for pod_takes in [true, false] {
        let (mut w, up, pod) = super_rig(true, pod_takes);
        let payload = 30_000;
        let burst = tso_burst(REMOTE_POD, POD, payload);
        let g = Gso {
            size: MSS,
            tunnel: true,
        };
        up.inject_super(vxlan_from(PEER, 1, &burst), g);
        run(&mut w);
        let got = pod.take_sent_with_gso();
        if pod_takes {
            assert_eq!(got.len(), 1);
            let (p, g) = &got[0];
            assert_eq!(
                *g,
                Some(Gso {
                    size: MSS,
                    tunnel: false
                })
            );
            assert_eq!(ip_of(p).ttl(), 63);
            assert_eq!(encap::checksum::internet_checksum(&p[..20]), 0);
            assert_eq!(&p[20..36], &burst[20..36], "TCP header as sent");
            assert_eq!(&p[38..], &burst[38..], "payload as sent");
            let h = tso::vnet(p, false, g.unwrap()).unwrap();
            let plan = Plan::for_ip(&h, p).unwrap();
            let segs: Vec<Vec<u8>> = (0..plan.count())
                .map(|i| {
                    let mut out = vec![0u8; plan.max_frame()];
                    let n = plan.segment(p, i, &mut out).unwrap();
                    out.truncate(n);
                    out
                })
                .collect();
            let segs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
            assert_segments(&segs, payload);
            assert_eq!(w.counters.super_whole, 1);
        } else {
            let segs: Vec<&[u8]> = got
                .iter()
                .map(|(p, g)| {
                    assert_eq!(*g, None);
                    p.as_slice()
                })
                .collect();
            assert_segments(&segs, payload);
            assert_eq!(w.counters.super_cut, 1);
        }
        assert_eq!(
            w.counters.decapsulated, 22,
            "counted as the frames it carries"
        );
        assert_eq!(w.counters.total_dropped(), 0);
    }
}

#[test]
fn a_burst_whose_segments_exceed_the_overlay_mtu_gets_one_frag_needed() {
    let (mut w, up, pod) = super_rig(true, true);
    // 1460-byte segments: 1500 + 50 > the uplink's 1500.
    let g = Gso {
        size: 1460,
        tunnel: false,
    };
    pod.inject_super(tso_burst(POD, REMOTE_POD, 10_000), g);
    run(&mut w);
    assert!(up.take_sent().is_empty());
    let back = pod.take_sent_with_gso();
    assert_eq!(back.len(), 1);
    let (icmp, g) = &back[0];
    assert_eq!(*g, None, "the error is one small packet");
    assert_eq!(icmp[9], 1, "ICMP");
    assert_eq!((icmp[20], icmp[21]), (3, 4), "fragmentation needed");
    assert_eq!(
        u16::from_be_bytes([icmp[26], icmp[27]]),
        1450,
        "the overlay MTU"
    );
    assert_eq!(w.counters.dropped(Reason::FragNeeded), 1);
}

#[test]
fn a_single_segment_burst_leaves_as_an_ordinary_packet_with_its_checksum() {
    let (mut w, up, pod) = super_rig(true, true);
    let g = Gso {
        size: MSS,
        tunnel: false,
    };
    pod.inject_super(tso_burst(POD, REMOTE_POD, 1000), g);
    run(&mut w);
    let sent = up.take_sent_with_gso();
    assert_eq!(sent.len(), 1);
    let (mut f, g) = sent.into_iter().next().unwrap();
    assert_eq!(g, None);
    let d = vxlan::decap::decapsulate(&mut f, &VxlanConfig::default()).unwrap();
    assert_segments(&[&d.inner_frame(&f)[14..]], 1000);
    assert_eq!(w.counters.super_whole, 0);
}
