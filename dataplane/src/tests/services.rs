//! Services through the real pipeline over fake ports: a ClusterIP with a
//! backend on another worker and one behind VXLAN; replies un-DNATed on
//! the client's worker whichever way they come; reject and drop exactly
//! where kube-proxy rejects and drops; hairpin and the node's own clients
//! masqueraded to the gateway address and brought back; a UDP flow moved
//! off a backend that left at its next datagram.

use std::collections::BTreeSet;
use std::sync::Arc;

use lb::{Endpoint, NodeFacts, PortName, Proto, ServicePort, ServiceTable};

use super::*;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

pub(super) fn facts() -> NodeFacts {
    let n = node();
    NodeFacts {
        name: n.name.clone(),
        zone: None,
        node_ips: vec![n.ip],
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
    }
}

fn dns(proto: Proto, backends: &[(Ipv4Addr, bool)]) -> ServicePort {
    let mut p = ServicePort::cluster_ip(
        PortName {
            namespace: "kube-system".into(),
            service: "kube-dns".into(),
            port: format!("dns-{}", proto.name()),
            proto,
        },
        VIP,
        53,
    );
    p.endpoints = backends
        .iter()
        .map(|&(ip, local)| Endpoint::ready(ip, 5353, local))
        .collect();
    p
}

fn routes_with(ports: Vec<ServicePort>) -> (Routes, Arc<ServiceTable>) {
    let n = node();
    let table = Arc::new(ServiceTable::new(facts(), ports));
    let routes = Routes::new(
        snapshot(&[2, 3])
            .with_pod_workers([(POD, 0), (POD2, 1), (n.gateway_ip, 0), (n.ip, 0)])
            .with_services(table.clone()),
    );
    (routes, table)
}

pub(super) fn udp_from(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut v, b"query")
        .unwrap();
    v
}

/// (src, sport, dst, dport) of an IPv4 packet, checksums verified.
pub(super) fn ends(p: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let s = SlicedPacket::from_ip(p).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    let h = ip.header();
    assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
    let (a, b) = (h.source_addr(), h.destination_addr());
    match &s.transport {
        Some(TransportSlice::Udp(u)) => {
            let want = u
                .to_header()
                .calc_checksum_ipv4_raw(a.octets(), b.octets(), u.payload())
                .unwrap();
            assert_eq!(u.checksum(), want, "UDP checksum");
            (a, u.source_port(), b, u.destination_port())
        }
        _ => (a, 0, b, 0),
    }
}

/// A ClusterIP with one backend on the other worker and one behind VXLAN:
/// client ports spread over both; each reply, local or from the tunnel,
/// comes back from VIP:53 on the client's worker.
#[test]
fn a_cluster_ip_reaches_local_and_remote_backends_and_replies_come_back() {
    let (routes, _) = routes_with(vec![dns(Proto::Udp, &[(POD2, true), (REMOTE_POD, false)])]);
    let (mut ws, ups, pods) = two_workers(&routes, None);
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for sport in 40000..40040u16 {
        pods[0].inject(udp_from(POD, sport, VIP, 53));
        run_all(&mut ws);
        for f in pods[1].take_sent() {
            let (s, sp, d, dp) = ends(&f);
            assert_eq!(
                (s, sp, d, dp),
                (POD, sport, POD2, 5353),
                "DNAT, client kept"
            );
            local.push(sport);
        }
        for mut f in ups[0].take_sent() {
            let d = vxlan::decap::decapsulate(&mut f, &VxlanConfig::default()).unwrap();
            assert_eq!(d.outer_dst, PEER);
            let inner = &f[d.inner.start + 14..d.inner.end];
            assert_eq!(ends(inner), (POD, sport, REMOTE_POD, 5353));
            remote.push(sport);
        }
    }
    assert_eq!(local.len() + remote.len(), 40, "every query left once");
    assert!(
        local.len() > 5 && remote.len() > 5,
        "{} local, {} remote",
        local.len(),
        remote.len()
    );
    // Replies: the local backend's from worker 1, the remote one's by VXLAN
    // on worker 1's uplink queue (any worker may receive it).
    for &sport in &local {
        pods[1].inject(udp_from(POD2, 5353, POD, sport));
    }
    for &sport in &remote {
        ups[1].inject(vxlan_from(PEER, 1, &udp_from(REMOTE_POD, 5353, POD, sport)));
    }
    run_all(&mut ws);
    let back = pods[0].take_sent();
    assert_eq!(back.len(), 40);
    let got: BTreeSet<u16> = back
        .iter()
        .map(|f| {
            let (s, sp, d, dp) = ends(f);
            assert_eq!(
                (s, sp, d),
                (VIP, 53, POD),
                "from the address the client used"
            );
            dp
        })
        .collect();
    assert_eq!(got, (40000..40040).collect());
    assert_eq!(ws[0].counters.svc_flows, 40);
    for w in &ws {
        assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
        assert_eq!(w.free_buffers(), BUFFERS);
    }
}

