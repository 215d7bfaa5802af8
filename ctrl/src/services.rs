//! Services and EndpointSlices as kube-proxy reads them
//! (pkg/proxy/serviceport.go, endpointslicecache.go), compiled into
//! [`lb::ServicePort`]s, incrementally: a change to one Service or one of
//! its slices recomputes that service only, and the result says which
//! ports to upsert and which to remove from the service table.
//!
//! - Not proxied: `type: ExternalName`, headless (`clusterIP: None`),
//!   and services labelled `service.kubernetes.io/service-proxy-name`.
//! - Endpoints come from the slices labelled `kubernetes.io/service-name`
//!   in the service's namespace, IPv4 only; a port is matched by name and
//!   protocol and its number comes from the slice (named targetPorts
//!   arrive resolved); `addresses[0]` is used; a missing `ready` or
//!   `serving` condition counts as true, a missing `terminating` as false;
//!   an endpoint listed by two slices is used once.
//! - Endpoints are sorted, so every node builds the same Maglev table.
//! - Bad fields are left out with a problem naming the object and field;
//!   the rest of the object is used.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use lb::{Endpoint, PortName, Proto, ServicePort};

/// The label naming a slice's service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that hands a service to another proxy.
pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// kube-proxy's default sessionAffinity timeout (3 hours).
pub const DEFAULT_AFFINITY: Duration = Duration::from_secs(10800);

/// A namespace and name.
pub type ObjKey = (String, String);

/// What a change does to the service table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Ports to add or replace.
    pub upserts: Vec<ServicePort>,
    /// Ports to remove.
    pub removes: Vec<PortName>,
}

impl Update {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removes.is_empty()
    }

    fn extend(&mut self, o: Update) {
        self.upserts.extend(o.upserts);
        self.removes.extend(o.removes);
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn proto_of(p: Option<&str>) -> Result<Proto, String> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(Proto::Tcp),
        "UDP" => Ok(Proto::Udp),
        "SCTP" => Ok(Proto::Sctp),
        other => Err(format!("{other:?} is not TCP, UDP or SCTP")),
    }
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// The proxied ports of `svc` with their endpoints from `slices`, and the
/// problems found (each naming the object and field). An empty list: the
/// service is not proxied.
pub fn service_ports(
    svc: &Service,
    slices: &[&EndpointSlice],
    node: &str,
) -> (Vec<ServicePort>, Vec<String>) {
    let (ns, name) = key_of(&svc.metadata);
    let obj = format!("Service {ns}/{name}");
    let mut problems = Vec::new();
    let Some(spec) = &svc.spec else {
        return (Vec::new(), problems);
    };
    let proxied = spec.type_.as_deref() != Some("ExternalName")
        && !svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(PROXY_NAME_LABEL));
    let ips: Vec<&String> = match &spec.cluster_ips {
        Some(v) if !v.is_empty() => v.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    if !proxied || ips.iter().any(|ip| ip.as_str() == "None") || ips.is_empty() {
        return (Vec::new(), problems);
    }
    let mut v4 = |what: &str, list: &mut dyn Iterator<Item = (usize, &String)>| {
        let mut out = Vec::new();
        for (i, s) in list {
            match s.trim().parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(a)) => out.push(a),
                Ok(std::net::IpAddr::V6(_)) => {}
                Err(_) => problems.push(format!("{obj}: {what}[{i}]: {s:?} is not an address")),
            }
        }
        out
    };
    let cluster_ips = v4("spec.clusterIPs", &mut ips.into_iter().enumerate());
    let external_ips = v4(
        "spec.externalIPs",
        &mut spec.external_ips.iter().flatten().enumerate(),
    );
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref());
    let lb_ips: Vec<String> = ingress
        .into_iter()
        .flatten()
        .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|i| i.ip.clone())
        .collect();
    let load_balancer_ips = v4(
        "status.loadBalancer.ingress.ip",
        &mut lb_ips.iter().enumerate(),
    );
    if cluster_ips.is_empty() {
        // IPv6 only: Sluice's table is IPv4.
        return (Vec::new(), problems);
    }
    let mut source_ranges = Vec::new();
    for (i, r) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        match r.trim().parse::<Ipv4Net>() {
            Ok(n) => source_ranges.push(n.trunc()),
            Err(_) if r.contains(':') => {}
            Err(_) => problems.push(format!(
                "{obj}: spec.loadBalancerSourceRanges[{i}]: {r:?} is not a CIDR"
            )),
        }
    }
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .map_or(DEFAULT_AFFINITY, Duration::from_secs)
    });
    let mut out = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let proto = match proto_of(p.protocol.as_deref()) {
            Ok(x) => x,
            Err(e) => {
                problems.push(format!("{obj}: spec.ports[{i}].protocol: {e}"));
                continue;
            }
        };
        let Some(port) = port_u16(p.port) else {
            problems.push(format!(
                "{obj}: spec.ports[{i}].port: {} is out of range",
                p.port
            ));
            continue;
        };
        let pname = p.name.clone().unwrap_or_default();
        let mut sp = ServicePort::cluster_ip(
            PortName {
                namespace: ns.clone(),
                service: name.clone(),
                port: pname.clone(),
                proto,
            },
            cluster_ips
                .first()
                .copied()
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            port,
        );
        sp.cluster_ips = cluster_ips.clone();
        sp.node_port = p.node_port.and_then(port_u16);
        sp.external_ips = external_ips.clone();
        sp.load_balancer_ips = load_balancer_ips.clone();
        sp.source_ranges = source_ranges.clone();
        sp.internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        sp.external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        sp.affinity = affinity;
        sp.health_check_node_port = spec.health_check_node_port.and_then(port_u16);
        sp.endpoints = endpoints(&pname, proto, slices, node, &mut problems);
        out.push(sp);
    }
    (out, problems)
}

