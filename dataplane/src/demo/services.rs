//! The demo's Services: one cluster file, as `kubectl get
//! services,endpointslices,nodes -o yaml` prints it, describes both nodes
//! and the Services; both daemons read it (`cluster_file`). The checks
//! reach a DNS-style service (UDP and TCP on port 53, served by pod b1 on
//! node-b) through its ClusterIP from every pod (across VXLAN and on the
//! same node, and b1 reaching itself: hairpin) and from node-a's own
//! stack, and an empty service is refused at once.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::{NODES, PODS, Summary, Topology, tcp_via, udp_via};
use crate::netns;

/// The service CIDR of the demo cluster.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// kube-dns's ClusterIP.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// A ClusterIP with no endpoints.
pub const EMPTY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// The port b1 serves DNS-style traffic on (the services' targetPort).
pub const DNS_TARGET: u16 = 5353;
/// A NodePort service (Cluster policy) on b1.
pub const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
/// Its NodePort (UDP and TCP).
pub const WEB_NODE_PORT: u16 = 30053;
/// A NodePort service with externalTrafficPolicy Local.
pub const LOCAL_WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);
/// Its NodePort (UDP and TCP).
pub const LOCAL_NODE_PORT: u16 = 30080;
/// Its healthCheckNodePort.
pub const LOCAL_HEALTH_PORT: u16 = 32000;
/// A Local-policy service with no endpoint on node-a.
pub const REMOTE_ONLY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 14);
/// Its NodePort (UDP).
pub const REMOTE_ONLY_NODE_PORT: u16 = 30081;
/// Its healthCheckNodePort.
pub const REMOTE_ONLY_HEALTH_PORT: u16 = 32001;

