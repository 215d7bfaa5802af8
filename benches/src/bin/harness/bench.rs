//! One node under test for the harness: the pod, node and remote
//! namespaces with Sluice or the kernel path between them, the scenarios,
//! and one measurement (full rate, then half rate for loss and latency).

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dataplane {
    Sluice,
    Kernel,
}

impl Dataplane {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Dataplane::Sluice => "Sluice",
            Dataplane::Kernel => "kernel",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// pod -> remote pod: VXLAN encap out of up0.
    Encap,
    /// remote node -> pod: VXLAN decap to the pod.
    Decap,
    /// pod -> external: conntrack + SNAT to the node IP.
    Snat,
    /// pod -> a Service's ClusterIP: DNAT to a remote pod, VXLAN encap
    /// out of up0 (`Scenario::services` services).
    Service,
}

#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) name: String,
    pub(crate) dir: Direction,
    /// Pod-side Ethernet frame without FCS (60 = "64 bytes").
    pub(crate) frame: usize,
    pub(crate) flows: u32,
    /// Every packet opens a new flow (SNAT port allocation each time).
    pub(crate) new_flows: bool,
    /// Services on the node ([`Direction::Service`]; else 0).
    pub(crate) services: u32,
}

pub(crate) fn scenarios(smoke: bool) -> Vec<Scenario> {
    let many = if smoke { 1_000 } else { 100_000 };
    let new = if smoke { 20_000 } else { 200_000 };
    let s = |name: &str, dir, frame, flows, new_flows| Scenario {
        name: name.to_string(),
        dir,
        frame,
        flows,
        new_flows,
        services: 0,
    };
    let mut v = vec![
        s(
            "pod->remote pod (encap), 64 B, 1 flow",
            Direction::Encap,
            60,
            1,
            false,
        ),
        s(
            &format!("pod->remote pod (encap), 64 B, {many} flows"),
            Direction::Encap,
            60,
            many,
            false,
        ),
        s(
            "pod->remote pod (encap), 1400 B, 1 flow",
            Direction::Encap,
            1400,
            1,
            false,
        ),
        s(
            "remote->pod (decap), 64 B, 1 flow",
            Direction::Decap,
            60,
            1,
            false,
        ),
        s(
            &format!("remote->pod (decap), 64 B, {many} flows"),
            Direction::Decap,
            60,
            many,
            false,
        ),
        s(
            "remote->pod (decap), 1400 B, 1 flow",
            Direction::Decap,
            1400,
            1,
            false,
        ),
        s(
            "pod->external (SNAT), 64 B, established, 1 flow",
            Direction::Snat,
            60,
            1,
            false,
        ),
        s(
            &format!("pod->external (SNAT), 64 B, established, {many} flows"),
            Direction::Snat,
            60,
            many,
            false,
        ),
        s(
            "pod->external (SNAT), 1400 B, established, 1 flow",
            Direction::Snat,
            1400,
            1,
            false,
        ),
        s(
            &format!("pod->external (SNAT), 64 B, new flows ({new} distinct)"),
            Direction::Snat,
            60,
            new,
            true,
        ),
    ];
    if smoke {
        v.retain(|s| s.frame == 60 && (s.flows == 1 || s.new_flows) || s.dir == Direction::Snat);
    }
    v
}

/// One run of one scenario on one dataplane.
#[derive(Clone, Debug, Default)]
pub(crate) struct Measure {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) pps: f64,
    pub(crate) gbps: f64,
    /// Core-seconds of the node's core per million packets delivered.
    pub(crate) cpu_per_mpkt: f64,
    /// At half the delivered rate: loss (packets) and p50/p99 latency.
    pub(crate) half_loss: u64,
    pub(crate) half_sent: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Sluice only, at full rate: frames the pod/uplink port received,
    /// dropped by the kernel before Sluice read them (AF_XDP ring full),
    /// dropped by Sluice with a reason, and transmitted.
    pub(crate) accounting: Option<Accounting>,
    /// The same for the half-rate run.
    pub(crate) half_accounting: Option<Accounting>,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Accounting {
    pub(crate) rx: u64,
    pub(crate) kernel_dropped: u64,
    pub(crate) dropped: u64,
    pub(crate) tx: u64,
}

