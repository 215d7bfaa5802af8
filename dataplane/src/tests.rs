//! Pipeline scenarios over fake ports: every path a frame can take, with
//! exact outcomes, and no buffer leaked.

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::MacAddr;
use encap::vxlan::{self, EncapTemplate, OVERHEAD, TunnelEndpoint, Vni, VxlanConfig};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use nat::{ConntrackConfig, SnatConfig};

use crate::buf::{Buf, HEADROOM};
use crate::counters::Reason;
use crate::port::Framing;
use crate::port::fake::{FakeHandle, FakePort};
use crate::route::Routes;
use crate::route::tests::{node, snapshot};
use crate::worker::{Role, Worker};

const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const POD2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 6);
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const BUFFERS: usize = 256;

struct Rig {
    w: Worker,
    up: FakeHandle,
    pod: FakeHandle,
    pod2: FakeHandle,
    routes: Routes,
}

fn rig() -> Rig {
    rig_with(BUFFERS)
}

/// [`rig`] with a pool of `buffers`.
fn rig_with(buffers: usize) -> Rig {
    let routes = Routes::new(snapshot(&[2, 3]));
    let n = node();
    let snat = SnatConfig::new(
        vec![n.pod_cidr],
        vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.96.0.0/12".parse().unwrap(),
        ],
        n.ip,
    );
    let mut w = Worker::new(
        routes.clone(),
        ConntrackConfig::default(),
        Some(snat),
        buffers,
    );
    let (p, up) = FakePort::new("eth0", Framing::Ethernet);
    w.add_port(Box::new(p), Role::Uplink);
    let (p, pod) = FakePort::new("pod-a", Framing::Ip);
    w.add_port(Box::new(p), Role::Pod { ip: POD, mac: None });
    let (p, pod2) = FakePort::new("pod-b", Framing::Ip);
    w.add_port(
        Box::new(p),
        Role::Pod {
            ip: POD2,
            mac: None,
        },
    );
    Rig {
        w,
        up,
        pod,
        pod2,
        routes,
    }
}

impl Rig {
    fn run(&mut self) {
        for _ in 0..4 {
            self.w.poll(Duration::from_secs(10));
        }
        assert_eq!(self.w.free_buffers(), BUFFERS, "no buffer leaked");
    }
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), ttl)
        .udp(40000, 53)
        .write(&mut v, &vec![0x5a; payload])
        .unwrap();
    v
}

fn eth(dst: MacAddr, src: MacAddr, ip: &[u8]) -> Vec<u8> {
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

/// A VXLAN frame from `from` (a peer VTEP) carrying `ip` to this node.
fn vxlan_from(from: Ipv4Addr, vni: u32, ip: &[u8]) -> Vec<u8> {
    let n = node();
    let inner = eth(n.vtep_mac, MacAddr([2, 0xee, 0, 0, 0, 2]), ip);
    let cfg = VxlanConfig {
        vni: Vni::new(vni).unwrap(),
        ..VxlanConfig::default()
    };
    let t = EncapTemplate::new(
        &cfg,
        &TunnelEndpoint {
            local_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            next_hop_mac: n.uplink_mac,
            local_ip: from,
            remote_ip: n.ip,
        },
    );
    let mut b = vec![0; OVERHEAD];
    b.extend_from_slice(&inner);
    let end = b.len();
    let r = vxlan::encapsulate(&mut b, OVERHEAD..end, &t).unwrap();
    b[r].to_vec()
}

/// `p` with the DF bit set or clear (header checksum recomputed).
fn with_df(mut p: Vec<u8>, df: bool) -> Vec<u8> {
    if df {
        p[6] |= 0x40;
    } else {
        p[6] &= !0x40;
    }
    p[10..12].fill(0);
    let c = encap::checksum::internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn ip_of(p: &[u8]) -> etherparse::Ipv4HeaderSlice<'_> {
    etherparse::Ipv4HeaderSlice::from_slice(p).unwrap()
}

#[test]
fn pod_to_remote_pod_is_vxlan_encapsulated_to_the_peer() {
    let mut r = rig();
    let pkt = udp(POD, REMOTE_POD, 64, 100);
    r.pod.inject(pkt.clone());
    r.run();
    let sent = r.up.take_sent();
    assert_eq!(sent.len(), 1);
    let mut f = sent[0].clone();
    let d = vxlan::decap::decapsulate(&mut f, &VxlanConfig::default()).unwrap();
    assert_eq!(d.outer_src, node().ip);
    assert_eq!(d.outer_dst, PEER);
    assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 2], "outer dst = peer's MAC");
    let inner = d.inner_frame(&f);
    assert_eq!(
        &inner[0..6],
        &[2, 0xee, 0, 0, 0, 2],
        "inner dst = peer VTEP MAC"
    );
    assert_eq!(&inner[6..12], &node().vtep_mac.0);
    let ip = &inner[14..];
    assert_eq!(ip_of(ip).ttl(), 63);
    assert_eq!(&ip[20..], &pkt[20..], "payload intact");
    assert_eq!(r.w.counters.encapsulated, 1);
    assert_eq!(r.w.counters.total_dropped(), 0);
}