/// The endpoints of port `name`/`proto` across `slices`, sorted, once each.
fn endpoints(
    name: &str,
    proto: Proto,
    slices: &[&EndpointSlice],
    node: &str,
    problems: &mut Vec<String>,
) -> Vec<Endpoint> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let (ns, sname) = key_of(&s.metadata);
        let port = s.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == name
                && proto_of(p.protocol.as_deref()).is_ok_and(|x| x == proto)
        });
        let Some(port) = port.and_then(|p| p.port).and_then(port_u16) else {
            continue;
        };
        for (i, e) in s.endpoints.iter().flatten().enumerate() {
            let Some(first) = e.addresses.first() else {
                continue;
            };
            let Ok(ip) = first.parse::<Ipv4Addr>() else {
                problems.push(format!(
                    "EndpointSlice {ns}/{sname}: endpoints[{i}].addresses[0]: {first:?} is not an IPv4 address"
                ));
                continue;
            };
            if !seen.insert((ip, port)) {
                continue;
            }
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let hints = e.hints.as_ref();
            out.push(Endpoint {
                ip,
                port,
                ready,
                serving: c.and_then(|c| c.serving).unwrap_or(true),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                local: e.node_name.as_deref() == Some(node),
                zone_hints: hints
                    .and_then(|h| h.for_zones.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|z| z.name.clone())
                    .collect(),
                node_hints: hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|n| n.name.clone())
                    .collect(),
            });
        }
    }
    out.sort_by_key(|e| (e.ip, e.port));
    out
}

/// Services and slices as last seen, and the ports last published.
#[derive(Debug, Default)]
pub struct ServiceCache {
    node: String,
    services: BTreeMap<ObjKey, Service>,
    slices: BTreeMap<ObjKey, EndpointSlice>,
    /// Service -> its slices' keys.
    by_service: BTreeMap<ObjKey, BTreeSet<ObjKey>>,
    published: BTreeMap<ObjKey, Vec<PortName>>,
    problems: BTreeMap<ObjKey, Vec<String>>,
}

fn slice_service(s: &EndpointSlice) -> Option<ObjKey> {
    let svc = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        s.metadata.namespace.clone().unwrap_or_default(),
        svc.clone(),
    ))
}

impl ServiceCache {
    /// An empty cache for node `node`.
    pub fn new(node: &str) -> ServiceCache {
        ServiceCache {
            node: node.to_string(),
            ..ServiceCache::default()
        }
    }

    /// Services known.
    pub fn services(&self) -> usize {
        self.services.len()
    }

    /// Current problems, one line each.
    pub fn problems(&self) -> Vec<String> {
        self.problems.values().flatten().cloned().collect()
    }

    /// A Service was added or changed.
    pub fn apply_service(&mut self, svc: Service) -> Update {
        let k = key_of(&svc.metadata);
        self.services.insert(k.clone(), svc);
        self.recompute(&k)
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, k: &ObjKey) -> Update {
        self.services.remove(k);
        self.recompute(k)
    }

