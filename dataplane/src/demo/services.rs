//! The demo's Services: one cluster file, as `kubectl get
//! services,endpointslices,nodes -o yaml` prints it, describes both nodes
//! and the Services; both daemons read it (`cluster_file`). The checks
//! reach a DNS-style service (UDP and TCP on port 53, served by pod b1 on
//! node-b) through its ClusterIP from every pod (across VXLAN and on the
//! same node, and b1 reaching itself: hairpin) and from node-a's own
//! stack, and an empty service is refused at once.

use std::io;
use std::net::{Ipv4Addr, TcpStream};
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
            affinity_secs: None,
        },
        Svc {
            namespace: "default",
            name: "empty",
            ip: EMPTY_IP,
            ports: vec![("http", "TCP", 80, 8080)],
            endpoints: Vec::new(),
            affinity_secs: None,
        },
    ]
}

/// The cluster file: both Nodes (with Sluice's VTEP annotation) and the
/// Services with one EndpointSlice each.
pub fn cluster_yaml(services: &[Svc]) -> String {
    let mut y = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for (tag, _, ip, cidr) in NODES {
        let o: Vec<u8> = ip.split('.').filter_map(|x| x.parse().ok()).collect();
        let mac = o
            .iter()
            .fold(String::from("0a:58"), |s, b| format!("{s}:{b:02x}"));
        y += &format!(
            "- apiVersion: v1\n  kind: Node\n  metadata:\n    name: node-{tag}\n    annotations: {{sluice.dev/vtep-mac: \"{mac}\"}}\n  spec: {{podCIDR: {cidr}}}\n  status: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n"
        );
    }
    for s in services {
        let affinity = s.affinity_secs.map_or(String::new(), |t| {
            format!(
                "    sessionAffinity: ClientIP\n    sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {t}}}}}\n"
            )
        });
        y += &format!(
            "- apiVersion: v1\n  kind: Service\n  metadata: {{name: {}, namespace: {}}}\n  spec:\n    type: ClusterIP\n    clusterIP: {}\n{affinity}    ports:\n",
            s.name, s.namespace, s.ip
        );
        for (name, proto, port, target) in &s.ports {
            y += &format!(
                "    - {{name: {name}, protocol: {proto}, port: {port}, targetPort: {target}}}\n"
            );
        }
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
}