#[test]
fn vxlan_from_a_known_peer_reaches_the_pod() {
    let mut r = rig();
    let pkt = udp(REMOTE_POD, POD, 64, 60);
    r.up.inject(vxlan_from(PEER, 1, &pkt));
    r.run();
    let got = r.pod.take_sent();
    assert_eq!(got.len(), 1);
    assert_eq!(ip_of(&got[0]).ttl(), 63);
    assert_eq!(&got[0][20..], &pkt[20..]);
    assert_eq!(encap::checksum::internet_checksum(&got[0][..20]), 0);
    assert_eq!(r.w.counters.decapsulated, 1);
}

#[test]
fn bad_vxlan_is_dropped_under_its_own_reason() {
    let mut r = rig();
    let pkt = udp(REMOTE_POD, POD, 64, 60);
    r.up.inject(vxlan_from(Ipv4Addr::new(192, 168, 50, 99), 1, &pkt)); // unknown VTEP
    r.up.inject(vxlan_from(PEER, 7, &pkt)); // wrong VNI
    let mut bad_flags = vxlan_from(PEER, 1, &pkt);
    bad_flags[14 + 20 + 8] = 0; // I flag clear
    r.up.inject(bad_flags);
    r.up.inject(vxlan_from(
        PEER,
        1,
        &udp(Ipv4Addr::new(10, 244, 3, 3), POD, 64, 10),
    )); // from n3's CIDR via n2
    let mut trunc = vxlan_from(PEER, 1, &pkt);
    trunc.truncate(14 + 20 + 4);
    r.up.inject(trunc);
    let mut badsum = vxlan_from(PEER, 1, &pkt);
    badsum[14 + 10] ^= 0xff;
    r.up.inject(badsum);
    r.run();
    assert!(r.pod.take_sent().is_empty());
    let c = &r.w.counters;
    assert_eq!(c.dropped(Reason::UnknownVtep), 1);
    assert_eq!(c.dropped(Reason::InnerSpoofed), 1);
    // Truncated inside the outer IP header: refused before decap.
    assert_eq!(c.dropped(Reason::Malformed), 1);
    let decap: u64 = Reason::all()
        .filter(|r| matches!(r, Reason::Decap(_)))
        .map(|x| c.dropped(x))
        .sum();
    assert_eq!(decap, 3, "{c:?}");
    assert_eq!(c.total_dropped(), 6);
    // Each decap failure under a distinct reason.
    let distinct = Reason::all()
        .filter(|r| matches!(r, Reason::Decap(_)) && c.dropped(*r) == 1)
        .count();
    assert_eq!(distinct, 3);
}

