//! kube-proxy's `CategorizeEndpoints` (pkg/proxy/topology.go): which
//! endpoints of a service port serve traffic under the Cluster policy and
//! which under the Local policy.
//!
//! - Cluster: the ready endpoints (narrowed by topology hints when every
//!   ready endpoint has one and one matches this node or zone); if none is
//!   ready anywhere, the serving-and-terminating ones (KEP-1669).
//! - Local: this node's ready endpoints, else this node's serving and
//!   terminating ones. Topology hints never narrow them.
//! - Never an endpoint that is not serving.
//!
//! Results are indices into [`ServicePort::endpoints`], in their order.

use crate::model::{Endpoint, ServicePort};

/// The usable endpoints of one service port on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// For the Cluster policy; `None` if the port never uses it.
    pub cluster: Option<Vec<usize>>,
    /// For the Local policy; `None` if the port never uses it.
    pub local: Option<Vec<usize>>,
    /// Every endpoint reachable from this node (the union).
    pub all: Vec<usize>,
    /// Whether the service has a usable endpoint anywhere in the cluster
    /// (true even when none is reachable from here under Local).
    pub has_any: bool,
}

/// Which topology narrowing applies (kube-proxy's topology mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topology {
    None,
    SameNode,
    SameZone,
}

fn serving_terminating(e: &Endpoint) -> bool {
    e.serving && e.terminating
}

/// kube-proxy's `topologyModeFromHints`: PreferSameNode when every ready
/// endpoint has node hints and one names this node; else PreferSameZone
/// when every ready endpoint has zone hints and one names this zone.
fn topology(endpoints: &[Endpoint], node: &str, zone: Option<&str>) -> Topology {
    let ready = || endpoints.iter().filter(|e| e.ready);
    if ready().next().is_none() {
        return Topology::None;
    }
    if ready().all(|e| !e.node_hints.is_empty()) && ready().any(|e| has(&e.node_hints, node)) {
        return Topology::SameNode;
    }
    if let Some(z) = zone
        && ready().all(|e| !e.zone_hints.is_empty())
        && ready().any(|e| has(&e.zone_hints, z))
    {
        return Topology::SameZone;
    }
    Topology::None
}

fn has(hints: &[String], v: &str) -> bool {
    hints.iter().any(|h| h == v)
}

fn available(e: &Endpoint, t: Topology, node: &str, zone: Option<&str>) -> bool {
    match t {
        Topology::None => true,
        Topology::SameNode => has(&e.node_hints, node),
        Topology::SameZone => zone.is_some_and(|z| has(&e.zone_hints, z)),
    }
}

fn indices(endpoints: &[Endpoint], keep: impl Fn(&Endpoint) -> bool) -> Vec<usize> {
    endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| keep(e))
        .map(|(i, _)| i)
        .collect()
}

/// Categorizes `svc`'s endpoints for node `node` in zone `zone`.
pub fn categorize(svc: &ServicePort, node: &str, zone: Option<&str>) -> Categorized {
    let eps = &svc.endpoints;
    let mut out = Categorized::default();
    if eps.is_empty() {
        // kube-proxy returns nil for both: nothing is usable.
        if svc.uses_cluster_endpoints() {
            out.cluster = Some(Vec::new());
        }
        if svc.uses_local_endpoints() {
            out.local = Some(Vec::new());
        }
        return out;
    }
    let mut mode = Topology::None;
    if svc.uses_cluster_endpoints() {
        mode = topology(eps, node, zone);
        let mut cluster = indices(eps, |e| e.ready && available(e, mode, node, zone));
        if cluster.is_empty() {
            cluster = indices(eps, serving_terminating);
        }
        out.has_any = !cluster.is_empty();
        out.cluster = Some(cluster);
    }
    if !svc.uses_local_endpoints() {
        out.all = out.cluster.clone().unwrap_or_default();
        return out;
    }
    let (mut local_ready, mut local_st) = (false, false);
    for e in eps {
        if e.ready {
            out.has_any = true;
            local_ready |= e.local;
        } else if serving_terminating(e) {
            out.has_any = true;
            local_st |= e.local;
        }
    }
    let local = if local_ready {
        indices(eps, |e| e.local && e.ready)
    } else if local_st {
        indices(eps, |e| e.local && serving_terminating(e))
    } else {
        Vec::new()
    };
    let local_terminating = local_st && !local_ready;
    out.all = match &out.cluster {
        None => local.clone(),
        // Every ready endpoint is in the cluster set and the local set
        // holds only ready ones: the cluster set is the union.
        Some(c) if mode == Topology::None && !local_terminating => c.clone(),
        Some(c) => {
            let mut all = c.clone();
            all.extend(local.iter().filter(|i| !c.contains(i)));
            all.sort_unstable();
            all
        }
    };
    out.local = Some(local);
    out
}
