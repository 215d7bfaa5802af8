//! The node daemon behind `sluice run`: one pinned worker polling the
//! AF_XDP uplink and the pods' ports, a control thread keeping next-hop
//! MACs and the routing snapshot current, the admin socket and the
//! Prometheus endpoint.
//!
//! Threads and what they share: the worker owns its ports and conntrack
//! table outright. Other threads reach it only through a crossbeam channel
//! of [`Cmd`]s, which it drains between polls, and read its counters from a
//! [`StatsView`] it publishes with `try_lock` (it never waits for a lock).
//! Routes reach it as immutable snapshots ([`Routes`]).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use encap::MacAddr;
use encap::vxlan::{Vni, VxlanConfig};
use nat::{ConntrackConfig, PortRange, SnatConfig};

use crate::config::Config;
use crate::counters::{Counters, PortCounters, Reason};
use crate::port::Port;
use crate::port::tun::TunPort;
use crate::port::xdp::{SteerConfig, SteerProgram, XdpPort};
use crate::route::{Node, PeerSpec, Routes, Snapshot};
use crate::shaper::PodLimits;
use crate::worker::{IdlePolicy, Role, Worker};
use crate::{neigh, netns};

/// A request to the worker.
pub enum Cmd {
    /// Attach a pod's port.
    AddPod {
        /// Pod name (for counters).
        name: String,
        /// Pod address.
        ip: Ipv4Addr,
        /// The pod's MAC, for Ethernet (veth) pods.
        mac: Option<MacAddr>,
        /// Its port.
        port: Box<dyn Port>,
        /// Its rate limits.
        limits: PodLimits,
    },
    /// Detach the pod at `ip`.
    DelPod {
        /// Pod address.
        ip: Ipv4Addr,
        /// Whether it was attached.
        reply: Sender<bool>,
    },
    /// A `conntrack -L`-like listing.
    Conntrack {
        /// The listing.
        reply: Sender<String>,
    },
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::AddPod { ip, .. } => write!(f, "AddPod({ip})"),
            Cmd::DelPod { ip, .. } => write!(f, "DelPod({ip})"),
            Cmd::Conntrack { .. } => write!(f, "Conntrack"),
        }
    }
}

/// What the worker publishes for the admin and metrics threads.
#[derive(Clone, Debug, Default)]
pub struct StatsView {
    /// Its counters.
    pub counters: Counters,
    /// Per port.
    pub ports: Vec<PortCounters>,
    /// Live conntrack entries.
    pub conntrack_entries: usize,
    /// Translated ports in use.
    pub nat_ports: usize,
    /// The worker thread's CPU affinity as it reported it.
    pub pinned_core: Option<usize>,
    /// Snapshot generation it last used.
    pub generation: u64,
}

/// How a pod is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodKind {
    /// A TUN device in the pod (IP packets, no ARP).
    Tun,
    /// A veth pair; Sluice reads the host end through AF_XDP and answers
    /// the pod's ARP.
    Veth,
}

impl PodKind {
    fn as_str(self) -> &'static str {
        match self {
            PodKind::Tun => "tun",
            PodKind::Veth => "veth",
        }
    }

    fn parse(s: &str) -> Option<PodKind> {
        match s {
            "tun" => Some(PodKind::Tun),
            "veth" => Some(PodKind::Veth),
            _ => None,
        }
    }
}

/// A pod as recorded on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    /// Name.
    pub name: String,
    /// Address.
    pub ip: Ipv4Addr,
    /// Its network namespace path.
    pub netns: PathBuf,
    /// How it is attached.
    pub kind: PodKind,
    /// The interface's name inside the pod (CNI_IFNAME; default eth0).
    pub ifname: String,
    /// Its rate limits (the bandwidth annotations).
    pub limits: PodLimits,
}

