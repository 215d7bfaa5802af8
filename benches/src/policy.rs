//! The NetworkPolicy benchmark cluster and worker, shared by the policy
//! benchmarks and the zero-allocation tests: one namespace, a target pod
//! and 200 peer pods labelled `id`; `n` rules selecting the target, rule k
//! allowing peer k % 200 on TCP port 1000 + k % 50.

use std::net::Ipv4Addr;

use dataplane::worker::Worker;
use policy::{
    Cluster, Namespace, Peer, Pod, Policy, PolicyPort, Port, Proto, Rule, Selector, Tables,
};

/// Peer pods.
pub const PEERS: u32 = 200;

/// Peer `i`'s address in [`cluster`].
pub fn peer_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 10)) + i)
}

/// One namespace, the target pod and 200 peer pods labelled `id`; `n`
/// rules selecting the target, rule k allowing peer k % 200 on TCP port
/// 1000 + k % 50.
pub fn cluster(n: u32) -> Cluster {
    let mut c = Cluster::default();
    c.namespaces.push(Namespace {
        name: "bench".into(),
        labels: Default::default(),
    });
    let pod = |name: String, id: String, a: Ipv4Addr| Pod {
        namespace: "bench".into(),
        name,
        labels: [("id".to_string(), id)].into_iter().collect(),
        ip: Some(a),
        host_network: false,
        ports: Vec::new(),
    };
    c.pods.push(pod(
        "target".into(),
        "target".into(),
        Ipv4Addr::new(10, 244, 9, 9),
    ));
    for i in 0..PEERS {
        c.pods
            .push(pod(format!("peer-{i}"), i.to_string(), peer_ip(i)));
    }
    let rules: Vec<Rule> = (0..n)
        .map(|k| Rule {
            peers: vec![Peer::Pods {
                namespaces: None,
                pods: Some(Selector::label("id", &(k % PEERS).to_string())),
            }],
            ports: vec![PolicyPort {
                proto: Proto::Tcp,
                port: Port::Range(1000 + (k % 50) as u16, 1000 + (k % 50) as u16),
            }],
        })
        .collect();
    if n > 0 {
        c.policies.push(Policy {
            namespace: "bench".into(),
            name: "many".into(),
            select: Selector::label("id", "target"),
            isolates_ingress: true,
            isolates_egress: false,
            ingress: rules,
            egress: Vec::new(),
        });
    }
    c
}

/// Peer pod `i` (on the peer node, 10.244.2.0/24) and the target's
/// address for the worker benchmark.
fn remote(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 2, 10 + (i % PEERS) as u8)
}

pub const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const PEER_NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// [`cluster`] with the target at [`LOCAL`] and the peers on the peer
/// node; `none`: no policy at all; n = 0: one policy selecting nobody.
fn worker_cluster(n: u32, none: bool) -> Cluster {
    let mut c = cluster(n);
    for p in &mut c.pods {
        p.ip = match p.name.strip_prefix("peer-") {
            Some(i) => Some(remote(i.parse().unwrap_or(0))),
            None => Some(LOCAL),
        };
    }
    if n == 0 && !none {
        c.policies.push(Policy {
            namespace: "bench".into(),
            name: "nobody".into(),
            select: Selector::label("id", "nobody"),
            isolates_ingress: true,
            isolates_egress: true,
            ingress: Vec::new(),
            egress: Vec::new(),
        });
    }
    c
}

/// VXLAN frames from the peer node: peer pod `k % 200` to the target on
/// TCP port 1000 + k % 50 (what rule k allows), source ports from
/// `sports`.
pub fn frames(ks: &[u32], sports: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    ks.iter()
        .flat_map(|&k| sports.clone().map(move |sp| (k, sp)))
        .map(|(k, sp)| {
            let (peer, port) = (remote(k), 1000 + (k % 50) as u16);
            let mut ip = Vec::new();
            etherparse::PacketBuilder::ipv4(peer.octets(), LOCAL.octets(), 64)
                .tcp(sp as u16, port, 1, 65535)
                .ack(1)
                .write(&mut ip, &[0; 18])
                .expect("packet");
            let mut inner = vec![2, 0xee, 0, 0, 0, 1, 2, 0xee, 0, 0, 0, 2, 8, 0];
            inner.extend_from_slice(&ip);
            let tmpl = encap::vxlan::EncapTemplate::new(
                &encap::vxlan::VxlanConfig::default(),
                &encap::vxlan::TunnelEndpoint {
                    local_mac: encap::MacAddr([2, 0x10, 0, 0, 0, 2]),
                    next_hop_mac: encap::MacAddr([2, 0x10, 0, 0, 0, 1]),
                    local_ip: PEER_NODE,
                    remote_ip: Ipv4Addr::new(192, 0, 2, 1),
                },
            );
            let mut b = crate::frames::with_headroom(&inner);
            let end = b.len();
            let r = encap::vxlan::encapsulate(&mut b, encap::vxlan::OVERHEAD..end, &tmpl)
                .expect("encap");
            b[r].to_vec()
        })
        .collect()
}

