//! NetworkPolicies, Namespaces and Pods as the API server returns them
//! (networking/v1, core/v1), converted into the policy compiler's model
//! ([`policy::model`]) with the API's defaults applied:
//! - `policyTypes` missing: Ingress, and Egress if `spec.egress` is set;
//!   `podSelector` missing: every pod of the namespace;
//! - a port's `protocol` missing: TCP; a named port with `endPort` keeps
//!   the name and drops the range (the API server refuses it anyway);
//! - pods: IPv4 `status.podIP` of a pod not finished (Succeeded or Failed
//!   pods give their address back), `spec.hostNetwork`, and the named
//!   `containerPort`s of every container and init container.
//!
//! Unusable parts fail closed and are reported, naming the object and the
//! field: an IPv6 or malformed `ipBlock` becomes a peer matching nothing, a
//! selector with an unknown operator matches nothing, a port outside
//! 1-65535 or an unknown protocol matches nothing. Never "any": a rule
//! whose only peer is unusable must not widen to every peer.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use policy::model;

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn proto(p: Option<&str>) -> Option<model::Proto> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(model::Proto::Tcp),
        "UDP" => Some(model::Proto::Udp),
        "SCTP" => Some(model::Proto::Sctp),
        _ => None,
    }
}

/// A `LabelSelector`; `None` (with a problem) if an operator is unknown.
fn selector(s: &LabelSelector, at: &str, problems: &mut Vec<String>) -> Option<model::Selector> {
    let mut out = model::Selector {
        labels: s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        exprs: Vec::new(),
    };
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let values = e.values.clone().unwrap_or_default();
        out.exprs.push(match e.operator.as_str() {
            "In" => model::Requirement::In(e.key.clone(), values),
            "NotIn" => model::Requirement::NotIn(e.key.clone(), values),
            "Exists" => model::Requirement::Exists(e.key.clone()),
            "DoesNotExist" => model::Requirement::DoesNotExist(e.key.clone()),
            other => {
                problems.push(format!(
                    "{at}.matchExpressions[{i}].operator: {other:?} is not In, NotIn, Exists or DoesNotExist: the selector matches nothing"
                ));
                return None;
            }
        });
    }
    Some(out)
}

fn peer(p: &NetworkPolicyPeer, at: &str, problems: &mut Vec<String>) -> model::Peer {
    if let Some(b) = &p.ip_block {
        let net = |s: &str, field: &str, problems: &mut Vec<String>| match s.trim().parse() {
            Ok(ipnet::IpNet::V4(n)) => Some(n),
            Ok(ipnet::IpNet::V6(_)) => None,
            Err(_) => {
                problems.push(format!(
                    "{at}.ipBlock.{field}: {s:?} is not a CIDR: the peer matches nothing"
                ));
                None
            }
        };
        let Some(cidr) = net(&b.cidr, "cidr", problems) else {
            return model::Peer::nothing();
        };
        let mut except = Vec::new();
        for (i, e) in b.except.iter().flatten().enumerate() {
            // An IPv6 except cannot take an IPv4 address out; a malformed
            // one is reported (and leaves the block whole, as an except
            // only narrows).
            if let Some(n) = net(e, &format!("except[{i}]"), problems) {
                except.push(n);
            }
        }
        return model::Peer::Block { cidr, except };
    }
    let mut sel = |s: &Option<LabelSelector>, field: &str| match s {
        None => Some(None),
        Some(s) => selector(s, &format!("{at}.{field}"), problems).map(Some),
    };
    match (
        sel(&p.namespace_selector, "namespaceSelector"),
        sel(&p.pod_selector, "podSelector"),
    ) {
        (Some(namespaces), Some(pods)) => model::Peer::Pods { namespaces, pods },
        _ => model::Peer::nothing(),
    }
}

fn port(p: &NetworkPolicyPort, at: &str, problems: &mut Vec<String>) -> model::PolicyPort {
    let Some(proto) = proto(p.protocol.as_deref()) else {
        problems.push(format!(
            "{at}.protocol: {:?} is not TCP, UDP or SCTP: the port matches nothing",
            p.protocol.as_deref().unwrap_or_default()
        ));
        return model::PolicyPort::nothing();
    };
    let number = |n: i32| u16::try_from(n).ok().filter(|&n| n != 0);
    let port = match &p.port {
        None => model::Port::Any,
        Some(IntOrString::String(name)) => model::Port::Named(name.clone()),
        Some(IntOrString::Int(n)) => {
            let Some(lo) = number(*n) else {
                problems.push(format!(
                    "{at}.port: {n} is not a port (1-65535): the port matches nothing"
                ));
                return model::PolicyPort::nothing();
            };
            let hi = match p.end_port {
                None => lo,
                Some(e) => match number(e).filter(|&e| e >= lo) {
                    Some(e) => e,
                    None => {
                        problems.push(format!(
                            "{at}.endPort: {e} is not a port at or above port {lo}: the port matches nothing"
                        ));
                        return model::PolicyPort::nothing();
                    }
                },
            };
            model::Port::Range(lo, hi)
        }
    };
    model::PolicyPort { proto, port }
}

