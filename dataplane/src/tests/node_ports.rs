//! Services from outside the node through the real pipeline over fake
//! ports, on two workers (`services.node_ports`): a NodePort under an
//! external Cluster policy (masqueraded to the gateway address, backends
//! here and behind VXLAN), under a Local policy (client address kept,
//! only this node's endpoints, replies from a backend on any worker),
//! reject and drop from outside, loadBalancerSourceRanges, and frames to a
//! node port no service holds left alone.

use std::collections::BTreeSet;
use std::sync::Arc;

use lb::{Endpoint, PortName, Proto, ServicePort, ServiceTable};

use super::services::{ends, facts, udp_from};
use super::*;

const NODE_PORT: u16 = 30053;
const LB_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x77]);

fn nodeport(name: &str, local_policy: bool, backends: &[(Ipv4Addr, bool)]) -> ServicePort {
    let mut p = ServicePort::cluster_ip(
        PortName {
            namespace: "default".into(),
            service: name.into(),
            port: String::new(),
            proto: Proto::Udp,
        },
        Ipv4Addr::new(10, 96, 0, 20),
        53,
    );
    p.node_port = Some(NODE_PORT);
    p.load_balancer_ips = vec![LB_IP];
    p.external_local = local_policy;
    p.endpoints = backends
        .iter()
        .map(|&(ip, local)| Endpoint::ready(ip, 5353, local))
        .collect();
    p
}

fn routes_with(ports: Vec<ServicePort>) -> Routes {
    let n = node();
    let table = Arc::new(ServiceTable::new(facts(), ports));
    Routes::new(
        snapshot(&[2, 3])
            .with_pod_workers([(POD, 0), (POD2, 1), (n.gateway_ip, 0), (n.ip, 0)])
            .with_services(table),
    )
}

/// A frame from an outside client to `dst:dport`.
fn from_outside(sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    from_client(OUTSIDE, sport, dst, dport)
}

/// A frame from the outside client at `src`.
fn from_client(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    eth(
        node().uplink_mac,
        CLIENT_MAC,
        &udp_from(src, sport, dst, dport),
    )
}

/// The client of port `p` (16 addresses).
fn client(p: u16) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 100 + (p % 16) as u8)
}

/// What both workers' uplink queues sent.
fn both(ups: &[FakeHandle]) -> Vec<Vec<u8>> {
    ups.iter().flat_map(FakeHandle::take_sent).collect()
}

/// The IP packet of a frame the uplink sent to the gateway.
fn to_gateway(f: &[u8]) -> &[u8] {
    assert_eq!(&f[0..6], &node().gateway_mac.unwrap().0, "to the gateway");
    assert_eq!(&f[6..12], &node().uplink_mac.0);
    &f[14..]
}

