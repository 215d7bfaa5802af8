//! The pipeline's smaller decisions, each pinned: proxy ARP on Ethernet
//! pod ports (what is answered, with which bytes, what is ignored), the
//! worker that owns a reply (SNAT port, ICMP identifier, or the flow an
//! ICMP error quotes), and the hand-off guards that keep a frame from
//! circling between workers.

use super::*;
use crate::route::Route;

const GW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);

/// A worker with one Ethernet pod port for POD (MAC known) and an uplink.
fn ethernet_rig() -> (Worker, FakeHandle, FakeHandle) {
    let routes = Routes::new(snapshot(&[2, 3]));
    let mut w = Worker::new(routes, ConntrackConfig::default(), None, BUFFERS);
    let (p, up) = FakePort::new("eth0", Framing::Ethernet);
    w.add_port(Box::new(p), Role::Uplink);
    let (p, pod) = FakePort::new("veth-a", Framing::Ethernet);
    w.add_port(
        Box::new(p),
        Role::Pod {
            ip: POD,
            mac: Some(MacAddr([2, 0xaa, 0, 0, 0, 5])),
        },
    );
    (w, up, pod)
}

/// An ARP frame: `op` 1 request, 2 reply; padded to 60 bytes as a NIC does.
fn arp(op: u8, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, op]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

fn poll(w: &mut Worker) {
    for _ in 0..4 {
        w.poll(Duration::from_secs(10));
    }
}

/// A pod's request for its gateway (or a neighbour) is answered with the
/// vtep MAC (a fake port has none of its own), exactly per RFC 826, and the
/// padding is cut; requests that are not the pod asking about someone
/// else are ignored under their own reason.
#[test]
fn proxy_arp_answers_the_pod_and_ignores_the_rest() {
    let (mut w, up, pod) = ethernet_rig();
    let sha = [2, 0xaa, 0, 0, 0, 5];
    let me = node().vtep_mac.0;
    for target in [node().gateway_ip, POD2] {
        pod.inject(arp(1, sha, POD, target));
        poll(&mut w);
        let got = pod.take_sent();
        assert_eq!(got.len(), 1, "answer for {target}");
        let mut want = sha.to_vec();
        want.extend_from_slice(&me);
        want.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        want.extend_from_slice(&me);
        want.extend_from_slice(&target.octets());
        want.extend_from_slice(&sha);
        want.extend_from_slice(&POD.octets());
        assert_eq!(got[0], want, "reply to the request for {target}");
    }
    assert_eq!(w.counters.arp_replies, 2);
    // Not answered: a reply, the pod probing its own address (duplicate
    // address detection), a request from another source address, a
    // non-Ethernet/IPv4 request.
    let mut not_ethernet = arp(1, sha, POD, node().gateway_ip);
    not_ethernet[15] = 6;
    let mut not_ipv4 = arp(1, sha, POD, node().gateway_ip);
    not_ipv4[16] = 0x86;
    for (what, f) in [
        ("reply", arp(2, sha, POD, node().gateway_ip)),
        ("own address", arp(1, sha, POD, POD)),
        ("other source", arp(1, sha, POD2, node().gateway_ip)),
        ("hardware type", not_ethernet),
        ("protocol type", not_ipv4),
    ] {
        pod.inject(f);
        poll(&mut w);
        assert!(pod.take_sent().is_empty(), "{what} answered");
    }
    assert_eq!(w.counters.dropped(Reason::ArpIgnored), 5);
    // Cut inside the ARP body: malformed.
    let mut short = arp(1, sha, POD, node().gateway_ip);
    short.truncate(14 + 27);
    pod.inject(short);
    poll(&mut w);
    assert_eq!(w.counters.dropped(Reason::Malformed), 1);
    assert_eq!(w.counters.arp_replies, 2);
    assert!(up.take_sent().is_empty());
    assert_eq!(w.free_buffers(), BUFFERS);
}

/// IP from an Ethernet pod port is forwarded without its Ethernet header,
/// and frames to it get one from the port, to the pod's MAC.
#[test]
fn an_ethernet_pod_port_frames_what_it_gets() {
    let (mut w, up, pod) = ethernet_rig();
    let ip = udp(POD, REMOTE_POD, 64, 20);
    pod.inject(eth(node().vtep_mac, MacAddr([2, 0xaa, 0, 0, 0, 5]), &ip));
    poll(&mut w);
    assert_eq!(up.take_sent().len(), 1, "encapsulated to the peer");
    up.inject(vxlan_from(PEER, 1, &udp(REMOTE_POD, POD, 64, 20)));
    poll(&mut w);
    let got = pod.take_sent();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0][..6], &[2, 0xaa, 0, 0, 0, 5], "to the pod's MAC");
    assert_eq!(&got[0][6..12], &node().vtep_mac.0);
    assert_eq!(&got[0][12..14], &[0x08, 0x00]);
    assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
}

fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, reply: bool, id: u16) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, 1)
    } else {
        b.icmpv4_echo_request(id, 1)
    };
    let mut v = Vec::new();
    b.write(&mut v, b"ping").unwrap();
    v
}

/// An ICMP port unreachable from `from` quoting `quoted` (an IPv4 packet).
fn unreachable_quoting(from: Ipv4Addr, to: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(from.octets(), to.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut v, &quoted[..28])
        .unwrap();
    v
}

/// Replies to masqueraded flows that arrive on the other worker's uplink
/// queue are handed to the owner: an echo reply by its translated
/// identifier, ICMP errors by the flow they quote (a UDP flow's port, an
/// echo's identifier). What names no owner (another protocol) stays on the
/// worker that received it.
#[test]
fn icmp_replies_and_errors_go_to_the_worker_owning_the_flow() {
    let n = node();
    let routes = Routes::new(snapshot(&[2, 3]).with_pod_workers([(POD, 0), (POD2, 1)]));
    let (mut workers, ups, pods) = two_workers(&routes, None);
    // Worker 1's pod pings out and sends a UDP datagram out.
    pods[1].inject(icmp_echo(POD2, OUTSIDE, false, 77));
    pods[1].inject(udp(POD2, OUTSIDE, 64, 10));
    run_all(&mut workers);
    let out = ups[1].take_sent();
    assert_eq!(out.len(), 2);
    let (echo_out, udp_out) = (&out[0][14..], &out[1][14..]);
    let id = u16::from_be_bytes([echo_out[24], echo_out[25]]);
    assert_eq!(ip_of(echo_out).source_addr(), n.ip);
    let slice = workers[0].snat().unwrap().icmp_ids;
    assert_eq!(
        workers[0].snat().unwrap().owner_of(slice, id),
        Some(1),
        "identifier {id} from worker 1's slice"
    );
    // All three answers arrive on worker 0's queue.
    let answers = [
        icmp_echo(OUTSIDE, n.ip, true, id),
        unreachable_quoting(OUTSIDE, n.ip, udp_out),
        unreachable_quoting(OUTSIDE, n.ip, echo_out),
    ];
    for a in &answers {
        ups[0].inject(eth(n.uplink_mac, GW_MAC, a));
    }
    run_all(&mut workers);
    let back = pods[1].take_sent();
    assert_eq!(
        back.len(),
        3,
        "{:?} {:?}",
        workers[0].counters,
        workers[1].counters
    );
    for b in &back {
        assert_eq!(ip_of(b).destination_addr(), POD2);
    }
    assert_eq!(
        u16::from_be_bytes([back[0][24], back[0][25]]),
        77,
        "identifier restored"
    );
    assert_eq!(workers[0].counters.handed_off, 3);
    assert_eq!(workers[1].counters.handed_in, 3);
    // GRE to the node: no owner, dropped by this worker's conntrack or
    // passed, but never handed on.
    let mut gre = udp(OUTSIDE, n.ip, 64, 10);
    gre[9] = 47;
    gre[10..12].fill(0);
    let c = encap::checksum::internet_checksum(&gre[..20]);
    gre[10..12].copy_from_slice(&c.to_be_bytes());
    ups[0].inject(eth(n.uplink_mac, GW_MAC, &gre));
    run_all(&mut workers);
    assert_eq!(workers[0].counters.handed_off, 3, "GRE not handed on");
    for w in &workers {
        assert_eq!(w.free_buffers(), BUFFERS, "worker {}", w.id());
    }
}

/// With one worker nothing is handed off, whatever slice a port is in.
#[test]
fn a_single_worker_owns_every_reply() {
    let mut r = rig();
    let n = node();
    r.pod.inject(udp(POD, OUTSIDE, 64, 10));
    r.run();
    let out = r.up.take_sent();
    let sport = u16::from_be_bytes([out[0][34], out[0][35]]);
    let mut reply = Vec::new();
    PacketBuilder::ipv4(OUTSIDE.octets(), n.ip.octets(), 50)
        .udp(53, sport)
        .write(&mut reply, b"answer")
        .unwrap();
    r.up.inject(eth(n.uplink_mac, GW_MAC, &reply));
    r.run();
    assert_eq!(r.pod.take_sent().len(), 1);
    assert_eq!(r.w.counters.handed_off, 0);
}

