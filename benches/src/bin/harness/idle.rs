//! What an idle node costs (issue 17 item 2): the demo topology, node-a's
//! daemon with 2 TUN pods and then with 110 (kubelet's default maximum of
//! pods per node), no traffic. CPU is the daemon's user + system time over
//! the window (`/proc/PID/stat`), as a share of one core. The kernel path
//! has no poll-mode thread: idle, it costs nothing measurable, so the goal
//! is an absolute one (< 2% of a core). A benchmark: nothing is asserted.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use dataplane::daemon;
use dataplane::demo::Topology;

/// The demo's external host.
const EXTERNAL: &str = "192.168.77.100";

/// kubelet's default `maxPods`.
const MAX_PODS: usize = 110;

/// User + system CPU time of process `pid` so far.
fn cpu(pid: u32) -> Result<Duration, String> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// Each thread's (name, CPU time so far).
fn threads(pid: u32) -> Vec<(String, Duration)> {
    let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut v: Vec<_> = d
        .flatten()
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let t = stat_cpu(&e.path().join("stat").to_string_lossy()).ok()?;
            Some((
                format!("{} ({})", comm.trim(), e.file_name().to_string_lossy()),
                t,
            ))
        })
        .collect();
    v.sort();
    v
}

/// User + system time from a `stat` file.
fn stat_cpu(path: &str) -> Result<Duration, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // Fields after the command name (which may hold spaces) in parens.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13
    // after the state (field 3, index 0 here).
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // /proc counts in USER_HZ, 100 on every Linux architecture.
    let hz = 100;
    Ok(Duration::from_micros(
        (ticks(11) + ticks(12)) * 1_000_000 / hz,
    ))
}

/// Share of one core (percent) process `pid` used over `window`.
fn share(pid: u32, window: Duration) -> Result<f64, String> {
    let (c0, t0) = (cpu(pid)?, Instant::now());
    std::thread::sleep(window);
    let (c1, t1) = (cpu(pid)?, Instant::now());
    Ok(100.0 * (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64())
}

/// Returns the Markdown table.
pub fn run(sluice: &Path, smoke: bool) -> Result<String, String> {
    let window = Duration::from_secs(if smoke { 2 } else { 10 });
    let mut t = Topology::build(sluice).map_err(|e| format!("idle topology: {e}"))?;
    let pid = t.daemon_pid(0).ok_or("node-a has no daemon")?;
    let sock = t.sockets.first().cloned().ok_or("node-a has no socket")?;
    let pods = || -> usize {
        daemon::request(&sock, "routes")
            .map(|r| r.lines().filter(|l| l.starts_with("pod ")).count())
            .unwrap_or(0)
    };
    // Let start-up settle (the pods' kernels send their first packets).
    std::thread::sleep(Duration::from_secs(1));
    let few = pods();
    let with_few = share(pid, window)?;
    for i in few..MAX_PODS {
        let name = format!("i{i}");
        t.add_ns(&name).map_err(|e| format!("{name}: {e}"))?;
        let ip = Ipv4Addr::new(10, 244, 1, 10 + i as u8);
        let reply = daemon::request(
            &sock,
            &format!("pods add {name} {ip} {} tun", t.ns_path(&name).display()),
        )
        .map_err(|e| format!("pods add {name}: {e}"))?;
        if !reply.starts_with("ok") {
            return Err(format!("pods add {name}: {reply}"));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let many = pods();
    let before = threads(pid);
    let with_many = share(pid, window)?;
    // Which threads the idle cost is in (printed, not written).
    for (name, t1) in threads(pid) {
        if let Some((_, t0)) = before.iter().find(|(n, _)| *n == name) {
            eprintln!(
                "idle, {many} pods: thread {name}: {:.2}% of a core",
                100.0 * (t1.saturating_sub(*t0)).as_secs_f64() / window.as_secs_f64()
            );
        }
    }
    // A node is rarely silent: probes, DNS, telemetry. Every pod sends one
    // ping a second to the external host (through SNAT), 110 packets a
    // second in all, each answered.
    let secs = (window.as_secs() + 3).to_string();
    let mut pingers = Vec::new();
    for i in 0..many.min(MAX_PODS) {
        let name = if i < few {
            format!("a{}", i + 1)
        } else {
            format!("i{i}")
        };
        let c = std::process::Command::new("ip")
            .args(["netns", "exec", &t.ns(&name), "ping", "-q", "-n", "-i", "1"])
            .args(["-w", &secs, EXTERNAL])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("ping: {e}"))?;
        pingers.push(c);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let with_pings = share(pid, window);
    for mut c in pingers {
        let _ = c.kill();
        let _ = c.wait();
    }
    let with_pings = with_pings?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| TUN pods attached (traffic) | Sluice daemon CPU, % of one core over {} s idle | goal |",
        window.as_secs()
    );
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(out, "| {few} | {with_few:.2} | < 2 |");
    let _ = writeln!(out, "| {many} | {with_many:.2} | < 2 |");
    let _ = writeln!(
        out,
        "| {many}, each pinging the external host once a second | {with_pings:.2} | < 2 |"
    );
    Ok(out)
}