#[test]
fn pod_to_pod_on_the_node_and_anti_spoofing() {
    let mut r = rig();
    r.pod.inject(udp(POD, POD2, 64, 10));
    r.pod.inject(udp(POD2, POD, 64, 10)); // pod-a claiming pod-b's address
    r.pod
        .inject(udp(POD, Ipv4Addr::new(10, 244, 1, 77), 64, 10)); // nobody there
    r.pod
        .inject(udp(POD, Ipv4Addr::new(10, 244, 200, 1), 64, 10)); // cluster, no node
    r.pod.inject(vec![0x45, 0, 0]); // truncated
    let mut bad = udp(POD, POD2, 64, 10);
    bad[10] ^= 1;
    r.pod.inject(bad);
    r.pod.inject(vec![0x60; 60]); // IPv6
    r.run();
    let got = r.pod2.take_sent();
    assert_eq!(got.len(), 1);
    assert_eq!(ip_of(&got[0]).ttl(), 63);
    let c = &r.w.counters;
    for (reason, n) in [
        (Reason::Spoofed, 1),
        (Reason::NoSuchPod, 1),
        (Reason::NoRoute, 1),
        (Reason::Malformed, 1),
        (Reason::BadIpChecksum, 1),
        (Reason::NotIpv4, 1),
    ] {
        assert_eq!(c.dropped(reason), n, "{}", reason.name());
    }
    assert_eq!(c.total_dropped(), 6);
}

#[test]
fn outside_traffic_is_masqueraded_and_replies_come_back() {
    let mut r = rig();
    r.pod.inject(udp(POD, OUTSIDE, 64, 20));
    r.run();
    let out = r.up.take_sent();
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..6], &node().gateway_mac.unwrap().0);
    let ip = &out[0][14..];
    assert_eq!(ip_of(ip).source_addr(), node().ip, "SNAT to the node IP");
    assert_eq!(ip_of(ip).ttl(), 63);
    let sport = u16::from_be_bytes([ip[20], ip[21]]);
    // The outside host answers the node.
    let mut reply = Vec::new();
    PacketBuilder::ipv4(OUTSIDE.octets(), node().ip.octets(), 50)
        .udp(53, sport)
        .write(&mut reply, b"answer")
        .unwrap();
    r.up.inject(eth(
        node().uplink_mac,
        MacAddr([2, 0, 0, 0, 0, 0xfe]),
        &reply,
    ));
    // And a stray packet to the node that matches nothing.
    let mut stray = Vec::new();
    PacketBuilder::ipv4(OUTSIDE.octets(), node().ip.octets(), 50)
        .udp(53, 1)
        .write(&mut stray, b"x")
        .unwrap();
    r.up.inject(eth(
        node().uplink_mac,
        MacAddr([2, 0, 0, 0, 0, 0xfe]),
        &stray,
    ));
    r.run();
    let back = r.pod.take_sent();
    assert_eq!(back.len(), 1);
    let p = SlicedPacket::from_ip(&back[0]).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().destination_addr(), POD);
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        panic!()
    };
    assert_eq!(u.destination_port(), 40000);
    assert_eq!(u.payload(), b"answer");
    assert_eq!(r.w.counters.nat, 2);
    assert_eq!(
        r.w.counters
            .dropped(Reason::Conntrack(nat::DropReason::NoEntry)),
        1
    );
}

#[test]
fn df_packet_too_big_for_the_tunnel_gets_frag_needed_with_the_overlay_mtu() {
    let mut r = rig();
    let big = with_df(udp(POD, REMOTE_POD, 64, 1600 - 28), true);
    r.pod.inject(big.clone());
    // Not DF: dropped as too big.
    r.pod
        .inject(with_df(udp(POD, REMOTE_POD, 64, 1600 - 28), false));
    // Exactly the overlay MTU fits.
    r.pod
        .inject(with_df(udp(POD, REMOTE_POD, 64, 1450 - 28), true));
    r.run();
    let back = r.pod.take_sent();
    assert_eq!(back.len(), 1);
    let p = SlicedPacket::from_ip(&back[0]).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1450 }
        )
    );
    assert_eq!(ip_of(&back[0]).source_addr(), node().gateway_ip);
    assert_eq!(&back[0][28..48], &big[..20], "quotes the original header");
    let up = r.up.take_sent();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].len(), 1450 + 50 + 14, "a full-MTU outer frame");
    assert_eq!(r.w.counters.dropped(Reason::FragNeeded), 1);
    assert_eq!(r.w.counters.dropped(Reason::TooBig), 1);
    assert_eq!(r.w.counters.icmp_sent, 1);
}

#[test]
fn ttl_one_gets_time_exceeded() {
    let mut r = rig();
    r.pod.inject(udp(POD, REMOTE_POD, 1, 10));
    r.run();
    let back = r.pod.take_sent();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0][20], 11, "time exceeded");
    assert!(r.up.take_sent().is_empty());
    assert_eq!(r.w.counters.dropped(Reason::TtlExceeded), 1);
    assert_eq!(r.w.counters.icmp_sent, 1);
}

