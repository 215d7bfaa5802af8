//! The side-by-side harness (issue 6): Sluice against the Linux kernel
//! path that Flannel and Calico configure, in the same run, on the same
//! cores, with the same traffic. Prints one table and writes it, with the
//! command and the machine, to `benches/RESULTS.md`.
//!
//! ```text
//!   pod ns                 node ns (under test, core 1)            remote ns
//!   eth0 10.244.1.2 ── slp-1-2 ─[ Sluice | kernel ]─ up0 192.168.80.1 ── r0 192.168.80.2
//!   pktgen (AF_XDP)                                                     pktgen (AF_XDP)
//! ```
//!
//! The remote namespace plays the remote node (VTEP 192.168.80.2, pod CIDR
//! 10.244.2.0/24) and the gateway to the outside (198.18.0.1). One thread
//! of this process, pinned to core 0, generates on one end and counts on
//! the other (`pktgen::run_loop`); the node under test has core 1 to
//! itself: Sluice's worker is pinned there, and the kernel path's receive
//! processing is steered there with RPS. "CPU" is core 1's busy time
//! plus core 0's softirq time (/proc/stat) per million packets delivered:
//! a veth receives on the core that transmitted into it, so the first
//! step of the node's ingress (the pod's or uplink's veth receive, and for
//! Sluice its XDP program and the copy into its AF_XDP ring) runs in
//! softirq on the generator's core. In turn the sink's receive runs on
//! core 1 for both dataplanes.
//!
//!     cargo build --release -p dataplane --bin sluice -p sluice-benches --bin harness
//!     sudo target/release/harness                 # full run, writes benches/RESULTS.md
//!     sudo target/release/harness --smoke         # seconds; what CI runs
//!
//! A benchmark, not a test: nothing here asserts a time.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use dataplane::daemon;
use dataplane::demo::Topology;
use dataplane::netns;
use dataplane::port::xdp::{SteerConfig, SteerProgram, XdpPort};
use sluice_benches::netbench::{self, KernelPath, Spread, median, sh};
use sluice_benches::pktgen::{Generator, Profile, Sink, VxlanOuter, run_loop};
use sluice_benches::report;
use sluice_benches::scaling;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 80, 1);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 80, 2);
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const NODE_VTEP: [u8; 6] = [0x0a, 0x58, 192, 168, 80, 1];
const REMOTE_VTEP: [u8; 6] = [0x0a, 0x58, 192, 168, 80, 2];
/// The node under test's core; the generator and sink use the other.
const NODE_CORE: usize = 1;
const GEN_CORE: usize = 0;
/// RESULTS.md keeps what follows this line when the harness rewrites it.
const ANALYSIS_MARKER: &str = "<!-- analysis: kept when the harness rewrites this file -->";
/// The pod's host-side interface (Sluice's name for 10.244.1.2's pair).
const HOST_DEV: &str = "slp-1-2";

#[derive(Parser, Debug)]
#[command(name = "harness", about = "Sluice vs the Linux kernel path")]
struct Cli {
    /// Runs per figure (the median is reported with the range).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of traffic per measurement.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// A few seconds in all, small flow counts, no file written: CI's
    /// check that the harness still runs. Figures are meaningless.
    #[arg(long)]
    smoke: bool,
    /// Where to write the results (default benches/RESULTS.md; not in
    /// smoke mode unless given).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the TCP (iperf3) scenario.
    #[arg(long)]
    no_tcp: bool,
    /// Skip the in-memory scaling runs.
    #[arg(long)]
    no_scaling: bool,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Only this dataplane (sluice or kernel), e.g. to profile one.
    #[arg(long)]
    dataplane: Option<String>,
}

mod bench;
mod idle;
mod restart;
mod services;

use bench::{Accounting, Bench, Dataplane, Measure, scenarios};

#[derive(Debug, Default)]
struct Row {
    /// One measure per run, in run order (empty: the side was not run).
    runs: Vec<Measure>,
}

impl Row {
    fn values(&self, f: impl Fn(&Measure) -> f64) -> Vec<f64> {
        self.runs.iter().map(f).collect()
    }

    fn spread(&self, f: impl Fn(&Measure) -> f64) -> Option<Spread> {
        median(self.values(f))
    }
}

