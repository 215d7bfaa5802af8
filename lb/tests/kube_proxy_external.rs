//! kube-proxy's packet-flow truth tables (LoadBalancer, NodePorts, external traffic policy, masquerade) (pkg/proxy/nftables/proxier_test.go,
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
fn test_load_balancer() {
    let mut s = svc("ns1", "svc1", "p80", TCP, "172.30.0.41", 80);
    s.node_port = Some(3001);
    s.load_balancer_ips = vec![ip("1.2.3.4"), ip("5.6.7.8")];
    s.source_ranges = vec![
        "192.168.0.0/24".parse().unwrap(),
        "203.0.113.0/25".parse().unwrap(),
    ];
    s.endpoints = ready(&[("10.180.0.1", 80, false)]);
    let t = ServiceTable::new(facts(&[NODE_IP]), [s]);
    let ep = "10.180.0.1:80";
    run(
        "TestLoadBalancer",
        &t,
        &[
            ("pod to cluster IP", POD, "172.30.0.41", TCP, 80, ep, false),
            (
                "external to nodePort",
                EXTERNAL_CLIENT,
                NODE_IP,
                TCP,
                3001,
                ep,
                true,
            ),
            (
                "nodePort bypasses LoadBalancerSourceRanges",
                EXTERNAL_CLIENT_BLOCKED,
                NODE_IP,
                TCP,
                3001,
                ep,
                true,
            ),
            (
                "accepted external to LB1",
                EXTERNAL_CLIENT,
                "1.2.3.4",
                TCP,
                80,
                ep,
                true,
            ),
            (
                "accepted external to LB2",
                EXTERNAL_CLIENT,
                "5.6.7.8",
                TCP,
                80,
                ep,
                true,
            ),
            (
                "blocked external to LB1",
                EXTERNAL_CLIENT_BLOCKED,
                "1.2.3.4",
                TCP,
                80,
                "DROP",
                false,
            ),
            (
                "blocked external to LB2",
                EXTERNAL_CLIENT_BLOCKED,
                "5.6.7.8",
                TCP,
                80,
                "DROP",
                false,
            ),
            (
                "pod to LB1 (blocked by LoadBalancerSourceRanges)",
                POD,
                "1.2.3.4",
                TCP,
                80,
                "DROP",
                false,
            ),
            (
                "pod to LB2 (blocked by LoadBalancerSourceRanges)",
                POD,
                "5.6.7.8",
                TCP,
                80,
                "DROP",
                false,
            ),
            (
                "node to LB1 (allowed by LoadBalancerSourceRanges)",
                NODE_IP,
                "1.2.3.4",
                TCP,
                80,
                ep,
                true,
            ),
            (
                "node to LB2 (allowed by LoadBalancerSourceRanges)",
                NODE_IP,
                "5.6.7.8",
                TCP,
                80,
                ep,
                true,
            ),
            (
                "same node to LB1, SNATted to LB1 (implicitly allowed)",
                "1.2.3.4",
                "1.2.3.4",
                TCP,
                80,
                ep,
                true,
            ),
            (
                "same node to LB2, SNATted to LB2 (implicitly allowed)",
                "5.6.7.8",
                "5.6.7.8",
                TCP,
                80,
                ep,
                true,
            ),
        ],
    );
}

fn node_port_service() -> ServicePort {
    let mut s = svc("ns1", "svc1", "p80", TCP, "172.30.0.41", 80);
    s.node_port = Some(3001);
    s.endpoints = ready(&[("10.180.0.1", 80, false), ("10.180.2.1", 80, true)]);
    s
}

#[test]
fn test_node_ports() {
    let both = "10.180.0.1:80, 10.180.2.1:80";
    let basic: [Row; 3] = [
        (
            "pod to cluster IP",
            POD,
            "172.30.0.41",
            TCP,
            80,
            both,
            false,
        ),
        (
            "external to nodePort",
            EXTERNAL_CLIENT,
            NODE_IP,
            TCP,
            3001,
            both,
            true,
        ),
        ("node to nodePort", NODE_IP, NODE_IP, TCP, 3001, both, true),
    ];
    // "ipv4": NodePorts on the primary node IP only.
    let t = ServiceTable::new(facts(&[NODE_IP]), [node_port_service()]);
    run("TestNodePorts/ipv4", &t, &basic);
    run(
        "TestNodePorts/ipv4",
        &t,
        &[(
            "secondary nodeIP ignores NodePorts",
            EXTERNAL_CLIENT,
            NODE_IP_ALT,
            TCP,
            3001,
            "",
            false,
        )],
    );
    // "ipv4, multiple nodeport-addresses".
    let t = ServiceTable::new(facts(&[NODE_IP, NODE_IP_ALT]), [node_port_service()]);
    run(
        "TestNodePorts/ipv4, multiple nodeport-addresses",
        &t,
        &basic,
    );
    run(
        "TestNodePorts/ipv4, multiple nodeport-addresses",
        &t,
        &[(
            "external to nodePort on secondary IP",
            EXTERNAL_CLIENT,
            NODE_IP_ALT,
            TCP,
            3001,
            both,
            true,
        )],
    );
}