    /// A slice was added or changed.
    pub fn apply_slice(&mut self, s: EndpointSlice) -> Update {
        let k = key_of(&s.metadata);
        let mut u = self.delete_slice(&k);
        if let Some(svc) = slice_service(&s) {
            self.by_service
                .entry(svc.clone())
                .or_default()
                .insert(k.clone());
            self.slices.insert(k, s);
            // The delete above may have published an intermediate state
            // for the same service; the recompute supersedes it.
            let again = self.recompute(&svc);
            u.upserts
                .retain(|p| !again.upserts.iter().any(|q| q.name == p.name));
            u.extend(again);
        }
        u
    }

    /// A slice was deleted.
    pub fn delete_slice(&mut self, k: &ObjKey) -> Update {
        let Some(old) = self.slices.remove(k) else {
            return Update::default();
        };
        match slice_service(&old) {
            Some(svc) => {
                if let Some(set) = self.by_service.get_mut(&svc) {
                    set.remove(k);
                }
                self.recompute(&svc)
            }
            None => Update::default(),
        }
    }

    /// A relist of every Service: replaces the set (deletes missed while
    /// disconnected apply here).
    pub fn replace_services(&mut self, all: Vec<Service>) -> Update {
        let keys = self.swap_services(all);
        self.recompute_all(keys)
    }

    /// A relist of every slice.
    pub fn replace_slices(&mut self, all: Vec<EndpointSlice>) -> Update {
        let keys = self.swap_slices(all);
        self.recompute_all(keys)
    }

    /// A relist of both kinds at once (a cluster file load): one update,
    /// with no intermediate state between the Services and their slices.
    pub fn replace(&mut self, services: Vec<Service>, slices: Vec<EndpointSlice>) -> Update {
        let mut keys = self.swap_services(services);
        keys.extend(self.swap_slices(slices));
        self.recompute_all(keys)
    }

    /// Replaces the Services; returns the services to recompute (old and new).
    fn swap_services(&mut self, all: Vec<Service>) -> BTreeSet<ObjKey> {
        let mut keys: BTreeSet<ObjKey> = self.services.keys().cloned().collect();
        self.services = all.into_iter().map(|s| (key_of(&s.metadata), s)).collect();
        keys.extend(self.services.keys().cloned());
        keys
    }

    /// Replaces the slices; returns the services to recompute (those the
    /// old and the new slices name).
    fn swap_slices(&mut self, all: Vec<EndpointSlice>) -> BTreeSet<ObjKey> {
        let mut keys: BTreeSet<ObjKey> = self.by_service.keys().cloned().collect();
        self.slices.clear();
        self.by_service.clear();
        for s in all {
            if let Some(svc) = slice_service(&s) {
                let k = key_of(&s.metadata);
                self.by_service
                    .entry(svc.clone())
                    .or_default()
                    .insert(k.clone());
                keys.insert(svc);
                self.slices.insert(k, s);
            }
        }
        keys
    }

    fn recompute_all(&mut self, keys: BTreeSet<ObjKey>) -> Update {
        let mut u = Update::default();
        for k in keys {
            u.extend(self.recompute(&k));
        }
        u
    }

    /// Every port of every service, as they are now (a full table).
    pub fn all_ports(&self) -> Vec<ServicePort> {
        self.services
            .keys()
            .flat_map(|k| self.ports_of(k).0)
            .collect()
    }

    fn ports_of(&self, k: &ObjKey) -> (Vec<ServicePort>, Vec<String>) {
        let Some(svc) = self.services.get(k) else {
            return (Vec::new(), Vec::new());
        };
        let slices: Vec<&EndpointSlice> = self
            .by_service
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|s| self.slices.get(s))
            .collect();
        service_ports(svc, &slices, &self.node)
    }

    fn recompute(&mut self, k: &ObjKey) -> Update {
        let (ports, problems) = self.ports_of(k);
        if problems.is_empty() {
            self.problems.remove(k);
        } else {
            for p in &problems {
                tracing::warn!("{p}");
            }
            self.problems.insert(k.clone(), problems);
        }
        let names: Vec<PortName> = ports.iter().map(|p| p.name.clone()).collect();
        let old = self.published.remove(k).unwrap_or_default();
        let removes = old.into_iter().filter(|n| !names.contains(n)).collect();
        if !names.is_empty() {
            self.published.insert(k.clone(), names);
        }
        Update {
            upserts: ports,
            removes,
        }
    }
}
