//! `sluice demo`: two Sluice nodes and an external host in network
//! namespaces, traffic between every pod and out through SNAT, a summary,
//! and everything removed afterwards (also on failure).
//!
//! ```text
//!   pod a1 10.244.1.2 ─┐ TUN               veth + AF_XDP ┌─ pod b1 10.244.2.2
//!   pod a2 10.244.1.3 ─┤                                ├─ pod b2 10.244.2.3
//!   node A (sluice, 2 workers) up-a ─┐  ┌─ up-b node B (sluice, 1 worker)
//!            192.168.77.1          br0 (wire)          192.168.77.2
//!                                     └─ external host 192.168.77.100
//! ```

#![allow(
    clippy::indexing_slicing,
    reason = "fixed tables of the demo topology, indexed by constants"
)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{daemon, netns};

mod flannel;
mod netpol;
mod restart;
mod services;
pub use netpol::{
    DB_PORT, DbPolicy, connects, install as install_policy, policy_checks, policy_items,
};
pub use services::{
    DNS_IP, DNS_TARGET, EMPTY_IP, Exposure, LOCAL_HEALTH_PORT, LOCAL_NODE_PORT, LOCAL_WEB_IP,
    REMOTE_ONLY_HEALTH_PORT, REMOTE_ONLY_NODE_PORT, SERVICE_CIDR, Svc, WEB_IP, WEB_NODE_PORT,
    cluster_yaml_with, demo_services, health_check, http_get, refused, service_checks,
};

const NODES: [(&str, &str, &str, &str); 2] = [
    // (tag, uplink, node IP, pod CIDR)
    ("a", "up-a", "192.168.77.1", "10.244.1.0/24"),
    ("b", "up-b", "192.168.77.2", "10.244.2.0/24"),
];
const EXT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);
/// (name, node, address, attachment): TUN pods on node-a, veth+AF_XDP
/// pods on node-b.
const PODS: [(&str, usize, Ipv4Addr, &str); 4] = [
    ("a1", 0, Ipv4Addr::new(10, 244, 1, 2), "tun"),
    ("a2", 0, Ipv4Addr::new(10, 244, 1, 3), "tun"),
    ("b1", 1, Ipv4Addr::new(10, 244, 2, 2), "veth"),
    ("b2", 1, Ipv4Addr::new(10, 244, 2, 3), "veth"),
];