/// The TCP scenario's row name (`--only` matches it like the others).
const TCP_NAME: &str = "TCP bulk (iperf3), pod -> pod on another node";

/// iperf3 Gbit/s per run for (kernel, Sluice); a side not selected has no
/// runs. An iperf3 error fails the whole run.
/// One iperf3 run: Gbit/s, and the machine's core-seconds per GB moved
/// over the run (every process: both pods' iperf3 and their stacks, the
/// nodes' kernels and Sluice's workers).
#[derive(Clone, Copy, Debug)]
struct TcpRun {
    gbps: f64,
    cpu_per_gb: f64,
}

/// Busy time of all CPUs so far, in core-seconds (`/proc/stat`).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0.0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle, iowait.
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, x)| x)
        .sum();
    busy as f64 / 100.0
}

/// The TCP loads of iperf3 runs: one stream and four (`-P 4`) flat out,
/// and one stream at a fixed 1 Gbit/s (`-b 1G`), where the CPU per GB of
/// a light load shows (issue 17 item 2: a poll-mode worker's idle spin
/// costs there, not at full rate).
#[derive(Clone, Copy, Debug)]
struct Load {
    streams: u32,
    rate: Option<&'static str>,
}

const LOADS: [Load; 3] = [
    Load {
        streams: 1,
        rate: None,
    },
    Load {
        streams: 4,
        rate: None,
    },
    Load {
        streams: 1,
        rate: Some("1G"),
    },
];

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} stream(s)", self.streams)?;
        match self.rate {
            Some(r) => write!(f, " at {r}bit/s offered"),
            None => Ok(()),
        }
    }
}

/// Waits (at most 10 s) until the machine is quiet: under 5% of one core
/// busy over 250 ms. Tearing a topology down leaves the kernel busy for
/// seconds (network namespace cleanup runs in a kworker), which the next
/// run's whole-machine CPU figure would otherwise count: at 1 Gbit/s
/// offered it outweighed the flow itself. Returns the last sample's busy
/// rate, in cores.
fn wait_quiet() -> f64 {
    let window = Duration::from_millis(250);
    let mut rate = 0.0;
    for _ in 0..40 {
        let b0 = machine_busy();
        std::thread::sleep(window);
        rate = (machine_busy() - b0) / window.as_secs_f64();
        if rate < 0.05 {
            break;
        }
    }
    rate
}

fn iperf_run(
    client: &str,
    server: &str,
    addr: Ipv4Addr,
    secs: u32,
    load: Load,
) -> Result<TcpRun, String> {
    wait_quiet();
    let b0 = machine_busy();
    let (gbps, _) = netbench::iperf(client, server, addr, false, secs, load.streams, load.rate)?;
    let cpu = machine_busy() - b0;
    let gb = gbps * f64::from(secs) / 8.0;
    Ok(TcpRun {
        gbps,
        cpu_per_gb: if gb > 0.0 { cpu / gb } else { 0.0 },
    })
}

/// Node c (kernel, Flannel-style) joined to a TUN topology as node-a's
/// peer; waits until pod a1 reaches pod c1.
fn join_node_c(t: &mut Topology) -> Result<(), String> {
    t.add_flannel_node_c().map_err(|e| format!("node c: {e}"))?;
    let sock = t.sockets.first().cloned().ok_or("node-a has no socket")?;
    let r = daemon::request(
        &sock,
        "peers add node-c 192.168.77.3 0a:5e:00:00:00:03 10.244.3.0/24",
    )
    .map_err(|e| format!("peers add node-c: {e}"))?;
    if !r.starts_with("ok") {
        return Err(format!("peers add node-c: {r}"));
    }
    for _ in 0..50 {
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                &t.ns("a1"),
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "10.244.3.2",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(());
        }
    }
    Err("pod a1 never reached pod c1 on the kernel node".into())
}

/// The TCP runs of one kind of Sluice node, per load (index into
/// [`LOADS`]): with a Sluice peer, then to and from a kernel (Flannel)
/// node.
#[derive(Default)]
struct SluiceTcp {
    sluice: [Vec<TcpRun>; 3],
    to_kernel: [Vec<TcpRun>; 3],
    from_kernel: [Vec<TcpRun>; 3],
}

