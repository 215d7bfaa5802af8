//! A Service port as the proxy sees it: kube-proxy's `ServicePort` and
//! `Endpoint` (pkg/proxy/serviceport.go, endpoint.go) reduced to what the
//! dataplane needs, IPv4 only (one table per family; IPv6 is not routed
//! by Sluice yet).

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

/// A service port's transport protocol. TCP, UDP and SCTP on one port
/// number are separate service ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    /// From an IP protocol number.
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// Kubernetes' spelling (`TCP`, `UDP`, `SCTP`).
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }
}

/// kube-proxy's `ServicePortName`: namespace/name:port/protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortName {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The port's name (empty for a single unnamed port).
    pub port: String,
    /// Its protocol.
    pub proto: Proto,
}

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        write!(f, "/{}", self.proto.name())
    }
}

/// One endpoint of a service port, with the port number the slice gave
/// (named target ports arrive resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `addresses[0]`.
    pub ip: Ipv4Addr,
    /// The slice's port number for this service port.
    pub port: u16,
    /// `conditions.ready` (missing counts as true).
    pub ready: bool,
    /// `conditions.serving` (missing: same as ready).
    pub serving: bool,
    /// `conditions.terminating` (missing counts as false).
    pub terminating: bool,
    /// On this node (`nodeName` is this node's name).
    pub local: bool,
    /// `hints.forZones`.
    pub zone_hints: Vec<String>,
    /// `hints.forNodes`.
    pub node_hints: Vec<String>,
}

impl Endpoint {
    /// A ready endpoint (the common case in tests and small clusters).
    pub fn ready(ip: Ipv4Addr, port: u16, local: bool) -> Endpoint {
        Endpoint {
            ip,
            port,
            ready: true,
            serving: true,
            terminating: false,
            local,
            zone_hints: Vec::new(),
            node_hints: Vec::new(),
        }
    }
}

/// A service port: its frontends, policies and endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Its name.
    pub name: PortName,
    /// `spec.clusterIPs` (the IPv4 ones).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// `port`.
    pub port: u16,
    /// `nodePort`, if allocated.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip`, except `ipMode: Proxy`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.loadBalancerSourceRanges` (empty: anyone).
    pub source_ranges: Vec<Ipv4Net>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` (kube-proxy: only when the service is
    /// externally accessible).
    pub external_local: bool,
    /// `sessionAffinity: ClientIP` and its timeout.
    pub affinity: Option<Duration>,
    /// `healthCheckNodePort`.
    pub health_check_node_port: Option<u16>,
    /// Endpoints from every slice of the service, for this port.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A ClusterIP service port with no endpoints (tests build on it).
    pub fn cluster_ip(name: PortName, ip: Ipv4Addr, port: u16) -> ServicePort {
        ServicePort {
            name,
            cluster_ips: vec![ip],
            port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            source_ranges: Vec::new(),
            internal_local: false,
            external_local: false,
            affinity: None,
            health_check_node_port: None,
            endpoints: Vec::new(),
        }
    }

    /// kube-proxy's `ExternallyAccessible`: a NodePort, externalIPs or
    /// LoadBalancer IPs.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    /// kube-proxy's `UsesClusterEndpoints`: the internal policy is
    /// Cluster, or the port takes external traffic at all (even under an
    /// external Local policy, pods and the node reach every endpoint).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_local || self.externally_accessible()
    }

    /// kube-proxy's `UsesLocalEndpoints`.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_local || (self.external_local && self.externally_accessible())
    }
}

/// What the table needs to know about this node and the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// This node's name (endpoints' `nodeName`, node hints).
    pub name: String,
    /// Its `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
    /// Addresses NodePorts answer on (the node's primary IPs; never
    /// 127.0.0.1, as nftables kube-proxy).
    pub node_ips: Vec<Ipv4Addr>,
    /// Pod addresses of the cluster (kube-proxy's local detector): traffic
    /// from outside them to a ClusterIP is masqueraded.
    pub cluster_cidrs: Vec<Ipv4Net>,
    /// The service CIDRs: an address in them that no service holds is
    /// dropped, not routed.
    pub service_cidrs: Vec<Ipv4Net>,
}
