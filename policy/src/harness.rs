//! Test and fuzz support: an evaluation of the policies straight from the
//! objects, independent of the compiled tables (no address sets, no port
//! ranges, named ports looked up on the destination at each question),
//! and the `policy_compile` fuzz target's body, which checks the compiled
//! verdicts against it. Hidden from the API: it panics when they differ,
//! which is its job.
#![allow(clippy::indexing_slicing, clippy::panic)]

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::compile::Tables;
use crate::model::{
    Cluster, Labels, NamedPort, Namespace, Peer, Pod, Policy, PolicyPort, Port, Proto, Requirement,
    Rule, Selector,
};

/// Whether the policies of `c` let `src` open a flow to `dst` on
/// `proto`/`port`: the source's egress and the destination's ingress,
/// each evaluated rule by rule from the objects.
pub fn allows(c: &Cluster, src: &Pod, dst: &Pod, proto: Proto, port: u16) -> bool {
    direction(c, src, dst, dst, proto, port, true)
        && direction(c, dst, src, dst, proto, port, false)
}

fn direction(
    c: &Cluster,
    subject: &Pod,
    other: &Pod,
    dst: &Pod,
    proto: Proto,
    port: u16,
    egress: bool,
) -> bool {
    if subject.host_network {
        return true;
    }
    let mut isolated = false;
    for p in &c.policies {
        let applies = p.namespace == subject.namespace
            && p.select.matches(&subject.labels)
            && if egress {
                p.isolates_egress
            } else {
                p.isolates_ingress
            };
        if !applies {
            continue;
        }
        isolated = true;
        let rules = if egress { &p.egress } else { &p.ingress };
        for r in rules {
            if peer_ok(c, p, r, other) && port_ok(r, proto, port, dst) {
                return true;
            }
        }
    }
    !isolated
}

fn peer_ok(c: &Cluster, p: &Policy, r: &Rule, other: &Pod) -> bool {
    let Some(a) = other.ip else {
        return false;
    };
    r.peers.is_empty()
        || r.peers.iter().any(|peer| match peer {
            Peer::Pods { namespaces, pods } => {
                if other.host_network {
                    return false;
                }
                let ns_ok = match namespaces {
                    None => other.namespace == p.namespace,
                    Some(s) => c
                        .namespaces
                        .iter()
                        .find(|n| n.name == other.namespace)
                        .is_some_and(|n| s.matches(&n.selector_labels())),
                };
                ns_ok && pods.as_ref().is_none_or(|s| s.matches(&other.labels))
            }
            Peer::Block { cidr, except } => {
                cidr.contains(&a) && !except.iter().any(|e| e.contains(&a))
            }
        })
}

fn port_ok(r: &Rule, proto: Proto, port: u16, dst: &Pod) -> bool {
    r.ports.is_empty()
        || r.ports.iter().any(|pp| {
            pp.proto == proto
                && match &pp.port {
                    Port::Any => true,
                    Port::Range(lo, hi) => *lo <= port && port <= (*hi).max(*lo),
                    // Resolved on pod peers only: a host-network pod's
                    // traffic carries the node's address.
                    Port::Named(n) => {
                        !dst.host_network && dst.named_port(n, pp.proto) == Some(port)
                    }
                }
        })
}

/// Reads bytes as the fuzz target's input; zeros when they run out.
/// Fuzz input, read a byte at a time (zeros once it runs out).
#[derive(Debug)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    /// The next byte (0 at the end).
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
}

/// The namespaces of a fuzzed cluster.
pub const NS: [&str; 3] = ["x", "y", "z"];
/// The pods of each namespace.
pub const PODS: [&str; 3] = ["a", "b", "c"];
const NAMES: [&str; 3] = ["web", "dns", "metrics"];

fn proto(b: u8) -> Proto {
    [Proto::Tcp, Proto::Udp, Proto::Sctp][usize::from(b % 3)]
}

fn selector(d: &mut Bytes<'_>, key: &str, values: &[&str]) -> Selector {
    let v = values[usize::from(d.byte()) % values.len()].to_string();
    let w = values[usize::from(d.byte()) % values.len()].to_string();
    let exprs = |r: Requirement| Selector {
        labels: Vec::new(),
        exprs: vec![r],
    };
    match d.byte() % 8 {
        0 => Selector::all(),
        1 => Selector::label(key, &v),
        2 => exprs(Requirement::In(key.into(), vec![v, w])),
        3 => exprs(Requirement::NotIn(key.into(), vec![v])),
        4 => exprs(Requirement::Exists("team".into())),
        5 => exprs(Requirement::DoesNotExist("team".into())),
        6 => Selector::label("team", "red"),
        _ => Selector {
            labels: vec![(key.into(), v)],
            exprs: vec![Requirement::NotIn("team".into(), vec![w])],
        },
    }
}

fn net(d: &mut Bytes<'_>) -> Ipv4Net {
    // Mostly inside the pods' 10.244.0.0/16, sometimes anywhere.
    let a = if d.byte() & 1 == 0 {
        Ipv4Addr::new(10, 244, d.byte() % 4, d.byte() % 8)
    } else {
        Ipv4Addr::new(d.byte(), d.byte(), d.byte(), d.byte())
    };
    Ipv4Net::new(a, d.byte() % 33).unwrap_or_default()
}