#[test]
fn a_new_snapshot_applies_from_the_next_burst() {
    let mut r = rig();
    let to_n4 = udp(POD, Ipv4Addr::new(10, 244, 4, 4), 64, 10);
    r.pod.inject(to_n4.clone());
    r.run();
    assert_eq!(r.w.counters.dropped(Reason::NoRoute), 1);
    r.routes.store(snapshot(&[2, 3, 4]));
    r.pod.inject(to_n4);
    r.run();
    assert_eq!(r.up.take_sent().len(), 1);
}

#[test]
fn a_full_tx_ring_drops_and_counts_the_rest() {
    let mut r = rig();
    r.up.set_tx_room(Some(3));
    for _ in 0..10 {
        r.pod.inject(udp(POD, REMOTE_POD, 64, 10));
    }
    r.run();
    assert_eq!(r.up.take_sent().len(), 3);
    assert_eq!(r.w.counters.dropped(Reason::TxFull), 7);
    let _ = (Buf::new(), HEADROOM);
}

/// Two workers over one mesh, worker `i` with an uplink and pod POD
/// (worker 0) or POD2 (worker 1), SNAT slices of their own, and `host` as
/// worker 0's host device: (workers, uplinks, pods).
fn two_workers(
    routes: &Routes,
    host: Option<FakePort>,
) -> (Vec<Worker>, Vec<FakeHandle>, Vec<FakeHandle>) {
    use crate::worker::Mesh;
    let n = node();
    let mut meshes = Mesh::new(2, BUFFERS).into_iter();
    let mut host = host;
    let (mut workers, mut ups, mut pods) = (Vec::new(), Vec::new(), Vec::new());
    for (id, pod_ip) in [(0u8, POD), (1u8, POD2)] {
        let mut snat = SnatConfig::new(
            vec![n.pod_cidr],
            vec!["10.244.0.0/16".parse().unwrap()],
            n.ip,
        );
        snat.worker = (u16::from(id), 2);
        let mut w = Worker::with_mesh(
            id,
            meshes.next().unwrap(),
            routes.clone(),
            ConntrackConfig::default(),
            Some(snat),
            BUFFERS,
        );
        let (p, up) = FakePort::new("eth0", Framing::Ethernet);
        w.add_port(Box::new(p), Role::Uplink);
        let (p, pod) = FakePort::new("pod", Framing::Ip);
        w.add_port(
            Box::new(p),
            Role::Pod {
                ip: pod_ip,
                mac: None,
            },
        );
        if let Some(h) = host.take() {
            w.add_port(
                Box::new(h),
                Role::Host {
                    gateway: n.gateway_ip,
                    node: n.ip,
                },
            );
        }
        workers.push(w);
        ups.push(up);
        pods.push(pod);
    }
    (workers, ups, pods)
}

/// Four rounds of every worker's poll.
fn run_all(ws: &mut [Worker]) {
    for _ in 0..4 {
        for w in ws.iter_mut() {
            w.poll(Duration::from_secs(10));
        }
    }
}

