//! The forwarding gap of a daemon restart (issue 16 item 1c): in the demo
//! topology (two Sluice nodes and an external host, release binary), pod
//! a1 on node-a pings pod b1 on node-b across VXLAN and the external host
//! through SNAT, every 10 ms, while node-a's daemon is restarted: killed
//! with SIGKILL and started again at once, restarted gracefully (SIGTERM,
//! then start), and with the next daemon started first (it waits for the
//! node lock; SIGTERM to the old one), and as a rolling update with a
//! surge pod does (the next daemon, with `admin.take_over`, asks for the
//! node; SIGTERM to the old one once the new one serves). The gap is the
//! longest run of unanswered pings times the interval: the time without
//! forwarding, at 10 ms resolution. A benchmark, not a test: nothing is asserted.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dataplane::demo::Topology;

const INTERVAL_MS: u64 = 10;

#[derive(Clone, Copy)]
enum How {
    Kill9,
    Graceful,
    NewFirst,
    TakeOver,
}

impl How {
    fn label(self) -> &'static str {
        match self {
            How::Kill9 => "kill -9, next daemon started at once",
            How::Graceful => "SIGTERM (hand-over), then start",
            How::NewFirst => "next daemon started first, then SIGTERM",
            How::TakeOver => "next daemon takes over (admin.take_over: a surge pod)",
        }
    }
}

/// Starts `ping` from pod `from` to `to`, `count` probes every 10 ms.
fn ping(t: &Topology, from: &str, to: &str, count: u64) -> Result<std::process::Child, String> {
    Command::new("ip")
        .args(["netns", "exec", &t.ns(from), "ping", "-n", "-i"])
        .arg(format!("0.{INTERVAL_MS:03}"))
        .args(["-W", "1", "-c", &count.to_string(), to])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("ping: {e}"))
}

/// (longest run of unanswered probes, answered) from ping's output.
fn gap(out: &str, count: u64) -> (u64, u64) {
    let mut got = vec![false; count as usize + 2];
    for l in out.lines() {
        if let Some(seq) = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("icmp_seq="))
            .and_then(|s| s.parse::<usize>().ok())
            && let Some(g) = got.get_mut(seq)
        {
            *g = true;
        }
    }
    let (mut longest, mut run) = (0u64, 0u64);
    for g in got.iter().take(count as usize + 1).skip(1) {
        if *g {
            run = 0;
        } else {
            run += 1;
            longest = longest.max(run);
        }
    }
    (longest, got.iter().filter(|g| **g).count() as u64)
}

/// Runs each restart kind `runs` times; returns the Markdown table.
pub fn run(sluice: &Path, runs: usize, smoke: bool) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| uplink | restart of node-a's daemon | path (ping from pod a1 every {INTERVAL_MS} ms) | gap, ms: median [range] of {runs} | pings lost, all runs |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    run_mode(sluice, runs, smoke, None, &mut out)?;
    if dataplane::port::tap::probe_tunnel_gso().is_ok() {
        run_mode(sluice, runs, smoke, Some("offload"), &mut out)?;
    }
    Ok(out)
}

/// The rows of [`run`] for nodes in uplink mode `mode` (`None`: the
/// default, AF_XDP).
fn run_mode(
    sluice: &Path,
    runs: usize,
    smoke: bool,
    mode: Option<&'static str>,
    out: &mut String,
) -> Result<(), String> {
    let mut t = match mode {
        Some(m) => Topology::build_with_mode(sluice, m),
        None => Topology::build(sluice),
    }
    .map_err(|e| format!("restart topology: {e}"))?;
    let uplink = mode.unwrap_or("afxdp (default)");
    let count = if smoke { 150 } else { 300 };
    for how in [How::Kill9, How::Graceful, How::NewFirst, How::TakeOver] {
        let mut gaps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut lost = [0u64; 2];
        for run in 0..runs {
            let pings = [
                ping(&t, "a1", "10.244.2.2", count)?,
                ping(&t, "a1", "192.168.77.100", count)?,
            ];
            std::thread::sleep(Duration::from_millis(count * INTERVAL_MS / 3));
            let r = match how {
                How::Kill9 => t.kill_and_restart_at_once(0, sluice),
                How::Graceful => t.graceful_restart(0, sluice, false),
                How::NewFirst => t.graceful_restart(0, sluice, true),
                How::TakeOver => t.take_over_restart(0, sluice),
            };
            r.map_err(|e| format!("{} (run {run}): {e}", how.label()))?;
            for (i, p) in pings.into_iter().enumerate() {
                let o = p.wait_with_output().map_err(|e| format!("ping: {e}"))?;
                let (g, answered) = gap(&String::from_utf8_lossy(&o.stdout), count);
                eprintln!(
                    "restart {} run {run} path {i}: gap {} ms, {answered} of {count} answered",
                    how.label(),
                    g * INTERVAL_MS
                );
                gaps[i].push((g * INTERVAL_MS) as f64);
                lost[i] += count - answered;
            }
        }
        for (i, path) in [
            "across VXLAN to pod b1 (node-b)",
            "through SNAT to the external host",
        ]
        .iter()
        .enumerate()
        {
            let _ = writeln!(
                out,
                "| {uplink} | {} | {path} | {} | {} |",
                how.label(),
                sluice_benches::report::fmt_spread(
                    sluice_benches::netbench::median(gaps[i].clone()),
                    1.0,
                    0
                ),
                lost[i]
            );
        }
    }
    // Where the last restart's time went (the daemons' own log lines:
    // the old one's stop, the new one's start-up phases).
    let log = t.daemon_log(0);
    let lines: Vec<&str> = log.lines().collect();
    let from = lines
        .iter()
        .rposition(|l| l.contains("stop: workers stopped"))
        .unwrap_or(0);
    for l in lines.iter().skip(from).filter(|l| {
        ["start-up", "holding", "stop", "AF_XDP"]
            .iter()
            .any(|k| l.contains(k))
    }) {
        eprintln!("node-a: {l}");
    }
    // Where the last restart's time went (printed, not written): node-a's
    // daemon log, its start-up phases and the hand-over.
    if let Some(log) = t
        .sockets
        .first()
        .and_then(|s| std::fs::read_to_string(s.with_extension("log")).ok())
    {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("start-up")
                    || l.contains("handed over")
                    || l.contains("mode ")
                    || l.contains("bound at")
                    || l.contains("TAP ready")
            })
            .collect();
        for l in lines.iter().skip(lines.len().saturating_sub(16)) {
            eprintln!("restart ({uplink}), node-a: {l}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::gap;

    #[test]
    fn the_gap_is_the_longest_run_of_missing_replies() {
        let out = "64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.1 ms\n\
                   64 bytes from 10.0.0.1: icmp_seq=2 ttl=64 time=0.1 ms\n\
                   64 bytes from 10.0.0.1: icmp_seq=6 ttl=64 time=0.1 ms\n\
                   64 bytes from 10.0.0.1: icmp_seq=8 ttl=64 time=0.1 ms\n";
        assert_eq!(gap(out, 8), (3, 4));
        assert_eq!(gap(out, 10), (3, 4), "a tail of losses counts too");
        assert_eq!(gap("", 5), (5, 0));
    }
}