/// kube-proxy's reject and drop, from the pipeline: no endpoints and an
/// unserved port of a ClusterIP get ICMP port unreachable from the
/// service address (TCP too); an unallocated service address is dropped.
#[test]
fn rejects_and_drops_where_kube_proxy_does() {
    let (routes, _) = routes_with(vec![dns(Proto::Udp, &[])]);
    let (mut ws, ups, pods) = two_workers(&routes, None);
    let mut syn = Vec::new();
    PacketBuilder::ipv4(POD.octets(), VIP.octets(), 64)
        .tcp(40000, 80, 1, 65535)
        .syn()
        .write(&mut syn, &[])
        .unwrap();
    pods[0].inject(udp_from(POD, 40000, VIP, 53));
    pods[0].inject(syn);
    pods[0].inject(udp_from(POD, 40001, Ipv4Addr::new(10, 96, 0, 99), 53));
    run_all(&mut ws);
    let back = pods[0].take_sent();
    assert_eq!(back.len(), 2);
    for f in &back {
        let p = SlicedPacket::from_ip(f).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!()
        };
        assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port
            )
        );
        assert_eq!(ip_of(f).source_addr(), VIP);
        assert_eq!(ip_of(f).destination_addr(), POD);
    }
    let c = &ws[0].counters;
    assert_eq!(
        c.dropped(Reason::ServiceReject(lb::LbReject::NoEndpoints)),
        1
    );
    assert_eq!(
        c.dropped(Reason::ServiceReject(lb::LbReject::UnservedPort)),
        1
    );
    assert_eq!(
        c.dropped(Reason::Service(lb::LbDrop::UnallocatedClusterIp)),
        1
    );
    assert_eq!(c.icmp_sent, 2);
    assert!(ups.iter().all(|u| u.take_sent().is_empty()));
    assert!(ws[0].conntrack().is_empty(), "refused flows leave no entry");
}

/// Hairpin: a pod reaching itself through its service is masqueraded to
/// the gateway address (kube-proxy masquerades it), and its reply, sent
/// to the gateway address, comes back from the service address.
#[test]
fn hairpin_is_masqueraded_and_comes_back() {
    let (routes, _) = routes_with(vec![dns(Proto::Udp, &[(POD2, true)])]);
    let (mut ws, _ups, pods) = two_workers(&routes, None);
    let n = node();
    pods[1].inject(udp_from(POD2, 40000, VIP, 53));
    run_all(&mut ws);
    let got = pods[1].take_sent();
    assert_eq!(got.len(), 1);
    let (s, masq_port, d, dp) = ends(&got[0]);
    assert_eq!((s, d, dp), (n.gateway_ip, POD2, 5353));
    pods[1].inject(udp_from(POD2, 5353, n.gateway_ip, masq_port));
    run_all(&mut ws);
    let back = pods[1].take_sent();
    assert_eq!(back.len(), 1, "{:?}", ws[1].counters);
    assert_eq!(ends(&back[0]), (VIP, 53, POD2, 40000));
}

/// The node's own processes (the host device) reach a ClusterIP: the
/// client, outside the pod CIDRs, is masqueraded to the gateway address;
/// the backend on the other worker answers the gateway address, and the
/// reply goes to the worker that owns the masquerade port, which sends it
/// to the host device from the service address.
#[test]
fn the_node_reaches_a_cluster_ip_through_the_host_device() {
    let (routes, _) = routes_with(vec![dns(Proto::Udp, &[(POD2, true)])]);
    let (host_port, host) = FakePort::new("sluice0", Framing::Ip);
    let (mut ws, _ups, pods) = two_workers(&routes, Some(host_port));
    let n = node();
    host.inject(udp_from(n.ip, 33000, VIP, 53));
    run_all(&mut ws);
    let got = pods[1].take_sent();
    assert_eq!(got.len(), 1, "{:?}", ws[0].counters);
    let (s, masq_port, d, _) = ends(&got[0]);
    assert_eq!((s, d), (n.gateway_ip, POD2));
    pods[1].inject(udp_from(POD2, 5353, n.gateway_ip, masq_port));
    run_all(&mut ws);
    let back = host.take_sent();
    assert_eq!(back.len(), 1, "{:?} {:?}", ws[0].counters, ws[1].counters);
    assert_eq!(ends(&back[0]), (VIP, 53, n.ip, 33000));
    assert_eq!(
        ws[0].counters.handed_off, 1,
        "the query, to the backend's worker"
    );
    assert_eq!(
        ws[1].counters.handed_off, 1,
        "the reply, to the masquerade's worker"
    );
    for w in &ws {
        assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
    }
}

/// kube-proxy's stale UDP flow cleanup: when the backend a UDP socket's
/// flow went to stops serving, that socket's next datagram goes to a live
/// backend (no five-minute black hole); a new table without changes moves
/// nothing.
#[test]
fn a_udp_flow_leaves_a_backend_that_stopped_serving() {
    let ports = vec![dns(Proto::Udp, &[(POD2, true)])];
    let (routes, table) = routes_with(ports.clone());
    let (mut ws, ups, pods) = two_workers(&routes, None);
    pods[0].inject(udp_from(POD, 40000, VIP, 53));
    run_all(&mut ws);
    assert_eq!(pods[1].take_sent().len(), 1);
    // An update that changes nothing for this port keeps the flow there.
    let same = table.update([], &[]);
    routes.store(
        routes
            .load_full()
            .as_ref()
            .clone()
            .with_services(Arc::new(same.clone())),
    );
    pods[0].inject(udp_from(POD, 40000, VIP, 53));
    run_all(&mut ws);
    assert_eq!(pods[1].take_sent().len(), 1);
    // POD2 stops serving; REMOTE_POD serves.
    let moved = same.update([dns(Proto::Udp, &[(REMOTE_POD, false)])], &[]);
    routes.store(
        routes
            .load_full()
            .as_ref()
            .clone()
            .with_services(Arc::new(moved)),
    );
    pods[0].inject(udp_from(POD, 40000, VIP, 53));
    run_all(&mut ws);
    assert!(pods[1].take_sent().is_empty());
    assert_eq!(ups[0].take_sent().len(), 1, "to the live backend, by VXLAN");
    assert_eq!(ws[0].conntrack().counters().stale_removed, 1);
}