/// Two workers: pods on different workers reach each other through the
/// hand-off queue, a reply that arrives on the wrong worker's uplink queue
/// is handed to the worker owning its flow (by SNAT port slice), and every
/// borrowed buffer goes back to its owner.
#[test]
fn two_workers_hand_frames_to_each_other() {
    let n = node();
    let routes = Routes::new(snapshot(&[2, 3]).with_pod_workers([(POD, 0), (POD2, 1)]));
    let (mut workers, ups, pods) = two_workers(&routes, None);
    // Pod on worker 0 -> pod on worker 1.
    pods[0].inject(udp(POD, POD2, 64, 10));
    run_all(&mut workers);
    let got = pods[1].take_sent();
    assert_eq!(got.len(), 1);
    assert_eq!(ip_of(&got[0]).destination_addr(), POD2);
    assert_eq!(workers[0].counters.handed_off, 1);
    assert_eq!(workers[1].counters.handed_in, 1);
    // Pod on worker 0 -> outside: its port comes from worker 0's slice.
    pods[0].inject(udp(POD, OUTSIDE, 64, 10));
    run_all(&mut workers);
    let out = ups[0].take_sent();
    assert_eq!(out.len(), 1);
    let sport = u16::from_be_bytes([out[0][14 + 20], out[0][14 + 21]]);
    assert!(
        (61000..61000 + 2268).contains(&sport),
        "{sport} in worker 0's slice"
    );
    // The reply arrives on worker 1's queue.
    let mut reply = Vec::new();
    PacketBuilder::ipv4(OUTSIDE.octets(), n.ip.octets(), 50)
        .udp(53, sport)
        .write(&mut reply, b"answer")
        .unwrap();
    ups[1].inject(eth(n.uplink_mac, MacAddr([2, 0, 0, 0, 0, 0xfe]), &reply));
    run_all(&mut workers);
    let back = pods[0].take_sent();
    assert_eq!(back.len(), 1, "reply reached the pod through worker 0");
    assert_eq!(ip_of(&back[0]).destination_addr(), POD);
    assert_eq!(workers[1].counters.handed_off, 1);
    assert_eq!(workers[1].counters.total_dropped(), 0);
    assert_eq!(workers[0].counters.total_dropped(), 0);
    // Every borrowed buffer went home.
    for w in &workers {
        assert_eq!(w.free_buffers(), BUFFERS, "worker {}", w.id());
    }
}

/// 1,000,000 bit/s (1 bit per us) with a burst of 3 frames of 128 bytes
/// (1024 bits each).
fn small_limit() -> crate::shaper::Rate {
    crate::shaper::Rate {
        bits_per_sec: 1_000_000,
        burst_bits: 3 * 1024,
    }
}

#[test]
fn a_pods_rate_limits_shape_each_direction_and_count_what_they_drop() {
    use crate::shaper::PodLimits;
    let mut r = rig();
    let pkt = udp(POD, POD2, 64, 100);
    assert_eq!(pkt.len(), 128);
    let limit = small_limit();
    assert!(r.w.limit_pod(
        POD,
        PodLimits {
            ingress: None,
            egress: Some(limit),
        }
    ));
    assert!(!r.w.limit_pod(Ipv4Addr::new(10, 244, 1, 99), PodLimits::default()));
    // Egress from a port that keeps unread frames (a TUN's qdisc; the
    // fake does too): the worker reads what the tokens cover, plus one
    // frame into debt, and leaves the rest unread. Nothing is dropped.
    for _ in 0..10 {
        r.pod.inject(pkt.clone());
    }
    let t = Duration::from_secs(10);
    let (mut now, mut got, mut polls) = (t, 0, 0);
    while got < 10 {
        r.w.poll(now);
        got += r.pod2.take_sent().len();
        polls += 1;
        assert!(polls < 100, "shaping stalled");
        if got == 10 {
            break;
        }
        if let Some(w) = r.w.shaping_wait(now) {
            // In debt: a poll before the wait is over reads nothing.
            r.w.poll(now + w - Duration::from_nanos(1));
            assert_eq!(r.pod2.take_sent().len(), 0, "read while in debt");
            now += w;
        }
    }
    // Three frames on the full bucket, the fourth as soon as a token
    // exists, then one per 1024 us: the tenth 6 x 1024 us later.
    let took = now - t;
    assert!(
        (Duration::from_micros(6 * 1024)..Duration::from_micros(6 * 1024 + 10)).contains(&took),
        "{took:?}"
    );
    assert_eq!(r.w.counters.total_dropped(), 0, "{:?}", r.w.counters);
    // The other direction is not limited, and POD2 is not limited.
    for _ in 0..10 {
        r.pod2.inject(udp(POD2, POD, 64, 100));
    }
    r.w.poll(now);
    assert_eq!(r.pod.take_sent().len(), 10);
    // POD's ingress: frames to it wait in its queue for tokens; once the
    // queue is full, new ones are dropped and counted.
    assert!(r.w.limit_pod(
        POD,
        PodLimits {
            ingress: Some(limit),
            egress: None,
        }
    ));
    let offered = 40;
    let mut sent = 0;
    let mut polls = 0;
    for _ in 0..4 {
        for _ in 0..offered / 4 {
            r.pod2.inject(udp(POD2, POD, 64, 100));
        }
        r.w.poll(now);
        polls += 1;
        sent += r.pod.take_sent().len();
    }
    assert_eq!(polls, 4);
    // A full bucket: three frames' worth at once, the rest queued.
    assert_eq!(sent, 3);
    assert_eq!(r.w.counters.dropped(Reason::PodIngressRate), 0);
    // Flood past the queue (64 frames): the excess is dropped.
    for _ in 0..100 {
        r.pod2.inject(udp(POD2, POD, 64, 100));
    }
    for _ in 0..4 {
        r.w.poll(now); // 32 frames from POD2 per poll
    }
    let dropped = r.w.counters.dropped(Reason::PodIngressRate);
    assert_eq!(dropped, 100 + 37 - 64, "queue of 64 frames");
    // Draining the queue takes one frame per 1024 us.
    let start = now;
    let mut left = 64;
    while left > 0 {
        now += r.w.shaping_wait(now).expect("frames wait");
        r.w.poll(now);
        left -= r.pod.take_sent().len();
    }
    let took = now - start;
    assert!(
        (Duration::from_micros(63 * 1024)..=Duration::from_micros(65 * 1024)).contains(&took),
        "{took:?}"
    );
    assert_eq!(r.w.shaping_wait(now), None, "nothing waits");
    // Per port: POD's counter holds its drops, POD2's none.
    let limited: Vec<(String, u64)> =
        r.w.ports()
            .map(|p| (p.counters.name.clone(), p.counters.rate_limited))
            .collect();
    assert!(limited.contains(&("pod-a".into(), dropped)), "{limited:?}");
    assert!(limited.contains(&("pod-b".into(), 0)), "{limited:?}");
    // No buffer leaked by a shaped or dropped frame.
    for _ in 0..4 {
        r.w.poll(now);
    }
    assert_eq!(r.w.free_buffers(), BUFFERS);
}

