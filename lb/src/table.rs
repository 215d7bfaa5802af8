//! The service table: every frontend of every service port on this node,
//! and the verdict for the first packet of a flow, with the semantics of
//! kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go):
//!
//! 1. `firewall-check`: a LoadBalancer IP with `loadBalancerSourceRanges`
//!    drops other sources (NodePorts bypass the ranges).
//! 2. `services`: (IP, protocol, port) of a ClusterIP, externalIP or
//!    LoadBalancer IP, then (protocol, port) of a NodePort on the node's
//!    NodePort addresses, select a service port.
//!    - ClusterIP: the internal policy's endpoints; masquerade a source
//!      outside the cluster's pod CIDRs.
//!    - External (externalIP, LB IP, NodePort): Cluster policy:
//!      masquerade, all endpoints. Local policy: pods reach all endpoints
//!      unmasqueraded, the node itself all endpoints masqueraded, anyone
//!      else this node's endpoints with the client address kept.
//!    - Hairpin (the chosen endpoint is the client): masquerade.
//! 3. No usable endpoint: reject (ICMP port unreachable) when the service
//!    has none anywhere, drop when a Local policy has none here.
//! 4. `cluster-ips-check`: another port of an allocated ClusterIP is
//!    rejected; an unallocated address in the service CIDRs is dropped.
//!
//! The table is immutable once built; [`ServiceTable::update`] makes the
//! next one at the cost of what changed (ports are shared by `Arc`, only
//! changed ones are recompiled, and the frontend maps are copied only when
//! frontends change).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::categorize::categorize;
use crate::maglev::{Maglev, flow_hash};
use crate::model::{NodeFacts, PortName, ServicePort};

/// A service port's index in its table (stable across updates while the
/// port exists; reused after it is removed).
pub type PortId = u32;

/// A backend: an endpoint's address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// Address.
    pub ip: Ipv4Addr,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// Endpoints a policy may use, with their Maglev table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSet {
    /// In the endpoints' order.
    pub backends: Vec<Backend>,
    maglev: Maglev,
}

impl BackendSet {
    fn new(backends: Vec<Backend>) -> BackendSet {
        let keys: Vec<(Ipv4Addr, u16)> = backends.iter().map(|b| (b.ip, b.port)).collect();
        BackendSet {
            maglev: Maglev::new(&keys),
            backends,
        }
    }

    /// The backend for flow hash `hash`.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<Backend> {
        self.maglev
            .pick(hash)
            .and_then(|i| self.backends.get(i).copied())
    }

    /// Whether `b` is in the set.
    pub fn contains(&self, b: Backend) -> bool {
        self.backends.contains(&b)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }
}

/// A compiled service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// What it was compiled from.
    pub spec: ServicePort,
    /// Endpoints under the Cluster policy.
    pub cluster: BackendSet,
    /// This node's endpoints under the Local policy.
    pub local: BackendSet,
    /// A usable endpoint exists somewhere in the cluster.
    pub has_any: bool,
    /// The table generation that compiled it.
    pub generation: u64,
    /// Its stable key ([`crate::affinity::port_key`]): what session
    /// affinity bindings are keyed by.
    pub key: u64,
}

impl Compiled {
    fn new(spec: ServicePort, facts: &NodeFacts, generation: u64) -> Compiled {
        let c = categorize(&spec, &facts.name, facts.zone.as_deref());
        let set = |idx: Option<Vec<usize>>| {
            BackendSet::new(
                idx.unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| spec.endpoints.get(i))
                    .map(|e| Backend {
                        ip: e.ip,
                        port: e.port,
                    })
                    .collect(),
            )
        };
        Compiled {
            cluster: set(c.cluster),
            local: set(c.local),
            has_any: c.has_any,
            generation,
            key: crate::affinity::port_key(&spec.name),
            spec,
        }
    }

    /// The set ClusterIP traffic uses (internalTrafficPolicy).
    pub fn internal(&self) -> &BackendSet {
        if self.spec.internal_local {
            &self.local
        } else {
            &self.cluster
        }
    }

    /// Whether `b` may still receive new flows of this port (under either
    /// policy): flows to a backend that left both are stale.
    pub fn serves(&self, b: Backend) -> bool {
        self.cluster.contains(b) || self.local.contains(b)
    }
}