fn sluice_tcp(
    sluice: &Path,
    mode: &'static str,
    secs: u32,
    into: &mut SluiceTcp,
) -> Result<(), String> {
    let (b1, c1, a1) = (
        Ipv4Addr::new(10, 244, 2, 2),
        Ipv4Addr::new(10, 244, 3, 2),
        Ipv4Addr::new(10, 244, 1, 2),
    );
    let mut t = Topology::build_tun_with_mode(sluice, mode).map_err(|e| e.to_string())?;
    join_node_c(&mut t)?;
    for (i, p) in LOADS.into_iter().enumerate() {
        let run = |c: &str, s: &str, addr| {
            iperf_run(&t.ns(c), &t.ns(s), addr, secs, p)
                .map_err(|e| format!("Sluice {mode} {c} -> {s}, {p}: {e}"))
        };
        into.sluice[i].push(run("a1", "b1", b1)?);
        into.to_kernel[i].push(run("a1", "c1", c1)?);
        into.from_kernel[i].push(run("c1", "a1", a1)?);
    }
    Ok(())
}

/// iperf3 runs for the kernel path (per stream count) and for Sluice nodes
/// with the AF_XDP uplink and (where the kernel has UDP-tunnel GSO on TAP)
/// the offload uplink; a side not selected has no runs. An iperf3 error
/// fails the whole run.
fn tcp_runs(
    sluice: &Path,
    runs: usize,
    secs: u32,
    sides: [bool; 2],
) -> Result<([Vec<TcpRun>; 3], SluiceTcp, SluiceTcp), String> {
    let b1 = Ipv4Addr::new(10, 244, 2, 2);
    let (mut k, mut s, mut o) = (
        [Vec::new(), Vec::new(), Vec::new()],
        SluiceTcp::default(),
        SluiceTcp::default(),
    );
    let offload = dataplane::port::tap::probe_tunnel_gso().is_ok();
    for run in 0..runs {
        if sides[1] {
            sluice_tcp(sluice, "afxdp", secs, &mut s)
                .map_err(|e| format!("TCP run {}: {e}", run + 1))?;
            if offload {
                sluice_tcp(sluice, "offload", secs, &mut o)
                    .map_err(|e| format!("TCP run {}: {e}", run + 1))?;
            }
        }
        if sides[0] {
            let kp = KernelPath::build()?;
            for (i, p) in LOADS.into_iter().enumerate() {
                k[i].push(
                    iperf_run(&kp.name("a1"), &kp.name("b1"), b1, secs, p)
                        .map_err(|e| format!("TCP run {} kernel, {p}: {e}", run + 1))?,
                );
            }
        }
    }
    Ok((k, s, o))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = sh(&["uname", "-r"]).unwrap_or_default();
    format!(
        "{cores} vCPUs ({cpu}), {:.0} GiB, Linux {}",
        mem_kb as f64 / 1048576.0,
        kernel.trim()
    )
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harness: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP, removes what the harness built (children,
/// namespaces, temp dirs) and exits: an interrupted run leaves nothing
/// behind. (Errors clean up through Drop; signals do not unwind.)
fn clean_up_on_signal() -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let gone = netbench::cleanup_own();
            eprintln!(
                "harness: signal {sig}: stopped, removed {} namespaces",
                gone.len()
            );
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    clean_up_on_signal()?;
    let sluice = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("sluice");
    if !sluice.exists() {
        return Err(format!(
            "{} not found: cargo build [--release] -p dataplane --bin sluice",
            sluice.display()
        ));
    }
    let (runs, secs) = if cli.smoke {
        (1, 0.3)
    } else {
        (cli.runs.max(1), cli.secs)
    };
    let mut list = scenarios(cli.smoke);
    if let Some(o) = &cli.only {
        list.retain(|s| s.name.contains(o.as_str()));
    }
    let sides = [Dataplane::Kernel, Dataplane::Sluice].map(|dp| {
        cli.dataplane
            .as_deref()
            .is_none_or(|d| dp.label().eq_ignore_ascii_case(d))
    });
    let run_tcp = !cli.no_tcp
        && cli.only.as_deref().is_none_or(|o| TCP_NAME.contains(o))
        && sides.iter().any(|s| *s);
    if run_tcp && which("iperf3").is_none() {
        return Err("iperf3 not found (the TCP scenario; --no-tcp skips it)".into());
    }
    let sel = report::Selection {
        smoke: cli.smoke,
        partial: cli.only.is_some() || cli.dataplane.is_some() || cli.no_tcp || cli.no_scaling,
    };
    let default_out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md");
    // Decided before any traffic: a refused target fails at once.
    let target = report::results_target(cli.out.as_deref(), &default_out, &sel)?;
    let mut rows: Vec<[Row; 2]> = list.iter().map(|_| Default::default()).collect();
    // Runs outermost, the two dataplanes alternating: slow drift in the
    // machine hits both alike, and each run's pair gives one ratio.
    for run in 0..runs {
        for (i, sc) in list.iter().enumerate() {
            for (j, dp) in [Dataplane::Kernel, Dataplane::Sluice]
                .into_iter()
                .enumerate()
            {
                if !sides[j] {
                    continue;
                }
                let mut b = Bench::build(dp, &sluice)?;
                let m = b.measure(sc, secs)?;
                eprintln!(
                    "run {} {:<55} {:<6} {:.3} Mpps sent {} got {} cpu {:.3} s/Mpkt half-load loss {} p50 {:.0} us{}",
                    run + 1,
                    sc.name,
                    dp.label(),
                    m.pps / 1e6,
                    m.sent,
                    m.received,
                    m.cpu_per_mpkt,
                    m.half_loss,
                    m.p50_us,
                    [m.accounting, m.half_accounting]
                        .iter()
                        .flatten()
                        .map(|a| format!(
                            " [sluice rx {} kernel_dropped {} dropped {} tx {}]",
                            a.rx, a.kernel_dropped, a.dropped, a.tx
                        ))
                        .collect::<String>()
                );
                let what = format!("run {} {} {}", run + 1, sc.name, dp.label());
                report::require_delivery(&what, m.received)?;
                report::require_delivery(
                    &format!("{what} at half rate"),
                    m.half_sent.saturating_sub(m.half_loss),
                )?;
                if let Some(r) = rows.get_mut(i).and_then(|r| r.get_mut(j)) {
                    r.runs.push(m);
                }
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | dataplane | Mpps delivered | Gbit/s (pod frames) | loss at max | loss at half rate | p50 / p99 latency at half rate, us | node CPU, core-s per Mpkt | Sluice/kernel pps (per-run ratios) | Sluice/kernel CPU per packet (per-run ratios) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for (sc, pair) in list.iter().zip(&rows) {
        let [k, s] = pair;
        for (dp, r) in [(Dataplane::Kernel, k), (Dataplane::Sluice, s)] {
            let pps = r.spread(|m| m.pps);
            let loss =
                r.spread(|m| m.sent.saturating_sub(m.received) as f64 / m.sent.max(1) as f64);
            let hl: u64 = r.runs.iter().map(|m| m.half_loss).sum();
            let hs: u64 = r.runs.iter().map(|m| m.half_sent).sum();
            let (ratio, cpu_ratio) = if dp == Dataplane::Sluice {
                let pr = report::paired_ratio(&s.values(|m| m.pps), &k.values(|m| m.pps));
                let cr = report::paired_ratio(
                    &s.values(|m| m.cpu_per_mpkt),
                    &k.values(|m| m.cpu_per_mpkt),
                );
                (
                    format!("**{}**", report::fmt_spread(pr, 1.0, 2)),
                    report::fmt_spread(cr, 1.0, 2),
                )
            } else {
                (String::new(), String::new())
            };
            let half_loss = if r.runs.is_empty() {
                "n/a".to_string()
            } else {
                format!("{hl} of {hs}")
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {half_loss} | {} / {} | {} | {ratio} | {cpu_ratio} |",
                sc.name,
                dp.label(),
                report::fmt_spread(pps, 1e-6, 3),
                report::fmt_spread(r.spread(|m| m.gbps), 1.0, 2),
                loss.map_or("n/a".into(), |l| format!("{:.1}%", l.0 * 100.0)),
                report::fmt_median(r.spread(|m| m.p50_us), 0),
                report::fmt_median(r.spread(|m| m.p99_us), 0),
                report::fmt_spread(r.spread(|m| m.cpu_per_mpkt), 1.0, 2),
            );
        }
    }
    // Where Sluice's losses went, at full rate (sums over runs).
    let mut acct = String::new();
    let _ = writeln!(
        acct,
        "| scenario | generator sent | Sluice received | dropped by the kernel before Sluice read them (AF_XDP RX ring) | dropped by Sluice (typed reasons) | sent by Sluice | sink received |"
    );
    let _ = writeln!(acct, "|---|---|---|---|---|---|---|");
    for (sc, [_, s]) in list.iter().zip(&rows) {
        if s.runs.is_empty() {
            continue;
        }
        let sum = |f: &dyn Fn(&Measure) -> u64| s.runs.iter().map(f).sum::<u64>();
        let a = |f: fn(&Accounting) -> u64| sum(&|m| m.accounting.as_ref().map_or(0, f));
        let _ = writeln!(
            acct,
            "| {} | {} | {} | {} | {} | {} | {} |",
            sc.name,
            sum(&|m| m.sent),
            a(|a| a.rx),
            a(|a| a.kernel_dropped),
            a(|a| a.dropped),
            a(|a| a.tx),
            sum(&|m| m.received)
        );
    }
    if !list.is_empty() {
        println!("{out}\n{acct}");
    }
    let tcp = if run_tcp {
        let t = if cli.smoke { 1 } else { 5 };
        let (k, s, o) = tcp_runs(&sluice, runs, t, sides)?;
        let g = |v: &[TcpRun]| v.iter().map(|r| r.gbps).collect::<Vec<_>>();
        let c = |v: &[TcpRun]| v.iter().map(|r| r.cpu_per_gb).collect::<Vec<_>>();
        let mut line = String::new();
        for (i, p) in LOADS.into_iter().enumerate() {
            let k = &k[i];
            let row = |label: &str, v: &[TcpRun]| {
                format!(
                    "| {TCP_NAME}, {p} | {label} | {} | {} | **{}** | {} |\n",
                    report::fmt_spread(median(g(v)), 1.0, 2),
                    report::fmt_spread(median(c(v)), 1.0, 2),
                    report::fmt_spread(report::paired_ratio(&g(v), &g(k)), 1.0, 2),
                    report::fmt_spread(report::paired_ratio(&c(v), &c(k)), 1.0, 2),
                )
            };
            line += &format!(
                "| {TCP_NAME}, {p} | kernel vxlan <-> kernel vxlan | {} | {} | | |\n",
                report::fmt_spread(median(g(k)), 1.0, 2),
                report::fmt_spread(median(c(k)), 1.0, 2),
            );
            for (name, v) in [
                ("AF_XDP uplink (copy mode)", &s),
                ("offload uplink (TAP, UDP-tunnel GSO)", &o),
            ] {
                if v.sluice[i].is_empty() {
                    continue;
                }
                line += &row(&format!("Sluice <-> Sluice, {name}"), &v.sluice[i]);
                line += &row(
                    &format!("Sluice -> kernel (Flannel) node, {name}"),
                    &v.to_kernel[i],
                );
                line += &row(
                    &format!("kernel (Flannel) node -> Sluice, {name}"),
                    &v.from_kernel[i],
                );
            }
        }
        let line = line.trim_end().to_string();
        println!("{line}");
        Some(line)
    } else {
        None
    };
    // Services against kube-proxy's rule sets (three nodes under test:
    // its own table). `--dataplane` selects the two-way comparison only.
    let svc = if cli.dataplane.is_none() {
        let t = services::run(&sluice, runs, secs, cli.smoke, cli.only.as_deref())?;
        if !t.is_empty() {
            println!("{t}");
        }
        Some(t).filter(|t| !t.is_empty())
    } else {
        None
    };
    // The forwarding gap of daemon restarts (the demo topology).
    let restarts =
        if cli.dataplane.is_none() && cli.only.as_deref().is_none_or(|o| "restart".contains(o)) {
            let t = restart::run(&sluice, if cli.smoke { 1 } else { 5 }, cli.smoke)?;
            println!("{t}");
            Some(t)
        } else {
            None
        };
    // What an idle node with kubelet's maximum of pods costs.
    let idle = if cli.dataplane.is_none() && cli.only.as_deref().is_none_or(|o| "idle".contains(o))
    {
        let t = idle::run(&sluice, cli.smoke)?;
        println!("{t}");
        Some(t)
    } else {
        None
    };
    let scale = if cli.no_scaling {
        None
    } else {
        let t = scaling::report(cli.smoke);
        println!("{t}");
        Some(t)
    };
    match &target {
        None => eprintln!(
            "{} not written: only a full run (no --smoke, --only, --dataplane, --no-tcp, --no-scaling) writes it; --out FILE writes elsewhere",
            default_out.display()
        ),
        Some(p) => {
            let cmd: Vec<String> = std::env::args().collect();
            let mut doc = String::new();
            let _ = writeln!(doc, "# Sluice vs the Linux kernel path: results\n");
            let _ = writeln!(
                doc,
                "Written by `benches/src/bin/harness.rs`; see benches/README.md for the topology and what each column means.\n"
            );
            let _ = writeln!(doc, "- Command: `{}`", cmd.join(" "));
            let _ = writeln!(doc, "- Machine: {}", machine());
            let _ = writeln!(
                doc,
                "- Each figure: median of {runs} runs of {secs} s (range in brackets); Sluice and the kernel path alternate within each run. Ratios are taken per run (Sluice's run k against the kernel's run k), then the median of those ratios is given with their range.\n"
            );
            let _ = writeln!(
                doc,
                "## Packets: generator -> node under test -> sink\n\n{out}"
            );
            let _ = writeln!(
                doc,
                "### Where Sluice's packets went (full rate, all runs)\n\n{acct}"
            );
            if let Some(l) = tcp {
                let _ = writeln!(
                    doc,
                    "## TCP through TUN pods\n\nCPU: the whole machine's busy core-seconds over the run (both pods' iperf3 and stacks, both nodes) per GB moved. Ratios per run against the kernel path's run.\n\n| scenario | dataplane | Gbit/s | core-s per GB | Sluice/kernel Gbit/s | Sluice/kernel CPU per GB |\n|---|---|---|---|---|---|\n{l}\n"
                );
            }
            if let Some(t) = svc {
                let _ = writeln!(
                    doc,
                    "## Services: pod -> ClusterIP -> remote pod, against kube-proxy's rules\n\nN Services (one ClusterIP each, UDP port 80, one endpoint each on the remote node); flow k goes to service k % N. Established: every flow sent once before the measurement. New flows: every packet opens a flow. CPU: the node's core-seconds per million packets delivered, as above.\n\n{t}"
                );
            }
            if let Some(t) = restarts {
                let _ = writeln!(
                    doc,
                    "## Restarts: the forwarding gap\n\nThe demo topology (two Sluice nodes, an external host); pod a1 on node-a pings pod b1 across VXLAN and the external host through SNAT every 10 ms while node-a's daemon restarts. Gap: the longest run of unanswered pings times 10 ms. Goals (issue 16): < 200 ms for kill -9 and an immediate start, < 50 ms for a graceful restart.\n\n{t}"
                );
            }
            if let Some(t) = idle {
                let _ = writeln!(
                    doc,
                    "## An idle node: CPU with kubelet's maximum of pods\n\nThe demo topology, no traffic; node-a's daemon with its 2 TUN pods, then with 110 (kubelet's default `maxPods`). CPU: the daemon's user + system time over the window. The kernel path has no poll-mode thread (idle, it costs nothing measurable), so the goal (issue 17) is absolute: < 2% of a core.\n\n{t}"
                );
            }
            if let Some(t) = scale {
                let _ = writeln!(doc, "## Scaling (worker alone, in memory)\n\n{t}");
            }
            // The written analysis below the marker survives a full rerun.
            if let Ok(old) = std::fs::read_to_string(p)
                && let Some(at) = old.find(ANALYSIS_MARKER)
            {
                doc.push_str(old.get(at..).unwrap_or_default());
            }
            std::fs::write(p, doc).map_err(|e| format!("{}: {e}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|f| f.exists())
    })
}
