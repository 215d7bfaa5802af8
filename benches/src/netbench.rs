//! Pieces the harness (`src/bin/harness.rs`) shares: running commands,
//! the two-node kernel vxlan path configured as Flannel configures it,
//! iperf3 between namespaces, the CPU time of one core, and medians.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

/// Runs a command; its stdout, or an error naming it with its stderr.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Prefixes of everything this process creates: the harness's benches
/// (`slh`), the demo topology for TCP (`sld`) and the kernel path (`kp`),
/// each followed by the process id.
const OWN_PREFIXES: [&str; 3] = ["slh", "sld", "kp"];

/// Removes what this process built, for a harness stopped by a signal
/// (Drop does not run then): stops its child processes (Sluice daemons,
/// iperf3), deletes its namespaces (their links go with them) and its
/// directories under the temp dir. Returns the namespaces deleted.
pub fn cleanup_own() -> Vec<String> {
    let pid = std::process::id();
    let own = |name: &str| {
        OWN_PREFIXES
            .iter()
            .any(|p| name.starts_with(&format!("{p}{pid}-")))
    };
    let _ = Command::new("pkill")
        .args(["-TERM", "-P", &pid.to_string()])
        .output();
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("pkill")
        .args(["-KILL", "-P", &pid.to_string()])
        .output();
    let mut deleted = Vec::new();
    let list = sh(&["ip", "netns", "list"]).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if own(name) && sh(&["ip", "netns", "del", name]).is_ok() {
            deleted.push(name.to_string());
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for e in dir.flatten() {
            if own(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    deleted
}

/// The kernel path for TCP: two namespaces joined by a veth, each a node with
/// flannel.1 (VNI 1, port 8472, permanent neighbour + FDB, onlink route)
/// and one routed pod. Removed on drop.
#[derive(Debug)]
pub struct KernelPath {
    ns: Vec<String>,
}

impl Drop for KernelPath {
    fn drop(&mut self) {
        for n in self.ns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

impl KernelPath {
    /// Namespace name of `a`, `b` (nodes), `a1`, `b1` (pods).
    pub fn name(&self, tag: &str) -> String {
        format!("kp{}-{tag}", std::process::id())
    }

    /// Builds both nodes and their pods.
    pub fn build() -> Result<KernelPath, String> {
        let mut k = KernelPath { ns: Vec::new() };
        for tag in ["a", "b", "a1", "b1"] {
            let n = k.name(tag);
            sh(&["ip", "netns", "add", &n])?;
            k.ns.push(n.clone());
            sh(&["ip", "-n", &n, "link", "set", "lo", "up"])?;
        }
        let (a, b) = (k.name("a"), k.name("b"));
        sh(&[
            "ip", "-n", &a, "link", "add", "up-a", "type", "veth", "peer", "name", "up-b", "netns",
            &b,
        ])?;
        for (node, dev, ip, cidr, peer_ip, peer_cidr, mac, peer_mac, pod, n) in [
            (
                &a,
                "up-a",
                "192.168.78.1",
                "10.244.1",
                "192.168.78.2",
                "10.244.2",
                "0a:5e:00:00:01:01",
                "0a:5e:00:00:01:02",
                k.name("a1"),
                1,
            ),
            (
                &b,
                "up-b",
                "192.168.78.2",
                "10.244.2",
                "192.168.78.1",
                "10.244.1",
                "0a:5e:00:00:01:02",
                "0a:5e:00:00:01:01",
                k.name("b1"),
                2,
            ),
        ] {
            let _ = n;
            let ipn = |args: &[&str]| -> Result<String, String> {
                let mut v = vec!["ip", "-n", node.as_str()];
                v.extend_from_slice(args);
                sh(&v)
            };
            ipn(&["addr", "add", &format!("{ip}/24"), "dev", dev])?;
            ipn(&["link", "set", dev, "up"])?;
            sh(&[
                "ip",
                "netns",
                "exec",
                node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])?;
            ipn(&[
                "link",
                "add",
                "flannel.1",
                "address",
                mac,
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                ip,
                "dev",
                dev,
                "dstport",
                "8472",
                "nolearning",
            ])?;
            ipn(&["link", "set", "flannel.1", "mtu", "1450", "up"])?;
            ipn(&["addr", "add", &format!("{cidr}.0/32"), "dev", "flannel.1"])?;
            ipn(&[
                "route",
                "add",
                &format!("{peer_cidr}.0/24"),
                "via",
                &format!("{peer_cidr}.0"),
                "dev",
                "flannel.1",
                "onlink",
            ])?;
            ipn(&[
                "neigh",
                "add",
                &format!("{peer_cidr}.0"),
                "lladdr",
                peer_mac,
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ])?;
            sh(&[
                "bridge",
                "-n",
                node,
                "fdb",
                "append",
                peer_mac,
                "dev",
                "flannel.1",
                "dst",
                peer_ip,
            ])?;
            ipn(&[
                "link", "add", "v-pod", "type", "veth", "peer", "name", "eth0", "netns", &pod,
            ])?;
            ipn(&["addr", "add", &format!("{cidr}.1/24"), "dev", "v-pod"])?;
            ipn(&["link", "set", "v-pod", "mtu", "1450", "up"])?;
            sh(&[
                "ip",
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{cidr}.2/24"),
                "dev",
                "eth0",
            ])?;
            sh(&["ip", "-n", &pod, "link", "set", "eth0", "mtu", "1450", "up"])?;
            sh(&[
                "ip",
                "-n",
                &pod,
                "route",
                "add",
                "default",
                "via",
                &format!("{cidr}.1"),
            ])?;
        }
        Ok(k)
    }
}

/// One iperf3 measurement from namespace `client` to a server in `server`
/// at `addr`: TCP: (Gbit/s received, segments the sender retransmitted);
/// UDP: (Gbit/s received, packets per second received). `streams` TCP
/// connections in parallel (`-P`), each offered `rate` (`-b`, e.g. "1G")
/// if given, else as fast as they go.
pub fn iperf(
    client: &str,
    server: &str,
    addr: Ipv4Addr,
    udp64: bool,
    secs: u32,
    streams: u32,
    rate: Option<&str>,
) -> Result<(f64, f64), String> {
    let mut srv = Command::new("ip")
        .args([
            "netns", "exec", server, "taskset", "-c", "0", "iperf3", "-s", "-1", "-J",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));
    let t = secs.to_string();
    let a = addr.to_string();
    let mut args = vec![
        "ip", "netns", "exec", client, "taskset", "-c", "0", "iperf3", "-c", &a, "-t", &t, "-J",
    ];
    if udp64 {
        // 22-byte payload: 14 + 20 + 8 + 22 = a 64-byte frame on the pod link.
        args.extend_from_slice(&["-u", "-l", "22", "-b", "0"]);
    }
    let p = streams.max(1).to_string();
    if streams > 1 {
        args.extend_from_slice(&["-P", &p]);
    }
    if let Some(r) = rate {
        // Offered load, per stream.
        args.extend_from_slice(&["-b", r]);
    }
    let out = sh(&args);
    let _ = srv.wait();
    parse_iperf(&out?, udp64)
}

/// iperf3's `-J` report as (Gbit/s, packets per second or retransmits).
/// A report carrying an error, without the figure, or with nothing
/// delivered is an error: it never becomes 0 Gbit/s in a median.
pub fn parse_iperf(json: &str, udp64: bool) -> Result<(f64, f64), String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("iperf3 output is not JSON: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!("iperf3: {e}"));
    }
    let end = &v["end"];
    let sum = if udp64 {
        &end["sum"]
    } else {
        &end["sum_received"]
    };
    let bps = sum["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("iperf3 report without bits_per_second: {end}"))?;
    if bps <= 0.0 || sum["bytes"].as_f64() == Some(0.0) {
        return Err("iperf3: nothing was delivered".into());
    }
    if udp64 {
        let secs = sum["seconds"].as_f64().unwrap_or(1.0);
        let pkts =
            sum["packets"].as_f64().unwrap_or(0.0) - sum["lost_packets"].as_f64().unwrap_or(0.0);
        Ok((bps / 1e9, pkts / secs))
    } else {
        let retrans = end["sum_sent"]["retransmits"].as_f64().unwrap_or(0.0);
        Ok((bps / 1e9, retrans))
    }
}

/// A median with its minimum and maximum.
pub type Spread = (f64, f64, f64);

/// The median of `v` with its range; `None` for no values (a side that did
/// not run has no figure, not a figure of 0).
pub fn median(mut v: Vec<f64>) -> Option<Spread> {
    v.sort_by(|a, b| a.total_cmp(b));
    let (&lo, &hi) = (v.first()?, v.last()?);
    Some((v.get(v.len() / 2).copied()?, lo, hi))
}

/// Busy time of CPU `cpu` since boot (user, nice, system, irq, softirq
/// and steal from /proc/stat; not idle or iowait).
pub fn cpu_busy(cpu: usize) -> Duration {
    cpu_time(cpu, |i| i != 3 && i != 4)
}

/// Time CPU `cpu` spent in softirq context since boot (/proc/stat; sampled
/// per tick unless the kernel has IRQ time accounting).
pub fn cpu_softirq(cpu: usize) -> Duration {
    cpu_time(cpu, |i| i == 6)
}

/// The sum of the /proc/stat fields of `cpu` whose index `want` picks
/// (0 user, 1 nice, 2 system, 3 idle, 4 iowait, 5 irq, 6 softirq, 7 steal).
fn cpu_time(cpu: usize, want: impl Fn(usize) -> bool) -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let tag = format!("cpu{cpu}");
    let ticks: u64 = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(tag.as_str()))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .enumerate()
                .filter(|(i, _)| want(*i))
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // USER_HZ is 100 on every Linux architecture Sluice runs on.
    Duration::from_millis(ticks * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iperf_error_or_empty_report_is_not_a_figure() {
        let ok = r#"{"end": {"sum_received": {"bits_per_second": 2e9, "bytes": 100},
                     "sum_sent": {"retransmits": 3}}}"#;
        assert_eq!(parse_iperf(ok, false), Ok((2.0, 3.0)));
        let err = r#"{"start": {}, "intervals": [], "end": {},
                      "error": "unable to connect to server: Connection refused"}"#;
        assert!(
            parse_iperf(err, false)
                .unwrap_err()
                .contains("Connection refused")
        );
        assert!(parse_iperf(r#"{"end": {}}"#, false).is_err());
        let zero = r#"{"end": {"sum_received": {"bits_per_second": 0, "bytes": 0}}}"#;
        assert!(parse_iperf(zero, false).unwrap_err().contains("nothing"));
        assert!(parse_iperf("", false).is_err());
        let udp = r#"{"end": {"sum": {"bits_per_second": 1e9, "seconds": 2,
                      "packets": 100, "lost_packets": 20}}}"#;
        assert_eq!(parse_iperf(udp, true), Ok((1.0, 40.0)));
    }

    #[test]
    fn median_and_range() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(median(vec![5.0]), Some((5.0, 5.0, 5.0)));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn cpu_busy_moves_when_the_cpu_works() {
        // Pin to CPU 0 and spin for 300 ms: its busy time must move by at
        // least a tick (10 ms), whatever else the machine does.
        let before = cpu_busy(0);
        let t = std::thread::spawn(|| {
            assert!(core_affinity::set_for_current(core_affinity::CoreId {
                id: 0
            }));
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(300) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        });
        t.join().unwrap();
        assert!(cpu_busy(0) > before, "busy time did not move");
    }
}