/// Whether Linux accepts `s` as an interface name (`dev_valid_name`).
fn valid_ifname(s: &str) -> bool {
    (1..16).contains(&s.len())
        && s != "."
        && s != ".."
        && !s
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

/// The host end of a veth pod's pair.
fn veth_host_name(ip: Ipv4Addr) -> String {
    let [_, _, c, d] = ip.octets();
    format!("slp-{c}-{d}")
}

/// `ip link set DEV netns X` takes a name under /var/run/netns or a PID.
fn netns_arg(path: &Path) -> Result<String, String> {
    let s = path.to_string_lossy();
    for dir in ["/var/run/netns/", "/run/netns/"] {
        if let Some(name) = s.strip_prefix(dir) {
            return Ok(name.to_string());
        }
    }
    if let Some(pid) = s
        .strip_prefix("/proc/")
        .and_then(|r| r.strip_suffix("/ns/net"))
    {
        return Ok(pid.to_string());
    }
    Err(format!(
        "{s}: a veth pod's netns must be /var/run/netns/NAME or /proc/PID/ns/net"
    ))
}

/// Creates a veth pod: the pair, the pod end as `eth0` with `ip/32`, the
/// MTU and a default route via the gateway; the host end steered entirely
/// to an AF_XDP socket. Returns the port and the pod's MAC.
fn create_veth_pod(
    p: &PodRecord,
    gateway: Ipv4Addr,
    mtu: u16,
) -> std::io::Result<(XdpPort, MacAddr)> {
    let host = veth_host_name(p.ip);
    let tmp = format!("{host}p");
    let ns = netns_arg(&p.netns).map_err(std::io::Error::other)?;
    let _ = netns::cmd(&["ip", "link", "del", &host]);
    let mtu_s = mtu.to_string();
    netns::cmd(&[
        "ip", "link", "add", &host, "mtu", &mtu_s, "type", "veth", "peer", "name", &tmp, "mtu",
        &mtu_s,
    ])?;
    netns::cmd(&["ip", "link", "set", &tmp, "netns", &ns])?;
    netns::cmd(&["ip", "link", "set", &host, "up"])?;
    let (ip, gw, ifname) = (p.ip, gateway, p.ifname.clone());
    let mac = netns::run_in(&p.netns, move || {
        let dev = ifname.as_str();
        netns::cmd(&["ip", "link", "set", &tmp, "name", dev])?;
        netns::cmd(&["ip", "addr", "add", &format!("{ip}/32"), "dev", dev])?;
        netns::cmd(&["ip", "link", "set", "lo", "up"])?;
        netns::cmd(&["ip", "link", "set", dev, "up"])?;
        netns::cmd(&[
            "ip",
            "route",
            "replace",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            dev,
            "onlink",
        ])?;
        // Frames reach AF_XDP (copy mode) as the pod's kernel left them: a
        // TCP/UDP checksum left for offload would never be finished.
        netns::cmd(&["ethtool", "-K", dev, "tx", "off", "gro", "on"])?;
        // Not /sys/class/net: sysfs shows the namespace of whoever mounted
        // it, and this thread only joined the pod's.
        let out = std::process::Command::new("ip")
            .args(["-br", "link", "show", "dev", dev])
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .and_then(|m| m.parse::<MacAddr>().ok())
            .ok_or_else(|| std::io::Error::other("pod MAC"))
    })?;
    let prog = SteerProgram::attach(&host, SteerConfig::all())?;
    let port = XdpPort::open(&host, 0, Some(Arc::new(prog)))?;
    Ok((port, mac))
}

/// An attached pod.
struct Attached {
    rec: PodRecord,
    /// The worker owning its port.
    worker: u8,
    /// What `pods add` answers about its links (veth: the pod's MAC and
    /// the host end's name and MAC, for the CNI result).
    links: String,
}

/// Control-side state: the peers, neighbours and pods the snapshot is
/// built from.
struct Control {
    cfg: Config,
    uplink_mac: MacAddr,
    peers: BTreeMap<String, PeerSpec>,
    neigh: HashMap<Ipv4Addr, MacAddr>,
    /// Attached pods.
    pods: BTreeMap<Ipv4Addr, Attached>,
    /// The worker serving the host device, if there is one.
    host: Option<u8>,
    generation: u64,
    routes: Routes,
    /// When the current snapshot was published.
    published_at: Instant,
}

impl Control {
    fn snapshot(&self) -> Snapshot {
        let vxlan = VxlanConfig {
            vni: Vni::new(self.cfg.vni).unwrap_or(VxlanConfig::default().vni),
            dst_port: self.cfg.vxlan_port,
            ..VxlanConfig::default()
        };
        let gw_mac = self.cfg.gateway.and_then(|g| self.neigh.get(&g).copied());
        Snapshot::new(
            self.generation,
            Node {
                name: self.cfg.name.clone(),
                ip: self.cfg.ip,
                uplink_mac: self.uplink_mac,
                uplink_mtu: self.cfg.uplink_mtu,
                vtep_mac: self.cfg.vtep_mac,
                pod_cidr: self.cfg.pod_cidr,
                gateway_ip: self.cfg.gateway_ip(),
                gateway_mac: gw_mac,
            },
            vxlan,
            self.cfg.cluster_cidrs.clone(),
            self.peers.values().cloned(),
            &|ip| self.neigh.get(&ip).copied(),
        )
        .with_pod_workers(
            self.pods.iter().map(|(ip, a)| (*ip, a.worker)).chain(
                self.host
                    .into_iter()
                    .flat_map(|w| [(self.cfg.gateway_ip(), w), (self.cfg.ip, w)]),
            ),
        )
    }

    fn publish(&mut self) {
        self.published_at = Instant::now();
        self.generation += 1;
        self.routes.store(self.snapshot());
    }

    /// Re-reads the neighbour table; publishes if a next hop changed.
    /// Asks the kernel to resolve the ones it is missing.
    fn refresh_neighbours(&mut self) -> bool {
        let now = neigh::read(Some(&self.cfg.uplink));
        let mut wanted: Vec<Ipv4Addr> = self.peers.values().map(|p| p.ip).collect();
        wanted.extend(self.cfg.gateway);
        let relevant = |m: &HashMap<Ipv4Addr, MacAddr>| -> Vec<(Ipv4Addr, Option<MacAddr>)> {
            wanted.iter().map(|ip| (*ip, m.get(ip).copied())).collect()
        };
        let changed = relevant(&now) != relevant(&self.neigh);
        for ip in &wanted {
            if !now.contains_key(ip) {
                neigh::solicit(*ip);
            }
        }
        self.neigh = now;
        if changed {
            self.publish();
        }
        changed
    }
}

/// Handles shared by the daemon's threads.
struct Ctx {
    control: Mutex<Control>,
    /// One command channel per worker.
    cmds: Vec<Sender<Cmd>>,
    /// One stats view per worker.
    stats: Vec<Mutex<StatsView>>,
    stop: AtomicBool,
    started: Instant,
    /// The Kubernetes control thread, when peers come from the API.
    sync: Mutex<Option<ctrl::kube_sync::SyncHandle>>,
    /// The peers-file watcher, when peers come from a file.
    file: Mutex<Option<ctrl::static_file::StaticHandle>>,
}

/// A running daemon.
pub struct Daemon {
    ctx: Arc<Ctx>,
    threads: Vec<JoinHandle<()>>,
    socket: PathBuf,
    /// The SNAT ports reserved from the host, released on a clean stop.
    reserved: Option<crate::reserved_ports::Reservation>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.socket)
            .finish()
    }
}