/// Everything the demo created; removed on drop. Integration tests build
/// the same topology and drive it further.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    namespaces: Vec<String>,
    daemons: Vec<Child>,
    /// The admin sockets of node-a and node-b.
    pub sockets: Vec<PathBuf>,
    dir: PathBuf,
    workers_a: usize,
    /// How node-b's pods are attached ("veth", or "tun" for
    /// [`Topology::build_tun`]).
    b_kind: &'static str,
    /// Peers from this kubeconfig's API server instead of static config.
    kube: Option<PathBuf>,
    /// Peers and Services from this cluster file (`cluster_file`).
    cluster: Option<PathBuf>,
    /// The daemons' `PATH` (`None`: the caller's).
    daemon_path: Option<std::ffi::OsString>,
    /// Both nodes' `node.uplink_mode` (`None`: the default).
    uplink_mode: Option<&'static str>,
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Topology {
    /// Builds the topology and starts both daemons (`sluice` is the
    /// binary to run them with); waits until the pods are attached and the
    /// peers resolved.
    pub fn build(sluice: &Path) -> io::Result<Topology> {
        Self::build_with(sluice, 2)
    }

    /// [`Topology::build`] with `workers_a` workers on node-a (one per
    /// uplink queue; node-b always runs one). The demo uses 2; the
    /// throughput benchmark uses 1, so two nodes on two cores do not
    /// oversubscribe them.
    pub fn build_with(sluice: &Path, workers_a: usize) -> io::Result<Topology> {
        Self::build_full(sluice, workers_a, None)
    }

    /// The demo's topology with Services: both nodes read one cluster file
    /// (the Nodes, and the Services of [`services`]) instead of static
    /// peers; node-a runs two workers.
    pub fn build_services(sluice: &Path) -> io::Result<Topology> {
        let mut t = Self::empty(2)?;
        let path = t.dir.join("cluster.yaml");
        std::fs::write(&path, services::cluster_yaml(&demo_services()))?;
        t.cluster = Some(path);
        build(&mut t, sluice)?;
        Ok(t)
    }

    /// Rewrites the cluster file (both nodes reload it within a second).
    pub fn write_cluster(&self, services: &[Svc]) -> io::Result<()> {
        self.write_cluster_with(services, "")
    }

    /// [`Topology::write_cluster`] with more items (YAML list entries)
    /// after the Nodes, Services and EndpointSlices.
    pub fn write_cluster_with(&self, services: &[Svc], items: &str) -> io::Result<()> {
        let path = self
            .cluster
            .as_ref()
            .ok_or_else(|| io::Error::other("not a cluster-file topology"))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, services::cluster_yaml(services) + items)?;
        std::fs::rename(&tmp, path)
    }

    /// [`Topology::build_with`] with one worker per node and TUN pods on
    /// both nodes: the benchmark of TCP through TUN pods.
    pub fn build_tun(sluice: &Path) -> io::Result<Topology> {
        let mut t = Self::empty(1)?;
        t.b_kind = "tun";
        build(&mut t, sluice)?;
        Ok(t)
    }

    /// [`Topology::build_with`] (one worker per node) with both nodes
    /// taking their peers from a Kubernetes API server, reading and writing
    /// Flannel's annotations too. `setup` runs once the namespaces and the
    /// wire exist and before the daemons start: it starts the API server
    /// (reachable from the nodes, e.g. in the external host's namespace,
    /// which must hold Node objects `node-a` and `node-b`) and returns the
    /// kubeconfig path and anything to keep alive. Returns once the pods
    /// are attached and each node has learned the other.
    pub fn build_kube<T>(
        sluice: &Path,
        setup: impl FnOnce(&Topology) -> io::Result<(PathBuf, T)>,
    ) -> io::Result<(Topology, T)> {
        Self::build_kube_with(sluice, 1, setup)
    }

    /// [`Topology::build_kube`] with `workers_a` workers on node-a.
    pub fn build_kube_with<T>(
        sluice: &Path,
        workers_a: usize,
        setup: impl FnOnce(&Topology) -> io::Result<(PathBuf, T)>,
    ) -> io::Result<(Topology, T)> {
        let mut t = Self::empty(workers_a)?;
        build_net(&mut t)?;
        let (kc, keep) = setup(&t)?;
        t.kube = Some(kc);
        start(&mut t, sluice)?;
        Ok((t, keep))
    }

    fn empty(workers_a: usize) -> io::Result<Topology> {
        let prefix = format!(
            "sld{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        Ok(Topology {
            prefix,
            namespaces: Vec::new(),
            daemons: Vec::new(),
            sockets: Vec::new(),
            dir,
            workers_a: workers_a.clamp(1, 2),
            b_kind: "veth",
            kube: None,
            cluster: None,
            daemon_path: None,
            uplink_mode: None,
        })
    }

    /// [`Topology::build`] (veth pods, two workers on node-a) with both
    /// nodes' `node.uplink_mode` set to `mode`.
    pub fn build_with_mode(sluice: &Path, mode: &'static str) -> io::Result<Topology> {
        let mut t = Self::empty(2)?;
        t.uplink_mode = Some(mode);
        build(&mut t, sluice)?;
        Ok(t)
    }

    /// Whether the wire and the nodes keep the kernel's offloads (TSO,
    /// checksum offload): when the uplinks receive through the offload TAP
    /// (`uplink_mode` offload or auto, which takes it on veth).
    pub fn kernel_offloads(&self) -> bool {
        matches!(self.uplink_mode, Some("offload" | "auto"))
    }

    /// [`Topology::build_tun`] with both nodes' `node.uplink_mode` set to
    /// `mode` (`offload`: sending and receiving through the offload TAP;
    /// the wire then keeps the kernel's offloads, [`Topology::kernel_offloads`]).
    pub fn build_tun_with_mode(sluice: &Path, mode: &'static str) -> io::Result<Topology> {
        let mut t = Self::empty(1)?;
        t.b_kind = "tun";
        t.uplink_mode = Some(mode);
        build(&mut t, sluice)?;
        Ok(t)
    }

    /// [`Topology::build`] with the daemons started with a `PATH` that
    /// holds nothing (no `ip`, `ethtool`, `nsenter`, `sysctl`): what a node
    /// without iproute2 or util-linux gives them.
    pub fn build_without_tools(sluice: &Path) -> io::Result<Topology> {
        let mut t = Self::empty(2)?;
        let empty = t.dir.join("empty-path");
        std::fs::create_dir_all(&empty)?;
        t.daemon_path = Some(empty.into_os_string());
        build(&mut t, sluice)?;
        Ok(t)
    }

    fn build_full(sluice: &Path, workers_a: usize, kube: Option<PathBuf>) -> io::Result<Topology> {
        let mut t = Self::empty(workers_a)?;
        t.kube = kube;
        build(&mut t, sluice)?;
        Ok(t)
    }

    /// The namespace name for `tag` (wire, a, b, ext, a1, a2, b1, b2, or
    /// one added with [`Topology::add_ns`]).
    pub fn ns(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    /// Its path, for setns.
    pub fn ns_path(&self, tag: &str) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.ns(tag)))
    }
    /// Creates namespace `tag` (removed with the topology).
    pub fn add_ns(&mut self, tag: &str) -> io::Result<()> {
        let n = self.ns(tag);
        let _ = Command::new("ip").args(["netns", "del", &n]).output();
        netns::cmd(&["ip", "netns", "add", &n])?;
        self.namespaces.push(n.clone());
        netns::cmd(&["ip", "-n", &n, "link", "set", "lo", "up"])?;
        self.exec(tag, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
    }
    /// `ip -n NS ARGS`.
    pub fn ip(&self, tag: &str, args: &[&str]) -> io::Result<()> {
        let n = self.ns(tag);
        let mut v = vec!["ip", "-n", &n];
        v.extend_from_slice(args);
        netns::cmd(&v)
    }
    /// `ip netns exec NS ARGS`.
    pub fn exec(&self, tag: &str, args: &[&str]) -> io::Result<()> {
        let n = self.ns(tag);
        let mut v = vec!["ip", "netns", "exec", &n];
        v.extend_from_slice(args);
        netns::cmd(&v)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for s in &self.sockets {
            let _ = daemon::request(s, "shutdown");
        }
        for d in &mut self.daemons {
            reap_sluice(d);
        }
        for n in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Node `i`'s configuration file (static peers, or the API server).
fn config(t: &Topology, i: usize, cores: &str) -> String {
    let (tag, uplink, ip, cidr) = NODES[i];
    let (dir, peer, kube) = (&t.dir, 1 - i, t.kube.as_deref());
    let (ptag, _, pip, pcidr) = NODES[peer];
    let source = match kube {
        Some(kc) => format!(
            "kubernetes:\n  kubeconfig: {}\n  flannel_annotations: true\n  watch_timeout_secs: 2",
            kc.display()
        ),
        None => String::new(),
    };
    let o: Vec<&str> = pip.split('.').collect();
    let pmac = format!(
        "0a:58:{:02x}:{:02x}:{:02x}:{:02x}",
        o[0].parse::<u8>().unwrap_or(0),
        o[1].parse::<u8>().unwrap_or(0),
        o[2].parse::<u8>().unwrap_or(0),
        o[3].parse::<u8>().unwrap_or(0)
    );
    // With Kubernetes the pod CIDR comes from the Node object.
    let pod_cidr = if kube.is_some() {
        String::new()
    } else {
        format!("  pod_cidr: {cidr}\n")
    };
    let source = match (&t.cluster, source.is_empty()) {
        // Node-a serves NodePorts itself (a kube-proxy-free node); node-b
        // leaves them to its kernel, as a node running kube-proxy does.
        (Some(path), _) => format!(
            "cluster_file: {}\nservices:\n  cidrs: [{SERVICE_CIDR}]\n  node_ports: {}",
            path.display(),
            i == 0
        ),
        (None, true) => format!(
            "peers:\n  - name: node-{ptag}\n    ip: {pip}\n    vtep_mac: \"{pmac}\"\n    pod_cidrs: [{pcidr}]"
        ),
        (None, false) => source,
    };
    let mode = t
        .uplink_mode
        .map_or(String::new(), |m| format!("  uplink_mode: {m}\n"));
    format!(
        "node:
  name: node-{tag}
  uplink: {uplink}
  ip: {ip}
{mode}{pod_cidr}  gateway: {EXT}
cluster_cidrs: [10.244.0.0/16, 10.96.0.0/12]
{source}
workers:
  cores: [{cores}]
admin:
  socket: {dir}/{tag}.sock
  state_dir: {dir}/state-{tag}
  run_dir: {dir}/run-{tag}
",
        dir = dir.display()
    )
}

fn build(t: &mut Topology, exe: &Path) -> io::Result<()> {
    build_net(t)?;
    start(t, exe)
}

/// The namespaces, the wire and the external host.
fn build_net(t: &mut Topology) -> io::Result<()> {
    for tag in ["wire", "a", "b", "ext"] {
        t.add_ns(tag)?;
    }
    t.ip("wire", &["link", "add", "br0", "type", "bridge"])?;
    t.ip("wire", &["link", "set", "br0", "up"])?;
    for (tag, dev, addr) in [
        ("a", "up-a", "192.168.77.1/24"),
        ("b", "up-b", "192.168.77.2/24"),
        ("ext", "eth0", "192.168.77.100/24"),
    ] {
        let w = format!("w-{tag}");
        let ns = t.ns(tag);
        // node-a runs two workers: its uplink gets two queues, one each.
        let q = if tag == "a" {
            t.workers_a.to_string()
        } else {
            "1".to_string()
        };
        let q = q.as_str();
        t.ip(
            "wire",
            &[
                "link",
                "add",
                &w,
                "numtxqueues",
                q,
                "numrxqueues",
                q,
                "type",
                "veth",
                "peer",
                "name",
                dev,
                "numtxqueues",
                q,
                "numrxqueues",
                q,
                "netns",
                &ns,
            ],
        )?;
        t.ip("wire", &["link", "set", &w, "master", "br0", "up"])?;
        t.ip(tag, &["addr", "add", addr, "dev", dev])?;
        t.ip(tag, &["link", "set", dev, "up"])?;
        // Native XDP on a veth receives when the peer end has GRO; software
        // checksums so no CHECKSUM_PARTIAL frame reaches AF_XDP unfinished.
        // The offload uplink reads through its TAP, whose header says when
        // a checksum is unfinished: the kernel's defaults stay (TSO and
        // checksum offload on, so super-packets cross the wire whole).
        if t.kernel_offloads() {
            t.exec("wire", &["ethtool", "-K", &w, "gro", "on"])?;
        } else {
            t.exec("wire", &["ethtool", "-K", &w, "gro", "on", "tx", "off"])?;
            t.exec(tag, &["ethtool", "-K", dev, "tx", "off"])?;
        }
    }
    t.ip("a", &["route", "add", "default", "via", "192.168.77.100"])?;
    t.ip("b", &["route", "add", "default", "via", "192.168.77.100"])?;
    Ok(())
}

/// Starts both daemons and attaches the pods (after [`build_net`]).
fn start(t: &mut Topology, exe: &Path) -> io::Result<()> {
    for (i, (tag, _, _, _)) in NODES.iter().enumerate() {
        let cfg = t.dir.join(format!("{tag}.yaml"));
        // node-a: its workers on cores 0 (and 1); node-b: one, on the
        // other core when node-a has one worker.
        let cores = match (i, t.workers_a) {
            (0, 2) => "0, 1",
            (0, _) => "1",
            _ => "0",
        };
        std::fs::write(&cfg, config(t, i, cores))?;
        let child = spawn_daemon(t, i, exe)?;
        t.daemons.push(child);
        t.sockets.push(t.dir.join(format!("{tag}.sock")));
    }
    // Wait for both admin sockets.
    let deadline = Instant::now() + Duration::from_secs(15);
    for s in t.sockets.clone() {
        while daemon::request(&s, "status").is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(s.with_extension("log")).unwrap_or_default();
                return Err(io::Error::other(format!("daemon did not start: {log}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for (name, node, ip, kind) in PODS {
        let kind = if node == 1 { t.b_kind } else { kind };
        t.add_ns(name)?;
        let reply = daemon::request(
            &t.sockets[node],
            &format!("pods add {name} {ip} {} {kind}", t.ns_path(name).display()),
        )?;
        if !reply.starts_with("ok") {
            return Err(io::Error::other(format!("pods add {name}: {reply}")));
        }
    }
    // Wait for each node's peer to appear (from config, or from the API
    // server once the other daemon annotated its Node) and resolve.
    let deadline = Instant::now() + Duration::from_secs(20);
    for s in t.sockets.clone() {
        loop {
            let r = daemon::request(&s, "routes")?;
            if r.contains("\npeer ") && !r.contains("unresolved") {
                break;
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("peer MAC not resolved:\n{r}")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Starts node `i`'s daemon with its written configuration (its log is
/// appended to, so a restart keeps the first run's lines).
pub(crate) fn spawn_daemon(t: &Topology, i: usize, exe: &Path) -> io::Result<Child> {
    let tag = NODES.get(i).map_or("a", |n| n.0);
    let cfg = t.dir.join(format!("{tag}.yaml"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(t.dir.join(format!("{tag}.log")))?;
    spawn_sluice_with(&t.ns(tag), exe, &cfg, log, t.daemon_path.as_deref())
}

/// Waits up to 5 s for a daemon asked to shut down to exit, then kills
/// it; reaps it either way.
pub fn reap_sluice(d: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && matches!(d.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = d.kill();
    let _ = d.wait();
}

/// Runs `exe run --config cfg` inside namespace `ns`, stderr to `log`.
pub fn spawn_sluice(ns: &str, exe: &Path, cfg: &Path, log: std::fs::File) -> io::Result<Child> {
    spawn_sluice_with(ns, exe, cfg, log, None)
}

/// [`spawn_sluice`] with the daemon's `PATH` set to `path` (`ip netns
/// exec`, which also mounts the namespace's /sys, is found in ours).
pub fn spawn_sluice_with(
    ns: &str,
    exe: &Path,
    cfg: &Path,
    log: std::fs::File,
    path: Option<&std::ffi::OsStr>,
) -> io::Result<Child> {
    let ip = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("ip"))
                .find(|f| f.exists())
        })
        .unwrap_or_else(|| PathBuf::from("ip"));
    let mut c = Command::new(ip);
    c.args(["netns", "exec", ns])
        .arg(exe)
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.spawn()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// TCP transfer of `n` bytes; returns (bytes intact, peer address the
/// server saw, MB/s).
pub fn tcp(
    t: &Topology,
    client: &str,
    server: &str,
    addr: Ipv4Addr,
    n: usize,
) -> io::Result<(bool, Ipv4Addr, f64)> {
    tcp_via(t, client, server, (addr, 5201), (addr, 5201), n)
}

/// [`tcp`] with the server listening on `bind` and the client connecting
/// to `to` (a service address that leads there).
pub fn tcp_via(
    t: &Topology,
    client: &str,
    server: &str,
    bind: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
    n: usize,
) -> io::Result<(bool, Ipv4Addr, f64)> {
    let l = netns::run_in(&t.ns_path(server), move || TcpListener::bind(bind))?;
    let srv = std::thread::spawn(move || -> io::Result<(Vec<u8>, SocketAddr)> {
        let (mut s, peer) = l.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok((got, peer))
    });
    let data = pattern(n);
    let start = Instant::now();
    let d = data.clone();
    netns::run_in(&t.ns_path(client), move || {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(&d)?;
        s.shutdown(std::net::Shutdown::Write)
    })?;
    let (got, peer) = srv
        .join()
        .map_err(|_| io::Error::other("server panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    let peer = match peer.ip() {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    Ok((got == data, peer, n as f64 / secs / 1e6))
}

/// A UDP echo; returns the peer address the server saw.
pub fn udp(t: &Topology, client: &str, server: &str, addr: Ipv4Addr) -> io::Result<Ipv4Addr> {
    udp_via(t, client, server, (addr, 5300), (addr, 5300))
}

/// [`udp`] with the server bound to `bind` and the client sending to `to`;
/// the answer must come back from `to` (a service address is un-DNATed).
pub fn udp_via(
    t: &Topology,
    client: &str,
    server: &str,
    bind: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
) -> io::Result<Ipv4Addr> {
    let s = netns::run_in(&t.ns_path(server), move || UdpSocket::bind(bind))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let echo = std::thread::spawn(move || -> io::Result<SocketAddr> {
        let mut b = [0u8; 2048];
        let (n, from) = s.recv_from(&mut b)?;
        s.send_to(b.get(..n).unwrap_or_default(), from)?;
        Ok(from)
    });
    let msg = pattern(1000);
    netns::run_in(&t.ns_path(client), move || {
        let c = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        for _ in 0..3 {
            c.send_to(&msg, to)?;
            let mut b = [0u8; 2048];
            if let Ok((n, from)) = c.recv_from(&mut b)
                && b.get(..n) == Some(&msg[..])
                && from == SocketAddr::from(to)
            {
                return Ok(());
            }
        }
        Err(io::Error::other("no echo"))
    })?;
    let from = echo
        .join()
        .map_err(|_| io::Error::other("echo panicked"))??;
    Ok(match from.ip() {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    })
}

/// Check results: (passed, description).
#[derive(Debug, Default)]
pub struct Summary {
    /// Every check.
    pub lines: Vec<(bool, String)>,
}

impl Summary {
    /// Records a check and prints it.
    pub fn check(&mut self, ok: bool, what: String) {
        println!("{} {what}", if ok { "PASS" } else { "FAIL" });
        self.lines.push((ok, what));
    }

    /// Checks that failed.
    pub fn failed(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| !l.0)
            .map(|l| l.1.as_str())
            .collect()
    }
}

/// The demo's traffic checks on a built topology.
pub fn checks(t: &Topology) -> Summary {
    let mut s = Summary::default();
    for (from, _, _, _) in PODS {
        for (to, _, ip, _) in PODS {
            if from == to {
                continue;
            }
            let ok = t
                .exec(
                    from,
                    &["ping", "-c", "2", "-i", "0.2", "-W", "2", &ip.to_string()],
                )
                .is_ok();
            s.check(ok, format!("ping {from} -> {to} ({ip})"));
        }
    }
    // Every ordered pair of pods: 10 MB over TCP compared byte for byte,
    // and a UDP echo; the server must see the client pod's own address
    // (no masquerade inside the cluster, as Flannel's RETURN rule).
    for (client, _, from, _) in PODS {
        for (server, _, addr, _) in PODS {
            if client == server {
                continue;
            }
            match tcp(t, client, server, addr, 10 << 20) {
                Ok((intact, peer, mbps)) => s.check(
                    intact && peer == from,
                    format!(
                        "tcp 10 MB {client} -> {server}: intact={intact}, server saw {peer} ({client} is {from}), {mbps:.0} MB/s"
                    ),
                ),
                Err(e) => s.check(false, format!("tcp {client} -> {server}: {e}")),
            }
            let r = udp(t, client, server, addr);
            s.check(
                r.as_ref().is_ok_and(|peer| *peer == from),
                format!(
                    "udp echo {client} -> {server}: {}",
                    match &r {
                        Ok(peer) => format!("answered, server saw {peer} ({client} is {from})"),
                        Err(e) => e.to_string(),
                    }
                ),
            );
        }
    }
    for (pod, node_ip) in [("a1", "192.168.77.1"), ("b2", "192.168.77.2")] {
        let ok = t
            .exec(
                pod,
                &["ping", "-c", "2", "-i", "0.2", "-W", "2", &EXT.to_string()],
            )
            .is_ok();
        s.check(ok, format!("ping {pod} -> external {EXT} (through SNAT)"));
        match tcp(t, pod, "ext", EXT, 1 << 20) {
            Ok((intact, peer, _)) => s.check(
                intact && peer.to_string() == node_ip,
                format!("tcp {pod} -> external: intact={intact}, external saw {peer} (node IP {node_ip})"),
            ),
            Err(e) => s.check(false, format!("tcp {pod} -> external: {e}")),
        }
        match udp(t, pod, "ext", EXT) {
            Ok(peer) => s.check(
                peer.to_string() == node_ip,
                format!("udp {pod} -> external: external saw {peer}"),
            ),
            Err(e) => s.check(false, format!("udp {pod} -> external: {e}")),
        }
    }
    // How each node's uplink sends (issue 17): `auto` on veth, which has
    // no zero-copy AF_XDP, takes the offload TAP where the kernel has it.
    for (i, sock) in t.sockets.iter().enumerate() {
        let st = daemon::request(sock, "status").unwrap_or_default();
        let field = |k: &str| {
            st.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .unwrap_or("?")
                .to_string()
        };
        let mode = field("uplink_mode ");
        s.check(
            mode == "offload" || mode == "afxdp",
            format!(
                "uplink of node-{}: {mode} ({}), receiving through {}, zero-copy {}",
                NODES.get(i).map_or("?", |n| n.0),
                field("uplink_mode_reason "),
                field("uplink_receive "),
                field("uplink_zero_copy ")
            ),
        );
    }
    // The node's own kernel still serves on the uplink (port outside the
    // SNAT range) while Sluice runs.
    let r = tcp(t, "ext", "a", Ipv4Addr::new(192, 168, 77, 1), 64 << 10);
    s.check(
        matches!(r, Ok((true, _, _))),
        format!(
            "tcp external -> node-a's kernel (port 5201): {:?}",
            r.map(|x| x.0)
        ),
    );
    s
}

/// Runs the demo; `Ok(true)` when every check passed.
pub fn run() -> io::Result<bool> {
    println!(
        "building: wire, node-a (TUN pods a1 a2), node-b (veth+AF_XDP pods b1 b2), external host"
    );
    println!(
        "services (one cluster file for both nodes): kube-dns 10.96.0.10:53 UDP+TCP on pod b1, an empty service 10.96.0.11:80"
    );
    println!(
        "from the external host, node-a serving NodePorts itself: web :30053 (Cluster policy, on b1), local-web :30080 (Local policy, a1 here and b2 there, health check :32000), remote-only :30081 (Local, no endpoint here, health check :32001)"
    );
    let exe = std::env::current_exe()?;
    let mut t = Topology::build_services(&exe)?;
    let mut s = checks(&t);
    service_checks(&t, &mut s);
    println!(
        "network policy (the same cluster file): namespace shop, a1 role=frontend, b2 role=database; shop/database admits TCP {DB_PORT} from role=frontend only"
    );
    policy_checks(&t, &mut s);
    restart::restart_checks(&mut t, &exe, &mut s);
    println!();
    for (i, sock) in t.sockets.iter().enumerate() {
        println!("node-{} counters:", NODES[i].0);
        let stats = daemon::request(sock, "stats").unwrap_or_default();
        for l in stats.lines().skip(1) {
            if !l.starts_with("drop ") || !l.ends_with(" 0") {
                println!("  {l}");
            }
        }
    }
    let failed = s.failed().len();
    println!(
        "\nsummary: {} checks, {} passed, {failed} failed",
        s.lines.len(),
        s.lines.len() - failed
    );
    Ok(failed == 0)
}
