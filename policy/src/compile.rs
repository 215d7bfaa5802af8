//! The policies that select a node's pods, compiled into per-pod ingress
//! and egress tables of address sets and port sets, and the verdict for a
//! flow.
//!
//! Semantics (kubernetes/api networking/v1, the network-policies concept
//! page):
//! - a pod is isolated for ingress (egress) when some policy in its
//!   namespace selects it and lists Ingress (Egress) in its types; an
//!   isolated direction allows only what some rule of those policies
//!   allows (a union: order does not matter, nothing denies);
//! - a flow needs the source pod's egress and the destination pod's
//!   ingress to allow it;
//! - peers: a pod selector alone means pods of the policy's namespace, a
//!   namespace selector alone all pods of the matching namespaces, both
//!   the pods matching both; `ipBlock` is its CIDR less its `except`
//!   ranges and matches pod addresses too; no peers means any address;
//! - ports: none means every port of every protocol; a port without a
//!   number every port of its protocol; `endPort` is inclusive; a named
//!   port is resolved on each destination pod (ingress: the selected pod
//!   itself; egress: each peer pod, which then matches on its own port
//!   number only), and a pod without that name matches nothing;
//! - traffic from the pod's own node (kubelet probes) is always allowed
//!   in; host-network pods are never isolated and are not pod peers
//!   (their traffic carries the node's address).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::{Cluster, Labels, Peer, Pod, Policy, PolicyPort, Port, Proto, Rule};

/// Which policy and rule allowed a flow: the policy's index in
/// [`Tables::policy_name`] and the rule's in its ingress or egress list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleId {
    /// The policy.
    pub policy: u32,
    /// The rule within its direction.
    pub rule: u16,
}

/// One direction's verdict for a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The pod is not isolated in this direction (or not on this node).
    Open,
    /// Allowed by this rule.
    Allowed(RuleId),
    /// From the pod's own node: always allowed in.
    FromNode,
    /// Isolated, and no rule allows it.
    Denied,
}

impl Side {
    /// Whether this side lets the flow through.
    pub fn allows(self) -> bool {
        !matches!(self, Side::Denied)
    }
}

/// A flow's verdict: the source pod's egress and the destination pod's
/// ingress, as far as they are on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The source's egress.
    pub egress: Side,
    /// The destination's ingress.
    pub ingress: Side,
}

impl Decision {
    /// Whether both sides allow the flow.
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }
}

/// A hasher for IPv4 addresses (the keys of the per-packet maps): one
/// multiply instead of SipHash. The maps' keys come from the control
/// plane, not from packets, so a sender cannot choose colliding ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// A map keyed by IPv4 address bits.
type AddrMap<V> = HashMap<u32, V, BuildHasherDefault<AddrHasher>>;

/// Addresses a compiled rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Addrs {
    /// Any address.
    Any,
    /// These pod addresses (sorted) and these blocks (CIDR less excepts).
    Set {
        hosts: Vec<u32>,
        blocks: Vec<(Ipv4Net, Vec<Ipv4Net>)>,
    },
}

impl Addrs {
    fn contains(&self, a: Ipv4Addr) -> bool {
        match self {
            Addrs::Any => true,
            Addrs::Set { hosts, blocks } => {
                hosts.binary_search(&a.to_bits()).is_ok()
                    || blocks
                        .iter()
                        .any(|(c, ex)| c.contains(&a) && !ex.iter().any(|e| e.contains(&a)))
            }
        }
    }
}

/// Ports a compiled rule matches: any (every protocol), or these
/// (protocol, first, last) ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ports {
    Any,
    Ranges(Vec<(Proto, u16, u16)>),
}

impl Ports {
    fn contains(&self, proto: u8, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::Ranges(r) => r
                .iter()
                .any(|&(p, lo, hi)| p.number() == proto && (lo..=hi).contains(&port)),
        }
    }
}

/// One compiled rule (a policy rule may make several: one per destination
/// pod of a named egress port).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    id: RuleId,
    peers: Addrs,
    ports: Ports,
}

/// One direction of a pod: its compiled entries and an index from a
/// peer address to the entries that can match it, so a flow's first
/// packet looks at the entries naming its peer (a hash lookup), those
/// with any peer, and those with address blocks, not at every rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Table {
    entries: Vec<Entry>,
    /// Pod address to the entries listing it, ascending.
    by_host: AddrMap<Vec<u32>>,
    /// Entries matching any address, ascending.
    any: Vec<u32>,
    /// Entries with address blocks, ascending.
    blocks: Vec<u32>,
}