/// The node's device towards its pods: a TUN device holding the pods'
/// gateway address, with routes for the pod CIDR and the cluster's pod
/// network through it, so the node reaches pods (kubelet probes, traffic
/// it DNATs) and pods reach the node.
fn open_host_device(cfg: &Config, name: &str) -> std::io::Result<TunPort> {
    let _ = netns::cmd(&["ip", "link", "del", name]);
    let mtu = cfg.uplink_mtu.saturating_sub(encap::vxlan::OVERHEAD as u16);
    let port = TunPort::create_here(name, cfg.gateway_ip(), mtu, cfg.tun_offload)
        .map_err(|e| std::io::Error::new(e.kind(), format!("host device {name}: {e}")))?;
    // IPv4 only: no router solicitations into the dataplane. (Written
    // directly: /proc/sys/net is this process's namespace's, and the image
    // need not carry sysctl.)
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    netns::cmd(&["ip", "link", "set", name, "up"])?;
    // The pod network: the cluster CIDRs holding this node's pod CIDR (not
    // the service CIDR, which kube-proxy handles), and the pod CIDR itself.
    let mut nets: Vec<String> = cfg
        .cluster_cidrs
        .iter()
        .filter(|c| c.contains(&cfg.pod_cidr))
        .map(ToString::to_string)
        .collect();
    nets.push(cfg.pod_cidr.to_string());
    for n in nets {
        netns::cmd(&["ip", "route", "replace", &n, "dev", name])?;
    }
    // The node forwards between its uplink and the host device (hostPort,
    // NodePort); Kubernetes nodes run with this on, Calico's Felix turns
    // it on too.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| std::io::Error::new(e.kind(), format!("net.ipv4.ip_forward: {e}")))?;
    Ok(port)
}

/// `uplink: auto`: the interface that holds the node's address (as
/// Flannel picks its interface from the node IP).
fn resolve_uplink(cfg: &mut Config) -> std::io::Result<()> {
    if cfg.uplink != "auto" {
        return Ok(());
    }
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()?;
    let want = format!("inet {}/", cfg.ip);
    let dev = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(&want))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|d| d.split('@').next().unwrap_or(d).to_string());
    match dev {
        Some(d) => {
            tracing::info!("uplink {d} (holds {})", cfg.ip);
            cfg.uplink = d;
            Ok(())
        }
        None => Err(std::io::Error::other(format!(
            "node.uplink: auto, but no interface holds {} (node.ip)",
            cfg.ip
        ))),
    }
}

fn uplink_mac(dev: &str) -> std::io::Result<MacAddr> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{dev}/address"))
        .map_err(|e| std::io::Error::new(e.kind(), format!("uplink {dev}: {e}")))?;
    s.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("uplink {dev}: bad MAC {s:?}")))
}

fn pods_dir(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("pods")
}

fn save_pod(cfg: &Config, p: &PodRecord) {
    let dir = pods_dir(cfg);
    let _ = std::fs::create_dir_all(&dir);
    let tmp = dir.join(format!(".{}", p.ip));
    let body = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n",
        p.name,
        p.ip,
        p.netns.display(),
        p.kind.as_str(),
        p.ifname,
        p.limits
    );
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(p.ip.to_string()));
    }
}

fn load_pods(cfg: &Config) -> Vec<PodRecord> {
    let Ok(rd) = std::fs::read_dir(pods_dir(cfg)) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let t = std::fs::read_to_string(e.path()).ok()?;
            let mut l = t.lines();
            Some(PodRecord {
                name: l.next()?.to_string(),
                ip: l.next()?.parse().ok()?,
                netns: PathBuf::from(l.next()?),
                kind: l.next().and_then(PodKind::parse).unwrap_or(PodKind::Tun),
                ifname: l.next().unwrap_or("eth0").to_string(),
                // A record that cannot be read back is not re-attached
                // unlimited.
                limits: PodLimits::parse(l.next().unwrap_or("").split_whitespace()).ok()?,
            })
        })
        .collect()
}

