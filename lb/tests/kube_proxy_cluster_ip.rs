//! kube-proxy's packet-flow truth tables (ClusterIPs, no endpoints, internal traffic policy, affinity) (pkg/proxy/nftables/proxier_test.go,
//! `runPacketFlowTests`), each test named after its upstream function and
//! each row after its upstream row, against `lb::ServiceTable`.
//!
//! Upstream's conventions are kept: pod IPs 10.0.0.0/8, ClusterIPs
//! 172.30.0.0/16, node IP 192.168.0.2 (NodePort address), a second node
//! IP 192.168.1.2, external client 203.0.113.2 (203.0.113.130 outside the
//! LB source range). An output is the set of endpoints a flow may reach
//! (with whether it is masqueraded), REJECT, DROP, or "" (not a service:
//! left to routing). Only IPv4 rows: Sluice routes IPv4 only.
//!
//! Each row is checked two ways: the frontend lookup's candidate set and
//! masquerade flag, and `decide` over many client ports (Maglev must pick
//! only candidates, and every candidate for some flow).

mod common;

use common::*;

#[test]
fn test_no_endpoints_reject() {
    let mut s = svc("ns1", "svc1", "p80", TCP, "172.30.0.41", 80);
    s.node_port = Some(3001);
    s.external_ips = vec![ip("192.168.99.11")];
    s.load_balancer_ips = vec![ip("1.2.3.4")];
    let t = ServiceTable::new(facts(&[NODE_IP]), [s]);
    run(
        "TestNoEndpointsReject",
        &t,
        &[
            (
                "pod to cluster IP with no endpoints",
                POD,
                "172.30.0.41",
                TCP,
                80,
                "REJECT",
                false,
            ),
            (
                "external to external IP with no endpoints",
                EXTERNAL_CLIENT,
                "192.168.99.11",
                TCP,
                80,
                "REJECT",
                false,
            ),
            (
                "pod to NodePort with no endpoints",
                POD,
                NODE_IP,
                TCP,
                3001,
                "REJECT",
                false,
            ),
            (
                "external to NodePort with no endpoints",
                EXTERNAL_CLIENT,
                NODE_IP,
                TCP,
                3001,
                "REJECT",
                false,
            ),
            (
                "pod to LoadBalancer IP with no endpoints",
                POD,
                "1.2.3.4",
                TCP,
                80,
                "REJECT",
                false,
            ),
            (
                "external to LoadBalancer IP with no endpoints",
                EXTERNAL_CLIENT,
                "1.2.3.4",
                TCP,
                80,
                "REJECT",
                false,
            ),
        ],
    );
}

#[test]
fn test_cluster_ip_general() {
    let mut svc1 = svc("ns1", "svc1", "http", TCP, "172.30.0.41", 80);
    svc1.endpoints = ready(&[("10.180.0.1", 80, true)]);
    let two = |port: u16| ready(&[("10.180.0.1", port, true), ("10.180.2.1", port, false)]);
    let mut ports = vec![svc1];
    for (name, proto, port, target) in [
        ("http", TCP, 80, 80),
        ("https", TCP, 443, 8443),
        ("dns-udp", Proto::Udp, 53, 53),
        ("dns-tcp", TCP, 53, 5353),
        ("dns-sctp", Proto::Sctp, 53, 53),
    ] {
        let mut p = svc("ns2", "svc2", name, proto, "172.30.0.42", port);
        p.endpoints = two(target);
        ports.push(p);
    }
    let t = ServiceTable::new(facts(&[NODE_IP]), ports);
    run(
        "TestClusterIPGeneral",
        &t,
        &[
            (
                "simple clusterIP",
                "10.180.0.2",
                "172.30.0.41",
                TCP,
                80,
                "10.180.0.1:80",
                false,
            ),
            (
                "hairpin to cluster IP",
                "10.180.0.1",
                "172.30.0.41",
                TCP,
                80,
                "10.180.0.1:80",
                true,
            ),
            (
                "clusterIP with multiple endpoints",
                "10.180.0.2",
                "172.30.0.42",
                TCP,
                80,
                "10.180.0.1:80, 10.180.2.1:80",
                false,
            ),
            (
                "clusterIP with TargetPort",
                "10.180.0.2",
                "172.30.0.42",
                TCP,
                443,
                "10.180.0.1:8443, 10.180.2.1:8443",
                false,
            ),
            (
                "clusterIP with TCP, UDP, and SCTP on same port (TCP)",
                "10.180.0.2",
                "172.30.0.42",
                TCP,
                53,
                "10.180.0.1:5353, 10.180.2.1:5353",
                false,
            ),
            (
                "clusterIP with TCP, UDP, and SCTP on same port (UDP)",
                "10.180.0.2",
                "172.30.0.42",
                Proto::Udp,
                53,
                "10.180.0.1:53, 10.180.2.1:53",
                false,
            ),
            (
                "clusterIP with TCP, UDP, and SCTP on same port (SCTP)",
                "10.180.0.2",
                "172.30.0.42",
                Proto::Sctp,
                53,
                "10.180.0.1:53, 10.180.2.1:53",
                false,
            ),
            (
                "TCP-only port does not match UDP traffic",
                "10.180.0.2",
                "172.30.0.42",
                Proto::Udp,
                80,
                "REJECT",
                false,
            ),
            (
                "svc1 does not accept svc2's ports",
                "10.180.0.2",
                "172.30.0.41",
                TCP,
                443,
                "REJECT",
                false,
            ),
            (
                "packet to unallocated cluster ip",
                "10.180.0.2",
                "172.30.0.50",
                TCP,
                80,
                "DROP",
                false,
            ),
        ],
    );
}