fn rule(d: &mut Bytes<'_>) -> Rule {
    let peers = (0..d.byte() % 3)
        .map(|_| match d.byte() % 4 {
            0 => Peer::Pods {
                namespaces: None,
                pods: Some(selector(d, "pod", &PODS)),
            },
            1 => Peer::Pods {
                namespaces: Some(selector(d, "ns", &NS)),
                pods: None,
            },
            2 => Peer::Pods {
                namespaces: Some(selector(d, "ns", &NS)),
                pods: Some(selector(d, "pod", &PODS)),
            },
            _ => Peer::Block {
                cidr: net(d),
                except: (0..d.byte() % 3).map(|_| net(d)).collect(),
            },
        })
        .collect();
    let ports = (0..d.byte() % 3)
        .map(|_| {
            let proto = proto(d.byte());
            let port = match d.byte() % 4 {
                0 => Port::Any,
                1 => Port::Named(NAMES[usize::from(d.byte()) % NAMES.len()].into()),
                _ => {
                    let lo = 78 + u16::from(d.byte() % 6);
                    Port::Range(lo, lo + u16::from(d.byte() % 4))
                }
            };
            PolicyPort { proto, port }
        })
        .collect();
    Rule { peers, ports }
}

/// A cluster from `d`: namespaces x, y, z with labels; pods a, b, c in
/// each at `ip(namespace, pod)`, with labels, named ports and (when
/// `host_network`) sometimes host networking; and one to four policies.
pub fn cluster(
    d: &mut Bytes<'_>,
    ip: impl Fn(usize, usize) -> Ipv4Addr,
    host_network: bool,
) -> Cluster {
    let mut c = Cluster::default();
    for (i, ns) in NS.iter().enumerate() {
        let mut labels = Labels::new();
        labels.insert("ns".into(), NS[usize::from(d.byte()) % 3].into());
        if d.byte() & 1 == 1 {
            labels.insert("team".into(), "red".into());
        }
        c.namespaces.push(Namespace {
            name: ns.to_string(),
            labels,
        });
        for (j, pod) in PODS.iter().enumerate() {
            let b = d.byte();
            let mut labels = Labels::new();
            labels.insert("pod".into(), PODS[usize::from(b % 3)].into());
            if b & 4 != 0 {
                labels.insert("team".into(), "red".into());
            }
            let ports = NAMES
                .iter()
                .map(|n| NamedPort {
                    name: n.to_string(),
                    proto: proto(d.byte()),
                    port: 78 + u16::from(d.byte() % 8),
                })
                .collect();
            c.pods.push(Pod {
                namespace: ns.to_string(),
                name: pod.to_string(),
                labels,
                ip: Some(ip(i, j)),
                host_network: host_network && b & 0x80 != 0 && b & 0x40 != 0,
                ports,
            });
        }
    }
    c.policies = policies(d);
    c
}

/// One to four policies from `d`.
pub fn policies(d: &mut Bytes<'_>) -> Vec<Policy> {
    (0..1 + d.byte() % 4)
        .map(|i| {
            let types = [(true, false), (false, true), (true, true)][usize::from(d.byte() % 3)];
            let select = selector(d, "pod", &PODS);
            let ingress = (0..d.byte() % 3).map(|_| rule(d)).collect();
            let egress = (0..d.byte() % 3).map(|_| rule(d)).collect();
            Policy {
                namespace: NS[usize::from(d.byte()) % 3].into(),
                name: format!("p{i}"),
                select,
                isolates_ingress: types.0,
                isolates_egress: types.1,
                ingress,
                egress,
            }
        })
        .collect()
}

/// Builds a cluster ([`cluster`]) from `data`, compiles it, and checks
/// every verdict between its pods (each protocol, a few ports) against
/// [`allows`]; traffic from the node is always let in. Panics on a
/// difference.
pub fn compile(data: &[u8]) {
    let mut d = Bytes(data);
    let c = cluster(
        &mut d,
        |i, j| Ipv4Addr::new(10, 244, i as u8 + 1, j as u8 + 2),
        true,
    );
    let node = Ipv4Addr::new(192, 168, 77, 1);
    let t = Tables::build(&c, |_| true, &[node]);
    let ports = [80, 81, d.u16(), 78 + u16::from(d.byte() % 8)];
    for src in &c.pods {
        for dst in &c.pods {
            let (Some(a), Some(b)) = (src.ip, dst.ip) else {
                continue;
            };
            for proto in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
                for port in ports {
                    let got = t.decide(a, b, proto.number(), port).allowed();
                    // A host-network pod's traffic carries the node's
                    // address in practice; here its pod address is asked
                    // about, which no table isolates.
                    let want = allows(&c, src, dst, proto, port);
                    if got != want {
                        panic!(
                            "{}/{} -> {}/{} {proto:?}/{port}: compiled {got}, model {want}: {c:?}",
                            src.namespace, src.name, dst.namespace, dst.name
                        );
                    }
                }
            }
        }
        if let Some(a) = src.ip {
            assert!(
                t.decide(node, a, 6, 80).ingress.allows(),
                "the node is let in"
            );
        }
    }
}