/// How a frontend was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A ClusterIP.
    ClusterIp,
    /// An externalIP.
    ExternalIp,
    /// A LoadBalancer ingress IP.
    LoadBalancer,
    /// A NodePort on a node address.
    NodePort,
}

/// Why a new flow to a service address is dropped (each has a counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LbDrop {
    /// A Local traffic policy with no endpoint on this node (kube-proxy
    /// drops, so the load balancer's health check moves traffic away).
    NoLocalEndpoints,
    /// The source is outside `loadBalancerSourceRanges`.
    SourceRange,
    /// An address in the service CIDRs that no service holds.
    UnallocatedClusterIp,
}

impl LbDrop {
    /// Every reason, in counter order.
    pub const ALL: [LbDrop; 3] = [
        LbDrop::NoLocalEndpoints,
        LbDrop::SourceRange,
        LbDrop::UnallocatedClusterIp,
    ];

    /// Counter name.
    pub const fn name(self) -> &'static str {
        match self {
            LbDrop::NoLocalEndpoints => "svc_no_local_endpoints",
            LbDrop::SourceRange => "svc_source_range",
            LbDrop::UnallocatedClusterIp => "svc_unallocated_cluster_ip",
        }
    }
}

/// Why a new flow is rejected with ICMP port unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LbReject {
    /// The service has no usable endpoint anywhere.
    NoEndpoints,
    /// An allocated ClusterIP, on a port or protocol it does not serve.
    UnservedPort,
}

impl LbReject {
    /// Every reason, in counter order.
    pub const ALL: [LbReject; 2] = [LbReject::NoEndpoints, LbReject::UnservedPort];

    /// Counter name.
    pub const fn name(self) -> &'static str {
        match self {
            LbReject::NoEndpoints => "svc_reject_no_endpoints",
            LbReject::UnservedPort => "svc_reject_unserved_port",
        }
    }
}

/// The service port a flow selected and the endpoints it may use.
#[derive(Clone, Copy, Debug)]
pub struct Choice<'a> {
    /// Its index.
    pub id: PortId,
    /// The compiled port.
    pub port: &'a Compiled,
    /// The endpoints allowed for this client (never empty).
    pub set: &'a BackendSet,
    /// Masquerade whatever backend is chosen.
    pub masquerade: bool,
    /// The frontend kind.
    pub kind: Kind,
}

/// A flow's frontend, before the backend is picked.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// Not a service address: route as usual.
    NotService,
    /// A service port with usable endpoints.
    Service(Choice<'a>),
    /// Reject (ICMP port unreachable, also for TCP).
    Reject(LbReject),
    /// Drop.
    Drop(LbDrop),
}

/// A new flow's 5-tuple, as the first packet carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Source address (the client).
    pub src: Ipv4Addr,
    /// Destination address (the frontend).
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// The verdict on the first packet of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a service address.
    NotService,
    /// DNAT to `backend`, masquerading the source if `masquerade`.
    Dnat {
        /// The service port.
        port: PortId,
        /// Where to.
        backend: Backend,
        /// Masquerade the client.
        masquerade: bool,
    },
    /// Reject.
    Reject(LbReject),
    /// Drop.
    Drop(LbDrop),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frontend {
    port: PortId,
    kind: Kind,
}

fn fkey(ip: Ipv4Addr, proto: u8, port: u16) -> u64 {
    u64::from(u32::from(ip)) << 24 | u64::from(proto) << 16 | u64::from(port)
}

fn nkey(proto: u8, port: u16) -> u32 {
    u32::from(proto) << 16 | u32::from(port)
}