/// One Service for the cluster file: namespace, name, ClusterIP, ports
/// (name, protocol, port, target port) and endpoints (address, node,
/// ready, serving, terminating).
#[derive(Clone, Debug)]
pub struct Svc {
    /// Namespace.
    pub namespace: &'static str,
    /// Name.
    pub name: &'static str,
    /// ClusterIP.
    pub ip: Ipv4Addr,
    /// (name, protocol, port, target port).
    pub ports: Vec<(&'static str, &'static str, u16, u16)>,
    /// (address, node, ready, serving, terminating).
    pub endpoints: Vec<(Ipv4Addr, &'static str, bool, bool, bool)>,
    /// `sessionAffinity: ClientIP` with this timeout.
    pub affinity_secs: Option<u32>,
    /// Reachable from outside the cluster (type NodePort or LoadBalancer).
    pub external: Option<Exposure>,
}

impl Default for Svc {
    fn default() -> Svc {
        Svc {
            namespace: "default",
            name: "",
            ip: Ipv4Addr::UNSPECIFIED,
            ports: Vec::new(),
            endpoints: Vec::new(),
            affinity_secs: None,
            external: None,
        }
    }
}

/// How a Service is reached from outside.
#[derive(Clone, Debug, Default)]
pub struct Exposure {
    /// `nodePort` of each port, in the order of [`Svc::ports`].
    pub node_ports: Vec<u16>,
    /// `externalTrafficPolicy: Local` (else Cluster).
    pub local: bool,
    /// `status.loadBalancer.ingress[0].ip` (type LoadBalancer).
    pub lb_ip: Option<Ipv4Addr>,
    /// `loadBalancerSourceRanges`.
    pub source_ranges: Vec<&'static str>,
    /// `healthCheckNodePort` (Local policy).
    pub health_check: Option<u16>,
}

/// The demo's Services: kube-dns on b1, and an empty one.
pub fn demo_services() -> Vec<Svc> {
    let b1 = PODS[2].2;
    vec![
        Svc {
            namespace: "kube-system",
            name: "kube-dns",
            ip: DNS_IP,
            ports: vec![
                ("dns", "UDP", 53, DNS_TARGET),
                ("dns-tcp", "TCP", 53, DNS_TARGET),
            ],
            endpoints: vec![(b1, "node-b", true, true, false)],
            ..Svc::default()
        },
        Svc {
            namespace: "default",
            name: "empty",
            ip: EMPTY_IP,
            ports: vec![("http", "TCP", 80, 8080)],
            endpoints: Vec::new(),
            ..Svc::default()
        },
        // A NodePort (external Cluster policy) served by b1 on node-b.
        Svc {
            namespace: "default",
            name: "web",
            ip: WEB_IP,
            ports: vec![
                ("udp", "UDP", 8053, DNS_TARGET),
                ("tcp", "TCP", 8053, DNS_TARGET),
            ],
            endpoints: vec![(b1, "node-b", true, true, false)],
            external: Some(Exposure {
                node_ports: vec![WEB_NODE_PORT, WEB_NODE_PORT],
                ..Exposure::default()
            }),
            ..Svc::default()
        },
        // A LoadBalancer with externalTrafficPolicy Local: a1 on node-a,
        // b2 on node-b.
        Svc {
            namespace: "default",
            name: "local-web",
            ip: LOCAL_WEB_IP,
            ports: vec![("udp", "UDP", 80, 8080), ("tcp", "TCP", 80, 8080)],
            endpoints: vec![
                (PODS[0].2, "node-a", true, true, false),
                (PODS[3].2, "node-b", true, true, false),
            ],
            external: Some(Exposure {
                node_ports: vec![LOCAL_NODE_PORT, LOCAL_NODE_PORT],
                local: true,
                health_check: Some(LOCAL_HEALTH_PORT),
                ..Exposure::default()
            }),
            ..Svc::default()
        },
        // Local policy with no endpoint on node-a: dropped there, and its
        // health check says so.
        Svc {
            namespace: "default",
            name: "remote-only",
            ip: REMOTE_ONLY_IP,
            ports: vec![("udp", "UDP", 80, 8080)],
            endpoints: vec![(PODS[3].2, "node-b", true, true, false)],
            external: Some(Exposure {
                node_ports: vec![REMOTE_ONLY_NODE_PORT],
                local: true,
                health_check: Some(REMOTE_ONLY_HEALTH_PORT),
                ..Exposure::default()
            }),
            ..Svc::default()
        },
    ]
}

/// The cluster file: both Nodes (with Sluice's VTEP annotation) and the
/// Services with one EndpointSlice each.
pub fn cluster_yaml(services: &[Svc]) -> String {
    let nodes: Vec<(String, &str, &str)> = NODES
        .iter()
        .map(|(tag, _, ip, cidr)| (format!("node-{tag}"), *ip, *cidr))
        .collect();
    cluster_yaml_with(&nodes, services)
}

/// [`cluster_yaml`] for other Nodes: (name, InternalIP, podCIDR), each
/// with VTEP MAC 0a:58 and the address's four bytes (as the demo and the
/// harness give their nodes).
pub fn cluster_yaml_with(nodes: &[(String, &str, &str)], services: &[Svc]) -> String {
    let mut y = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for (name, ip, cidr) in nodes {
        let o: Vec<u8> = ip.split('.').filter_map(|x| x.parse().ok()).collect();
        let mac = o
            .iter()
            .fold(String::from("0a:58"), |s, b| format!("{s}:{b:02x}"));
        y += &format!(
            "- apiVersion: v1\n  kind: Node\n  metadata:\n    name: {name}\n    annotations: {{sluice.dev/vtep-mac: \"{mac}\"}}\n  spec: {{podCIDR: {cidr}}}\n  status: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n"
        );
    }
    for s in services {
        let affinity = s.affinity_secs.map_or(String::new(), |t| {
            format!(
                "    sessionAffinity: ClientIP\n    sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {t}}}}}\n"
            )
        });
        let (kind, mut spec, mut status) = match &s.external {
            None => ("ClusterIP", String::new(), String::new()),
            Some(x) => {
                let mut spec = format!(
                    "    externalTrafficPolicy: {}\n",
                    if x.local { "Local" } else { "Cluster" }
                );
                if let Some(h) = x.health_check {
                    spec += &format!("    healthCheckNodePort: {h}\n");
                }
                if !x.source_ranges.is_empty() {
                    spec += &format!(
                        "    loadBalancerSourceRanges: [{}]\n",
                        x.source_ranges.join(", ")
                    );
                }
                let status = x.lb_ip.map_or(String::new(), |ip| {
                    format!("  status: {{loadBalancer: {{ingress: [{{ip: {ip}}}]}}}}\n")
                });
                let kind = if x.lb_ip.is_some() || x.health_check.is_some() {
                    "LoadBalancer"
                } else {
                    "NodePort"
                };
                (kind, spec, status)
            }
        };
        spec += &affinity;
        y += &format!(
            "- apiVersion: v1\n  kind: Service\n  metadata: {{name: {}, namespace: {}}}\n  spec:\n    type: {kind}\n    clusterIP: {}\n{spec}    ports:\n",
            s.name, s.namespace, s.ip
        );
        for (i, (name, proto, port, target)) in s.ports.iter().enumerate() {
            let np = s
                .external
                .as_ref()
                .and_then(|x| x.node_ports.get(i))
                .map_or(String::new(), |n| format!(", nodePort: {n}"));
            y += &format!(
                "    - {{name: {name}, protocol: {proto}, port: {port}, targetPort: {target}{np}}}\n"
            );
        }
        y += &std::mem::take(&mut status);
        y += &format!(
            "- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata:\n    name: {}-1\n    namespace: {}\n    labels: {{kubernetes.io/service-name: {}}}\n  addressType: IPv4\n  ports:\n",
            s.name, s.namespace, s.name
        );
        for (name, proto, _, target) in &s.ports {
            y += &format!("  - {{name: {name}, protocol: {proto}, port: {target}}}\n");
        }
        if s.endpoints.is_empty() {
            y += "  endpoints: []\n";
        } else {
            y += "  endpoints:\n";
        }
        for (ip, node, ready, serving, terminating) in &s.endpoints {
            y += &format!(
                "  - addresses: [{ip}]\n    nodeName: {node}\n    conditions: {{ready: {ready}, serving: {serving}, terminating: {terminating}}}\n"
            );
        }
    }
    y
}

/// How long a refused TCP connection took (ICMP port unreachable makes
/// `connect` fail at once with ECONNREFUSED).
pub fn refused(t: &Topology, client: &str, to: (Ipv4Addr, u16)) -> io::Result<Duration> {
    netns::run_in(&t.ns_path(client), move || {
        let start = Instant::now();
        match TcpStream::connect_timeout(&to.into(), Duration::from_secs(3)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(start.elapsed()),
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("connected")),
        }
    })
}