impl Daemon {
    /// Starts the daemon in the current network namespace.
    pub fn start(mut cfg: Config) -> std::io::Result<Daemon> {
        if cfg.pod_cidr_from_api
            && let Some(k) = &cfg.kubernetes
        {
            let net =
                ctrl::kube_sync::fetch_pod_cidr(&sync_config(&cfg, k), Duration::from_secs(60))
                    .map_err(|e| {
                        std::io::Error::other(format!("node.pod_cidr from the API: {e}"))
                    })?;
            tracing::info!("pod CIDR {net} from node {}", k.node_name);
            cfg.pod_cidr = net;
            if !cfg.cluster_cidrs.iter().any(|c| c.contains(&net)) {
                cfg.cluster_cidrs.push(net);
            }
        }
        resolve_uplink(&mut cfg)?;
        // The SNAT range out of the host's ephemeral ports (given back on
        // a clean stop).
        let reserved = if cfg.reserve_ports && cfg.snat {
            Some(crate::reserved_ports::Reservation::take(cfg.snat_ports)?)
        } else {
            None
        };
        let mac = uplink_mac(&cfg.uplink)?;
        let mut control = Control {
            uplink_mac: mac,
            peers: cfg
                .peers
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
            neigh: HashMap::new(),
            pods: BTreeMap::new(),
            host: None,
            generation: 0,
            published_at: Instant::now(),
            routes: Routes::new(Snapshot::new(
                0,
                Node {
                    name: cfg.name.clone(),
                    ip: cfg.ip,
                    uplink_mac: mac,
                    uplink_mtu: cfg.uplink_mtu,
                    vtep_mac: cfg.vtep_mac,
                    pod_cidr: cfg.pod_cidr,
                    gateway_ip: cfg.gateway_ip(),
                    gateway_mac: None,
                },
                VxlanConfig::default(),
                Vec::new(),
                [],
                &|_| None,
            )),
            cfg: cfg.clone(),
        };
        control.refresh_neighbours();
        control.publish();
        let routes = control.routes.clone();

        let snat = cfg.snat.then(|| {
            let mut s = SnatConfig::new(vec![cfg.pod_cidr], cfg.cluster_cidrs.clone(), cfg.ip);
            s.ports = PortRange {
                min: cfg.snat_ports.0,
                max: cfg.snat_ports.1,
            };
            s.icmp_ids = s.ports;
            s.random_fully = cfg.random_fully;
            s
        });
        let ct = ConntrackConfig {
            max_entries: cfg.conntrack_max,
            ..ConntrackConfig::default()
        };
        // One worker per configured core (one unpinned worker if none),
        // worker i on uplink queue i, each with its own slice of the SNAT
        // ports and a mesh to hand frames to the others.
        let n = cfg.cores.len().max(1);
        let queues = std::fs::read_dir(format!("/sys/class/net/{}/queues", cfg.uplink))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count()
            })
            .unwrap_or(1);
        // Each receive queue needs a worker's socket: a frame the NIC
        // spreads to a queue without one would fall back to the kernel,
        // unseen and uncounted.
        if queues != n {
            return Err(std::io::Error::other(format!(
                "workers.cores: {n} worker(s) for uplink {} with {queues} receive queues; \
                 list one core per queue, or make the NIC spread over {n} queue(s) \
                 (ethtool -L {} combined {n}, or ethtool -X {} equal {n})",
                cfg.uplink, cfg.uplink, cfg.uplink
            )));
        }
        let prog = Arc::new(SteerProgram::attach(
            &cfg.uplink,
            SteerConfig {
                node_ip: cfg.ip,
                vxlan_port: cfg.vxlan_port,
                ports: cfg.snat_ports,
                idents: cfg.snat_ports,
                all: false,
            },
        )?);
        let mut workers = Vec::new();
        for (i, mesh) in crate::worker::Mesh::new(n, 4096).into_iter().enumerate() {
            let snat = snat.clone().map(|mut s| {
                s.worker = (i as u16, n as u16);
                s
            });
            let mut w = Worker::with_mesh(i as u8, mesh, routes.clone(), ct.clone(), snat, 4096);
            let up = XdpPort::open(&cfg.uplink, i as u32, Some(prog.clone()))?;
            let label = if n > 1 {
                format!("{}/q{i}", cfg.uplink)
            } else {
                cfg.uplink.clone()
            };
            w.add_port_labelled(Box::new(up), Role::Uplink, label);
            if i == 0
                && let Some(name) = &cfg.host_interface
            {
                let port = open_host_device(&cfg, name)?;
                w.add_port_labelled(
                    Box::new(port),
                    Role::Host {
                        gateway: cfg.gateway_ip(),
                        node: cfg.ip,
                    },
                    format!("host/{name}"),
                );
                control.host = Some(0);
                control.publish();
            }
            workers.push(w);
        }
        drop(prog);

        let (cmd_tx, cmd_rx): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| crossbeam_channel::bounded::<Cmd>(256))
            .unzip();
        let ctx = Arc::new(Ctx {
            control: Mutex::new(control),
            cmds: cmd_tx,
            stats: (0..n).map(|_| Mutex::new(StatsView::default())).collect(),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            sync: Mutex::new(None),
            file: Mutex::new(None),
        });
        if let Some(path) = &cfg.peers_file {
            let weak = Arc::downgrade(&ctx);
            let (vni, ip) = (cfg.vni, cfg.ip);
            let h =
                ctrl::static_file::spawn(path.clone(), Duration::from_millis(500), move |v, _| {
                    apply_view(&weak, v, vni, ip);
                })?;
            if let Ok(mut f) = ctx.file.lock() {
                *f = Some(h);
            }
        }
        if let Some(k) = &cfg.kubernetes {
            let handle = start_kube_sync(&ctx, &cfg, k)?;
            if let Ok(mut s) = ctx.sync.lock() {
                *s = Some(handle);
            }
        }
        // Pods served before a restart come back from the state directory.
        for p in load_pods(&cfg) {
            if p.netns.exists()
                && let Err(e) = attach_pod(&ctx, &p)
            {
                tracing::warn!("re-attaching pod {} ({}): {e}", p.name, p.ip);
            }
        }
        let _ = std::fs::remove_file(&cfg.socket);
        if let Some(d) = cfg.socket.parent() {
            std::fs::create_dir_all(d)?;
        }
        let admin = UnixListener::bind(&cfg.socket)?;
        let metrics = TcpListener::bind(cfg.metrics)?;

        let mut threads = Vec::new();
        let idle = IdlePolicy {
            spins: cfg.idle_spins,
            max_sleep: Duration::from_millis(cfg.max_sleep_ms),
        };
        for (i, (w, rx)) in workers.into_iter().zip(cmd_rx).enumerate() {
            let c = ctx.clone();
            let core = cfg.cores.get(i).copied();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sluice-worker-{i}"))
                    .spawn(move || worker_main(&c, i, w, rx, idle, core))?,
            );
        }
        let c = ctx.clone();
        threads.push(
            std::thread::Builder::new()
                .name("sluice-control".into())
                .spawn(move || {
                    while !c.stop.load(Ordering::Relaxed) {
                        if let Ok(mut ctl) = c.control.lock() {
                            ctl.refresh_neighbours();
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                })?,
        );
        let c = ctx.clone();
        admin.set_nonblocking(true)?;
        threads.push(
            std::thread::Builder::new()
                .name("sluice-admin".into())
                .spawn(move || admin_main(&c, &admin))?,
        );
        let c = ctx.clone();
        metrics.set_nonblocking(true)?;
        threads.push(
            std::thread::Builder::new()
                .name("sluice-metrics".into())
                .spawn(move || metrics_main(&c, &metrics))?,
        );
        Ok(Daemon {
            ctx,
            threads,
            socket: cfg.socket,
            reserved,
        })
    }

    /// Asks every thread to stop.
    pub fn stop(&self) {
        self.ctx.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was requested (by [`Daemon::stop`] or the admin
    /// `shutdown` command).
    pub fn stopping(&self) -> bool {
        self.ctx.stop.load(Ordering::Relaxed)
    }

    /// Stops and waits for every thread; the XDP program is detached and
    /// the pods' TUN devices removed as their ports drop, and the reserved
    /// SNAT ports are given back.
    pub fn join(mut self) {
        self.stop();
        let sync = self.ctx.sync.lock().ok().and_then(|mut s| s.take());
        if let Some(h) = sync {
            h.stop();
        }
        drop(self.ctx.file.lock().ok().and_then(|mut f| f.take()));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(r) = self.reserved.take()
            && let Err(e) = r.release()
        {
            tracing::warn!("giving back the reserved SNAT ports: {e}");
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The control thread's settings for `cfg` (public for the test that
/// compares the RBAC manifest with what the control thread does).
pub fn sync_config(cfg: &Config, k: &crate::config::KubeConfig) -> ctrl::kube_sync::SyncConfig {
    ctrl::kube_sync::SyncConfig {
        kubeconfig: k.kubeconfig.clone(),
        node_name: k.node_name.clone(),
        policy: ctrl::node::AnnotationPolicy {
            flannel: k.flannel_annotations,
        },
        own: Some(ctrl::kube_sync::OwnNode {
            ip: cfg.ip,
            vtep_mac: cfg.vtep_mac,
            vni: cfg.vni,
            flannel: k.flannel_annotations,
        }),
        watch_timeout_secs: k.watch_timeout_secs,
    }
}

/// Peers from Kubernetes: the control thread publishes each new view into
/// the control state, which rebuilds and publishes the snapshot. It holds
/// only a weak reference, so stopping the daemon is not kept waiting.
fn start_kube_sync(
    ctx: &Arc<Ctx>,
    cfg: &Config,
    k: &crate::config::KubeConfig,
) -> std::io::Result<ctrl::kube_sync::SyncHandle> {
    let weak = Arc::downgrade(ctx);
    let (vni, own_ip) = (cfg.vni, cfg.ip);
    ctrl::kube_sync::spawn(
        sync_config(cfg, k),
        // ctrl logs each change at info level.
        move |view, _changes| apply_view(&weak, view, vni, own_ip),
    )
}

/// A new cluster view (from the API server or the peers file) becomes the
/// peer set; the snapshot is rebuilt and published.
fn apply_view(
    weak: &std::sync::Weak<Ctx>,
    view: &ctrl::view::ClusterView,
    vni: u32,
    own_ip: Ipv4Addr,
) {
    let Some(ctx) = weak.upgrade() else {
        return;
    };
    let Ok(mut ctl) = ctx.control.lock() else {
        return;
    };
    let mut peers = BTreeMap::new();
    for (name, r) in &view.peers {
        if r.vni != vni {
            tracing::warn!(
                "node {name} announces VNI {} (this overlay: {vni}); not a peer",
                r.vni
            );
            continue;
        }
        if r.ip == own_ip {
            continue;
        }
        if !ctl.neigh.contains_key(&r.ip) {
            neigh::solicit(r.ip);
        }
        peers.insert(
            name.clone(),
            PeerSpec {
                name: name.clone(),
                ip: r.ip,
                vtep_mac: r.vtep_mac,
                pod_cidrs: r.pod_cidrs.clone(),
            },
        );
    }
    ctl.peers = peers;
    ctl.publish();
}

/// The control plane's state for `status` and `/readyz`: (ready, text).
/// Without Kubernetes the daemon is ready from the start; with it, once
/// the first list has been applied.
fn control_status(ctx: &Ctx) -> (bool, String) {
    let age = ctx
        .control
        .lock()
        .map(|c| (c.generation, c.published_at.elapsed().as_millis()))
        .unwrap_or((0, 0));
    let mut text = format!("snapshot_generation {}\nsnapshot_age_ms {}\n", age.0, age.1);
    let sync = ctx
        .sync
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|h| h.status()));
    let file = ctx
        .file
        .lock()
        .ok()
        .and_then(|f| f.as_ref().map(|h| h.status()));
    let ready = match (sync, file) {
        (None, Some(fs)) => {
            text += &format!("source file\nin_sync {}\n", fs.in_sync);
            if let Some(e) = &fs.last_error {
                text += &format!("last_error {e}\n");
            }
            fs.last_load.is_some()
        }
        (None, None) => {
            text += "source static\n";
            true
        }
        (Some(st), _) => {
            text += &format!(
                "source kubernetes\nin_sync {}\nlast_sync_age_ms {}\napi_errors {}\npeers {}\nannotated {}\n",
                st.in_sync,
                st.last_sync
                    .map_or("never".into(), |t| t.elapsed().as_millis().to_string()),
                st.errors,
                st.peers,
                st.annotated
            );
            if let Some(e) = &st.last_error {
                text += &format!("last_error {}\n", e.replace('\n', " "));
            }
            for p in &st.problems {
                text += &format!("problem {p}\n");
            }
            st.last_sync.is_some()
        }
    };
    (ready, text)
}

fn worker_main(
    ctx: &Ctx,
    index: usize,
    mut w: Worker,
    rx: Receiver<Cmd>,
    idle: IdlePolicy,
    core: Option<usize>,
) {
    let pinned = core
        .and_then(|c| core_affinity::set_for_current(core_affinity::CoreId { id: c }).then_some(c));
    let t0 = Instant::now();
    let mut last = Instant::now();
    let between = |w: &mut Worker| {
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::AddPod {
                    name,
                    ip,
                    mac,
                    port,
                    limits,
                } => {
                    w.remove_pod(ip);
                    w.add_port_labelled(port, Role::Pod { ip, mac }, format!("pod/{name}"));
                    w.limit_pod(ip, limits);
                }
                Cmd::DelPod { ip, reply } => {
                    let _ = reply.send(w.remove_pod(ip).is_some());
                }
                Cmd::Conntrack { reply } => {
                    let _ = reply.send(conntrack_listing(w));
                }
            }
        }
        // Publish counters at most every 100 ms, never waiting for the lock.
        if last.elapsed() >= Duration::from_millis(100)
            && let Some(Ok(mut s)) = ctx.stats.get(index).map(Mutex::try_lock)
        {
            s.counters = w.counters.clone();
            s.ports = w
                .ports()
                .map(|p| PortCounters {
                    kernel_dropped: p.port.kernel_drops(),
                    ..p.counters.clone()
                })
                .collect();
            s.conntrack_entries = w.conntrack().len();
            s.nat_ports = w.conntrack().nat_ports_in_use();
            s.pinned_core = pinned;
            last = Instant::now();
        }
    };
    if let Err(e) = w.run(&ctx.stop, idle, || t0.elapsed(), between) {
        tracing::error!("worker {index} failed: {e}");
        ctx.stop.store(true, Ordering::Relaxed);
    }
}

fn conntrack_listing(w: &Worker) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for e in w.conntrack().entries() {
        let proto = match e.orig.proto {
            6 => "tcp",
            17 => "udp",
            1 => "icmp",
            _ => "other",
        };
        let state = match e.proto {
            nat::ProtoState::Tcp { state, .. } => format!("{state:?} "),
            _ => String::new(),
        };
        let o = e.orig;
        let r = e.reply;
        let _ = writeln!(
            s,
            "{proto} {state}src={} dst={} sport={} dport={} src={} dst={} sport={} dport={}{}",
            o.src,
            o.dst,
            o.src_port,
            o.dst_port,
            r.src,
            r.dst,
            r.src_port,
            r.dst_port,
            if e.seen_reply {
                " [ASSURED]"
            } else {
                " [UNREPLIED]"
            }
        );
    }
    s
}