impl Table {
    fn new(entries: Vec<Entry>) -> Table {
        let mut t = Table {
            entries,
            ..Table::default()
        };
        for (i, e) in t.entries.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match &e.peers {
                Addrs::Any => t.any.push(i),
                Addrs::Set { hosts, blocks } => {
                    for h in hosts {
                        t.by_host.entry(*h).or_default().push(i);
                    }
                    if !blocks.is_empty() {
                        t.blocks.push(i);
                    }
                }
            }
        }
        t
    }

    /// The first entry (in compile order, so the answer is the same
    /// whatever the index) allowing `peer` on `proto`/`port`.
    fn find(&self, peer: Ipv4Addr, proto: u8, port: u16) -> Option<RuleId> {
        let mut best: Option<u32> = None;
        let mut scan = |list: &[u32], check_peer: bool| {
            for &i in list {
                if best.is_some_and(|b| i >= b) {
                    return;
                }
                let Some(e) = self.entries.get(i as usize) else {
                    return;
                };
                if e.ports.contains(proto, port) && (!check_peer || e.peers.contains(peer)) {
                    best = Some(i);
                    return;
                }
            }
        };
        if let Some(l) = self.by_host.get(&peer.to_bits()) {
            scan(l, false);
        }
        scan(&self.any, false);
        scan(&self.blocks, true);
        best.and_then(|i| self.entries.get(i as usize))
            .map(|e| e.id)
    }
}

/// A local pod's tables: `None` where it is not isolated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodTables {
    ingress: Option<Table>,
    egress: Option<Table>,
    /// The first policy isolating each direction (ingress, egress): the
    /// one a denied flow is reported under.
    isolating: [Option<u32>; 2],
}

impl PodTables {
    /// Whether the pod is isolated for ingress and for egress.
    pub fn isolated(&self) -> (bool, bool) {
        (self.ingress.is_some(), self.egress.is_some())
    }

    /// Compiled entries (ingress, egress): what `sluice policy` lists.
    pub fn entries(&self) -> (usize, usize) {
        let n = |t: &Option<Table>| t.as_ref().map_or(0, |t| t.entries.len());
        (n(&self.ingress), n(&self.egress))
    }

    /// The policy a denied flow is reported under: the first one
    /// isolating the pod in that direction.
    pub fn isolated_by(&self, egress: bool) -> Option<u32> {
        self.isolating.get(usize::from(egress)).copied().flatten()
    }

    /// The compiled entries of one direction, described (`sluice policy`):
    /// (policy id, rule, peers, ports).
    pub fn describe(&self, egress: bool) -> Vec<(RuleId, String, String)> {
        let t = if egress { &self.egress } else { &self.ingress };
        t.iter()
            .flat_map(|t| t.entries.iter())
            .map(|e| (e.id, e.peers.to_string(), e.ports.to_string()))
            .collect()
    }
}

