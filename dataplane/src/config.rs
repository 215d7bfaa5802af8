//! `sluice run --config FILE`: the daemon's YAML configuration.
//!
//! Parsing is two steps: serde reads the document into plain fields
//! (unknown keys are refused, so a typo is not silently ignored), then
//! [`Config::validate`] checks every value and reports the first problem
//! with the field's path, e.g. `node.pod_cidr: "10.244.1.0/33" is not an
//! IPv4 CIDR`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use encap::MacAddr;
use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::route::PeerSpec;

/// A configuration error: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the field (`node.ip`, `peers[2].vtep_mac`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config error: {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        field: field.into(),
        message: message.into(),
    })
}

/// The document as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    #[serde(default)]
    cluster_cidrs: Vec<String>,
    #[serde(default)]
    vxlan: RawVxlan,
    #[serde(default)]
    snat: RawSnat,
    #[serde(default)]
    peers: Vec<RawPeer>,
    #[serde(default)]
    workers: RawWorkers,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    kubernetes: Option<RawKube>,
    #[serde(default)]
    peers_file: Option<String>,
    #[serde(default)]
    cluster_file: Option<String>,
    #[serde(default)]
    services: RawServices,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServices {
    #[serde(default)]
    cidrs: Vec<String>,
    #[serde(default)]
    node_ports: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKube {
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    flannel_annotations: bool,
    #[serde(default)]
    watch_timeout_secs: Option<u32>,
}

/// Peers from the Kubernetes API instead of the static list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeConfig {
    /// A kubeconfig; `None`: in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// This node's Node object name (default: `node.name`).
    pub node_name: String,
    /// Read Flannel's annotations on other nodes and write them on ours.
    pub flannel_annotations: bool,
    /// Server-side watch timeout (a silent stream is restarted after this
    /// plus 5 s).
    pub watch_timeout_secs: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    uplink: String,
    ip: String,
    #[serde(default)]
    pod_cidr: Option<String>,
    #[serde(default)]
    vtep_mac: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    uplink_mtu: Option<u32>,
    #[serde(default)]
    host_interface: Option<String>,
    #[serde(default)]
    uplink_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    vni: Option<u32>,
    port: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnat {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    ports: Option<String>,
    #[serde(default)]
    random_fully: bool,
    #[serde(default = "yes")]
    reserve_ports: bool,
}

fn yes() -> bool {
    true
}

impl Default for RawSnat {
    fn default() -> Self {
        RawSnat {
            enabled: true,
            ports: None,
            random_fully: false,
            reserve_ports: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    ip: String,
    vtep_mac: String,
    pod_cidrs: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    #[serde(default)]
    cores: Vec<usize>,
    #[serde(default)]
    idle_spins: Option<u32>,
    #[serde(default)]
    max_sleep_ms: Option<u64>,
    #[serde(default)]
    idle_spin_us: Option<u64>,
    #[serde(default)]
    conntrack_max: Option<usize>,
    #[serde(default)]
    tun_offload: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    socket: Option<String>,
    #[serde(default)]
    metrics: Option<String>,
    #[serde(default)]
    state_dir: Option<String>,
    #[serde(default)]
    lock_wait_secs: Option<u64>,
    #[serde(default)]
    take_over: Option<bool>,
    #[serde(default)]
    run_dir: Option<String>,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Node name.
    pub name: String,
    /// Uplink interface.
    pub uplink: String,
    /// How the uplink sends (`node.uplink_mode`).
    pub uplink_mode: crate::uplink_mode::UplinkMode,
    /// Node IP on the uplink.
    pub ip: Ipv4Addr,
    /// This node's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// `node.pod_cidr` was left out: read it from this node's Node object
    /// (`spec.podCIDRs`) at start (Kubernetes mode only).
    pub pod_cidr_from_api: bool,
    /// VTEP MAC (default: derived from the node IP, `0a:58:` + IP, stable
    /// across restarts).
    pub vtep_mac: MacAddr,
    /// Next hop for traffic leaving the cluster.
    pub gateway: Option<Ipv4Addr>,
    /// Uplink MTU (default 1500).
    pub uplink_mtu: u16,
    /// The node's device towards the pods (`node.host_interface`, default
    /// `sluice0`; `none`: no host path).
    pub host_interface: Option<String>,
    /// Cluster CIDRs: never masqueraded towards.
    pub cluster_cidrs: Vec<Ipv4Net>,
    /// VNI.
    pub vni: u32,
    /// VXLAN UDP port.
    pub vxlan_port: u16,
    /// Whether to masquerade traffic leaving the cluster.
    pub snat: bool,
    /// SNAT port range (also used for ICMP identifiers).
    pub snat_ports: (u16, u16),
    /// Fully random port allocation.
    pub random_fully: bool,
    /// Reserve the SNAT range from the host's ephemeral ports.
    pub reserve_ports: bool,
    /// Static peers.
    pub peers: Vec<PeerSpec>,
    /// Cores for workers, one worker each, worker `i` on uplink queue `i`
    /// (empty: one unpinned worker).
    pub cores: Vec<usize>,
    /// Empty polls before sleeping.
    pub idle_spins: u32,
    /// Longest spin without frames before sleeping, in microseconds
    /// (`workers.idle_spin_us`). Default 0: a worker polls while frames
    /// come and sleeps on its descriptors as soon as a poll finds none, so
    /// a light load costs wake-ups rather than a spinning core (issue 17:
    /// the same full-rate TCP figures, less CPU per GB; packet latency p99
    /// up to a few ms at half rate). A value above 0 spins that long at
    /// most, and only while frames have been coming closer together than
    /// that on average ([`crate::worker::IdlePolicy`]).
    pub idle_spin_us: u64,
    /// Longest sleep.
    pub max_sleep_ms: u64,
    /// Conntrack entries per worker.
    pub conntrack_max: usize,
    /// Open TUN pods with segmentation offload (`workers.tun_offload`,
    /// default true): one read/write per TCP super-packet instead of one
    /// per segment.
    pub tun_offload: bool,
    /// Admin socket path.
    pub socket: PathBuf,
    /// Prometheus endpoint.
    pub metrics: SocketAddr,
    /// Where pod attachments are recorded.
    pub state_dir: PathBuf,
    /// How long a starting daemon waits for another one holding the node
    /// (`admin.lock_wait_secs`, default 30: a rolling update's old pod
    /// stopping) before it refuses.
    pub lock_wait: std::time::Duration,
    /// A daemon started while another serves the node asks it to hand
    /// over at once (its uplink sockets, still bound, and the node lock)
    /// rather than waiting for its SIGTERM: a DaemonSet rolling update
    /// with a surge pod (`admin.take_over`, default false). The one that
    /// hands over stops forwarding and waits for its SIGTERM.
    pub take_over: bool,
    /// Where the flow tables (conntrack, NAT, session affinity) live as
    /// mapped files that outlive the process (`admin.run_dir`, default
    /// `/run/sluice`: tmpfs, emptied at boot).
    pub run_dir: PathBuf,
    /// Peers from Kubernetes Node objects (`None`: the static `peers`).
    pub kubernetes: Option<KubeConfig>,
    /// Peers from a YAML file, re-read when it changes (ctrl's static
    /// mode).
    pub peers_file: Option<PathBuf>,
    /// Nodes, Services and EndpointSlices from a YAML file as kubectl
    /// prints them (`cluster_file`), re-read when it changes.
    pub cluster_file: Option<PathBuf>,
    /// The service CIDRs (`services.cidrs`): routed to the host device so
    /// the node's own clients reach Sluice's balancer; an address in them
    /// that no service holds is dropped, as kube-proxy drops it.
    pub service_cidrs: Vec<Ipv4Net>,
    /// Serve NodePorts from outside (`services.node_ports`; else the
    /// kernel and kube-proxy keep them).
    pub node_ports: bool,
}

/// Replaces every `${NAME}` (NAME: letters, digits, `_`) with `env(NAME)`;
/// an unset variable is an error naming it and its line.
fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("${") {
            out.push_str(rest.get(..at).unwrap_or_default());
            let after = rest.get(at + 2..).unwrap_or_default();
            let Some(end) = after.find('}') else {
                return err(
                    "document",
                    format!("line {}: \"${{\" without a closing \"}}\"", n + 1),
                );
            };
            let name = after.get(..end).unwrap_or_default();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return err(
                    "document",
                    format!("line {}: ${{{name}}} is not a variable name", n + 1),
                );
            }
            let Some(v) = env(name) else {
                return err(
                    "document",
                    format!("line {}: environment variable {name} is not set", n + 1),
                );
            };
            out.push_str(&v);
            rest = after.get(end + 1..).unwrap_or_default();
        }
        out.push_str(rest);
    }
    Ok(out)
}