pub fn policy_worker(n: u32, none: bool, uplink: Vec<Vec<u8>>) -> Worker {
    let node = crate::replay::bench_node("10.244.1.0/24");
    let peer = dataplane::route::PeerSpec {
        name: "b".into(),
        ip: PEER_NODE,
        vtep_mac: encap::MacAddr([2, 0xee, 0, 0, 0, 2]),
        pod_cidrs: vec!["10.244.2.0/24".parse().expect("cidr")],
    };
    let w = crate::replay::replay_worker(
        node.clone(),
        [peer],
        "10.244.0.0/16",
        nat::ConntrackConfig::default().max_entries,
        uplink,
        LOCAL,
        Vec::new(),
    );
    let t = Tables::build(
        &worker_cluster(n, none),
        |p| p.ip == Some(LOCAL),
        &[node.ip, node.gateway_ip],
    )
    .with_generation(1);
    let snap = (**w.routes().load())
        .clone()
        .with_policy(std::sync::Arc::new(t));
    w.routes().store(snap);
    w
}

/// The node whose pods [`api_objects`]'s tables are compiled for.
pub const BIG_LOCAL: &str = "10.100.0.0/24";

/// A large cluster as the API server would hold it: `namespaces`
/// namespaces of `per_ns` pods, pod `k` at 10.100.<k / 256>.<k % 256>
/// (a node's pods are a /24: [`BIG_LOCAL`] holds the first 256),
/// labelled `app=app-<k % 20>`, `tier=<k % 3>`; each namespace labelled
/// `team=team-<ns % 10>`; `policies` NetworkPolicies spread over the
/// namespaces, policy `p` selecting `app=app-<p % 20>` and allowing, on
/// TCP 8080-8090 and a named port, pods `tier=<p % 3>` of namespaces
/// `team=team-<p % 10>`.
pub fn api_objects(
    namespaces: usize,
    per_ns: usize,
    policies: usize,
) -> (
    Vec<k8s_openapi::api::core::v1::Namespace>,
    Vec<k8s_openapi::api::core::v1::Pod>,
    Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
) {
    use serde_json::json;
    let ns: Vec<_> = (0..namespaces)
        .map(|i| {
            serde_json::from_value(json!({"metadata": {"name": format!("ns-{i}"),
                "labels": {"team": format!("team-{}", i % 10)}}}))
            .expect("namespace")
        })
        .collect();
    let pods: Vec<_> = (0..namespaces * per_ns)
        .map(|k| {
            let ip = Ipv4Addr::new(
                10,
                100 + (k / 65536) as u8,
                (k / 256 % 256) as u8,
                (k % 256) as u8,
            );
            serde_json::from_value(json!({
                "metadata": {"namespace": format!("ns-{}", k / per_ns), "name": format!("pod-{k}"),
                    "labels": {"app": format!("app-{}", k % 20), "tier": format!("{}", k % 3)}},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": ip.to_string()}
            }))
            .expect("pod")
        })
        .collect();
    let nps: Vec<_> = (0..policies)
        .map(|p| {
            serde_json::from_value(json!({
                "metadata": {"namespace": format!("ns-{}", p % namespaces), "name": format!("np-{p}")},
                "spec": {
                    "podSelector": {"matchLabels": {"app": format!("app-{}", p % 20)}},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("team-{}", p % 10)}},
                                           "podSelector": {"matchLabels": {"tier": format!("{}", p % 3)}}}],
                                 "ports": [{"protocol": "TCP", "port": 8080, "endPort": 8090}, {"port": "http"}]}],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.100.0.0/16", "except": [format!("10.100.{}.0/24", p % 256)]}}]}]
                }
            }))
            .expect("policy")
        })
        .collect();
    (ns, pods, nps)
}