/// External Cluster policy: clients (16 addresses) on any queue are
/// balanced over the backend here (worker 1) and the one behind VXLAN,
/// masqueraded to the gateway address; every answer leaves the uplink from
/// NODE_IP:NODE_PORT to its client, whichever worker and path it came back
/// by; all flows of one client live on one worker.
#[test]
fn a_node_port_with_cluster_policy_masquerades_and_answers_from_the_node_ip() {
    let n = node();
    let routes = routes_with(vec![nodeport(
        "np",
        false,
        &[(POD2, true), (REMOTE_POD, false)],
    )]);
    let (mut ws, ups, pods) = two_workers(&routes, None);
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for sport in 41000..41040u16 {
        ups[usize::from(sport % 2)].inject(from_client(client(sport), sport, n.ip, NODE_PORT));
        run_all(&mut ws);
        for f in pods[1].take_sent() {
            let (s, mport, d, dp) = ends(&f);
            assert_eq!((s, d, dp), (n.gateway_ip, POD2, 5353), "masqueraded DNAT");
            local.push((sport, mport));
        }
        for mut f in both(&ups) {
            let d = vxlan::decap::decapsulate(&mut f, &VxlanConfig::default()).unwrap();
            assert_eq!(d.outer_dst, PEER);
            let (s, mport, d, dp) = ends(&f[d.inner.start + 14..d.inner.end]);
            assert_eq!((s, d, dp), (n.gateway_ip, REMOTE_POD, 5353));
            remote.push((sport, mport));
        }
    }
    assert_eq!(local.len() + remote.len(), 40, "every datagram left once");
    assert!(local.len() > 5 && remote.len() > 5, "{local:?} {remote:?}");
    // Replies: the local backend's from its pod, the remote one's by VXLAN
    // on either queue.
    for &(_, mport) in &local {
        pods[1].inject(udp_from(POD2, 5353, n.gateway_ip, mport));
    }
    for (i, &(_, mport)) in remote.iter().enumerate() {
        let v = vxlan_from(PEER, 1, &udp_from(REMOTE_POD, 5353, n.gateway_ip, mport));
        ups[i % 2].inject(v);
    }
    run_all(&mut ws);
    let out: Vec<Vec<u8>> = both(&ups);
    let got: BTreeSet<(Ipv4Addr, u16)> = out
        .iter()
        .map(|f| {
            let (s, sp, d, dp) = ends(to_gateway(f));
            assert_eq!((s, sp), (n.ip, NODE_PORT), "from the NodePort");
            (d, dp)
        })
        .collect();
    let want: BTreeSet<(Ipv4Addr, u16)> = (41000..41040).map(|p| (client(p), p)).collect();
    assert_eq!(got, want, "every client answered once");
    assert_eq!(out.len(), 40);
    for w in &ws {
        assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
    }
    assert_eq!(ws[0].counters.svc_flows + ws[1].counters.svc_flows, 40);
    // Per service port: 40 flows, 80 packets (each datagram both ways),
    // 80 IP packets of 20 + 8 + 5 bytes.
    let mut total = crate::counters::SvcStats::default();
    for w in &ws {
        for s in &w.svc {
            total.add(s);
        }
    }
    assert_eq!(
        total,
        crate::counters::SvcStats {
            flows: 40,
            packets: 80,
            bytes: 80 * 33
        }
    );
    assert!(
        ws[0].counters.svc_flows > 5 && ws[1].counters.svc_flows > 5,
        "flows live on the worker the client picks, whatever the queue"
    );
    // Every flow of one client on one worker (its affinity table).
    for p in 41000..41016u16 {
        let on = ws
            .iter()
            .filter(|w| w.conntrack().entries().any(|e| e.orig.src == client(p)))
            .count();
        assert_eq!(on, 1, "client {}", client(p));
    }
}

/// External Local policy: the client's address reaches the backend, only
/// this node's backends are used (on both workers), and their answers
/// leave from the NodePort: the reply from the backend on the worker that
/// does not own the flow is handed to the one that does.
#[test]
fn a_node_port_with_local_policy_keeps_the_client_address() {
    let n = node();
    let routes = routes_with(vec![nodeport(
        "np",
        true,
        &[(POD, true), (POD2, true), (REMOTE_POD, false)],
    )]);
    let (mut ws, ups, pods) = two_workers(&routes, None);
    let mut seen = [Vec::new(), Vec::new()];
    for sport in 42000..42040u16 {
        ups[1].inject(from_outside(sport, n.ip, NODE_PORT));
        run_all(&mut ws);
        for (i, pod) in pods.iter().enumerate() {
            for f in pod.take_sent() {
                let (s, sp, d, dp) = ends(&f);
                assert_eq!((s, sp, dp), (OUTSIDE, sport, 5353), "client kept");
                assert_eq!(d, [POD, POD2][i]);
                seen[i].push(sport);
            }
        }
        assert!(
            ups[0].take_sent().is_empty() && ups[1].take_sent().is_empty(),
            "no VXLAN"
        );
    }
    assert!(seen[0].len() > 5 && seen[1].len() > 5, "{seen:?}");
    for (i, sports) in seen.iter().enumerate() {
        for &sport in sports {
            pods[i].inject(udp_from([POD, POD2][i], 5353, OUTSIDE, sport));
        }
    }
    run_all(&mut ws);
    let out: Vec<Vec<u8>> = both(&ups);
    let got: BTreeSet<u16> = out
        .iter()
        .map(|f| {
            let (s, sp, d, dp) = ends(to_gateway(f));
            assert_eq!((s, sp, d), (n.ip, NODE_PORT, OUTSIDE));
            dp
        })
        .collect();
    assert_eq!(got, (42000..42040).collect());
    assert_eq!(out.len(), 40);
    for w in &ws {
        assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
    }
    let packets: u64 = ws.iter().flat_map(|w| &w.svc).map(|s| s.packets).sum();
    assert_eq!(
        packets, 80,
        "requests and the replies handed to their owner"
    );
    let entries: usize = ws.iter().map(|w| w.conntrack().len()).sum();
    assert_eq!(
        entries, 40,
        "one entry per flow: no reply became a SNAT flow"
    );
    // Handed to the flow's owner: one worker's backend replies crossed.
    assert!(ws[0].counters.handed_off + ws[1].counters.handed_off > 0);
}