impl std::fmt::Display for Addrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addrs::Any => write!(f, "any"),
            Addrs::Set { hosts, blocks } => {
                let mut first = true;
                let mut sep = |f: &mut std::fmt::Formatter<'_>| {
                    let r = if first { Ok(()) } else { write!(f, ",") };
                    first = false;
                    r
                };
                for h in hosts {
                    sep(f)?;
                    write!(f, "{}", Ipv4Addr::from_bits(*h))?;
                }
                for (c, ex) in blocks {
                    sep(f)?;
                    write!(f, "{c}")?;
                    for e in ex {
                        write!(f, "!{e}")?;
                    }
                }
                if first {
                    write!(f, "none")?;
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ports::Any => write!(f, "any"),
            Ports::Ranges(r) if r.is_empty() => write!(f, "none"),
            Ports::Ranges(r) => {
                for (i, &(p, lo, hi)) in r.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    match (lo, hi) {
                        (0, u16::MAX) => write!(f, "{p:?}")?,
                        _ if lo == hi => write!(f, "{p:?}/{lo}")?,
                        _ => write!(f, "{p:?}/{lo}-{hi}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Every local pod's tables, immutable once built: the workers read them
/// without locks, and a change builds new ones.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    pods: AddrMap<PodTables>,
    node_ips: Vec<Ipv4Addr>,
    /// (id, namespace, name), ascending by id.
    names: Vec<(u32, String, String)>,
    /// Some policy exists: local pods the tables do not know yet are
    /// held back ([`Tables::knows`]).
    enforcing: bool,
    generation: u32,
}

/// Namespace name to the labels its selectors see.
fn namespace_labels(c: &Cluster) -> HashMap<&str, Labels> {
    c.namespaces
        .iter()
        .map(|n| (n.name.as_str(), n.selector_labels()))
        .collect()
}

/// The pods (with addresses, not host-network) a pod peer of a policy in
/// `ns` selects.
fn peer_pods<'a>(
    c: &'a Cluster,
    nsl: &HashMap<&str, Labels>,
    ns: &str,
    namespaces: Option<&crate::model::Selector>,
    pods: Option<&crate::model::Selector>,
) -> impl Iterator<Item = &'a Pod> {
    let in_ns = move |q: &Pod| match namespaces {
        None => q.namespace == ns,
        Some(s) => nsl.get(q.namespace.as_str()).is_some_and(|l| s.matches(l)),
    };
    c.pods.iter().filter(move |q| {
        q.ip.is_some() && !q.host_network && in_ns(q) && pods.is_none_or(|s| s.matches(&q.labels))
    })
}

/// The addresses of a rule's peers.
fn addrs(c: &Cluster, nsl: &HashMap<&str, Labels>, p: &Policy, peers: &[Peer]) -> Addrs {
    if peers.is_empty() {
        return Addrs::Any;
    }
    let mut hosts = Vec::new();
    let mut blocks = Vec::new();
    for peer in peers {
        match peer {
            Peer::Pods { namespaces, pods } => hosts.extend(
                peer_pods(c, nsl, &p.namespace, namespaces.as_ref(), pods.as_ref())
                    .filter_map(|q| q.ip.map(Ipv4Addr::to_bits)),
            ),
            // A single address (the e2e suite's pod /32) is a host: found
            // by the index's hash lookup, not by a scan of the blocks.
            Peer::Block { cidr, except } if cidr.prefix_len() == 32 => {
                if !except.iter().any(|e| e.contains(&cidr.addr())) {
                    hosts.push(cidr.addr().to_bits());
                }
            }
            Peer::Block { cidr, except } => blocks.push((cidr.trunc(), except.clone())),
        }
    }
    hosts.sort_unstable();
    hosts.dedup();
    Addrs::Set { hosts, blocks }
}

/// The numeric ranges of `ports` (named ports resolved on `on`, if
/// given; otherwise left out).
fn ranges(ports: &[PolicyPort], on: Option<&Pod>) -> Vec<(Proto, u16, u16)> {
    ports
        .iter()
        .filter_map(|pp| match &pp.port {
            Port::Any => Some((pp.proto, 0, u16::MAX)),
            &Port::Range(lo, hi) => Some((pp.proto, lo, hi.max(lo))),
            Port::Named(n) => on
                .and_then(|q| q.named_port(n, pp.proto))
                .map(|x| (pp.proto, x, x)),
        })
        .collect()
}

/// Compiles `rule` (number `i` of policy `pi`) for `pod`: ingress named
/// ports resolve on the pod; egress ones on each peer pod.
fn compile_rule(
    c: &Cluster,
    nsl: &HashMap<&str, Labels>,
    (pi, p): (u32, &Policy),
    (i, rule): (usize, &Rule),
    pod: &Pod,
    egress: bool,
    out: &mut Vec<Entry>,
) {
    let id = RuleId {
        policy: pi,
        rule: u16::try_from(i).unwrap_or(u16::MAX),
    };
    let peers = addrs(c, nsl, p, &rule.peers);
    if rule.ports.is_empty() {
        out.push(Entry {
            id,
            peers,
            ports: Ports::Any,
        });
        return;
    }
    if !egress {
        let r = ranges(&rule.ports, Some(pod));
        out.push(Entry {
            id,
            peers,
            ports: Ports::Ranges(r),
        });
        return;
    }
    // Egress: numbered ports for every peer at once; each named port on
    // each destination pod that has it.
    out.push(Entry {
        id,
        peers: peers.clone(),
        ports: Ports::Ranges(ranges(&rule.ports, None)),
    });
    let named: Vec<PolicyPort> = rule
        .ports
        .iter()
        .filter(|pp| matches!(pp.port, Port::Named(_)))
        .cloned()
        .collect();
    if named.is_empty() {
        return;
    }
    for q in c.pods.iter().filter(|q| !q.host_network) {
        let Some(ip) = q.ip else { continue };
        if !peers.contains(ip) {
            continue;
        }
        let r = ranges(&named, Some(q));
        if !r.is_empty() {
            out.push(Entry {
                id,
                peers: Addrs::Set {
                    hosts: vec![ip.to_bits()],
                    blocks: Vec::new(),
                },
                ports: Ports::Ranges(r),
            });
        }
    }
}

impl Tables {
    /// Compiles the policies of `c` for the pods `local` says run on this
    /// node (with addresses, not host-network); `node_ips` are the node's
    /// own addresses (always allowed in).
    pub fn build(c: &Cluster, local: impl Fn(&Pod) -> bool, node_ips: &[Ipv4Addr]) -> Tables {
        let ids: Vec<u32> = (0..c.policies.len())
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        Tables::build_with_ids(c, local, node_ips, &ids)
    }

    /// [`Tables::build`] with each policy's id given (`ids[i]` for
    /// `c.policies[i]`, ascending): ids that stay with a policy while
    /// others come and go, so counters kept by id mean the same policy
    /// from one compile to the next.
    pub fn build_with_ids(
        c: &Cluster,
        local: impl Fn(&Pod) -> bool,
        node_ips: &[Ipv4Addr],
        ids: &[u32],
    ) -> Tables {
        let nsl = namespace_labels(c);
        let mut pods = AddrMap::default();
        for pod in c.pods.iter().filter(|q| !q.host_network && local(q)) {
            let Some(ip) = pod.ip else { continue };
            let (mut ingress, mut egress): (Option<Vec<Entry>>, Option<Vec<Entry>>) = (None, None);
            let mut isolating = [None, None];
            for (pi, p) in c.policies.iter().enumerate() {
                if p.namespace != pod.namespace || !p.select.matches(&pod.labels) {
                    continue;
                }
                let pi = ids.get(pi).copied().unwrap_or(u32::MAX);
                for (egress_rules, on, rules) in [
                    (false, p.isolates_ingress, &p.ingress),
                    (true, p.isolates_egress, &p.egress),
                ] {
                    if !on {
                        continue;
                    }
                    if let Some(first) = isolating.get_mut(usize::from(egress_rules)) {
                        first.get_or_insert(pi);
                    }
                    let table = if egress_rules {
                        egress.get_or_insert_with(Vec::new)
                    } else {
                        ingress.get_or_insert_with(Vec::new)
                    };
                    for (i, r) in rules.iter().enumerate() {
                        compile_rule(c, &nsl, (pi, p), (i, r), pod, egress_rules, table);
                    }
                }
            }
            let t = PodTables {
                ingress: ingress.map(Table::new),
                egress: egress.map(Table::new),
                isolating,
            };
            pods.insert(ip.to_bits(), t);
        }
        Tables {
            pods,
            node_ips: node_ips.to_vec(),
            names: c
                .policies
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let id = ids.get(i).copied().unwrap_or(u32::MAX);
                    (id, p.namespace.clone(), p.name.clone())
                })
                .collect(),
            enforcing: !c.policies.is_empty(),
            generation: 0,
        }
    }

    /// Stamps the tables with `generation`: workers re-check a flow
    /// decided under another one on its next packet.
    pub fn with_generation(mut self, generation: u32) -> Tables {
        self.generation = generation;
        self
    }

    /// The generation [`Tables::with_generation`] stamped.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether any policy exists (nothing to enforce otherwise).
    pub fn enforcing(&self) -> bool {
        self.enforcing
    }

    /// Whether local pod `ip` is known: its labels were seen, so its
    /// isolation is decided ([`Tables::isolated`]).
    pub fn knows(&self, ip: Ipv4Addr) -> bool {
        self.pods.contains_key(&ip.to_bits())
    }

    /// Whether local pod `ip` is isolated for (ingress, egress); `None`
    /// for a pod the tables do not know.
    pub fn isolated(&self, ip: Ipv4Addr) -> Option<(bool, bool)> {
        self.pod(ip).map(PodTables::isolated)
    }

    /// Local pods known, in address order.
    pub fn pod_ips(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self.pods.keys().map(|&a| Ipv4Addr::from_bits(a)).collect();
        v.sort_unstable();
        v
    }

    /// The node's own addresses (traffic from them is always let in).
    pub fn node_ips(&self) -> &[Ipv4Addr] {
        &self.node_ips
    }

    /// Local pod `src`'s egress verdict for a flow to `dst`.
    pub fn egress(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> Side {
        match self.pod(src).and_then(|t| t.egress.as_ref()) {
            None => Side::Open,
            Some(t) => t.find(dst, proto, port).map_or(Side::Denied, Side::Allowed),
        }
    }

    /// Local pod `dst`'s ingress verdict for a flow from `src`.
    pub fn ingress(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> Side {
        match self.pod(dst).and_then(|t| t.ingress.as_ref()) {
            None => Side::Open,
            Some(_) if self.node_ips.contains(&src) => Side::FromNode,
            Some(t) => t.find(src, proto, port).map_or(Side::Denied, Side::Allowed),
        }
    }

    /// The tables of local pod `ip`.
    pub fn pod(&self, ip: Ipv4Addr) -> Option<&PodTables> {
        self.pods.get(&ip.to_bits())
    }

    /// The namespace and name of policy `id` of a [`RuleId`].
    pub fn policy_name(&self, id: u32) -> Option<(&str, &str)> {
        let i = self.names.binary_search_by_key(&id, |n| n.0).ok()?;
        self.names.get(i).map(|(_, n, p)| (n.as_str(), p.as_str()))
    }

    /// The verdict for a flow from `src` to `dst`, IP protocol `proto`,
    /// destination port `port` (0 for protocols without ports).
    pub fn decide(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> Decision {
        Decision {
            egress: self.egress(src, dst, proto, port),
            ingress: self.ingress(src, dst, proto, port),
        }
    }
}