/// An HTTP GET from `client` to `to` (a healthCheckNodePort): the status
/// code and the body.
pub fn health_check(t: &Topology, client: &str, to: (Ipv4Addr, u16)) -> io::Result<(u16, String)> {
    http_get(t, client, to, "/healthz")
}

/// An HTTP GET of `path` from `client` to `to`: the status code and the
/// body.
pub fn http_get(
    t: &Topology,
    client: &str,
    to: (Ipv4Addr, u16),
    path: &'static str,
) -> io::Result<(u16, String)> {
    netns::run_in(&t.ns_path(client), move || {
        let mut c = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            to.0
        );
        c.write_all(req.as_bytes())?;
        let mut r = String::new();
        c.read_to_string(&mut r)?;
        let code = r
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {r:?}")))?;
        let body = r.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
        Ok((code, body))
    })
}

/// Whether a datagram from `client` to `to` gets any answer within 1 s.
fn udp_answered(t: &Topology, client: &str, to: (Ipv4Addr, u16)) -> io::Result<bool> {
    netns::run_in(&t.ns_path(client), move || {
        let c = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        c.set_read_timeout(Some(Duration::from_secs(1)))?;
        c.send_to(b"x", to)?;
        let mut b = [0u8; 64];
        Ok(c.recv_from(&mut b).is_ok())
    })
}