/// Reject and drop from outside: a NodePort with no endpoints answers ICMP
/// port unreachable from the node IP to the frame's sender; a Local policy
/// with no endpoint here drops; an LB IP drops sources outside its
/// ranges and serves the others; a node port no service holds is no
/// service flow.
#[test]
fn from_outside_rejects_and_drops_where_kube_proxy_does() {
    let n = node();
    let empty = nodeport("empty", false, &[]);
    let mut remote_only = nodeport("remote-only", true, &[(REMOTE_POD, false)]);
    remote_only.node_port = Some(30054);
    remote_only.load_balancer_ips.clear();
    remote_only.cluster_ips = vec![Ipv4Addr::new(10, 96, 0, 21)];
    let mut ranged = nodeport("ranged", false, &[(POD, true)]);
    ranged.node_port = Some(30055);
    ranged.load_balancer_ips = vec![Ipv4Addr::new(203, 0, 113, 51)];
    ranged.cluster_ips = vec![Ipv4Addr::new(10, 96, 0, 22)];
    ranged.source_ranges = vec!["198.51.100.0/28".parse().unwrap()];
    let routes = routes_with(vec![empty, remote_only, ranged]);
    let (mut ws, ups, pods) = two_workers(&routes, None);
    // The client port picks worker 0 or 1; inject on both queues.
    ups[0].inject(from_outside(43000, n.ip, NODE_PORT));
    run_all(&mut ws);
    let icmp: Vec<Vec<u8>> = both(&ups);
    assert_eq!(icmp.len(), 1);
    assert_eq!(&icmp[0][0..6], &CLIENT_MAC.0, "back to the sender");
    let ip = ip_of(&icmp[0][14..]);
    assert_eq!((ip.source_addr(), ip.destination_addr()), (n.ip, OUTSIDE));
    let p = SlicedPacket::from_ip(&icmp[0][14..]).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = &p.transport else {
        panic!()
    };
    assert_eq!(
        i.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port
        )
    );
    ups[0].inject(from_outside(43001, n.ip, 30054));
    // OUTSIDE (198.51.100.9) is inside 198.51.100.0/28; .200 is not.
    ups[0].inject(from_outside(43002, Ipv4Addr::new(203, 0, 113, 51), 53));
    let mut blocked = udp_from(
        Ipv4Addr::new(198, 51, 100, 200),
        43003,
        Ipv4Addr::new(203, 0, 113, 51),
        53,
    );
    blocked = eth(n.uplink_mac, CLIENT_MAC, &blocked);
    ups[0].inject(blocked);
    ups[0].inject(from_outside(43004, n.ip, 30099));
    run_all(&mut ws);
    let served = pods[0].take_sent();
    assert_eq!(
        served.len(),
        1,
        "the allowed source reaches the LB IP's backend"
    );
    assert_eq!(
        ends(&served[0]).0,
        n.gateway_ip,
        "Cluster policy: masqueraded"
    );
    let sum = |r: Reason| ws[0].counters.dropped(r) + ws[1].counters.dropped(r);
    assert_eq!(sum(Reason::ServiceReject(lb::LbReject::NoEndpoints)), 1);
    assert_eq!(sum(Reason::Service(lb::LbDrop::NoLocalEndpoints)), 1);
    assert_eq!(sum(Reason::Service(lb::LbDrop::SourceRange)), 1);
    // The XDP program never steers it; if it came, it is no service flow
    // and no reply: conntrack has nothing for it.
    assert_eq!(
        sum(Reason::Conntrack(nat::DropReason::NoEntry)),
        1,
        "a node port no service holds"
    );
    assert_eq!(ws[0].counters.icmp_sent + ws[1].counters.icmp_sent, 1);
}