/// Frontends of one port: (key, frontend) for the address map, and the
/// NodePort key.
fn frontends_of(id: PortId, s: &ServicePort) -> (Vec<(u64, Frontend)>, Option<u32>) {
    let p = s.name.proto.number();
    let f = |kind| Frontend { port: id, kind };
    let mut v: Vec<(u64, Frontend)> = s
        .cluster_ips
        .iter()
        .map(|ip| (fkey(*ip, p, s.port), f(Kind::ClusterIp)))
        .collect();
    v.extend(
        s.external_ips
            .iter()
            .map(|ip| (fkey(*ip, p, s.port), f(Kind::ExternalIp))),
    );
    v.extend(
        s.load_balancer_ips
            .iter()
            .map(|ip| (fkey(*ip, p, s.port), f(Kind::LoadBalancer))),
    );
    (v, s.node_port.map(|n| nkey(p, n)))
}

/// The frontend maps, shared between tables until frontends change.
#[derive(Clone, Debug, Default)]
struct Index {
    by_name: BTreeMap<PortName, PortId>,
    /// Every port claiming each frontend (one, unless services collide:
    /// the API server keeps ClusterIPs and NodePorts unique, not
    /// externalIPs or shared LB IPs). The claimant with the least name
    /// wins, whatever the order of updates.
    frontends: FxHashMap<u64, Vec<Frontend>>,
    node_ports: FxHashMap<u32, Vec<PortId>>,
    /// Allocated ClusterIPs, with how many ports hold each.
    cluster_ips: FxHashMap<u32, u32>,
    /// Every frontend address (ClusterIPs, externalIPs, LB IPs), with how
    /// many frontends hold each.
    addrs: FxHashMap<u32, u32>,
    free: Vec<PortId>,
}

/// The immutable service table workers read.
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    facts: Arc<NodeFacts>,
    index: Arc<Index>,
    ports: Vec<Option<Arc<Compiled>>>,
    /// Local endpoints of externally reachable ports under an external
    /// Local policy, (address, protocol, port) keyed as frontends, with how
    /// many ports hold each: their replies to outside clients belong to
    /// the flow's owner worker ([`ServiceTable::external_local_backend`]).
    ext_local: Arc<FxHashMap<u64, u32>>,
    generation: u64,
}

/// Keys of `s`'s endpoints that serve outside clients with their address
/// kept (external Local policy, on this node).
fn ext_local_keys(s: &ServicePort) -> impl Iterator<Item = u64> + '_ {
    let on = s.external_local && s.externally_accessible();
    let p = s.name.proto.number();
    s.endpoints
        .iter()
        .filter(move |e| on && e.local)
        .map(move |e| fkey(e.ip, p, e.port))
}

fn count_keys(m: &mut FxHashMap<u64, u32>, keys: impl Iterator<Item = u64>, add: bool) {
    for k in keys {
        if add {
            *m.entry(k).or_insert(0) += 1;
        } else if let Some(c) = m.get_mut(&k) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                m.remove(&k);
            }
        }
    }
}

fn same_frontends(a: &ServicePort, b: &ServicePort) -> bool {
    a.cluster_ips == b.cluster_ips
        && a.port == b.port
        && a.node_port == b.node_port
        && a.external_ips == b.external_ips
        && a.load_balancer_ips == b.load_balancer_ips
}

impl ServiceTable {
    /// A table of `ports` for this node.
    pub fn new(facts: NodeFacts, ports: impl IntoIterator<Item = ServicePort>) -> ServiceTable {
        let t = ServiceTable {
            facts: Arc::new(facts),
            ..ServiceTable::default()
        };
        t.update(ports, &[])
    }

