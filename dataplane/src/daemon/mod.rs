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
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use encap::MacAddr;
use encap::vxlan::{Vni, VxlanConfig};
use nat::{ConntrackConfig, PortRange, SnatConfig};

use crate::config::Config;
use crate::counters::{Counters, PortCounters};
use crate::port::Port;
use crate::port::tun::TunPort;
use crate::port::xdp::SteerProgram;
use crate::route::{Node, PeerSpec, Routes, Snapshot};
use crate::shaper::PodLimits;
use crate::worker::{IdlePolicy, Role};
use crate::{neigh, netns};

mod admin;
mod flows;
mod handover;
mod lifecycle;
mod lock;
mod metrics;
mod neighbours;
mod netpol;
mod node_ports;
mod peers;
mod pods;
mod services;
mod stop_signal;
mod uplink;
mod worker;

use admin::admin_main;
use metrics::metrics_main;
pub use peers::sync_config;
use peers::{apply_view, start_kube_sync};
pub use pods::{PodKind, PodRecord};
use pods::{attach_pod, load_pods, pods_dir, valid_ifname, veth_host_name};
use worker::worker_main;

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
    /// Flows, packets and bytes by service port index.
    pub svc: Vec<crate::counters::SvcStats>,
    /// NetworkPolicy counters and denied-flow log.
    pub policy: crate::enforce::PolicyView,
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
    /// The service table the snapshots carry.
    services: Arc<lb::ServiceTable>,
    /// When it last changed.
    services_at: Option<Instant>,
    /// The NetworkPolicy tables the snapshots carry.
    policy: netpol::Feed,
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
        .with_services(self.services.clone())
        .with_policy(self.policy.tables.clone())
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
    /// The cluster-file watcher (peers and services from one file).
    cluster: Mutex<Option<ctrl::cluster_file::ClusterFileHandle>>,
    /// The Services thread, when services come from the API.
    svc_sync: Mutex<Option<ctrl::service_sync::ServiceSyncHandle>>,
    /// The policy thread (NetworkPolicies, Namespaces, Pods), likewise.
    policy_sync: Mutex<Option<ctrl::policy_sync::PolicySyncHandle>>,
    /// NodePorts, externalIPs and LB IPs from outside (`services.node_ports`).
    node_ports: Option<node_ports::NodePorts>,
    /// The uplink's XDP program (readiness checks it is still attached).
    steer: Arc<SteerProgram>,
    /// What start-up found (`sluice status`): the uplink's bind mode and
    /// what the flow tables' restore carried on.
    flows: String,
    /// How the uplink's sockets are bound.
    bind_mode: uplink::BindMode,
    /// Wakes each worker from its idle sleep.
    wakers: Vec<Arc<std::sync::OnceLock<crate::worker::Waker>>>,
    /// Workers that have stopped forwarding.
    parked: std::sync::atomic::AtomicUsize,
    /// Set before a stop that hands over: each worker leaves its uplink
    /// socket in `handed` for the next daemon.
    handing_over: AtomicBool,
    handed: Mutex<Vec<crate::port::xdp::Handed>>,
    /// Wakes the admin and metrics threads when the daemon stops.
    stopped: stop_signal::StopSignal,
}

impl Ctx {
    /// Hands `cmd` to worker `w` and wakes it, so a pod is attached (or a
    /// listing answered) now, not after the worker's idle sleep. Err if
    /// the worker is gone.
    fn command(&self, w: usize, cmd: Cmd) -> Result<(), ()> {
        self.cmds.get(w).ok_or(())?.send(cmd).map_err(|_| ())?;
        if let Some(wake) = self.wakers.get(w).and_then(|x| x.get()) {
            wake();
        }
        Ok(())
    }

    /// Asks every thread to stop; wakes the listeners' waits (workers are
    /// woken by [`Daemon::stop`]).
    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stopped.raise();
    }
}