fn ipv4(field: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.parse()
        .or_else(|_| err(field, format!("{s:?} is not an IPv4 address")))
}

fn cidr(field: &str, s: &str) -> Result<Ipv4Net, ConfigError> {
    match s.parse::<Ipv4Net>() {
        Ok(n) if n.network() == n.addr() => Ok(n),
        Ok(n) => err(
            field,
            format!("{s:?} has host bits set (did you mean {}?)", n.trunc()),
        ),
        Err(_) => err(field, format!("{s:?} is not an IPv4 CIDR")),
    }
}

fn mac(field: &str, s: &str) -> Result<MacAddr, ConfigError> {
    let m: MacAddr = s
        .parse()
        .or_else(|_| err(field, format!("{s:?} is not a MAC address")))?;
    if m.is_multicast() {
        return err(field, format!("{s:?} is a multicast MAC"));
    }
    Ok(m)
}

fn range(field: &str, s: &str) -> Result<(u16, u16), ConfigError> {
    let bad = || err(field, format!("{s:?} is not a port range like 61000-65535"));
    let Some((a, b)) = s.split_once('-') else {
        return bad();
    };
    let (Ok(a), Ok(b)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) else {
        return bad();
    };
    if a == 0 || a > b {
        return err(field, format!("{s:?}: need 1 <= first <= last"));
    }
    Ok((a, b))
}

