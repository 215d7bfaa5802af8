//! `sluice`: the node daemon and its admin client.
//!
//!     sluice run --config /etc/sluice/config.yaml
//!     sluice stats | status | routes | conntrack | services
//!     sluice policy [POD_IP] | policy denied [--follow]
//!     sluice pods add NAME IP NETNS [--kind veth] [--ifname IF]
//!         [--ingress-rate BITS/S --ingress-burst BITS]
//!         [--egress-rate BITS/S --egress-burst BITS] | pods del IP
//!     sluice peers add NAME IP VTEP_MAC CIDR[,CIDR] | peers del NAME
//!     sluice shutdown | cleanup --config FILE
//!     sluice demo
//!
//! Admin commands talk to the daemon over its Unix socket (`--socket`,
//! default /run/sluice/admin.sock).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use dataplane::config::Config;
use dataplane::daemon::{self, Daemon};

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a userspace dataplane for Kubernetes nodes"
)]
struct Cli {
    /// The daemon's admin socket.
    #[arg(long, global = true, default_value = "/run/sluice/admin.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the node daemon.
    Run {
        /// YAML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    Check {
        /// YAML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Counters: per port, per drop reason.
    Stats,
    /// Control-plane status.
    Status,
    /// The routing snapshot: peers, next hops, pods.
    Routes,
    /// Tracked connections, like `conntrack -L`.
    Conntrack,
    /// Services: frontends, backends with their conditions and the policy
    /// that uses them, new flows per service port.
    Services,
    /// NetworkPolicy: each local pod's isolation and compiled rules (or one
    /// pod's: `policy POD_IP`) with the flows and packets each rule allowed
    /// and each policy denied; `policy denied` lists the sampled denied
    /// flows (source, destination, port, policy), `--follow` keeps printing
    /// new ones.
    Policy {
        /// Nothing, a pod's IP, or `denied`.
        args: Vec<String>,
        /// With `denied`: keep printing new denied flows.
        #[arg(long)]
        follow: bool,
    },
    /// Attach or detach pods.
    Pods {
        #[command(subcommand)]
        op: PodOp,
    },
    /// Add or remove peer nodes.
    Peers {
        #[command(subcommand)]
        op: PeerOp,
    },
    /// Stop the daemon cleanly: its XDP program detached, the SNAT ports
    /// it reserved given back. (SIGTERM instead hands the node over to the
    /// next daemon, leaving both in place.)
    Shutdown,
    /// After the last daemon (Sluice leaving the node): detach the XDP
    /// program a handing-over daemon left, give back the reserved SNAT
    /// ports, remove the flow tables. Refused while a daemon runs.
    Cleanup {
        /// YAML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Build a two-node cluster in network namespaces, run Sluice on both
    /// nodes, send traffic between every pod and to an external host, print
    /// a summary, and remove everything.
    Demo,
}

#[derive(Subcommand, Debug)]
enum PodOp {
    /// Create the pod's interface in NETNS and attach it.
    Add {
        name: String,
        ip: String,
        netns: String,
        /// tun, or veth (AF_XDP on the host end).
        #[arg(long, default_value = "tun")]
        kind: String,
        /// The interface's name in the pod.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Rate limit towards the pod, bits per second (with a burst).
        #[arg(long)]
        ingress_rate: Option<u64>,
        /// Bucket size of the ingress limit, bits.
        #[arg(long)]
        ingress_burst: Option<u64>,
        /// Rate limit from the pod, bits per second (with a burst).
        #[arg(long)]
        egress_rate: Option<u64>,
        /// Bucket size of the egress limit, bits.
        #[arg(long)]
        egress_burst: Option<u64>,
    },
    /// Detach the pod (idempotent).
    Del { ip: String },
}

#[derive(Subcommand, Debug)]
enum PeerOp {
    /// Add (or replace) a peer node.
    Add {
        name: String,
        ip: String,
        vtep_mac: String,
        pod_cidrs: String,
    },
    /// Remove a peer node.
    Del { name: String },
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// An eventfd the signal handler writes, to wake the main thread's wait.
static WAKE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; 8 bytes from a live
        // buffer to an eventfd.
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

fn run(config: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: eventfd has no memory preconditions (a failure leaves -1:
    // the main thread then wakes every second instead).
    let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    WAKE_FD.store(wake, Ordering::Relaxed);
    // SAFETY: the handler only stores to atomics and writes an eventfd,
    // both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let d = match Daemon::start(cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sluice: start-up failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("sluice: running");
    let mut d = d;
    let mut taken = false;
    while !SIGNALLED.load(Ordering::Relaxed) && !d.stopping() && !taken {
        d.wait(wake, Duration::from_secs(1));
        taken = d.take_over_requested();
    }
    // A daemon started with admin.take_over (a rolling update's surge
    // pod) asked for the node: it gets it now, and this one waits for its
    // SIGTERM without forwarding (exiting earlier would have its
    // container restarted, to take the node back).
    if taken && !SIGNALLED.load(Ordering::Relaxed) {
        d.hand_over();
        eprintln!("sluice: node handed to the daemon that took over; waiting for SIGTERM");
        while !SIGNALLED.load(Ordering::Relaxed) {
            let mut p = libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd (an invalid fd only makes poll
            // return at once, and the loop sleeps below).
            if unsafe { libc::poll(&mut p, 1, 1000) } < 0 || wake < 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        eprintln!("sluice: stopped");
        return ExitCode::SUCCESS;
    }
    // A signal (kubelet's SIGTERM: a restart or a rolling update) hands
    // the node over to the next daemon; `sluice shutdown` stops cleanly.
    if SIGNALLED.load(Ordering::Relaxed) {
        d.hand_over();
        eprintln!("sluice: stopped, node handed over (XDP program, flows and pods left in place)");
    } else {
        d.join();
        eprintln!("sluice: stopped");
    }
    ExitCode::SUCCESS
}

/// `sluice policy denied --follow`: asks for the denied flows logged
/// since the last ones printed, twice a second, until interrupted.
fn follow_denied(socket: &std::path::Path) -> ExitCode {
    let mut seen: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    loop {
        let after: Vec<String> = seen.iter().map(|(w, s)| format!("{w}:{s}")).collect();
        let line = if after.is_empty() {
            "policy denied".to_string()
        } else {
            format!("policy denied {}", after.join(","))
        };
        match daemon::request(socket, &line) {
            Ok(reply) => {
                let (head, body) = reply.split_once('\n').unwrap_or((&reply, ""));
                if head != "ok" {
                    eprintln!("sluice: {head}");
                    return ExitCode::FAILURE;
                }
                for l in body.lines() {
                    // denied SEQ worker W ...
                    let f: Vec<&str> = l.split_whitespace().collect();
                    if let (Some(seq), Some(w)) = (
                        f.get(1).and_then(|x| x.parse::<u64>().ok()),
                        f.get(3).and_then(|x| x.parse::<u64>().ok()),
                    ) {
                        let e = seen.entry(w).or_insert(seq);
                        *e = (*e).max(seq);
                    }
                    println!("{l}");
                }
            }
            Err(e) => {
                eprintln!("sluice: cannot reach the daemon: {e}");
                return ExitCode::FAILURE;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn admin(socket: &std::path::Path, line: &str) -> ExitCode {
    match daemon::request(socket, line) {
        Ok(reply) => {
            let (head, body) = reply.split_once('\n').unwrap_or((&reply, ""));
            if head == "ok" {
                print!("{body}");
                ExitCode::SUCCESS
            } else {
                eprintln!("sluice: {head}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sluice: cannot reach the daemon: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Control-plane logs (peer added/removed/changed at info, API server
    // trouble at warn) to stderr; RUST_LOG overrides.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    match cli.cmd {
        Cmd::Run { config } => run(&config),
        Cmd::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sluice: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Stats => admin(&cli.socket, "stats"),
        Cmd::Status => admin(&cli.socket, "status"),
        Cmd::Routes => admin(&cli.socket, "routes"),
        Cmd::Conntrack => admin(&cli.socket, "conntrack"),
        Cmd::Services => admin(&cli.socket, "services"),
        Cmd::Policy { args, follow } => match (args.as_slice(), follow) {
            ([d], true) if d == "denied" => follow_denied(&cli.socket),
            (_, true) => {
                eprintln!("sluice: --follow goes with `policy denied`");
                ExitCode::from(2)
            }
            _ => admin(&cli.socket, &format!("policy {}", args.join(" "))),
        },
        Cmd::Shutdown => admin(&cli.socket, "shutdown"),
        Cmd::Cleanup { config } => match Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|c| daemon::cleanup(&c).map_err(|e| e.to_string()))
        {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sluice: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Pods {
            op:
                PodOp::Add {
                    name,
                    ip,
                    netns,
                    kind,
                    ifname,
                    ingress_rate,
                    ingress_burst,
                    egress_rate,
                    egress_burst,
                },
        } => {
            // The daemon checks the limits (a rate needs its burst).
            let mut line = format!("pods add {name} {ip} {netns} {kind} {ifname}");
            for (k, v) in [
                ("ingress_rate", ingress_rate),
                ("ingress_burst", ingress_burst),
                ("egress_rate", egress_rate),
                ("egress_burst", egress_burst),
            ] {
                if let Some(v) = v {
                    line += &format!(" {k}={v}");
                }
            }
            admin(&cli.socket, &line)
        }
        Cmd::Pods {
            op: PodOp::Del { ip },
        } => admin(&cli.socket, &format!("pods del {ip}")),
        Cmd::Peers {
            op:
                PeerOp::Add {
                    name,
                    ip,
                    vtep_mac,
                    pod_cidrs,
                },
        } => admin(
            &cli.socket,
            &format!("peers add {name} {ip} {vtep_mac} {pod_cidrs}"),
        ),
        Cmd::Peers {
            op: PeerOp::Del { name },
        } => admin(&cli.socket, &format!("peers del {name}")),
        Cmd::Demo => match dataplane::demo::run() {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("sluice demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
