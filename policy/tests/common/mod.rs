//! The upstream test model (test/e2e/network/netpol): namespaces x, y, z,
//! pods a, b, c in each, labelled `pod=<name>` (namespaces `ns=<name>`
//! and `kubernetes.io/metadata.name`), serving ports 80 and 81 over TCP
//! and UDP under the names `serve-<port>-<proto>`; a truth table of
//! pod-to-pod reachability; and an independent evaluation of the policies
//! straight from the objects (no compiled tables), which every verdict is
//! checked against.
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::Ipv4Addr;

use policy::{
    Cluster, Labels, NamedPort, Namespace, Peer, Pod, Policy, PolicyPort, Port, Proto, Rule,
    Selector, Tables,
};

pub const NS: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// The node's own address: its traffic is always allowed in.
pub const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);

pub fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Pod `pod` of namespace `ns`: a and c on the first node
/// (10.244.1.0/24), b on the second (10.244.2.0/24), as the two-node
/// pipeline rig places them.
pub fn ip(ns: usize, pod: usize) -> Ipv4Addr {
    let node = if pod == 1 { 2 } else { 1 };
    Ipv4Addr::new(10, 244, node, 10 * (ns as u8 + 1) + pod as u8)
}

pub fn cluster() -> Cluster {
    let mut c = Cluster::default();
    for (i, ns) in NS.iter().enumerate() {
        c.namespaces.push(Namespace {
            name: ns.to_string(),
            labels: labels(&[("ns", ns)]),
        });
        for (j, pod) in PODS.iter().enumerate() {
            let mut ports = Vec::new();
            for port in [80u16, 81] {
                for (proto, name) in [(Proto::Tcp, "tcp"), (Proto::Udp, "udp")] {
                    ports.push(NamedPort {
                        name: format!("serve-{port}-{name}"),
                        proto,
                        port,
                    });
                }
            }
            c.pods.push(Pod {
                namespace: ns.to_string(),
                name: pod.to_string(),
                labels: labels(&[("pod", pod)]),
                ip: Some(ip(i, j)),
                host_network: false,
                ports,
            });
        }
    }
    c
}

/// A policy in `ns` selecting `select`, with these ingress and egress
/// rules; `types`: (Ingress, Egress) in `policyTypes`.
pub fn policy(
    ns: &str,
    name: &str,
    select: Selector,
    types: (bool, bool),
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
) -> Policy {
    Policy {
        namespace: ns.into(),
        name: name.into(),
        select,
        isolates_ingress: types.0,
        isolates_egress: types.1,
        ingress,
        egress,
    }
}

pub fn pods(namespaces: Option<Selector>, pods: Option<Selector>) -> Peer {
    Peer::Pods { namespaces, pods }
}

pub fn tcp(port: u16) -> PolicyPort {
    PolicyPort {
        proto: Proto::Tcp,
        port: Port::Range(port, port),
    }
}

/// Pod-to-pod reachability, indexed [from][to] by `ns * 3 + pod`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach(pub [[bool; 9]; 9]);

pub fn idx(ns: &str, pod: &str) -> usize {
    NS.iter().position(|n| *n == ns).unwrap() * 3 + PODS.iter().position(|p| *p == pod).unwrap()
}

pub fn name(i: usize) -> String {
    format!("{}/{}", NS[i / 3], PODS[i % 3])
}

/// A set of pods as upstream's `Peer{Namespace, Pod}` names one (empty:
/// any).
#[derive(Clone, Copy, Debug, Default)]
pub struct Who<'a> {
    pub ns: Option<&'a str>,
    pub pod: Option<&'a str>,
}

impl Who<'_> {
    fn has(&self, i: usize) -> bool {
        self.ns.is_none_or(|n| NS[i / 3] == n) && self.pod.is_none_or(|p| PODS[i % 3] == p)
    }
}

impl Reach {
    pub fn all(v: bool) -> Reach {
        Reach([[v; 9]; 9])
    }

    pub fn expect(&mut self, from: &str, to: &str, v: bool) {
        let (f, t) = (from.split_once('/').unwrap(), to.split_once('/').unwrap());
        self.0[idx(f.0, f.1)][idx(t.0, t.1)] = v;
    }

    /// Upstream's `ExpectPeer`.
    pub fn expect_peer(&mut self, from: Who, to: Who, v: bool) {
        for f in 0..9 {
            for t in 0..9 {
                if from.has(f) && to.has(t) {
                    self.0[f][t] = v;
                }
            }
        }
    }

    /// Upstream's `ExpectAllIngress`.
    pub fn expect_all_ingress(&mut self, to: &str, v: bool) {
        let t = to.split_once('/').unwrap();
        for f in 0..9 {
            self.0[f][idx(t.0, t.1)] = v;
        }
    }

    /// Upstream's `ExpectAllEgress`.
    pub fn expect_all_egress(&mut self, from: &str, v: bool) {
        let f = from.split_once('/').unwrap();
        for t in 0..9 {
            self.0[idx(f.0, f.1)][t] = v;
        }
    }
}

pub fn pod_at(c: &Cluster, i: usize) -> &Pod {
    c.pods
        .iter()
        .find(|p| p.namespace == NS[i / 3] && p.name == PODS[i % 3])
        .unwrap()
}

/// What the compiled tables say, for every pair, on `proto`/`port`.
pub fn compiled(c: &Cluster, proto: Proto, port: u16) -> Reach {
    let t = Tables::build(c, |_| true, &[NODE]);
    let mut r = Reach::all(false);
    for f in 0..9 {
        for to in 0..9 {
            let (a, b) = (pod_at(c, f).ip.unwrap(), pod_at(c, to).ip.unwrap());
            r.0[f][to] = t.decide(a, b, proto.number(), port).allowed();
        }
    }
    r
}

/// The independent evaluation ([`policy::harness::allows`]): each
/// direction straight from the objects.
pub fn model(c: &Cluster, proto: Proto, port: u16) -> Reach {
    let mut r = Reach::all(false);
    for f in 0..9 {
        for to in 0..9 {
            r.0[f][to] = policy::harness::allows(c, pod_at(c, f), pod_at(c, to), proto, port);
        }
    }
    r
}

/// Checks the compiled verdicts and the independent evaluation against
/// the expected table; panics naming every wrong pair.
pub fn validate(case: &str, c: &Cluster, proto: Proto, port: u16, want: &Reach) {
    for (what, got) in [
        ("compiled", compiled(c, proto, port)),
        ("model", model(c, proto, port)),
    ] {
        let mut wrong = Vec::new();
        for f in 0..9 {
            for t in 0..9 {
                if got.0[f][t] != want.0[f][t] {
                    wrong.push(format!(
                        "{} -> {}: {} (want {})",
                        name(f),
                        name(t),
                        got.0[f][t],
                        want.0[f][t]
                    ));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{case}, {proto:?}/{port}, {what}: {} wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}