    /// The next table: `upserts` replace (or add) ports of the same name,
    /// `removes` go. Unchanged ports are shared, not recompiled.
    pub fn update(
        &self,
        upserts: impl IntoIterator<Item = ServicePort>,
        removes: &[PortName],
    ) -> ServiceTable {
        let generation = self.generation + 1;
        let mut ports = self.ports.clone();
        let mut index: Option<Index> = None;
        let base: &Index = &self.index;
        let mut ext_local: Option<FxHashMap<u64, u32>> = None;
        let mut ext = |old: Option<&ServicePort>, new: Option<&ServicePort>| {
            let dirty = old.is_some_and(|o| ext_local_keys(o).next().is_some())
                || new.is_some_and(|n| ext_local_keys(n).next().is_some());
            if dirty {
                let m = ext_local.get_or_insert_with(|| (*self.ext_local).clone());
                if let Some(o) = old {
                    count_keys(m, ext_local_keys(o), false);
                }
                if let Some(n) = new {
                    count_keys(m, ext_local_keys(n), true);
                }
            }
        };
        fn idx<'a>(index: &'a mut Option<Index>, base: &Index) -> &'a mut Index {
            index.get_or_insert_with(|| base.clone())
        }
        for name in removes {
            let Some(&id) = self.index.by_name.get(name) else {
                continue;
            };
            let i = idx(&mut index, base);
            if let Some(old) = ports.get_mut(id as usize).and_then(Option::take) {
                unindex(i, id, &old.spec);
                ext(Some(&old.spec), None);
            }
            i.by_name.remove(name);
            i.free.push(id);
        }
        for spec in upserts {
            let current = index.as_ref().unwrap_or(&self.index);
            let id = match current.by_name.get(&spec.name) {
                Some(&id) => id,
                None => {
                    let i = idx(&mut index, base);
                    let id = i.free.pop().unwrap_or(ports.len() as PortId);
                    i.by_name.insert(spec.name.clone(), id);
                    id
                }
            };
            let old = ports.get(id as usize).cloned().flatten();
            if old.as_ref().is_some_and(|o| o.spec == spec) {
                continue;
            }
            if !old.as_ref().is_some_and(|o| same_frontends(&o.spec, &spec)) {
                let i = idx(&mut index, base);
                if let Some(o) = &old {
                    unindex(i, id, &o.spec);
                }
                let (fs, np) = frontends_of(id, &spec);
                for (k, f) in fs {
                    i.frontends.entry(k).or_default().push(f);
                    *i.addrs.entry((k >> 24) as u32).or_insert(0) += 1;
                }
                if let Some(n) = np {
                    i.node_ports.entry(n).or_default().push(id);
                }
                for ip in &spec.cluster_ips {
                    *i.cluster_ips.entry(u32::from(*ip)).or_insert(0) += 1;
                }
            }
            ext(old.as_ref().map(|o| &o.spec), Some(&spec));
            let c = Arc::new(Compiled::new(spec, &self.facts, generation));
            if ports.len() <= id as usize {
                ports.resize(id as usize + 1, None);
            }
            if let Some(slot) = ports.get_mut(id as usize) {
                *slot = Some(c);
            }
        }
        ServiceTable {
            facts: self.facts.clone(),
            index: index.map_or_else(|| self.index.clone(), Arc::new),
            ports,
            ext_local: ext_local.map_or_else(|| self.ext_local.clone(), Arc::new),
            generation,
        }
    }

    /// Its generation (each update adds one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The node facts it was built for.
    pub fn facts(&self) -> &NodeFacts {
        &self.facts
    }

    /// A port by index.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&Compiled> {
        self.ports.get(id as usize).and_then(|p| p.as_deref())
    }

    /// A port's index by name.
    pub fn id_of(&self, name: &PortName) -> Option<PortId> {
        self.index.by_name.get(name).copied()
    }

    /// Every port, with its index.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &Compiled)> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_deref().map(|p| (i as PortId, p)))
    }

    /// Number of service ports.
    pub fn len(&self) -> usize {
        self.index.by_name.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a packet to `dst` may concern a service: a frontend
    /// address, an address in the service CIDRs, or a NodePort address
    /// while NodePorts exist. Everything else skips the service lookup.
    #[inline]
    pub fn concerns(&self, dst: Ipv4Addr) -> bool {
        let i = &self.index;
        if i.by_name.is_empty() && self.facts.service_cidrs.is_empty() {
            return false;
        }
        i.addrs.contains_key(&u32::from(dst))
            || self.facts.service_cidrs.iter().any(|n| n.contains(&dst))
            || (!i.node_ports.is_empty() && self.is_node(dst))
    }

    /// Whether a packet to `dst` (IP protocol `proto`, port `dport`) hits
    /// a frontend reachable from outside the node: an externalIP, a
    /// LoadBalancer IP, or a NodePort on a node address (ClusterIPs too,
    /// for a router that sends them here). Frames from the uplink that are
    /// not are left to SNAT replies and the kernel.
    #[inline]
    pub fn is_frontend(&self, dst: Ipv4Addr, proto: u8, dport: u16) -> bool {
        let i = &self.index;
        i.frontends.contains_key(&fkey(dst, proto, dport))
            || (self.is_node(dst) && i.node_ports.contains_key(&nkey(proto, dport)))
    }

    /// What the uplink's XDP program steers to the workers: every
    /// (address, IP protocol, port) of an externalIP, a LoadBalancer IP,
    /// and a NodePort on each node address, in no particular order.
    pub fn steered(&self) -> Vec<(Ipv4Addr, u8, u16)> {
        let mut out = Vec::new();
        for fs in self.index.frontends.values() {
            for f in fs {
                let Some(p) = self.port(f.port) else { continue };
                let s = &p.spec;
                let proto = s.name.proto.number();
                let ips = match f.kind {
                    Kind::ExternalIp => &s.external_ips,
                    Kind::LoadBalancer => &s.load_balancer_ips,
                    Kind::ClusterIp | Kind::NodePort => continue,
                };
                out.extend(ips.iter().map(|ip| (*ip, proto, s.port)));
            }
        }
        for &k in self.index.node_ports.keys() {
            let (proto, port) = ((k >> 16) as u8, k as u16);
            out.extend(self.facts.node_ips.iter().map(|ip| (*ip, proto, port)));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether (`ip`, `proto`, `port`) is a local endpoint that answers
    /// outside clients with their address kept (an external Local
    /// policy): its replies go to the worker owning the client's flow.
    #[inline]
    pub fn external_local_backend(&self, ip: Ipv4Addr, proto: u8, port: u16) -> bool {
        !self.ext_local.is_empty() && self.ext_local.contains_key(&fkey(ip, proto, port))
    }

    fn in_cluster(&self, ip: Ipv4Addr) -> bool {
        self.facts.cluster_cidrs.iter().any(|n| n.contains(&ip))
    }

    /// Orders two ports by name (a frontend two ports claim goes to the
    /// least).
    fn name_cmp(&self, a: PortId, b: PortId) -> std::cmp::Ordering {
        let name = |id| self.port(id).map(|p| &p.spec.name);
        name(a).cmp(&name(b))
    }

    fn is_node(&self, ip: Ipv4Addr) -> bool {
        self.facts.node_ips.contains(&ip)
    }

    /// The frontend of a new flow from `src` to `dst:dport` over IP
    /// protocol `proto`, before a backend is chosen.
    #[inline]
    pub fn lookup(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dport: u16) -> Lookup<'_> {
        let f = match self.index.frontends.get(&fkey(dst, proto, dport)) {
            Some(v) => match v.as_slice() {
                [one] => *one,
                many => match many.iter().min_by(|a, b| self.name_cmp(a.port, b.port)) {
                    Some(f) => *f,
                    None => return self.not_a_frontend(dst),
                },
            },
            None => match self.index.node_ports.get(&nkey(proto, dport)) {
                Some(v) if self.is_node(dst) => {
                    match v.iter().copied().min_by(|a, b| self.name_cmp(*a, *b)) {
                        Some(port) => Frontend {
                            port,
                            kind: Kind::NodePort,
                        },
                        None => return self.not_a_frontend(dst),
                    }
                }
                _ => return self.not_a_frontend(dst),
            },
        };
        let Some(c) = self.port(f.port) else {
            return Lookup::NotService;
        };
        let s = &c.spec;
        if f.kind == Kind::LoadBalancer && !s.source_ranges.is_empty() {
            let allowed = s.source_ranges.iter().any(|n| n.contains(&src))
                // kube-proxy: a node connecting to its own LB IP is
                // SNATed to that IP by whatever routes it there; allowed
                // when the ranges allow the node.
                || (src == dst && self.facts.node_ips.iter().any(|ip| {
                    s.source_ranges.iter().any(|n| n.contains(ip))
                }));
            if !allowed {
                return Lookup::Drop(LbDrop::SourceRange);
            }
        }
        let (set, masquerade, none) = match f.kind {
            Kind::ClusterIp => (
                c.internal(),
                !self.in_cluster(src),
                LbDrop::NoLocalEndpoints,
            ),
            _ if !s.external_local => (&c.cluster, true, LbDrop::NoLocalEndpoints),
            _ if self.in_cluster(src) => (&c.cluster, false, LbDrop::NoLocalEndpoints),
            _ if self.is_node(src) => (&c.cluster, true, LbDrop::NoLocalEndpoints),
            _ => (&c.local, false, LbDrop::NoLocalEndpoints),
        };
        if set.is_empty() {
            return if c.has_any {
                Lookup::Drop(none)
            } else {
                Lookup::Reject(LbReject::NoEndpoints)
            };
        }
        Lookup::Service(Choice {
            id: f.port,
            port: c,
            set,
            masquerade,
            kind: f.kind,
        })
    }

    fn not_a_frontend(&self, dst: Ipv4Addr) -> Lookup<'_> {
        if self.index.cluster_ips.contains_key(&u32::from(dst)) {
            return Lookup::Reject(LbReject::UnservedPort);
        }
        if self.facts.service_cidrs.iter().any(|n| n.contains(&dst)) {
            return Lookup::Drop(LbDrop::UnallocatedClusterIp);
        }
        Lookup::NotService
    }

    /// The verdict for a new flow: [`Self::lookup`], then the Maglev
    /// choice by the flow's 5-tuple hash, and hairpin masquerade.
    #[inline]
    pub fn decide(&self, f: &Flow) -> Verdict {
        match self.lookup(f.src, f.dst, f.proto, f.dport) {
            Lookup::NotService => Verdict::NotService,
            Lookup::Reject(r) => Verdict::Reject(r),
            Lookup::Drop(d) => Verdict::Drop(d),
            Lookup::Service(c) => match c
                .set
                .pick(flow_hash(f.src, f.dst, f.proto, f.sport, f.dport))
            {
                Some(backend) => Verdict::Dnat {
                    port: c.id,
                    backend,
                    masquerade: c.masquerade || backend.ip == f.src,
                },
                None => Verdict::Reject(LbReject::NoEndpoints),
            },
        }
    }
}