/// Checks of Services from outside: NodePorts from the external host to
/// node-a, which serves them itself (`services.node_ports`).
fn external_checks(t: &Topology, s: &mut Summary) {
    let node_a = Ipv4Addr::new(192, 168, 77, 1);
    let (a1, b1) = (PODS[0].2, PODS[2].2);
    // Cluster policy: to b1 across VXLAN, masqueraded to node-a's gateway
    // address, answered from the NodePort.
    let gw_a = Ipv4Addr::new(10, 244, 1, 1);
    let r = udp_via(t, "ext", "b1", (b1, DNS_TARGET), (node_a, WEB_NODE_PORT));
    s.check(
        r.as_ref().is_ok_and(|p| *p == gw_a),
        format!("nodeport udp external -> node-a:{WEB_NODE_PORT} (Cluster policy, b1 on node-b): b1 saw {r:?} (want {gw_a})"),
    );
    match tcp_via(t, "ext", "b1", (b1, DNS_TARGET), (node_a, WEB_NODE_PORT), 1 << 20) {
        Ok((intact, peer, _)) => s.check(
            intact && peer == gw_a,
            format!("nodeport tcp 1 MB external -> node-a:{WEB_NODE_PORT}: intact={intact}, b1 saw {peer} (want {gw_a})"),
        ),
        Err(e) => s.check(false, format!("nodeport tcp external -> node-a:{WEB_NODE_PORT}: {e}")),
    }
    // Local policy: a1 (node-a's only endpoint) sees the client.
    let ext = super::EXT;
    let r = udp_via(t, "ext", "a1", (a1, 8080), (node_a, LOCAL_NODE_PORT));
    s.check(
        r.as_ref().is_ok_and(|p| *p == ext),
        format!("nodeport udp external -> node-a:{LOCAL_NODE_PORT} (Local policy, a1): a1 saw {r:?} (want the client, {ext})"),
    );
    match tcp_via(t, "ext", "a1", (a1, 8080), (node_a, LOCAL_NODE_PORT), 1 << 20) {
        Ok((intact, peer, _)) => s.check(
            intact && peer == ext,
            format!("nodeport tcp 1 MB external -> node-a:{LOCAL_NODE_PORT} (Local): intact={intact}, a1 saw {peer} (want {ext})"),
        ),
        Err(e) => s.check(false, format!("nodeport tcp external -> node-a:{LOCAL_NODE_PORT}: {e}")),
    }
    let r = health_check(t, "ext", (node_a, LOCAL_HEALTH_PORT));
    s.check(
        r.as_ref()
            .is_ok_and(|(c, b)| *c == 200 && b.contains("\"localEndpoints\": 1")),
        format!("healthCheckNodePort node-a:{LOCAL_HEALTH_PORT} with a local endpoint: {r:?} (want 200, localEndpoints 1)"),
    );
    // Local policy, no endpoint here: dropped, and the health check says
    // 503 so a load balancer stops sending.
    let h = health_check(t, "ext", (node_a, REMOTE_ONLY_HEALTH_PORT));
    let answered = udp_answered(t, "ext", (node_a, REMOTE_ONLY_NODE_PORT));
    s.check(
        h.as_ref()
            .is_ok_and(|(c, b)| *c == 503 && b.contains("\"localEndpoints\": 0"))
            && matches!(answered, Ok(false)),
        format!("Local policy without a local endpoint: health check {h:?} (want 503), datagram answered: {answered:?} (want dropped)"),
    );
}

/// The Service checks, added to `s`.
pub fn service_checks(t: &Topology, s: &mut Summary) {
    let b1 = PODS[2].2;
    let bind = (b1, DNS_TARGET);
    let gw_b = Ipv4Addr::new(10, 244, 2, 1);
    for (client, _, from, _) in PODS {
        // b1 reaching its own service: hairpin, masqueraded to its gateway.
        let want = if from == b1 { gw_b } else { from };
        let r = udp_via(t, client, "b1", bind, (DNS_IP, 53));
        s.check(
            r.as_ref().is_ok_and(|p| *p == want),
            format!(
                "service udp {client} -> kube-dns {DNS_IP}:53 (b1:{DNS_TARGET}): {}",
                match &r {
                    Ok(p) => format!("answered from the ClusterIP, b1 saw {p} (want {want})"),
                    Err(e) => e.to_string(),
                }
            ),
        );
        match tcp_via(t, client, "b1", bind, (DNS_IP, 53), 1 << 20) {
            Ok((intact, peer, _)) => s.check(
                intact && peer == want,
                format!("service tcp 1 MB {client} -> kube-dns {DNS_IP}:53: intact={intact}, b1 saw {peer} (want {want})"),
            ),
            Err(e) => s.check(false, format!("service tcp {client} -> kube-dns: {e}")),
        }
    }
    // The node's own stack through its host device: masqueraded to its
    // pod gateway, across VXLAN to b1.
    let r = udp_via(t, "a", "b1", bind, (DNS_IP, 53));
    s.check(
        r.as_ref().is_ok_and(|p| *p == Ipv4Addr::new(10, 244, 1, 1)),
        format!("service udp node-a's own stack -> kube-dns: {r:?} (want 10.244.1.1)"),
    );
    let r = refused(t, "a1", (EMPTY_IP, 80));
    s.check(
        r.as_ref().is_ok_and(|d| *d < Duration::from_secs(1)),
        format!("service with no endpoints refuses at once (ICMP port unreachable): {r:?}"),
    );
    external_checks(t, s);
}