/// A client outside the cluster reaches a pod through the node (hostPort
/// or NodePort: the node DNATs and sends through its host device): the
/// pod sees the client's address and its replies go back through the host
/// device (where the node undoes its DNAT), on whichever worker the pod
/// lives; a flow the pod starts itself still leaves masqueraded.
#[test]
fn replies_to_clients_the_node_forwarded_go_back_through_the_host_device() {
    let n = node();
    let routes = Routes::new(snapshot(&[2, 3]).with_pod_workers([
        (POD, 0),
        (POD2, 1),
        (n.gateway_ip, 0),
        (n.ip, 0),
    ]));
    let (host_port, host) = FakePort::new("sluice0", Framing::Ip);
    let (mut workers, ups, pods) = two_workers(&routes, Some(host_port));
    let tcp = |src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, syn: bool, ack: bool| {
        let mut b =
            PacketBuilder::ipv4(src.octets(), dst.octets(), 64).tcp(sport, dport, 1000, 65535);
        if syn {
            b = b.syn();
        }
        if ack {
            b = b.ack(1);
        }
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    };
    for (i, pod) in [POD, POD2].into_iter().enumerate() {
        // The client's SYN, DNATed by the node, arrives from the host
        // device with the client's address.
        host.inject(tcp(OUTSIDE, pod, 40000, 8080, true, false));
        run_all(&mut workers);
        let got = pods[i].take_sent();
        assert_eq!(got.len(), 1, "pod {pod}");
        assert_eq!(ip_of(&got[0]).source_addr(), OUTSIDE, "client address kept");
        // The pod's SYN-ACK goes back to the node untranslated, not out of
        // the uplink.
        pods[i].inject(tcp(pod, OUTSIDE, 8080, 40000, true, true));
        run_all(&mut workers);
        let back = host.take_sent();
        assert_eq!(back.len(), 1, "pod {pod}'s reply through the host device");
        assert_eq!(ip_of(&back[0]).source_addr(), pod);
        assert_eq!(ip_of(&back[0]).destination_addr(), OUTSIDE);
        assert!(ups.iter().all(|u| u.take_sent().is_empty()));
        // A flow the pod starts to the same address leaves masqueraded.
        pods[i].inject(tcp(pod, OUTSIDE, 50000, 443, true, false));
        run_all(&mut workers);
        let out = ups[i].take_sent();
        assert_eq!(out.len(), 1);
        assert_eq!(ip_of(&out[0][14..]).source_addr(), n.ip, "SNAT to the node");
        assert!(host.take_sent().is_empty());
    }
    // The node's own address is not tracked: replies to it are routed to
    // the host device by address.
    host.inject(tcp(n.ip, POD, 40001, 8080, true, false));
    run_all(&mut workers);
    assert_eq!(pods[0].take_sent().len(), 1);
    for w in &workers {
        assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
        assert_eq!(w.free_buffers(), BUFFERS, "worker {}", w.id());
    }
    assert_eq!(workers[0].conntrack().len(), 2, "host flow + SNAT flow");
    assert_eq!(
        workers[1].conntrack().len(),
        2,
        "tracked on the pod's worker"
    );
}