fn unindex(i: &mut Index, id: PortId, s: &ServicePort) {
    let (fs, np) = frontends_of(id, s);
    for (k, _) in fs {
        let Some(v) = i.frontends.get_mut(&k) else {
            continue;
        };
        let before = v.len();
        v.retain(|f| f.port != id);
        let removed = (before - v.len()) as u32;
        if v.is_empty() {
            i.frontends.remove(&k);
        }
        let a = (k >> 24) as u32;
        if let Some(c) = i.addrs.get_mut(&a) {
            *c = c.saturating_sub(removed);
            if *c == 0 {
                i.addrs.remove(&a);
            }
        }
    }
    if let Some(n) = np
        && let Some(v) = i.node_ports.get_mut(&n)
    {
        v.retain(|p| *p != id);
        if v.is_empty() {
            i.node_ports.remove(&n);
        }
    }
    for ip in &s.cluster_ips {
        let k = u32::from(*ip);
        if let Some(c) = i.cluster_ips.get_mut(&k) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                i.cluster_ips.remove(&k);
            }
        }
    }
}

/// Allocated ClusterIPs (for `sluice services` and tests).
impl ServiceTable {
    /// Every allocated ClusterIP.
    pub fn cluster_ips(&self) -> FxHashSet<Ipv4Addr> {
        self.index
            .cluster_ips
            .keys()
            .map(|k| Ipv4Addr::from(*k))
            .collect()
    }
}