fn external_service(local: bool) -> ServicePort {
    let mut s = svc("ns1", "svc1", "p80", TCP, "172.30.0.41", 80);
    s.node_port = Some(3001);
    s.external_ips = vec![ip("192.168.99.11")];
    s.load_balancer_ips = vec![ip("1.2.3.4")];
    s.external_local = local;
    s.health_check_node_port = local.then_some(30000);
    s.endpoints = ready(&[("10.180.0.1", 80, false), ("10.180.2.1", 80, true)]);
    s
}

#[test]
fn test_external_traffic_policy_local() {
    let t = ServiceTable::new(facts(&[NODE_IP]), [external_service(true)]);
    let both = "10.180.0.1:80, 10.180.2.1:80";
    let local = "10.180.2.1:80";
    run(
        "TestExternalTrafficPolicyLocal",
        &t,
        &[
            (
                "pod to cluster IP hits both endpoints, unmasqueraded",
                POD,
                "172.30.0.41",
                TCP,
                80,
                both,
                false,
            ),
            (
                "pod to external IP hits both endpoints, unmasqueraded",
                POD,
                "192.168.99.11",
                TCP,
                80,
                both,
                false,
            ),
            (
                "external to external IP hits only local endpoint, unmasqueraded",
                EXTERNAL_CLIENT,
                "192.168.99.11",
                TCP,
                80,
                local,
                false,
            ),
            (
                "pod to LB IP hits only both endpoints, unmasqueraded",
                POD,
                "1.2.3.4",
                TCP,
                80,
                both,
                false,
            ),
            (
                "external to LB IP hits only local endpoint, unmasqueraded",
                EXTERNAL_CLIENT,
                "1.2.3.4",
                TCP,
                80,
                local,
                false,
            ),
            (
                "pod to NodePort hits both endpoints, unmasqueraded",
                POD,
                NODE_IP,
                TCP,
                3001,
                both,
                false,
            ),
            (
                "external to NodePort hits only local endpoint, unmasqueraded",
                EXTERNAL_CLIENT,
                NODE_IP,
                TCP,
                3001,
                local,
                false,
            ),
        ],
    );
}

#[test]
fn test_external_traffic_policy_cluster() {
    let t = ServiceTable::new(facts(&[NODE_IP]), [external_service(false)]);
    let both = "10.180.0.1:80, 10.180.2.1:80";
    run(
        "TestExternalTrafficPolicyCluster",
        &t,
        &[
            (
                "pod to cluster IP hits both endpoints, unmasqueraded",
                POD,
                "172.30.0.41",
                TCP,
                80,
                both,
                false,
            ),
            (
                "pod to external IP hits both endpoints, masqueraded",
                POD,
                "192.168.99.11",
                TCP,
                80,
                both,
                true,
            ),
            (
                "external to external IP hits both endpoints, masqueraded",
                EXTERNAL_CLIENT,
                "192.168.99.11",
                TCP,
                80,
                both,
                true,
            ),
            (
                "pod to LB IP hits both endpoints, masqueraded",
                POD,
                "1.2.3.4",
                TCP,
                80,
                both,
                true,
            ),
            (
                "external to LB IP hits both endpoints, masqueraded",
                EXTERNAL_CLIENT,
                "1.2.3.4",
                TCP,
                80,
                both,
                true,
            ),
            (
                "pod to NodePort hits both endpoints, masqueraded",
                POD,
                NODE_IP,
                TCP,
                3001,
                both,
                true,
            ),
            (
                "external to NodePort hits both endpoints, masqueraded",
                EXTERNAL_CLIENT,
                NODE_IP,
                TCP,
                3001,
                both,
                true,
            ),
        ],
    );
}