/// Attaches pod `p` (or finds it attached); returns what `pods add`
/// answers about its links.
fn attach_pod(ctx: &Ctx, p: &PodRecord) -> Result<String, String> {
    let (mtu, cidr, cfg) = {
        let ctl = ctx.control.lock().map_err(|_| "control state poisoned")?;
        (
            ctl.cfg
                .uplink_mtu
                .saturating_sub(encap::vxlan::OVERHEAD as u16),
            ctl.cfg.pod_cidr,
            ctl.cfg.clone(),
        )
    };
    if !cidr.contains(&p.ip) || p.ip == cfg.gateway_ip() || p.ip == cidr.network() {
        return Err(format!("{} is not a pod address in {cidr}", p.ip));
    }
    // One address, one pod: a second ADD for the same pod is a no-op, and
    // an address another pod holds is refused (whatever the IPAM said).
    if let Some(held) = ctx
        .control
        .lock()
        .map_err(|_| "control state poisoned")?
        .pods
        .get(&p.ip)
    {
        if held.rec == *p {
            return Ok(held.links.clone());
        }
        return Err(if held.rec.name == p.name {
            format!(
                "pod {} is already attached at {} with other settings; delete it first",
                p.name, p.ip
            )
        } else {
            format!("{} is already attached to pod {}", p.ip, held.rec.name)
        });
    }
    let (port, mac): (Box<dyn Port>, Option<MacAddr>) = match p.kind {
        PodKind::Tun => (
            Box::new(
                TunPort::create(&p.netns, &p.ifname, p.ip, mtu, cfg.tun_offload).map_err(|e| {
                    format!(
                        "creating TUN device {} in {}: {e}",
                        p.ifname,
                        p.netns.display()
                    )
                })?,
            ),
            None,
        ),
        PodKind::Veth => {
            let (port, mac) = create_veth_pod(p, cfg.gateway_ip(), mtu)
                .map_err(|e| format!("creating veth {} in {}: {e}", p.ifname, p.netns.display()))?;
            (Box::new(port), Some(mac))
        }
    };
    let links = match (mac, port.mac()) {
        (Some(pod), Some(host)) => format!(
            "mac {pod}\nhost_interface {} {host}\n",
            veth_host_name(p.ip)
        ),
        _ => String::new(),
    };
    // Spread pods over the workers: the one with the fewest.
    let worker = {
        let ctl = ctx.control.lock().map_err(|_| "control state poisoned")?;
        let mut load = vec![0usize; ctx.cmds.len()];
        for (ip, a) in &ctl.pods {
            if *ip != p.ip
                && let Some(l) = load.get_mut(usize::from(a.worker))
            {
                *l += 1;
            }
        }
        load.iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .map_or(0, |(i, _)| i as u8)
    };
    // A pod attached again (restart, repeated ADD) leaves its old worker.
    for (i, tx) in ctx.cmds.iter().enumerate() {
        if i != usize::from(worker) {
            let (rtx, _rrx) = crossbeam_channel::bounded(1);
            let _ = tx.send(Cmd::DelPod {
                ip: p.ip,
                reply: rtx,
            });
        }
    }
    ctx.cmds
        .get(usize::from(worker))
        .ok_or("no worker")?
        .send(Cmd::AddPod {
            name: p.name.clone(),
            ip: p.ip,
            mac,
            port,
            limits: p.limits,
        })
        .map_err(|_| "worker stopped")?;
    save_pod(&cfg, p);
    if let Ok(mut ctl) = ctx.control.lock() {
        ctl.pods.insert(
            p.ip,
            Attached {
                rec: p.clone(),
                worker,
                links: links.clone(),
            },
        );
        ctl.publish();
    }
    Ok(links)
}