#[test]
fn test_internal_traffic_policy() {
    let cases: [(&str, bool, [bool; 3], &str); 4] = [
        (
            "internalTrafficPolicy is cluster",
            false,
            [true, false, false],
            "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80",
        ),
        (
            "internalTrafficPolicy is local and there is one local endpoint",
            true,
            [true, false, false],
            "10.0.1.1:80",
        ),
        (
            "internalTrafficPolicy is local and there are multiple local endpoints",
            true,
            [true, true, false],
            "10.0.1.1:80, 10.0.1.2:80",
        ),
        (
            "internalTrafficPolicy is local and there are no local endpoints",
            true,
            [false, false, false],
            "DROP",
        ),
    ];
    for (name, itp_local, local, want) in cases {
        let mut s = svc("ns1", "svc1", "", TCP, "172.30.1.1", 80);
        s.internal_local = itp_local;
        s.endpoints = ready(&[
            ("10.0.1.1", 80, local[0]),
            ("10.0.1.2", 80, local[1]),
            ("10.0.1.3", 80, local[2]),
        ]);
        let t = ServiceTable::new(facts(&[NODE_IP]), [s.clone()]);
        run(
            &format!("TestInternalTrafficPolicy/{name}"),
            &t,
            &[("pod to ClusterIP", POD, "172.30.1.1", TCP, 80, want, false)],
        );
        // "endpoints deleted": the slice is removed.
        s.endpoints.clear();
        let t = t.update([s], &[]);
        run(
            &format!("TestInternalTrafficPolicy/{name}"),
            &t,
            &[(
                "endpoints deleted",
                POD,
                "172.30.1.1",
                TCP,
                80,
                "REJECT",
                false,
            )],
        );
    }
}

#[test]
fn test_internal_external_masquerade() {
    let mk = |name: &str, cip: &str, np: u16, lbip: &str, n: u8| {
        let mut s = svc(&format!("ns{n}"), name, "p80", TCP, cip, 80);
        s.node_port = Some(np);
        s.load_balancer_ips = vec![ip(lbip)];
        s.health_check_node_port = Some(30000 + u16::from(n));
        s.endpoints = ready(&[
            (&format!("10.180.0.{n}"), 80, true),
            (&format!("10.180.1.{n}"), 80, false),
        ]);
        s
    };
    let svc1 = mk("svc1", "172.30.0.41", 3001, "1.2.3.4", 1);
    let mut svc2 = mk("svc2", "172.30.0.42", 3002, "5.6.7.8", 2);
    svc2.external_local = true;
    let mut svc3 = mk("svc3", "172.30.0.43", 3003, "9.10.11.12", 3);
    svc3.internal_local = true;
    let t = ServiceTable::new(facts(&[NODE_IP]), [svc1, svc2, svc3]);
    let s1 = "10.180.0.1:80, 10.180.1.1:80";
    let s2 = "10.180.0.2:80, 10.180.1.2:80";
    let s3 = "10.180.0.3:80, 10.180.1.3:80";
    let x = EXTERNAL_CLIENT;
    run(
        "TestInternalExternalMasquerade/base",
        &t,
        &[
            ("pod to ClusterIP", POD, "172.30.0.41", TCP, 80, s1, false),
            ("pod to NodePort", POD, NODE_IP, TCP, 3001, s1, true),
            ("pod to LB", POD, "1.2.3.4", TCP, 80, s1, true),
            (
                "node to ClusterIP",
                NODE_IP,
                "172.30.0.41",
                TCP,
                80,
                s1,
                true,
            ),
            ("node to NodePort", NODE_IP, NODE_IP, TCP, 3001, s1, true),
            ("node to LB", NODE_IP, "1.2.3.4", TCP, 80, s1, true),
            ("external to ClusterIP", x, "172.30.0.41", TCP, 80, s1, true),
            ("external to NodePort", x, NODE_IP, TCP, 3001, s1, true),
            ("external to LB", x, "1.2.3.4", TCP, 80, s1, true),
            (
                "pod to ClusterIP with eTP:Local",
                POD,
                "172.30.0.42",
                TCP,
                80,
                s2,
                false,
            ),
            (
                "pod to NodePort with eTP:Local",
                POD,
                NODE_IP,
                TCP,
                3002,
                s2,
                false,
            ),
            (
                "pod to LB with eTP:Local",
                POD,
                "5.6.7.8",
                TCP,
                80,
                s2,
                false,
            ),
            (
                "node to ClusterIP with eTP:Local",
                NODE_IP,
                "172.30.0.42",
                TCP,
                80,
                s2,
                true,
            ),
            (
                "node to NodePort with eTP:Local",
                NODE_IP,
                NODE_IP,
                TCP,
                3001,
                s1,
                true,
            ),
            (
                "node to LB with eTP:Local",
                NODE_IP,
                "5.6.7.8",
                TCP,
                80,
                s2,
                true,
            ),
            (
                "external to ClusterIP with eTP:Local",
                x,
                "172.30.0.42",
                TCP,
                80,
                s2,
                true,
            ),
            (
                "external to NodePort with eTP:Local",
                x,
                NODE_IP,
                TCP,
                3002,
                "10.180.0.2:80",
                false,
            ),
            (
                "external to LB with eTP:Local",
                x,
                "5.6.7.8",
                TCP,
                80,
                "10.180.0.2:80",
                false,
            ),
            (
                "pod to ClusterIP with iTP:Local",
                POD,
                "172.30.0.43",
                TCP,
                80,
                "10.180.0.3:80",
                false,
            ),
            (
                "pod to NodePort with iTP:Local",
                POD,
                NODE_IP,
                TCP,
                3003,
                s3,
                true,
            ),
            (
                "pod to LB with iTP:Local",
                POD,
                "9.10.11.12",
                TCP,
                80,
                s3,
                true,
            ),
            (
                "node to ClusterIP with iTP:Local",
                NODE_IP,
                "172.30.0.43",
                TCP,
                80,
                "10.180.0.3:80",
                true,
            ),
            (
                "node to NodePort with iTP:Local",
                NODE_IP,
                NODE_IP,
                TCP,
                3003,
                s3,
                true,
            ),
            (
                "node to LB with iTP:Local",
                NODE_IP,
                "9.10.11.12",
                TCP,
                80,
                s3,
                true,
            ),
            (
                "external to ClusterIP with iTP:Local",
                x,
                "172.30.0.43",
                TCP,
                80,
                "10.180.0.3:80",
                true,
            ),
            (
                "external to NodePort with iTP:Local",
                x,
                NODE_IP,
                TCP,
                3003,
                s3,
                true,
            ),
            (
                "external to LB with iTP:Local",
                x,
                "9.10.11.12",
                TCP,
                80,
                s3,
                true,
            ),
        ],
    );
}