impl Config {
    /// Parses and validates a YAML document, after replacing `${NAME}`
    /// with environment variable `NAME` (a DaemonSet's one ConfigMap gives
    /// every node its own name and address: `${NODE_NAME}`, `${NODE_IP}`
    /// from the downward API).
    pub fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Self::parse_with_env(yaml, &|k| std::env::var(k).ok())
    }

    /// [`Config::parse`] with the environment given.
    pub fn parse_with_env(
        yaml: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let yaml = expand_env(yaml, env)?;
        let raw: RawConfig = serde_yaml::from_str(&yaml).map_err(|e| {
            let loc = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            // serde_yaml names the field in its message ("node: missing
            // field `ip`", "unknown field `pod_cidrs`").
            ConfigError {
                field: "document".into(),
                message: format!("{e}{loc}"),
            }
        })?;
        Self::validate(raw)
    }

    /// Reads and validates `path`.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            field: "file".into(),
            message: format!("{}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    fn validate(r: RawConfig) -> Result<Config, ConfigError> {
        let n = &r.node;
        if n.name.is_empty() {
            return err("node.name", "empty");
        }
        if n.uplink.is_empty() || n.uplink.len() > 15 {
            return err(
                "node.uplink",
                format!("{:?} is not an interface name", n.uplink),
            );
        }
        let ip = ipv4("node.ip", &n.ip)?;
        let host_interface = match n.host_interface.as_deref() {
            None => Some("sluice0".to_string()),
            Some("none") => None,
            Some(h)
                if (1..16).contains(&h.len())
                    && !h.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) =>
            {
                Some(h.to_string())
            }
            Some(h) => {
                return err(
                    "node.host_interface",
                    format!("{h:?} is not an interface name (or \"none\")"),
                );
            }
        };
        let pod_cidr_from_api = n.pod_cidr.is_none();
        if pod_cidr_from_api && r.kubernetes.is_none() {
            return err(
                "node.pod_cidr",
                "required unless peers come from kubernetes (then the Node object gives it)",
            );
        }
        let pod_cidr = match &n.pod_cidr {
            Some(c) => cidr("node.pod_cidr", c)?,
            None => Ipv4Net::default(),
        };
        if !pod_cidr_from_api && pod_cidr.prefix_len() > 30 {
            return err(
                "node.pod_cidr",
                "too small for a gateway and pods (at most /30)",
            );
        }
        let [a, b, c, d] = ip.octets();
        let vtep_mac = match &n.vtep_mac {
            Some(s) => mac("node.vtep_mac", s)?,
            None => MacAddr([0x0a, 0x58, a, b, c, d]),
        };
        let gateway = n
            .gateway
            .as_deref()
            .map(|g| ipv4("node.gateway", g))
            .transpose()?;
        let uplink_mtu = match n.uplink_mtu {
            None => 1500,
            Some(m) if (576..=9000).contains(&m) => m as u16,
            Some(m) => return err("node.uplink_mtu", format!("{m} is outside 576-9000")),
        };
        let mut cluster_cidrs = Vec::new();
        for (i, c) in r.cluster_cidrs.iter().enumerate() {
            cluster_cidrs.push(cidr(&format!("cluster_cidrs[{i}]"), c)?);
        }
        if !pod_cidr_from_api && !cluster_cidrs.iter().any(|c| c.contains(&pod_cidr)) {
            cluster_cidrs.push(pod_cidr);
        }
        let vni = r.vxlan.vni.unwrap_or(1);
        if encap::vxlan::Vni::new(vni).is_none() {
            return err("vxlan.vni", format!("{vni} is not a 24-bit VNI"));
        }
        let vxlan_port = match r.vxlan.port {
            None => encap::vxlan::FLANNEL_PORT,
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(p) => return err("vxlan.port", format!("{p} is not a UDP port")),
        };
        let snat_ports = match &r.snat.ports {
            Some(s) => range("snat.ports", s)?,
            None => (61000, 65535),
        };
        if (snat_ports.0..=snat_ports.1).contains(&vxlan_port) {
            return err(
                "snat.ports",
                format!("overlaps the VXLAN port {vxlan_port}"),
            );
        }
        let mut peers = Vec::new();
        for (i, p) in r.peers.iter().enumerate() {
            let f = |x: &str| format!("peers[{i}].{x}");
            if p.name.is_empty() {
                return err(f("name"), "empty");
            }
            let pip = ipv4(&f("ip"), &p.ip)?;
            if pip == ip {
                return err(f("ip"), "is this node's own IP");
            }
            let mut cidrs = Vec::new();
            for (k, c) in p.pod_cidrs.iter().enumerate() {
                let net = cidr(&f(&format!("pod_cidrs[{k}]")), c)?;
                if net.contains(&pod_cidr.network()) || pod_cidr.contains(&net.network()) {
                    return err(
                        f(&format!("pod_cidrs[{k}]")),
                        format!("{net} overlaps this node's pod CIDR {pod_cidr}"),
                    );
                }
                cidrs.push(net);
            }
            if cidrs.is_empty() {
                return err(f("pod_cidrs"), "empty");
            }
            peers.push(PeerSpec {
                name: p.name.clone(),
                ip: pip,
                vtep_mac: mac(&f("vtep_mac"), &p.vtep_mac)?,
                pod_cidrs: cidrs,
            });
        }
        let ncores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (i, &c) in r.workers.cores.iter().enumerate() {
            if c >= ncores {
                return err(
                    format!("workers.cores[{i}]"),
                    format!("core {c} does not exist (this machine has {ncores})"),
                );
            }
        }
        for (i, c) in r.workers.cores.iter().enumerate() {
            if r.workers.cores.iter().take(i).any(|x| x == c) {
                return err(
                    format!("workers.cores[{i}]"),
                    format!("core {c} listed twice"),
                );
            }
        }
        if r.workers.cores.len() > 64 {
            return err("workers.cores", "at most 64 workers");
        }
        let conntrack_max = r.workers.conntrack_max.unwrap_or(262_144);
        if conntrack_max == 0 || conntrack_max > (1 << 23) - 1 {
            return err("workers.conntrack_max", "must be 1 to 8388607");
        }
        let kubernetes = match &r.kubernetes {
            None => None,
            Some(k) => {
                if !r.peers.is_empty() {
                    return err(
                        "peers",
                        "static peers and kubernetes are exclusive: peers come from Node objects",
                    );
                }
                let node_name = k.node_name.clone().unwrap_or_else(|| n.name.clone());
                if node_name.is_empty() {
                    return err("kubernetes.node_name", "empty");
                }
                let watch_timeout_secs = k.watch_timeout_secs.unwrap_or(290);
                if !(1..=3600).contains(&watch_timeout_secs) {
                    return err("kubernetes.watch_timeout_secs", "must be 1 to 3600");
                }
                Some(KubeConfig {
                    kubeconfig: k.kubeconfig.as_deref().map(PathBuf::from),
                    node_name,
                    flannel_annotations: k.flannel_annotations,
                    watch_timeout_secs,
                })
            }
        };
        let peers_file = match &r.peers_file {
            None => None,
            Some(_) if kubernetes.is_some() => {
                return err("peers_file", "peers_file and kubernetes are exclusive");
            }
            Some(_) if !r.peers.is_empty() => {
                return err("peers_file", "peers_file and inline peers are exclusive");
            }
            Some(p) if p.is_empty() => return err("peers_file", "empty path"),
            Some(p) => Some(PathBuf::from(p)),
        };
        let cluster_file = match &r.cluster_file {
            None => None,
            Some(_) if kubernetes.is_some() => {
                return err(
                    "cluster_file",
                    "cluster_file and kubernetes are exclusive (the file is static mode)",
                );
            }
            Some(_) if peers_file.is_some() => {
                return err(
                    "cluster_file",
                    "cluster_file and peers_file are exclusive (the file's Nodes are the peers)",
                );
            }
            Some(_) if !r.peers.is_empty() => {
                return err(
                    "cluster_file",
                    "cluster_file and inline peers are exclusive",
                );
            }
            Some(p) if p.is_empty() => return err("cluster_file", "empty path"),
            Some(p) => Some(PathBuf::from(p)),
        };
        let mut service_cidrs = Vec::new();
        for (i, c) in r.services.cidrs.iter().enumerate() {
            let net = cidr(&format!("services.cidrs[{i}]"), c)?;
            if net.contains(&pod_cidr) && !pod_cidr_from_api {
                return err(
                    format!("services.cidrs[{i}]"),
                    format!("{net} holds this node's pod CIDR {pod_cidr}"),
                );
            }
            service_cidrs.push(net);
        }
        let metrics = r.admin.metrics.as_deref().unwrap_or("127.0.0.1:9420");
        let metrics = metrics
            .parse()
            .or_else(|_| err("admin.metrics", format!("{metrics:?} is not ADDRESS:PORT")))?;
        let uplink_mode = match &n.uplink_mode {
            None => Default::default(),
            Some(m) => m.parse().or_else(|e| err("node.uplink_mode", e))?,
        };
        Ok(Config {
            name: n.name.clone(),
            uplink: n.uplink.clone(),
            uplink_mode,
            ip,
            pod_cidr,
            pod_cidr_from_api,
            vtep_mac,
            gateway,
            uplink_mtu,
            host_interface,
            cluster_cidrs,
            vni,
            vxlan_port,
            snat: r.snat.enabled,
            snat_ports,
            random_fully: r.snat.random_fully,
            reserve_ports: r.snat.reserve_ports,
            peers,
            cores: r.workers.cores.clone(),
            idle_spins: r.workers.idle_spins.unwrap_or(2000),
            max_sleep_ms: r.workers.max_sleep_ms.unwrap_or(50),
            idle_spin_us: r.workers.idle_spin_us.unwrap_or(0),
            conntrack_max,
            tun_offload: r.workers.tun_offload.unwrap_or(true),
            socket: PathBuf::from(
                r.admin
                    .socket
                    .as_deref()
                    .unwrap_or("/run/sluice/admin.sock"),
            ),
            metrics,
            state_dir: PathBuf::from(r.admin.state_dir.as_deref().unwrap_or("/var/lib/sluice")),
            lock_wait: std::time::Duration::from_secs(r.admin.lock_wait_secs.unwrap_or(30)),
            take_over: r.admin.take_over.unwrap_or(false),
            run_dir: PathBuf::from(r.admin.run_dir.as_deref().unwrap_or("/run/sluice")),
            kubernetes,
            peers_file,
            cluster_file,
            service_cidrs,
            node_ports: r.services.node_ports,
        })
    }

    /// The pods' gateway address: the first of the pod CIDR (Flannel's
    /// cni0 address).
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.pod_cidr.network().to_bits() + 1)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