/// The `pods add` request's form.
const PODS_ADD: &str = "pods add NAME IP NETNS [tun|veth [IFNAME]] [ingress_rate=BITS/S ingress_burst=BITS] [egress_rate=BITS/S egress_burst=BITS]";

/// One admin request line -> the reply text (first line `ok` or `error:`).
fn admin_request(ctx: &Ctx, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["stats"] => {
            let views: Vec<StatsView> = ctx
                .stats
                .iter()
                .map(|m| m.lock().map(|s| s.clone()).unwrap_or_default())
                .collect();
            let s = sum_stats(&views);
            let mut out = String::from("ok\n");
            for p in &s.ports {
                out += &format!(
                    "port {} rx {} tx {} kernel_dropped {} rate_limited {} shaped {} paused {}\n",
                    p.name, p.rx, p.tx, p.kernel_dropped, p.rate_limited, p.shaped, p.paused
                );
            }
            out += &format!(
                "encapsulated {}\ndecapsulated {}\nnat {}\nicmp_sent {}\narp_replies {}\nhanded_off {}\nconntrack_entries {}\nnat_ports {}\nworkers {}\n",
                s.counters.encapsulated,
                s.counters.decapsulated,
                s.counters.nat,
                s.counters.icmp_sent,
                s.counters.arp_replies,
                s.counters.handed_off,
                s.conntrack_entries,
                s.nat_ports,
                views.len()
            );
            for (i, v) in views.iter().enumerate() {
                out += &format!(
                    "worker_core_{i} {}\n",
                    v.pinned_core.map_or("unpinned".into(), |c| c.to_string())
                );
            }
            for r in Reason::all() {
                out += &format!("drop {} {}\n", r.name(), s.counters.dropped(r));
            }
            out
        }
        ["status"] => {
            let (ready, text) = control_status(ctx);
            // What the CNI plugin needs: where pod addresses come from, the
            // pods' gateway and MTU.
            let pod = ctx.control.lock().map(|c| {
                format!(
                    "pod_cidr {}\npod_gateway {}\npod_mtu {}\n",
                    c.cfg.pod_cidr,
                    c.cfg.gateway_ip(),
                    c.cfg
                        .uplink_mtu
                        .saturating_sub(encap::vxlan::OVERHEAD as u16)
                )
            });
            format!(
                "ok\nready {ready}\nuptime_s {}\n{}{text}",
                ctx.started.elapsed().as_secs(),
                pod.unwrap_or_default()
            )
        }
        ["routes"] => {
            let Ok(ctl) = ctx.control.lock() else {
                return "error: control state poisoned\n".into();
            };
            let snap = ctl.routes.load_full();
            let mut out = format!(
                "ok\nnode {} ip {} pod_cidr {} vtep_mac {} generation {}\n",
                snap.node.name,
                snap.node.ip,
                snap.node.pod_cidr,
                snap.node.vtep_mac,
                snap.generation
            );
            for p in snap.peers() {
                let cidrs: Vec<String> = p.spec.pod_cidrs.iter().map(|c| c.to_string()).collect();
                out += &format!(
                    "peer {} ip {} vtep_mac {} pod_cidrs {} next_hop {}\n",
                    p.spec.name,
                    p.spec.ip,
                    p.spec.vtep_mac,
                    cidrs.join(","),
                    p.next_hop_mac
                        .map_or("unresolved".into(), |m| m.to_string())
                );
            }
            for a in ctl.pods.values() {
                let p = &a.rec;
                out += &format!(
                    "pod {} ip {} netns {} kind {} worker {} ifname {}{}{}\n",
                    p.name,
                    p.ip,
                    p.netns.display(),
                    p.kind.as_str(),
                    a.worker,
                    p.ifname,
                    if p.limits.is_unlimited() { "" } else { " " },
                    p.limits
                );
            }
            out
        }
        ["conntrack"] => {
            let mut out = String::from("ok\n");
            for tx in &ctx.cmds {
                let (rtx, rrx) = crossbeam_channel::bounded(1);
                if tx.send(Cmd::Conntrack { reply: rtx }).is_err() {
                    return "error: worker stopped\n".into();
                }
                match rrx.recv_timeout(Duration::from_secs(2)) {
                    Ok(l) => out += &l,
                    Err(_) => return "error: worker did not answer\n".into(),
                }
            }
            out
        }
        ["pods", "add", name, ip, ns, rest @ ..] => {
            let Ok(ip) = ip.parse() else {
                return format!("error: {ip:?} is not an IPv4 address\n");
            };
            // Positional words, then KEY=VALUE limits.
            let split = rest
                .iter()
                .position(|w| w.contains('='))
                .unwrap_or(rest.len());
            let (rest, kv) = rest.split_at(split);
            let limits = match PodLimits::parse(kv.iter().copied()) {
                Ok(l) => l,
                Err(e) => return format!("error: {e}\n"),
            };
            let (kind, ifname) = match rest {
                [] => (Some(PodKind::Tun), "eth0"),
                [k] => (PodKind::parse(k), "eth0"),
                [k, i] => (PodKind::parse(k), *i),
                _ => return format!("error: {PODS_ADD}\n"),
            };
            let Some(kind) = kind else {
                let k = rest.first().copied().unwrap_or_default();
                return format!("error: {k:?}: the pod kind is tun or veth\n");
            };
            if !valid_ifname(ifname) {
                return format!(
                    "error: {ifname:?} is not an interface name (1-15 bytes, no '/', ':' or spaces)\n"
                );
            }
            let rec = PodRecord {
                name: (*name).to_string(),
                ip,
                netns: PathBuf::from(ns),
                kind,
                ifname: ifname.to_string(),
                limits,
            };
            match attach_pod(ctx, &rec) {
                Ok(links) => format!("ok\n{links}"),
                Err(e) => format!("error: {e}\n"),
            }
        }
        ["pods", "del", ip] => {
            let Ok(ip) = ip.parse::<Ipv4Addr>() else {
                return format!("error: {ip:?} is not an IPv4 address\n");
            };
            let mut found = false;
            for tx in &ctx.cmds {
                let (rtx, rrx) = crossbeam_channel::bounded(1);
                let _ = tx.send(Cmd::DelPod { ip, reply: rtx });
                found |= rrx.recv_timeout(Duration::from_secs(2)).unwrap_or(false);
            }
            // A veth pod's pair goes with it (deleting one end deletes both).
            let _ = netns::cmd(&["ip", "link", "del", &veth_host_name(ip)]);
            if let Ok(mut ctl) = ctx.control.lock() {
                ctl.pods.remove(&ip);
                ctl.publish();
                let _ = std::fs::remove_file(pods_dir(&ctl.cfg).join(ip.to_string()));
            }
            // Idempotent, as CNI DEL must be.
            format!("ok\n{}\n", if found { "removed" } else { "absent" })
        }
        ["peers", "add", name, ip, mac, cidrs] => {
            let peer = (|| -> Result<PeerSpec, String> {
                Ok(PeerSpec {
                    name: (*name).to_string(),
                    ip: ip
                        .parse()
                        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?,
                    vtep_mac: mac.parse().map_err(|_| format!("{mac:?} is not a MAC"))?,
                    pod_cidrs: cidrs
                        .split(',')
                        .map(|c| c.parse().map_err(|_| format!("{c:?} is not a CIDR")))
                        .collect::<Result<_, _>>()?,
                })
            })();
            match (peer, ctx.control.lock()) {
                (Ok(p), Ok(mut ctl)) => {
                    neigh::solicit(p.ip);
                    ctl.peers.insert(p.name.clone(), p);
                    ctl.publish();
                    "ok\n".into()
                }
                (Err(e), _) => format!("error: {e}\n"),
                (_, Err(_)) => "error: control state poisoned\n".into(),
            }
        }
        ["peers", "del", name] => match ctx.control.lock() {
            Ok(mut ctl) => {
                let found = ctl.peers.remove(*name).is_some();
                ctl.publish();
                format!("ok\n{}\n", if found { "removed" } else { "absent" })
            }
            Err(_) => "error: control state poisoned\n".into(),
        },
        ["shutdown"] => {
            ctx.stop.store(true, Ordering::Relaxed);
            "ok\n".into()
        }
        _ => format!(
            "error: unknown request {line:?}; try stats, status, routes, conntrack, {PODS_ADD}, pods del IP, peers add NAME IP MAC CIDR[,CIDR], peers del NAME, shutdown\n"
        ),
    }
}