impl Accounting {
    /// What happened between `before` and `self`.
    fn since(&self, before: &Accounting) -> Accounting {
        Accounting {
            rx: self.rx.saturating_sub(before.rx),
            kernel_dropped: self.kernel_dropped.saturating_sub(before.kernel_dropped),
            dropped: self.dropped.saturating_sub(before.dropped),
            tx: self.tx.saturating_sub(before.tx),
        }
    }
}

/// One dataplane's node between the pod and remote namespaces; everything
/// removed on drop.
pub(crate) struct Bench {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    daemon: Option<Child>,
    socket: PathBuf,
    pod_port: Option<XdpPort>,
    rem_port: Option<XdpPort>,
    pod_mac: [u8; 6],
    host_mac: [u8; 6],
    up_mac: [u8; 6],
    r0_mac: [u8; 6],
}

impl Drop for Bench {
    fn drop(&mut self) {
        // Sockets and XDP programs first, then the devices under them.
        self.pod_port = None;
        self.rem_port = None;
        if let Some(d) = &mut self.daemon {
            let _ = daemon::request(&self.socket, "shutdown");
            dataplane::demo::reap_sluice(d);
        }
        for n in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn mac_of(ns: &str, dev: &str) -> Result<[u8; 6], String> {
    let out = sh(&["ip", "-n", ns, "-br", "link", "show", "dev", dev])?;
    out.split_whitespace()
        .nth(2)
        .and_then(|m| m.parse::<encap::MacAddr>().ok())
        .map(|m| m.0)
        .ok_or_else(|| format!("{ns}/{dev}: no MAC in {out:?}"))
}

fn mac_str(m: [u8; 6]) -> String {
    encap::MacAddr(m).to_string()
}

impl Bench {
    fn ns(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    fn ip(&self, tag: &str, args: &[&str]) -> Result<String, String> {
        let n = self.ns(tag);
        let mut v = vec!["ip", "-n", n.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    }

    fn exec(&self, tag: &str, args: &[&str]) -> Result<String, String> {
        let n = self.ns(tag);
        let mut v = vec!["ip", "netns", "exec", n.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub(crate) fn build(dp: Dataplane, sluice: &Path) -> Result<Bench, String> {
        Self::build_with(dp, sluice, None)
    }

    /// [`Bench::build`] with `services` Services on the node: Sluice
    /// reads them from a cluster file, the kernel path gets kube-proxy's
    /// rules for them (`proxy`: iptables or nftables mode).
    pub(crate) fn build_with(
        dp: Dataplane,
        sluice: &Path,
        services: Option<(u32, services::Proxy)>,
    ) -> Result<Bench, String> {
        let prefix = format!(
            "slh{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut b = Bench {
            socket: dir.join("bench.sock"),
            prefix,
            dir,
            namespaces: Vec::new(),
            daemon: None,
            pod_port: None,
            rem_port: None,
            pod_mac: [0; 6],
            host_mac: [0; 6],
            up_mac: [0; 6],
            r0_mac: [0; 6],
        };
        for tag in ["pod", "node", "rem"] {
            let n = b.ns(tag);
            sh(&["ip", "netns", "add", &n])?;
            b.namespaces.push(n);
            b.ip(tag, &["link", "set", "lo", "up"])?;
            b.exec(tag, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        }
        let rem = b.ns("rem");
        b.ip(
            "node",
            &[
                "link", "add", "up0", "type", "veth", "peer", "name", "r0", "netns", &rem,
            ],
        )?;
        b.ip(
            "node",
            &["addr", "add", &format!("{NODE_IP}/24"), "dev", "up0"],
        )?;
        b.ip(
            "rem",
            &["addr", "add", &format!("{REMOTE_IP}/24"), "dev", "r0"],
        )?;
        b.ip("node", &["link", "set", "up0", "up"])?;
        b.ip("rem", &["link", "set", "r0", "up"])?;
        // Native XDP on a veth needs GRO on the peer end; software
        // checksums, so no CHECKSUM_PARTIAL frame reaches AF_XDP. The same
        // settings for both dataplanes.
        b.exec("node", &["ethtool", "-K", "up0", "gro", "on", "tx", "off"])?;
        b.exec("rem", &["ethtool", "-K", "r0", "gro", "on", "tx", "off"])?;
        b.up_mac = mac_of(&b.ns("node"), "up0")?;
        b.r0_mac = mac_of(&rem, "r0")?;
        // The remote end runs a sink, which answers no ARP.
        b.ip(
            "node",
            &[
                "neigh",
                "replace",
                &REMOTE_IP.to_string(),
                "lladdr",
                &mac_str(b.r0_mac),
                "dev",
                "up0",
                "nud",
                "permanent",
            ],
        )?;
        match dp {
            Dataplane::Sluice => {
                let cluster = match services {
                    Some((n, _)) => Some(services::cluster_file(&b.dir, n)?),
                    None => None,
                };
                b.start_sluice(sluice, cluster.as_deref(), services.map_or(0, |s| s.0))?;
            }
            Dataplane::Kernel => {
                b.configure_kernel()?;
                if let Some((n, proxy)) = services {
                    services::program_kube_proxy(&b.ns("node"), &b.dir, n, proxy)?;
                }
            }
        }
        b.pod_mac = mac_of(&b.ns("pod"), "eth0")?;
        b.host_mac = mac_of(&b.ns("node"), HOST_DEV)?;
        // The node's receive work on core 1 (RPS), as Sluice's worker is:
        // what each dataplane costs is what core 1 spends.
        let mask = format!("{:x}", 1u32 << NODE_CORE);
        for dev in ["up0", HOST_DEV] {
            b.exec(
                "node",
                &[
                    "sh",
                    "-c",
                    &format!("echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"),
                ],
            )?;
        }
        let open = |ns: String, dev: &'static str| {
            netns::run_in(&PathBuf::from(format!("/var/run/netns/{ns}")), move || {
                let prog = SteerProgram::attach(dev, SteerConfig::all())?;
                XdpPort::open(dev, 0, Some(Arc::new(prog)))
            })
            .map_err(|e| format!("{ns}/{dev}: {e}"))
        };
        b.pod_port = Some(open(b.ns("pod"), "eth0")?);
        b.rem_port = Some(open(rem, "r0")?);
        Ok(b)
    }

    /// Starts Sluice with the remote node as its peer, from the static
    /// config or (with Services) from `cluster`, and waits until it has
    /// the pod, the peer and `services` service ports.
    fn start_sluice(
        &mut self,
        exe: &Path,
        cluster: Option<&Path>,
        services: u32,
    ) -> Result<(), String> {
        let cfg = self.dir.join("bench.yaml");
        let source = match cluster {
            Some(c) => format!(
                "cluster_file: {}\nservices:\n  cidrs: [{}]",
                c.display(),
                services::SERVICE_CIDR
            ),
            None => format!(
                "peers:
  - name: remote
    ip: {REMOTE_IP}
    vtep_mac: \"{}\"
    pod_cidrs: [10.244.2.0/24]",
                mac_str(REMOTE_VTEP)
            ),
        };
        let text = format!(
            "node:
  name: bench
  uplink: up0
  ip: {NODE_IP}
  pod_cidr: 10.244.1.0/24
  vtep_mac: \"{vtep}\"
  gateway: {REMOTE_IP}
cluster_cidrs: [10.244.0.0/16]
{source}
workers:
  cores: [{NODE_CORE}]
admin:
  socket: {sock}
  state_dir: {dir}/state
  run_dir: {dir}/run
",
            vtep = mac_str(NODE_VTEP),
            sock = self.socket.display(),
            dir = self.dir.display()
        );
        std::fs::write(&cfg, text).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.dir.join("bench.log")).map_err(|e| e.to_string())?;
        let child = dataplane::demo::spawn_sluice(&self.ns("node"), exe, &cfg, log)
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while daemon::request(&self.socket, "status").is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("bench.log")).unwrap_or_default();
                return Err(format!("sluice did not start: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let reply = daemon::request(
            &self.socket,
            &format!(
                "pods add p0 {POD_IP} /var/run/netns/{} veth",
                self.ns("pod")
            ),
        )
        .map_err(|e| e.to_string())?;
        if !reply.starts_with("ok") {
            return Err(format!("pods add: {reply}"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = daemon::request(&self.socket, "routes").map_err(|e| e.to_string())?;
            let st = daemon::request(&self.socket, "status").map_err(|e| e.to_string())?;
            if r.contains("\npeer ")
                && !r.contains("unresolved")
                && (services == 0 || st.contains(&format!("service_ports {services}\n")))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("peer not resolved:\n{r}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node as Flannel (vxlan backend) and Calico (natOutgoing) leave
    /// the kernel: flannel.1 with VNI 1 on port 8472, a permanent neighbour
    /// and FDB entry per peer, an onlink route per peer pod CIDR; a routed
    /// veth per pod (Calico style, /32 route); flanneld's MASQUERADE rules
    /// with --random-fully.
    fn configure_kernel(&mut self) -> Result<(), String> {
        self.exec("node", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let (vtep, rvtep) = (mac_str(NODE_VTEP), mac_str(REMOTE_VTEP));
        let (node_ip, rem_ip) = (NODE_IP.to_string(), REMOTE_IP.to_string());
        self.ip(
            "node",
            &[
                "link",
                "add",
                "flannel.1",
                "address",
                &vtep,
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                &node_ip,
                "dev",
                "up0",
                "dstport",
                "8472",
                "nolearning",
            ],
        )?;
        self.ip("node", &["link", "set", "flannel.1", "mtu", "1450", "up"])?;
        self.ip(
            "node",
            &["addr", "add", "10.244.1.0/32", "dev", "flannel.1"],
        )?;
        self.ip(
            "node",
            &[
                "neigh",
                "add",
                "10.244.2.0",
                "lladdr",
                &rvtep,
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ],
        )?;
        let n = self.ns("node");
        sh(&[
            "bridge",
            "-n",
            &n,
            "fdb",
            "append",
            &rvtep,
            "dev",
            "flannel.1",
            "dst",
            &rem_ip,
        ])?;
        self.ip(
            "node",
            &[
                "route",
                "add",
                "10.244.2.0/24",
                "via",
                "10.244.2.0",
                "dev",
                "flannel.1",
                "onlink",
            ],
        )?;
        self.ip("node", &["route", "add", "default", "via", &rem_ip])?;
        let pod = self.ns("pod");
        self.ip(
            "node",
            &[
                "link", "add", HOST_DEV, "mtu", "1450", "type", "veth", "peer", "name", "eth0",
                "mtu", "1450", "netns", &pod,
            ],
        )?;
        self.ip("node", &["link", "set", HOST_DEV, "up"])?;
        self.ip(
            "node",
            &["route", "add", &format!("{POD_IP}/32"), "dev", HOST_DEV],
        )?;
        self.ip(
            "pod",
            &["addr", "add", &format!("{POD_IP}/32"), "dev", "eth0"],
        )?;
        self.ip("pod", &["link", "set", "eth0", "up"])?;
        // As Sluice sets up its veth pods (and the pod's sink answers no
        // ARP).
        self.exec("pod", &["ethtool", "-K", "eth0", "tx", "off", "gro", "on"])?;
        let pod_mac = mac_str(mac_of(&pod, "eth0")?);
        self.ip(
            "node",
            &[
                "neigh",
                "replace",
                &POD_IP.to_string(),
                "lladdr",
                &pod_mac,
                "dev",
                HOST_DEV,
                "nud",
                "permanent",
            ],
        )?;
        // flanneld's rules (pkg/ip/iptables: MasqRules).
        for rule in [
            "-A POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN",
            "-A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully",
            "-A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN",
            "-A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE --random-fully",
        ] {
            let mut args = vec!["iptables", "-t", "nat"];
            args.extend(rule.split(' '));
            self.exec("node", &args)?;
        }
        for rule in [
            "-A FORWARD -s 10.244.0.0/16 -j ACCEPT",
            "-A FORWARD -d 10.244.0.0/16 -j ACCEPT",
        ] {
            let mut args = vec!["iptables"];
            args.extend(rule.split(' '));
            self.exec("node", &args)?;
        }
        Ok(())
    }

    /// Sluice's counters for the pod and uplink ports (sum over ports:
    /// rx, kernel drops, tx) and all drop reasons.
    fn sluice_counts(&self) -> Option<Accounting> {
        self.daemon.as_ref()?;
        let text = daemon::request(&self.socket, "stats").ok()?;
        let mut a = Accounting::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["port", _, "rx", rx, "tx", tx, "kernel_dropped", kd, ..] => {
                    a.rx += rx.parse::<u64>().unwrap_or(0);
                    a.tx += tx.parse::<u64>().unwrap_or(0);
                    a.kernel_dropped += kd.parse::<u64>().unwrap_or(0);
                }
                ["drop", _, n] => a.dropped += n.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
        Some(a)
    }

    fn profile(&self, sc: &Scenario, dst_port: u16) -> Profile {
        let spread = if sc.new_flows {
            1000
        } else if sc.flows > 1 {
            100
        } else {
            1
        };
        let pod_side = |dst: Ipv4Addr| Profile {
            frame_len: sc.frame,
            flows: sc.flows,
            src_mac: self.pod_mac,
            dst_mac: self.host_mac,
            src_ip: POD_IP,
            dst_ip: dst,
            base_port: 20000,
            dst_port,
            dst_ports: spread,
            dst_ips: 1,
            vxlan: None,
        };
        match sc.dir {
            Direction::Encap => pod_side(REMOTE_POD),
            Direction::Snat => pod_side(EXTERNAL),
            // Flow k to service k % n (one ClusterIP each, port 80); the
            // half-rate run takes other source ports, so its flows are new.
            Direction::Service => Profile {
                dst_port: services::SERVICE_PORT,
                dst_ports: 1,
                dst_ips: sc.services,
                base_port: if dst_port == 1000 { 20000 } else { 45000 },
                ..pod_side(services::FIRST_CLUSTER_IP)
            },
            Direction::Decap => Profile {
                frame_len: sc.frame,
                flows: sc.flows,
                src_mac: REMOTE_VTEP,
                dst_mac: NODE_VTEP,
                src_ip: REMOTE_POD,
                dst_ip: POD_IP,
                base_port: 20000,
                dst_port,
                dst_ports: spread,
                dst_ips: 1,
                vxlan: Some(VxlanOuter {
                    src_mac: self.r0_mac,
                    dst_mac: self.up_mac,
                    src_ip: REMOTE_IP,
                    dst_ip: NODE_IP,
                    port: 8472,
                    vni: 1,
                }),
            },
        }
    }

    /// Sends through the scenario's generator end and counts at its sink
    /// end; returns (loop result, sink).
    fn traffic(
        &mut self,
        profile: Profile,
        count: u64,
        rate: Option<f64>,
        limit: Duration,
        dir: Direction,
    ) -> Result<(sluice_benches::pktgen::LoopRun, Sink), String> {
        let epoch = Instant::now();
        let flows = profile.flows;
        let tag = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u16;
        let mut g = Generator::tagged(profile, epoch, tag);
        let mut sink = Sink::tagged(flows, epoch, tag);
        let (Some(pod), Some(rem)) = (self.pod_port.as_mut(), self.rem_port.as_mut()) else {
            return Err("ports not open".into());
        };
        let (tx, rx): (&mut XdpPort, &mut XdpPort) = match dir {
            Direction::Decap => (rem, pod),
            _ => (pod, rem),
        };
        // On a thread of its own pinned to the generator's core: the
        // daemon and the kernel's helpers this process starts must not
        // inherit that pinning.
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: GEN_CORE }) {
                    return Err(format!("cannot pin to core {GEN_CORE}"));
                }
                run_loop(
                    &mut g,
                    tx,
                    &mut sink,
                    rx,
                    count,
                    rate,
                    Some(limit),
                    Duration::from_millis(300),
                )
                .map_err(|e| e.to_string())
            })
            .join()
            .map_err(|_| "traffic thread panicked".to_string())?
        })?;
        Ok((r, sink))
    }

    pub(crate) fn measure(&mut self, sc: &Scenario, secs: f64) -> Result<Measure, String> {
        let limit = Duration::from_secs_f64(secs);
        if !sc.new_flows {
            // Every flow once, slowly: ARP, conntrack and NAT entries exist
            // before the measurement ("established").
            let p = self.profile(sc, 1000);
            self.traffic(
                p,
                u64::from(sc.flows),
                Some(200_000.0),
                Duration::from_secs(10),
                sc.dir,
            )?;
        }
        let count = if sc.new_flows {
            u64::from(sc.flows)
        } else {
            u64::MAX
        };
        let before = self.sluice_counts();
        let cpu0 = netbench::cpu_busy(NODE_CORE) + netbench::cpu_softirq(GEN_CORE);
        let (run, mut sink) = self.traffic(self.profile(sc, 1000), count, None, limit, sc.dir)?;
        // The node is done within the sink's drain (300 ms idle): its CPU
        // time is counted through the end of the drain.
        let cpu =
            (netbench::cpu_busy(NODE_CORE) + netbench::cpu_softirq(GEN_CORE)).saturating_sub(cpu0);
        let after = self.sluice_counts();
        let st = sink.stats();
        let secs_sent = run.sending.as_secs_f64().max(1e-9);
        let pps = st.received as f64 / secs_sent;
        let mut m = Measure {
            sent: run.sent,
            received: st.received,
            pps,
            gbps: pps * (sc.frame as f64) * 8.0 / 1e9,
            cpu_per_mpkt: cpu.as_secs_f64() / (st.received.max(1) as f64 / 1e6),
            accounting: before.zip(after).map(|(b, a)| a.since(&b)),
            ..Measure::default()
        };
        // Half the delivered rate: latency, and loss below saturation.
        // New-flow runs use other destination ports, so flows are new again.
        let half = (pps / 2.0).max(1000.0);
        let hcount = if sc.new_flows {
            u64::from(sc.flows)
        } else {
            (half * secs / 2.0).max(1000.0) as u64
        };
        let hbefore = self.sluice_counts();
        let (hrun, mut hsink) = self.traffic(
            self.profile(sc, 3000),
            hcount,
            Some(half),
            Duration::from_secs_f64(secs),
            sc.dir,
        )?;
        let hs = hsink.stats();
        m.half_accounting = hbefore.zip(self.sluice_counts()).map(|(b, a)| a.since(&b));
        m.half_sent = hrun.sent;
        m.half_loss = hrun.sent.saturating_sub(hs.received);
        if let Some((p50, p99, _)) = hs.latency {
            m.p50_us = p50.as_secs_f64() * 1e6;
            m.p99_us = p99.as_secs_f64() * 1e6;
        }
        Ok(m)
    }
}