/// Frames waiting for a pod's tokens never take the buffers the worker
/// needs to receive: below a reserve of free buffers they are dropped.
#[test]
fn frames_waiting_for_tokens_leave_the_worker_buffers_to_receive() {
    use crate::shaper::{PodLimits, Rate};
    const POOL: usize = 100;
    let Rig {
        mut w, pod, pod2, ..
    } = rig_with(POOL);
    // One frame's worth of burst, then 1 bit per second: nothing more
    // leaves during the flood.
    assert!(w.limit_pod(
        POD,
        PodLimits {
            ingress: Some(Rate {
                bits_per_sec: 1,
                burst_bits: 1024,
            }),
            egress: None,
        }
    ));
    for _ in 0..200 {
        pod2.inject(udp(POD2, POD, 64, 100));
    }
    let t = Duration::from_secs(1);
    for _ in 0..10 {
        w.poll(t);
    }
    assert_eq!(pod.take_sent().len(), 1);
    let dropped = w.counters.dropped(Reason::PodIngressRate);
    let queued = 200 - 1 - dropped as usize;
    assert!(queued > 0 && queued < 64, "{queued} queued");
    assert!(w.free_buffers() >= 64, "{} free", w.free_buffers());
    // The worker still receives and forwards for other pods.
    pod.inject(udp(POD, POD2, 64, 100));
    w.poll(t);
    assert_eq!(pod2.take_sent().len(), 1);
    // Once the tokens come, the queue drains and every buffer is back.
    w.limit_pod(POD, PodLimits::default());
    w.poll(t);
    assert_eq!(pod.take_sent().len(), queued);
    assert_eq!(w.free_buffers(), POOL);
}

/// A pod whose port would lose unread frames (AF_XDP) is read as usual;
/// frames over its egress limit wait in a short queue and leave as tokens
/// come, and only what overflows the queue is dropped.
#[test]
fn an_af_xdp_pods_egress_waits_in_a_short_queue() {
    use crate::shaper::PodLimits;
    let mut r = rig();
    r.pod.set_loses_unread();
    assert!(r.w.limit_pod(
        POD,
        PodLimits {
            ingress: None,
            egress: Some(small_limit()),
        }
    ));
    for _ in 0..100 {
        r.pod.inject(udp(POD, POD2, 64, 100));
    }
    let t = Duration::from_secs(10);
    for _ in 0..4 {
        r.w.poll(t); // 32 frames read per poll
    }
    assert_eq!(r.pod2.take_sent().len(), 3, "the burst");
    let dropped = r.w.counters.dropped(Reason::PodEgressRate);
    assert_eq!(dropped, 100 - 3 - 64, "a queue of 64 frames");
    // One frame per 1024 us (the first as soon as a token exists).
    let mut now = t;
    let mut sent = 0;
    while sent < 64 {
        now += r.w.shaping_wait(now).expect("frames wait");
        r.w.poll(now);
        sent += r.pod2.take_sent().len();
    }
    let took = now - t;
    assert!(
        (Duration::from_micros(63 * 1024)..Duration::from_micros(63 * 1024 + 10)).contains(&took),
        "{took:?}"
    );
    assert_eq!(r.w.shaping_wait(now), None);
    assert_eq!(r.w.counters.dropped(Reason::PodEgressRate), dropped);
    assert_eq!(r.w.free_buffers(), BUFFERS);
}

mod edges;
mod node_ports;
mod services;
mod super_packets;