fn admin_main(ctx: &Ctx, l: &UnixListener) {
    while !ctx.stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => serve_admin(ctx, s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn serve_admin(ctx: &Ctx, s: UnixStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut r = BufReader::new(&s);
    if r.read_line(&mut line).is_ok() {
        let reply = admin_request(ctx, line.trim());
        let mut w = &s;
        let _ = w.write_all(reply.as_bytes());
    }
}

/// The workers' views added up.
fn sum_stats(views: &[StatsView]) -> StatsView {
    let mut s = StatsView::default();
    for v in views {
        let c = &v.counters;
        for (a, b) in s.counters.drops.iter_mut().zip(c.drops.iter()) {
            *a += b;
        }
        s.counters.encapsulated += c.encapsulated;
        s.counters.decapsulated += c.decapsulated;
        s.counters.nat += c.nat;
        s.counters.icmp_sent += c.icmp_sent;
        s.counters.arp_replies += c.arp_replies;
        s.counters.handed_off += c.handed_off;
        s.counters.handed_in += c.handed_in;
        s.ports.extend(v.ports.iter().cloned());
        s.conntrack_entries += v.conntrack_entries;
        s.nat_ports += v.nat_ports;
    }
    s
}

/// Prometheus text exposition of the workers' counters.
fn metrics_text(ctx: &Ctx) -> String {
    let views: Vec<StatsView> = ctx
        .stats
        .iter()
        .map(|m| m.lock().map(|s| s.clone()).unwrap_or_default())
        .collect();
    let s = sum_stats(&views);
    let mut out = String::new();
    type PortField = fn(&PortCounters) -> u64;
    let per_port: [(&str, &str, PortField); 6] = [
        (
            "sluice_rx_packets_total",
            "Frames received per port.",
            |p| p.rx,
        ),
        (
            "sluice_tx_packets_total",
            "Frames transmitted per port.",
            |p| p.tx,
        ),
        (
            "sluice_kernel_dropped_total",
            "Frames the kernel dropped before Sluice read them (AF_XDP ring full or fill ring empty), per port.",
            |p| p.kernel_dropped,
        ),
        (
            "sluice_rate_limited_total",
            "Frames dropped by a pod's bandwidth limits (both directions), per port.",
            |p| p.rate_limited,
        ),
        (
            "sluice_shaped_total",
            "Frames that waited for a pod's bandwidth tokens, per port.",
            |p| p.shaped,
        ),
        (
            "sluice_shaping_paused_total",
            "Polls that left a TUN pod unread while its egress bucket was in debt, per port.",
            |p| p.paused,
        ),
    ];
    for (name, help, field) in per_port {
        out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n");
        for p in &s.ports {
            out += &format!("{name}{{port=\"{}\"}} {}\n", p.name, field(p));
        }
    }
    out += "# HELP sluice_drops_total Packets dropped, by reason.\n# TYPE sluice_drops_total counter\n";
    for r in Reason::all() {
        out += &format!(
            "sluice_drops_total{{reason=\"{}\"}} {}\n",
            r.name(),
            s.counters.dropped(r)
        );
    }
    for (name, help, v) in [
        (
            "sluice_encapsulated_total",
            "Frames VXLAN-encapsulated.",
            s.counters.encapsulated,
        ),
        (
            "sluice_decapsulated_total",
            "Frames VXLAN-decapsulated.",
            s.counters.decapsulated,
        ),
        (
            "sluice_nat_total",
            "Packets translated by SNAT.",
            s.counters.nat,
        ),
    ] {
        out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
    }
    out += &format!(
        "# HELP sluice_conntrack_entries Live conntrack entries.\n# TYPE sluice_conntrack_entries gauge\nsluice_conntrack_entries {}\n",
        s.conntrack_entries
    );
    out
}

fn metrics_main(ctx: &Ctx, l: &TcpListener) {
    while !ctx.stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = String::new();
                let _ = BufReader::new(&s).read_line(&mut req);
                let (code, body) = if req.starts_with("GET /metrics") {
                    ("200 OK", metrics_text(ctx))
                } else if req.starts_with("GET /readyz") {
                    // Ready once routes are known; the dataplane keeps
                    // forwarding on the last snapshot either way.
                    let (ready, text) = control_status(ctx);
                    (
                        if ready {
                            "200 OK"
                        } else {
                            "503 Service Unavailable"
                        },
                        text,
                    )
                } else if req.starts_with("GET /healthz") {
                    ("200 OK", "ok\n".to_string())
                } else {
                    ("404 Not Found", "not found\n".to_string())
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Sends one admin request to the daemon at `socket`; returns the reply.
pub fn request(socket: &Path, line: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out)?;
    Ok(out)
}

/// Runs `f` in the network namespace of `netns` (re-export for the CLI).
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    netns::run_in(netns, f)
}