/// Session affinity (kube-proxy's `affinity-*` sets; the e2e "should have
/// session affinity work" / "timeout" tests' semantics): one backend for
/// every new connection of a client until the timeout passes with no new
/// connection, then a fresh choice; a backend that stops serving loses its
/// clients at once.
#[test]
fn session_affinity_holds_then_times_out() {
    let mut s = svc("ns1", "aff", "p80", TCP, "172.30.0.60", 80);
    s.affinity = Some(Duration::from_secs(10));
    s.endpoints = ready(&[
        ("10.180.0.1", 80, true),
        ("10.180.0.2", 80, true),
        ("10.180.0.3", 80, false),
    ]);
    let t = ServiceTable::new(facts(&[NODE_IP]), [s.clone()]);
    let mut aff = lb::AffinityTable::new(1024);
    let (client, vip) = (ip(POD), ip("172.30.0.60"));
    let pick = |t: &ServiceTable, aff: &mut lb::AffinityTable, now: u64, sport: u16| match t
        .decide_with_affinity(
            aff,
            Duration::from_secs(now),
            &flow(client, vip, 6, sport, 80),
        ) {
        Verdict::Dnat { backend, .. } => backend,
        v => panic!("{v:?}"),
    };
    let first = pick(&t, &mut aff, 100, 1000);
    // 100 connections over 50 s, each within the timeout of the last.
    for i in 0..100u16 {
        assert_eq!(pick(&t, &mut aff, 100 + u64::from(i) / 2, 2000 + i), first);
    }
    // Without affinity the same ports spread (the control).
    let spread: BTreeSet<_> = (0..100u16)
        .map(|i| match t.decide(&flow(client, vip, 6, 2000 + i, 80)) {
            Verdict::Dnat { backend, .. } => backend,
            v => panic!("{v:?}"),
        })
        .collect();
    assert_eq!(spread.len(), 3);
    // After the timeout, choices spread again over new connections.
    let later: BTreeSet<_> = (0..100u16)
        .map(|i| pick(&t, &mut aff, 1000 + 20 * u64::from(i), 3000 + i))
        .collect();
    assert!(later.len() > 1, "{later:?}");
    // The bound backend stops serving: the next connection moves.
    let now = 10_000;
    let bound = pick(&t, &mut aff, now, 5000);
    s.endpoints.retain(|e| e.ip != bound.ip);
    let t2 = t.update([s], &[]);
    let moved = pick(&t2, &mut aff, now + 1, 5001);
    assert_ne!(moved, bound);
    assert_eq!(pick(&t2, &mut aff, now + 2, 5002), moved, "and stays");
}
