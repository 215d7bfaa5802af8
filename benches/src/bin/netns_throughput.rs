//! Pod -> remote pod throughput through Sluice (one worker per node) and
//! through the Linux kernel path (vxlan configured as Flannel does), in the
//! same run, on the same machine, with the same clients (iperf3):
//! TCP bulk (Gbit/s) and 64-byte UDP frames (packets per second delivered).
//!
//!     cargo build --release -p dataplane --bin sluice
//!     sudo target/release/netns_throughput [SECONDS] [RUNS]
//!
//! A benchmark, not a test: it asserts nothing about time. Results go to
//! stdout as a Markdown table for benches/README.md.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use dataplane::demo::Topology;

fn sh(args: &[&str]) -> Result<String, String> {
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

/// The kernel path: two namespaces joined by a veth, each a node with
/// flannel.1 (VNI 1, port 8472, permanent neighbour + FDB, onlink route)
/// and one routed pod. Removed on drop.
struct KernelPath {
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
    fn name(&self, tag: &str) -> String {
        format!("kp{}-{tag}", std::process::id())
    }

    fn build() -> Result<KernelPath, String> {
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
/// at `addr`: TCP: (Gbit/s received, 0); UDP: (loss fraction, packets per
/// second received).
fn iperf(
    client: &str,
    server: &str,
    addr: Ipv4Addr,
    udp64: bool,
    secs: u32,
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
    let out = sh(&args);
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_str(&out?).map_err(|e| e.to_string())?;
    let end = &v["end"];
    if udp64 {
        let s = &end["sum"];
        let secs = s["seconds"].as_f64().unwrap_or(1.0);
        let pkts = s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0);
        Ok((
            s["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
            pkts / secs,
        ))
    } else {
        let s = &end["sum_received"];
        Ok((s["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9, 0.0))
    }
}

type Spread = (f64, f64, f64);

/// `runs` rounds of TCP and 64-byte UDP from pod `a1` to pod `b1`
/// (10.244.2.2): medians with their range of Gbit/s, packets per second
/// delivered, and UDP loss.
fn measure(a1: &str, b1: &str, runs: usize, secs: u32) -> Result<(Spread, Spread, Spread), String> {
    let b1_ip = Ipv4Addr::new(10, 244, 2, 2);
    let (mut tcp, mut pps, mut loss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        tcp.push(iperf(a1, b1, b1_ip, false, secs)?.0);
        let (l, p) = iperf(a1, b1, b1_ip, true, secs)?;
        loss.push(l);
        pps.push(p);
    }
    Ok((median(tcp), median(pps), median(loss)))
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v[v.len() / 2];
    (m, v[0], v[v.len() - 1])
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let secs: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let sluice = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("sluice");
    if !sluice.exists() {
        return Err(format!(
            "{} not found: cargo build --release -p dataplane --bin sluice",
            sluice.display()
        ));
    }
    let mut rows = Vec::new();
    // Sluice: the demo topology (node-a TUN pods, node-b veth+AF_XDP pods),
    // one worker per node (node-a on core 1, node-b on core 0).
    {
        let t = Topology::build_with(&PathBuf::from(&sluice), 1).map_err(|e| e.to_string())?;
        let (tcp, pps, loss) = measure(&t.ns("a1"), &t.ns("b1"), runs, secs)?;
        rows.push(("Sluice (TUN pod -> veth+AF_XDP pod)", tcp, pps, loss));
    }
    {
        let k = KernelPath::build()?;
        let (tcp, pps, loss) = measure(&k.name("a1"), &k.name("b1"), runs, secs)?;
        rows.push((
            "Linux kernel vxlan (Flannel's configuration)",
            tcp,
            pps,
            loss,
        ));
    }
    println!("| path | TCP bulk, Gbit/s | 64 B UDP, Mpps delivered | 64 B UDP, loss |");
    println!("|---|---|---|---|");
    for (name, tcp, pps, g) in &rows {
        println!(
            "| {name} | {:.2} ({:.2}-{:.2}) | {:.3} ({:.3}-{:.3}) | {:.1}% |",
            tcp.0,
            tcp.1,
            tcp.2,
            pps.0 / 1e6,
            pps.1 / 1e6,
            pps.2 / 1e6,
            g.0 * 100.0
        );
    }
    if let [s, k] = rows.as_slice() {
        println!(
            "\nratio Sluice/kernel: TCP {:.2}, 64 B pps {:.2}  (median of {runs} runs of {secs} s each)",
            s.1.0 / k.1.0,
            s.2.0 / k.2.0
        );
    }
    Ok(())
}