fn rule(
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ports: Option<&Vec<NetworkPolicyPort>>,
    at: &str,
    field: &str,
    problems: &mut Vec<String>,
) -> model::Rule {
    model::Rule {
        peers: peers
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| peer(p, &format!("{at}.{field}[{i}]"), problems))
            .collect(),
        ports: ports
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| port(p, &format!("{at}.ports[{i}]"), problems))
            .collect(),
    }
}

/// A NetworkPolicy, and the problems found (each naming the object and
/// field).
pub fn policy(np: &NetworkPolicy) -> (model::Policy, Vec<String>) {
    let (namespace, name) = key(&np.metadata);
    let obj = format!("NetworkPolicy {namespace}/{name}");
    let mut problems = Vec::new();
    let spec = np.spec.clone().unwrap_or_default();
    let select = match &spec.pod_selector {
        None => Some(model::Selector::all()),
        Some(s) => selector(s, &format!("{obj}: spec.podSelector"), &mut problems),
    };
    let (isolates_ingress, isolates_egress) = match &spec.policy_types {
        None => (true, spec.egress.is_some()),
        Some(t) => {
            for (i, x) in t.iter().enumerate() {
                if x != "Ingress" && x != "Egress" {
                    problems.push(format!(
                        "{obj}: spec.policyTypes[{i}]: {x:?} is not Ingress or Egress"
                    ));
                }
            }
            (
                t.iter().any(|x| x == "Ingress"),
                t.iter().any(|x| x == "Egress"),
            )
        }
    };
    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("{obj}: spec.ingress[{i}]");
            rule(
                r.from.as_ref(),
                r.ports.as_ref(),
                &at,
                "from",
                &mut problems,
            )
        })
        .collect();
    let egress = spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("{obj}: spec.egress[{i}]");
            rule(r.to.as_ref(), r.ports.as_ref(), &at, "to", &mut problems)
        })
        .collect();
    // A podSelector that cannot be read selects nothing: the policy then
    // isolates no pod (as it could not say which).
    let select = select.unwrap_or(model::Selector {
        labels: Vec::new(),
        exprs: vec![model::Requirement::In(String::new(), Vec::new())],
    });
    (
        model::Policy {
            namespace,
            name,
            select,
            isolates_ingress,
            isolates_egress,
            ingress,
            egress,
        },
        problems,
    )
}

/// A Namespace.
pub fn namespace(ns: &Namespace) -> model::Namespace {
    model::Namespace {
        name: ns.metadata.name.clone().unwrap_or_default(),
        labels: ns.metadata.labels.clone().unwrap_or_default(),
    }
}

/// A Pod as policy sees it.
pub fn pod(p: &Pod) -> model::Pod {
    let (namespace, name) = key(&p.metadata);
    let status = p.status.as_ref();
    let finished = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|a| a.parse::<IpAddr>().ok())
        .and_then(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .filter(|a: &Ipv4Addr| !finished && !a.is_unspecified());
    let spec = p.spec.as_ref();
    let ports = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|cp| {
            Some(model::NamedPort {
                name: cp.name.clone().filter(|n| !n.is_empty())?,
                proto: proto(cp.protocol.as_deref())?,
                port: u16::try_from(cp.container_port).ok().filter(|&n| n != 0)?,
            })
        })
        .collect();
    model::Pod {
        namespace,
        name,
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ip,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        ports,
    }
}

/// The policy model of a cluster's Namespaces, Pods and NetworkPolicies
/// (policies in namespace/name order), and the problems found.
pub fn cluster(
    namespaces: &[Namespace],
    pods: &[Pod],
    policies: &[NetworkPolicy],
) -> (model::Cluster, Vec<String>) {
    let mut problems = Vec::new();
    let mut ps: Vec<model::Policy> = policies
        .iter()
        .map(|np| {
            let (p, mut pr) = policy(np);
            problems.append(&mut pr);
            p
        })
        .collect();
    ps.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    (
        model::Cluster {
            namespaces: namespaces.iter().map(namespace).collect(),
            pods: pods.iter().map(pod).collect(),
            policies: ps,
        },
        problems,
    )
}

#[cfg(test)]
#[path = "netpol_tests.rs"]
mod tests;
