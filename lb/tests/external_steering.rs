//! What the uplink steers to the workers and which local endpoints answer
//! outside clients directly: the table's side of NodePort, externalIP and
//! LoadBalancer traffic from outside (kube-proxy-free nodes,
//! `services.node_ports: true`). Not an upstream table: upstream programs
//! the kernel, which sees every packet; Sluice's XDP program must be told.

mod common;
use common::*;

fn external(mut s: ServicePort, local: bool) -> ServicePort {
    s.node_port = Some(30080);
    s.external_ips = vec![ip("198.51.100.7")];
    s.load_balancer_ips = vec![ip("198.51.100.8")];
    s.external_local = local;
    s.endpoints = ready(&[("10.0.1.5", 8080, true), ("10.0.2.5", 8080, false)]);
    s
}

#[test]
fn steered_frontends_are_external_ips_lb_ips_and_node_ports_on_node_addresses() {
    let s = external(
        svc("ns1", "svc1", "p80", Proto::Tcp, "172.30.0.41", 80),
        false,
    );
    let t = ServiceTable::new(facts(&[NODE_IP, NODE_IP_ALT]), [s]);
    let want = vec![
        (ip(NODE_IP), 6, 30080),
        (ip(NODE_IP_ALT), 6, 30080),
        (ip("198.51.100.7"), 6, 80),
        (ip("198.51.100.8"), 6, 80),
    ];
    let mut got = t.steered();
    got.sort();
    assert_eq!(got, want);
    // The ClusterIP is not steered: nothing outside routes it here.
    assert!(!got.iter().any(|k| k.0 == ip("172.30.0.41")));
    for (a, p, port) in want {
        assert!(t.is_frontend(a, p, port), "{a} {p} {port}");
    }
    assert!(!t.is_frontend(ip(NODE_IP), 17, 30080), "wrong protocol");
    assert!(!t.is_frontend(ip(NODE_IP), 6, 30081), "wrong port");
    assert!(
        !t.is_frontend(ip("198.51.100.7"), 6, 30080),
        "NodePort on a non-node address"
    );
    // Removing the service un-steers everything.
    let name = t.ports().next().unwrap().1.spec.name.clone();
    let t = t.update([], &[name]);
    assert!(t.steered().is_empty());
    assert!(!t.is_frontend(ip(NODE_IP), 6, 30080));
}

#[test]
fn external_local_backends_are_the_local_endpoints_of_local_policies_only() {
    let cluster = external(svc("ns1", "a", "", Proto::Tcp, "172.30.0.41", 80), false);
    let t = ServiceTable::new(facts(&[NODE_IP]), [cluster.clone()]);
    assert!(
        !t.external_local_backend(ip("10.0.1.5"), 6, 8080),
        "Cluster policy"
    );

    let mut local = external(svc("ns1", "b", "", Proto::Tcp, "172.30.0.42", 80), true);
    local
        .endpoints
        .push(Endpoint::ready(ip("10.0.1.6"), 8080, true));
    let t = t.update([local.clone()], &[]);
    assert!(t.external_local_backend(ip("10.0.1.5"), 6, 8080));
    assert!(t.external_local_backend(ip("10.0.1.6"), 6, 8080));
    assert!(
        !t.external_local_backend(ip("10.0.2.5"), 6, 8080),
        "remote endpoint"
    );
    assert!(
        !t.external_local_backend(ip("10.0.1.5"), 17, 8080),
        "other protocol"
    );

    // A second Local service sharing an endpoint: it stays until both go.
    let mut other = local.clone();
    other.name.service = "c".into();
    other.cluster_ips = vec![ip("172.30.0.43")];
    other.endpoints.truncate(1);
    let t = t.update([other.clone()], &[]);
    local.endpoints.retain(|e| e.ip != ip("10.0.1.5"));
    let t = t.update([local.clone()], &[]);
    assert!(
        t.external_local_backend(ip("10.0.1.5"), 6, 8080),
        "still c's"
    );
    assert!(t.external_local_backend(ip("10.0.1.6"), 6, 8080));
    let t = t.update([], &[other.name.clone()]);
    assert!(!t.external_local_backend(ip("10.0.1.5"), 6, 8080));
    // Switching b to Cluster clears its endpoints.
    local.external_local = false;
    let t = t.update([local], &[]);
    assert!(!t.external_local_backend(ip("10.0.1.6"), 6, 8080));
}