/// A running daemon.
pub struct Daemon {
    ctx: Arc<Ctx>,
    threads: Vec<JoinHandle<()>>,
    socket: PathBuf,
    /// The SNAT ports reserved from the host, released on a clean stop.
    reserved: Option<crate::reserved_ports::Reservation>,
    /// Where the flow tables and the reservation record live.
    run_dir: PathBuf,
    /// This node is ours while it is held ([`lock::NodeLock`]).
    lock: Option<lock::NodeLock>,
    /// Where a daemon that takes over asks for the uplink sockets.
    offer: Option<handover::Offer>,
}

pub use lifecycle::cleanup;

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
    let mut nl = netcfg::Rtnl::new()?;
    nl.link_del(name)?;
    let mtu = cfg.uplink_mtu.saturating_sub(encap::vxlan::OVERHEAD as u16);
    let port = TunPort::create_here(name, cfg.gateway_ip(), mtu, cfg.tun_offload)
        .map_err(|e| std::io::Error::new(e.kind(), format!("host device {name}: {e}")))?;
    // IPv4 only: no router solicitations into the dataplane. (Written
    // directly: /proc/sys/net is this process's namespace's, and the image
    // need not carry sysctl.)
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    nl.link_up(name)?;
    // The pod network: the cluster CIDRs holding this node's pod CIDR (not
    // the service CIDR, which kube-proxy handles), and the pod CIDR itself.
    let mut nets: Vec<ipnet::Ipv4Net> = cfg
        .cluster_cidrs
        .iter()
        .filter(|c| c.contains(&cfg.pod_cidr))
        .copied()
        .collect();
    nets.push(cfg.pod_cidr);
    // The service CIDRs: the node's own clients (kubelet, hostNetwork
    // pods) reach Sluice's balancer through here when no kube-proxy DNATs
    // them first.
    nets.extend(cfg.service_cidrs.iter().copied());
    for n in nets {
        nl.route_replace(n.trunc(), name, None, false)?;
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
    let dev = netcfg::Rtnl::new()?
        .addrs()?
        .into_iter()
        .find(|a| a.net.addr() == cfg.ip)
        .and_then(|a| netcfg::if_name(a.index).ok());
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

impl Daemon {
    /// Starts the daemon in the current network namespace.
    pub fn start(mut cfg: Config) -> std::io::Result<Daemon> {
        // A daemon serving the node now may hand its uplink sockets over:
        // ask before waiting for it to go.
        let successor = handover::Successor::announce(&cfg.run_dir, cfg.take_over);
        // First, before anything another daemon may be using.
        let lock = lock::NodeLock::acquire(&cfg.state_dir, cfg.lock_wait)?;
        tracing::info!("holding {}", lock.path().display());
        let handed = successor
            .map(handover::Successor::receive)
            .unwrap_or_default();
        let offer = handover::Offer::listen(&cfg.run_dir)?;
        // Start-up phases, timed from the lock (what a restart costs).
        let t0 = Instant::now();
        let phase =
            |what: &str| tracing::info!("start-up: {what} at +{} ms", t0.elapsed().as_millis());
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
            let mut r = crate::reserved_ports::Reservation::take(cfg.snat_ports)?;
            let file = cfg.run_dir.join(lifecycle::RESERVED_FILE);
            r.inherit(&file);
            std::fs::create_dir_all(&cfg.run_dir)?;
            r.record(&file)?;
            Some(r)
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
            services: Arc::new(lb::ServiceTable::new(services::facts(&cfg), [])),
            services_at: None,
            policy: netpol::Feed::expecting(cfg.cluster_file.is_some() || cfg.kubernetes.is_some()),
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
        let (prog, mut workers, wakers, bind_mode) =
            uplink::build(&cfg, snat.as_ref(), &ct, &routes, n, handed)?;
        phase("uplink program attached, sockets bound");
        if let (Some(name), Some(w)) = (&cfg.host_interface, workers.first_mut()) {
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
        // The flows of the daemon before this one, if it left them.
        let flows = bind_mode.status() + &flows::restore(&cfg.run_dir, &ct, &mut workers)?;
        phase("flow tables mapped back");
        let node_ports = if cfg.node_ports {
            Some(node_ports::NodePorts::new(prog.clone(), cfg.ip)?)
        } else {
            None
        };

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
            cluster: Mutex::new(None),
            svc_sync: Mutex::new(None),
            policy_sync: Mutex::new(None),
            node_ports,
            steer: prog.clone(),
            flows,
            bind_mode,
            wakers,
            parked: std::sync::atomic::AtomicUsize::new(0),
            handing_over: AtomicBool::new(false),
            handed: Mutex::new(Vec::new()),
            stopped: stop_signal::StopSignal::new()?,
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
        services::start(&ctx, &cfg)?;
        netpol::start(&ctx, &cfg)?;
        // Pods served before a restart come back from the state directory.
        phase("control plane started");
        for (p, worker) in load_pods(&cfg) {
            if p.netns.exists()
                && let Err(e) = attach_pod(&ctx, &p, worker)
            {
                tracing::warn!("re-attaching pod {} ({}): {e}", p.name, p.ip);
            }
        }
        let _ = std::fs::remove_file(&cfg.socket);
        if let Some(d) = cfg.socket.parent() {
            std::fs::create_dir_all(d)?;
        }
        phase("pods attached");
        let admin = UnixListener::bind(&cfg.socket)?;
        let metrics = TcpListener::bind(cfg.metrics)?;

        let mut threads = Vec::new();
        let idle = IdlePolicy {
            spins: cfg.idle_spins,
            max_sleep: Duration::from_millis(cfg.max_sleep_ms),
            spin_time: Duration::from_micros(cfg.idle_spin_us),
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
                .spawn(move || neighbours::neighbour_main(&c))?,
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
        phase("workers running");
        Ok(Daemon {
            ctx,
            threads,
            socket: cfg.socket,
            reserved,
            run_dir: cfg.run_dir.clone(),
            lock: Some(lock),
            offer: Some(offer),
        })
    }

    /// Asks every thread to stop.
    pub fn stop(&self) {
        self.ctx.request_stop();
        // Now, not after the longest idle sleep.
        for w in self.ctx.wakers.iter().filter_map(|w| w.get()) {
            w();
        }
    }

    /// Waits until a stop is requested, `fd` is readable (the binary's
    /// signal eventfd), a daemon that takes over connects or writes, or
    /// `timeout` passes, without polling.
    pub fn wait(&self, fd: std::os::fd::RawFd, timeout: Duration) {
        let mut fds = vec![fd];
        fds.extend(self.offer.iter().flat_map(handover::Offer::fds));
        self.ctx.stopped.wait_any(&fds, timeout);
    }

    /// Whether a daemon started with `admin.take_over` asks for the node
    /// now (a rolling update's surge pod): then [`Daemon::hand_over`],
    /// and wait for SIGTERM without forwarding.
    pub fn take_over_requested(&mut self) -> bool {
        self.offer.as_mut().is_some_and(handover::Offer::poll)
    }

    /// Whether a stop was requested (by [`Daemon::stop`] or the admin
    /// `shutdown` command).
    pub fn stopping(&self) -> bool {
        self.ctx.stop.load(Ordering::Relaxed)
    }
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
    let (svc_ready, svc_text) = services::status(ctx);
    text += &svc_text;
    let (policy_ready, policy_text) = netpol::status(ctx);
    text += &policy_text;
    text += &ctx.flows;
    // Forwarding needs the uplink's program: detached or replaced, nothing
    // reaches the workers however healthy the rest looks.
    let uplink = ctx.steer.still_attached();
    text += &format!(
        "uplink_program {}\n",
        match &uplink {
            Ok(true) => "attached".to_string(),
            Ok(false) => "detached".to_string(),
            Err(e) => format!("unknown ({e})"),
        }
    );
    let uplink = uplink.unwrap_or(false);
    (
        ready && svc_ready.unwrap_or(true) && policy_ready.unwrap_or(true) && uplink,
        text,
    )
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
