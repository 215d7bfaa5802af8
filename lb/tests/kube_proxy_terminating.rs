//! kube-proxy's packet-flow truth tables (terminating endpoints) (pkg/proxy/nftables/proxier_test.go,
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

/// The service of the TestTerminatingEndpoints* tests: an LB IP, no
/// NodePort, a health check port.
fn terminating_service(local: bool, eps: Vec<Endpoint>) -> ServicePort {
    let mut s = svc("ns1", "svc1", "", TCP, "172.30.1.1", 80);
    s.load_balancer_ips = vec![ip("1.2.3.4")];
    s.external_local = local;
    s.health_check_node_port = Some(30000);
    s.endpoints = eps;
    s
}

const RD: (bool, bool, bool) = (true, true, false);
const ST: (bool, bool, bool) = (false, true, true);
const NST: (bool, bool, bool) = (false, false, true);

fn after_deletion(test: &str, local: bool) {
    let t = ServiceTable::new(facts(&[NODE_IP]), [terminating_service(local, vec![])]);
    run(
        test,
        &t,
        &[
            (
                "pod to clusterIP after endpoints deleted",
                POD,
                "172.30.1.1",
                TCP,
                80,
                "REJECT",
                false,
            ),
            (
                "external to LB after endpoints deleted",
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
fn test_terminating_endpoints_traffic_policy_local() {
    let cases: Vec<(&str, Vec<Endpoint>, [Row; 2])> = vec![
        (
            "ready endpoints exist",
            vec![
                cond("10.0.1.1", RD, true),
                cond("10.0.1.2", RD, true),
                cond("10.0.1.3", ST, true),
                cond("10.0.1.4", NST, true),
                cond("10.0.1.5", RD, false),
            ],
            [
                (
                    "pod to clusterIP",
                    POD,
                    "172.30.1.1",
                    TCP,
                    80,
                    "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
                    false,
                ),
                (
                    "external to LB",
                    EXTERNAL_CLIENT,
                    "1.2.3.4",
                    TCP,
                    80,
                    "10.0.1.1:80, 10.0.1.2:80",
                    false,
                ),
            ],
        ),
        (
            "only terminating endpoints exist",
            vec![
                cond("10.0.1.2", ST, true),
                cond("10.0.1.3", ST, true),
                cond("10.0.1.4", NST, true),
                cond("10.0.1.5", RD, false),
            ],
            [
                (
                    "pod to clusterIP",
                    POD,
                    "172.30.1.1",
                    TCP,
                    80,
                    "10.0.1.5:80",
                    false,
                ),
                (
                    "external to LB",
                    EXTERNAL_CLIENT,
                    "1.2.3.4",
                    TCP,
                    80,
                    "10.0.1.2:80, 10.0.1.3:80",
                    false,
                ),
            ],
        ),
        (
            "terminating endpoints on remote node",
            vec![cond("10.0.1.5", ST, false)],
            [
                (
                    "pod to clusterIP",
                    POD,
                    "172.30.1.1",
                    TCP,
                    80,
                    "10.0.1.5:80",
                    false,
                ),
                (
                    "external to LB, no locally-usable endpoints",
                    EXTERNAL_CLIENT,
                    "1.2.3.4",
                    TCP,
                    80,
                    "DROP",
                    false,
                ),
            ],
        ),
        (
            "no usable endpoints on any node",
            vec![cond("10.0.1.5", NST, true), cond("10.0.1.5", NST, false)],
            [
                (
                    "pod to clusterIP, no usable endpoints",
                    POD,
                    "172.30.1.1",
                    TCP,
                    80,
                    "REJECT",
                    false,
                ),
                (
                    "external to LB, no usable endpoints",
                    EXTERNAL_CLIENT,
                    "1.2.3.4",
                    TCP,
                    80,
                    "REJECT",
                    false,
                ),
            ],
        ),
    ];
    for (name, eps, rows) in cases {
        let test = format!("TestTerminatingEndpointsTrafficPolicyLocal/{name}");
        let t = ServiceTable::new(facts(&[NODE_IP]), [terminating_service(true, eps)]);
        run(&test, &t, &rows);
        after_deletion(&test, true);
    }
}

#[test]
fn test_terminating_endpoints_traffic_policy_cluster() {
    let cases: Vec<(&str, Vec<Endpoint>, [Row; 2])> = vec![
        (
            "ready endpoints exist",
            vec![
                cond("10.0.1.1", RD, true),
                cond("10.0.1.2", RD, true),
                cond("10.0.1.3", ST, false),
                cond("10.0.1.4", NST, false),
                cond("10.0.1.5", RD, false),
            ],
            [
                (
                    "pod to clusterIP",
                    POD,
                    "172.30.1.1",
                    TCP,
                    80,
                    "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
                    false,
                ),
                (
                    "external to LB",
                    EXTERNAL_CLIENT,
                    "1.2.3.4",
                    TCP,
                    80,
                    "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
                    true,
                ),
            ],
        ),
        (
            "only terminating endpoints exist",
            vec![
                cond("10.0.1.2", ST, true),
                cond("10.0.1.3", ST, true),
                cond("10.0.1.4", NST, false),
                cond("10.0.1.5", ST, false),
            ],
            [
                (
                    "pod to clusterIP",
                    POD,
                    "172.30.1.1",
                    TCP,
                    80,
                    "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
                    false,
                ),
                (
                    "external to LB",
                    EXTERNAL_CLIENT,
                    "1.2.3.4",
                    TCP,
                    80,
                    "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
                    true,
                ),
            ],
        ),
        (
            "terminating endpoints on remote node",
            vec![cond("10.0.1.5", ST, false)],
            [
                (
                    "pod to clusterIP",
                    POD,
                    "172.30.1.1",
                    TCP,
                    80,
                    "10.0.1.5:80",
                    false,
                ),
                (
                    "external to LB",
                    EXTERNAL_CLIENT,
                    "1.2.3.4",
                    TCP,
                    80,
                    "10.0.1.5:80",
                    true,
                ),
            ],
        ),
        (
            "no usable endpoints on any node",
            vec![cond("10.0.1.5", NST, true), cond("10.0.1.5", NST, false)],
            [
                (
                    "pod to clusterIP",
                    POD,
                    "172.30.1.1",
                    TCP,
                    80,
                    "REJECT",
                    false,
                ),
                (
                    "external to LB",
                    EXTERNAL_CLIENT,
                    "1.2.3.4",
                    TCP,
                    80,
                    "REJECT",
                    false,
                ),
            ],
        ),
    ];
    for (name, eps, rows) in cases {
        let test = format!("TestTerminatingEndpointsTrafficPolicyCluster/{name}");
        let t = ServiceTable::new(facts(&[NODE_IP]), [terminating_service(false, eps)]);
        run(&test, &t, &rows);
        after_deletion(&test, false);
    }
}