/// The snapshot names the worker of every pod: a pod the snapshot places
/// on this worker but whose port is not here (it moved, or is being
/// added) is a drop, never a hand-off to itself; a frame handed over for a
/// pod this worker does not have is dropped, not handed on again.
#[test]
fn hand_offs_never_loop() {
    let ghost = Ipv4Addr::new(10, 244, 1, 9);
    let routes = Routes::new(snapshot(&[2, 3]).with_pod_workers([(POD, 0), (POD2, 1), (ghost, 0)]));
    assert!(matches!(routes.load().route(ghost), Route::Local));
    let (mut workers, ups, pods) = two_workers(&routes, None);
    // To the ghost from worker 0 (its worker by the snapshot): dropped.
    pods[0].inject(udp(POD, ghost, 64, 10));
    // To the ghost from worker 1: handed to worker 0, which drops it.
    pods[1].inject(udp(POD2, ghost, 64, 10));
    run_all(&mut workers);
    assert_eq!(workers[0].counters.dropped(Reason::NoSuchPod), 2);
    assert_eq!(workers[0].counters.handed_off, 0);
    assert_eq!(workers[1].counters.handed_off, 1);
    assert_eq!(workers[0].counters.handed_in, 1);
    // Not in the snapshot at all, inside the pod CIDR: dropped where it is.
    let unknown = Ipv4Addr::new(10, 244, 1, 10);
    pods[1].inject(udp(POD2, unknown, 64, 10));
    run_all(&mut workers);
    assert_eq!(workers[1].counters.dropped(Reason::NoSuchPod), 1);
    assert!(ups.iter().all(|u| u.take_sent().is_empty()));
    for w in &workers {
        assert_eq!(w.free_buffers(), BUFFERS, "worker {}", w.id());
    }
}

/// Traffic between pods and the node's own stack, through the host device:
/// a pod reaching the node's address goes to the host device (on whichever
/// worker owns it); what the host device sends is never routed out of the
/// cluster, never sent back into it, and never handed to a worker that
/// has no port for its pod.
#[test]
fn the_host_device_carries_pod_to_node_traffic_and_nothing_else() {
    let n = node();
    let ghost = Ipv4Addr::new(10, 244, 1, 9);
    let routes = Routes::new(snapshot(&[2, 3]).with_pod_workers([
        (POD, 0),
        (POD2, 1),
        (ghost, 0),
        (n.gateway_ip, 0),
        (n.ip, 0),
    ]));
    let (host_port, host) = FakePort::new("sluice0", Framing::Ip);
    let (mut workers, ups, pods) = two_workers(&routes, Some(host_port));
    // Pods on both workers to the node's address: out of the host device.
    pods[0].inject(udp(POD, n.ip, 64, 10));
    pods[1].inject(udp(POD2, n.ip, 64, 10));
    run_all(&mut workers);
    let got = host.take_sent();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|f| ip_of(f).destination_addr() == n.ip));
    assert!(got.iter().all(|f| ip_of(f).ttl() == 63));
    assert_eq!(workers[1].counters.handed_off, 1);
    // From the host device: to the node's own address (a loop), to an
    // address outside the cluster, to a pod whose port is not here.
    host.inject(udp(n.gateway_ip, n.ip, 64, 10));
    host.inject(udp(n.ip, OUTSIDE, 64, 10));
    host.inject(udp(OUTSIDE, ghost, 64, 10));
    run_all(&mut workers);
    assert!(host.take_sent().is_empty());
    assert!(ups.iter().all(|u| u.take_sent().is_empty()));
    assert_eq!(workers[0].counters.dropped(Reason::NoRoute), 2);
    assert_eq!(workers[0].counters.dropped(Reason::NoSuchPod), 1);
    assert_eq!(workers[0].counters.handed_off, 0);
    for w in &workers {
        assert_eq!(w.free_buffers(), BUFFERS, "worker {}", w.id());
    }
}

/// Without masquerade (no SNAT configured, as Calico with natOutgoing
/// off), a pod's flow out of the cluster leaves by the uplink with the
/// pod's address, towards the gateway, not through the host device.
#[test]
fn without_snat_outside_traffic_leaves_untranslated() {
    let (mut w, up, pod) = ethernet_rig();
    let ip = udp(POD, OUTSIDE, 64, 20);
    pod.inject(eth(node().vtep_mac, MacAddr([2, 0xaa, 0, 0, 0, 5]), &ip));
    poll(&mut w);
    let out = up.take_sent();
    assert_eq!(out.len(), 1, "{:?}", w.counters);
    assert_eq!(ip_of(&out[0][14..]).source_addr(), POD);
    assert_eq!(&out[0][..6], &node().gateway_mac.unwrap().0);
    assert_eq!(w.counters.nat, 0);
}
