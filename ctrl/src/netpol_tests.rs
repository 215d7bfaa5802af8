//! Tests of the conversion ([`super`]): defaults, unusable fields failing
//! closed with a problem naming them, pods, and an API object through to
//! a verdict.

use super::*;
use policy::model::{Peer, PolicyPort, Port, Proto, Requirement, Selector};
use serde_json::json;

fn np(spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"namespace": "x", "name": "p"},
        "spec": spec,
    }))
    .unwrap()
}

#[test]
fn policy_types_and_selectors_take_the_api_defaults() {
    let (p, problems) = policy(&np(json!({"podSelector": {}})));
    assert!(problems.is_empty());
    assert_eq!((p.isolates_ingress, p.isolates_egress), (true, false));
    assert_eq!(p.select, Selector::all());
    let (p, _) = policy(&np(json!({"podSelector": {}, "egress": []})));
    assert_eq!((p.isolates_ingress, p.isolates_egress), (true, true));
    let (p, _) = policy(&np(json!({"podSelector": {}, "policyTypes": ["Egress"]})));
    assert_eq!((p.isolates_ingress, p.isolates_egress), (false, true));
    // No podSelector at all: every pod of the namespace.
    let (p, _) = policy(&np(json!({})));
    assert_eq!(p.select, Selector::all());
}

#[test]
fn peers_and_ports_convert_field_for_field() {
    let (p, problems) = policy(&np(json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{
            "from": [
                {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
                 "podSelector": {"matchLabels": {"pod": "b"}}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}
            ],
            "ports": [
                {"port": 80},
                {"protocol": "UDP", "port": 1000, "endPort": 2000},
                {"port": "serve-81-tcp"},
                {"protocol": "SCTP"}
            ]
        }]
    })));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(p.select, Selector::label("pod", "a"));
    let r = &p.ingress[0];
    assert_eq!(
        r.peers[0],
        Peer::Pods {
            namespaces: Some(Selector {
                labels: vec![],
                exprs: vec![Requirement::NotIn("ns".into(), vec!["x".into()])],
            }),
            pods: Some(Selector::label("pod", "b")),
        }
    );
    assert_eq!(
        r.peers[1],
        Peer::Block {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec!["10.1.0.0/16".parse().unwrap()],
        }
    );
    let want = [
        (Proto::Tcp, Port::Range(80, 80)),
        (Proto::Udp, Port::Range(1000, 2000)),
        (Proto::Tcp, Port::Named("serve-81-tcp".into())),
        (Proto::Sctp, Port::Any),
    ];
    let got: Vec<_> = r.ports.iter().map(|p| (p.proto, p.port.clone())).collect();
    assert_eq!(got, want);
}

#[test]
fn unusable_fields_fail_closed_and_are_named() {
    let (p, problems) = policy(&np(json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [
            {"from": [{"ipBlock": {"cidr": "fd00::/8"}}]},
            {"from": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]},
            {"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Near"}]}}]},
            {"ports": [{"protocol": "ICMP", "port": 1}]},
            {"ports": [{"port": 70000}]},
            {"ports": [{"port": 90, "endPort": 80}]}
        ]
    })));
    let expect = [
        "NetworkPolicy x/p: spec.ingress[1].from[0].ipBlock.cidr: \"10.0.0.300/8\" is not a CIDR",
        "NetworkPolicy x/p: spec.ingress[2].from[0].podSelector.matchExpressions[0].operator: \"Near\"",
        "NetworkPolicy x/p: spec.ingress[3].ports[0].protocol: \"ICMP\"",
        "NetworkPolicy x/p: spec.ingress[4].ports[0].port: 70000",
        "NetworkPolicy x/p: spec.ingress[5].ports[0].endPort: 80",
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:?}");
    for (p, e) in problems.iter().zip(expect) {
        assert!(p.starts_with(e), "{p} / {e}");
    }
    // Every rule matches nothing: none widened to "any".
    for r in &p.ingress[..3] {
        assert_eq!(r.peers, vec![Peer::nothing()]);
    }
    for r in &p.ingress[3..] {
        assert_eq!(r.ports, vec![PolicyPort::nothing()]);
    }
    // Through the compiler: x/a is isolated and nothing reaches it.
    let mut c = policy::Cluster::default();
    c.namespaces.push(namespace(
        &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
    ));
    for (name, ip) in [("a", "10.244.1.2"), ("b", "10.244.1.3")] {
        c.pods.push(pod(&serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": name, "labels": {"pod": name}},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": ip, "phase": "Running"}
        }))
        .unwrap()));
    }
    c.policies.push(p);
    let t = policy::Tables::build(&c, |_| true, &[]);
    let (a, b) = ("10.244.1.2".parse().unwrap(), "10.244.1.3".parse().unwrap());
    for port in [1, 80, 90, 65535] {
        assert!(!t.decide(b, a, 6, port).allowed(), "port {port}");
    }
    assert!(t.decide(a, b, 6, 80).allowed(), "b is not selected");
}

#[test]
fn pods_give_their_ipv4_address_named_ports_and_host_network() {
    let p = pod(&serde_json::from_value(json!({
        "metadata": {"namespace": "y", "name": "web", "labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                {"containerPort": 9090}
            ]}],
            "initContainers": [{"name": "i", "ports": [{"name": "init", "containerPort": 7000}]}]
        },
        "status": {"podIP": "10.244.2.9", "phase": "Running"}
    }))
    .unwrap());
    assert_eq!(p.ip, Some(Ipv4Addr::new(10, 244, 2, 9)));
    assert!(!p.host_network);
    assert_eq!(p.named_port("http", Proto::Tcp), Some(8080));
    assert_eq!(p.named_port("dns", Proto::Udp), Some(53));
    assert_eq!(p.named_port("dns", Proto::Tcp), None);
    assert_eq!(p.named_port("init", Proto::Tcp), Some(7000));
    assert_eq!(p.ports.len(), 3, "an unnamed port is no named port");
    // A finished pod has given its address back; IPv6 is not ours.
    for (phase, ip) in [("Succeeded", "10.244.2.9"), ("Running", "fd00::9")] {
        let q = pod(&serde_json::from_value(json!({
            "metadata": {"namespace": "y", "name": "old"},
            "spec": {"containers": [{"name": "c"}], "hostNetwork": true},
            "status": {"podIP": ip, "phase": phase}
        }))
        .unwrap());
        assert_eq!(q.ip, None, "{phase} {ip}");
        assert!(q.host_network);
    }
}
