//! sluice-cni in a plugin chain (portmap after it, as a conflist runs), and
//! its bandwidth capability enforced for TUN and veth pods.

//! (environment + network configuration on stdin, fresh network
//! namespaces), against the real daemon of the two-node netns topology.

mod common;
#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::Run;
use dataplane::demo::Topology;
use serde_json::{Value, json};
use support::require_root;

use common::cni::*;

/// The runtime's side of a conflist: each plugin's ADD in order, with the
/// list's name and version and the previous result; returns the last
/// result.
fn add_chain(node_ns: &str, list: &Value, runtime: &Value, e: &[(&str, &str)]) -> Value {
    let mut prev: Option<Value> = None;
    for p in list["plugins"].as_array().unwrap() {
        let (c, ty, exe) = chained(list, p, runtime, prev.as_ref());
        // Plugins run in the node's namespace, as the runtime runs them
        // on the host.
        let r = in_node(node_ns, &exe, "ADD", e, &c);
        assert_eq!(r.code, 0, "{ty} ADD: {}", r.out);
        prev = Some(serde_json::from_str(&r.out).unwrap());
    }
    prev.unwrap()
}

/// Plugin `p` of conflist `list` as the runtime hands it over: the list's
/// name and version, the runtime config, the previous result; with its
/// type and executable.
fn chained(
    list: &Value,
    p: &Value,
    runtime: &Value,
    prev: Option<&Value>,
) -> (Value, String, String) {
    let mut c = p.clone();
    c["name"] = list["name"].clone();
    c["cniVersion"] = list["cniVersion"].clone();
    c["runtimeConfig"] = runtime.clone();
    if let Some(r) = prev {
        c["prevResult"] = r.clone();
    }
    let ty = p["type"].as_str().unwrap().to_string();
    let exe = if ty == "sluice-cni" {
        CNI.to_string()
    } else {
        format!("{CNI_PLUGINS}/{ty}")
    };
    (c, ty, exe)
}

/// The runtime's CHECK (in order) or DEL (in reverse) of every plugin of
/// `list` with ADD's `result`; each must succeed.
fn each_in_chain(
    node_ns: &str,
    list: &Value,
    runtime: &Value,
    e: &[(&str, &str)],
    result: &Value,
    cmd: &str,
) {
    let mut plugins: Vec<&Value> = list["plugins"].as_array().unwrap().iter().collect();
    if cmd == "DEL" {
        plugins.reverse();
    }
    for p in plugins {
        let (c, ty, exe) = chained(list, p, runtime, Some(result));
        let r = in_node(node_ns, &exe, cmd, e, &c);
        assert_eq!(r.code, 0, "{ty} {cmd}: {}", r.out);
    }
}

fn in_node(node_ns: &str, exe: &str, cmd: &str, e: &[(&str, &str)], conf: &Value) -> Run {
    run_plugin(Some(node_ns), exe, cmd, e, conf)
}

#[test]
fn the_node_reaches_pods_and_portmap_chains_after_sluice_cni() {
    if !require_root("the_node_reaches_pods_and_portmap_chains_after_sluice_cni") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    let dir = tempdir("cni-chain");
    // The node's own stack reaches local and remote pods through its host
    // device (what kubelet probes need), and a pod reaches its node.
    assert!(common::pings(&t, "a", "10.244.1.2"), "node-a -> its pod");
    assert!(
        common::pings(&t, "a", "10.244.2.2"),
        "node-a -> node-b's pod"
    );
    assert!(common::pings(&t, "a1", "192.168.77.1"), "pod -> its node");
    // The conflist the DaemonSet installs, with this test's socket.
    let list = deployed_conflist(&t.sockets[0], &dir, "10.244.1.210", "10.244.1.220");
    t.add_ns("pm").unwrap();
    let ns = format!("/var/run/netns/{}", t.ns("pm"));
    let e = env("pm0", &ns, "eth0");
    let runtime = json!({"portMappings": [
        {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}
    ]});
    let result = add_chain(&t.ns("a"), &list, &runtime, &e);
    let ip: Ipv4Addr = address(&result).trim_end_matches("/32").parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    serve(&t.ns_path("pm"), ip, "pm0".into(), stop.clone());
    // A kubelet-style HTTP probe from the node to the pod IP.
    assert_eq!(
        curl(&t, "a", &format!("http://{ip}:8080/")).as_deref(),
        Some("pm0")
    );
    // hostPort through portmap's DNAT, from the node itself.
    assert_eq!(
        curl(&t, "a", "http://192.168.77.1:18080/").as_deref(),
        Some("pm0"),
        "hostPort 18080 -> pod 8080"
    );
    // And from outside the node (PREROUTING DNAT; the reply returns
    // through sluice0 for the node to undo it).
    assert_eq!(
        curl(&t, "ext", "http://192.168.77.1:18080/").as_deref(),
        Some("pm0"),
        "hostPort from the external host"
    );
    // The pod sees the client's own address, not the node's.
    assert_eq!(
        curl(&t, "ext", "http://192.168.77.1:18080/peer").as_deref(),
        Some("192.168.77.100"),
        "the client address behind hostPort"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // DEL in reverse order; portmap removes its rules.
    each_in_chain(&t.ns("a"), &list, &runtime, &e, &result, "DEL");
    assert!(curl(&t, "a", "http://192.168.77.1:18080/").is_none());
    assert!(reservations(&dir, "sluice").is_empty());
    // Sluice itself adds no NAT rule on the node.
    let o = Command::new("ip")
        .args(["netns", "exec", &t.ns("a"), "iptables-save", "-t", "nat"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&o.stdout);
    assert!(!rules.contains("sluice"), "{rules}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The conflist the DaemonSet installs (deploy/kubernetes/sluice.yaml's
/// ConfigMap), pointed at `socket` and an IPAM range under `data_dir`.
fn deployed_conflist(socket: &Path, data_dir: &Path, start: &str, end: &str) -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/sluice.yaml"),
    )
    .unwrap();
    let conflist = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).ok()?;
            v.get("data")?
                .get("10-sluice.conflist")?
                .as_str()
                .map(str::to_string)
        })
        .next()
        .expect("the ConfigMap's conflist");
    let mut list: Value = serde_json::from_str(&conflist).unwrap();
    let p = &mut list["plugins"][0];
    assert_eq!(p["type"], "sluice-cni");
    p["socket"] = json!(socket);
    p["ipam"]["dataDir"] = json!(data_dir);
    p["ipam"]["rangeStart"] = json!(start);
    p["ipam"]["rangeEnd"] = json!(end);
    list
}

/// A child process killed and reaped when dropped (a failed assertion
/// leaves no server behind).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP stream for `secs` between the pod at namespace `pod` and an
/// iperf3 server on the external host (`reverse`: the server sends).
/// Returns what the receiver got: [`Moved`].
fn iperf_to_ext(t: &Topology, pod: &str, port: u16, reverse: bool, secs: u32) -> Moved {
    let port_s = port.to_string();
    let mut server = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &t.ns("ext"), "iperf3", "-s", "-1"])
            .args(["-B", "192.168.77.100", "-p", &port_s])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server"),
    );
    let secs_s = secs.to_string();
    // Bounded: the server may need a moment to listen.
    for _ in 0..20 {
        let start = std::time::Instant::now();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &t.ns(pod), "iperf3", "-J"])
            .args(["-c", "192.168.77.100", "-p", &port_s, "-t", &secs_s])
            .args(["--connect-timeout", "2000"]);
        if reverse {
            c.arg("-R");
        }
        let o = c.output().expect("iperf3 client");
        let elapsed = start.elapsed().as_secs_f64();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        // iperf3 -J may exit 0 with an "error" (a server not listening yet).
        if o.status.success() && v.get("error").is_none() {
            let r = &v["end"]["sum_received"];
            let bytes = r["bytes"]
                .as_u64()
                .unwrap_or_else(|| panic!("no bytes received: {v}"));
            let seconds = r["seconds"]
                .as_f64()
                .unwrap_or_else(|| panic!("no receive time: {v}"));
            let _ = server.0.wait();
            return Moved {
                bytes,
                window: elapsed,
                seconds,
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("iperf3 from {pod} never connected");
}

/// What an iperf3 stream moved.
#[derive(Clone, Copy, Debug)]
struct Moved {
    /// Payload bytes the receiver got.
    bytes: u64,
    /// Wall-clock seconds the client ran: a window that contains the
    /// whole transfer.
    window: f64,
    /// Seconds the receiver measured over.
    seconds: f64,
}

impl Moved {
    /// The receiver's rate, bit/s.
    fn rate(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds.max(1e-9)
    }
}

/// The daemon's `stats`: a drop count by reason (`key` a reason), or a
/// port's counter (`key` "PORT COUNTER", e.g. "pod/bw0/eth0 shaped").
fn stat(socket: &Path, key: &str) -> u64 {
    let s = dataplane::daemon::request(socket, "stats").unwrap();
    let (port, counter) = key.split_once(' ').unwrap_or((key, "rate_limited"));
    s.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["drop", name, n] if *name == key => n.parse().ok(),
                ["port", name, kv @ ..] if *name == port => kv
                    .chunks(2)
                    .find(|c| c.first() == Some(&counter))
                    .and_then(|c| c.get(1)?.parse().ok()),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no {key} in stats:\n{s}"))
}

/// Checks that a stream moved at most what a token bucket of
/// (`rate` bit/s, `burst` bits) lets through in its window, plus the one
/// frame a conforming bucket lets into debt (TCP payload is less than the
/// packets the bucket counts, so the bound is loose, never tight), and at
/// least 80% of the rate over the receiver's own measurement time (the
/// limit must not throttle far below itself).
fn assert_limited(what: &str, m: Moved, rate: u64, burst: u64) {
    let bound = burst as f64 + rate as f64 * m.window + 1514.0 * 8.0;
    let bits = m.bytes as f64 * 8.0;
    eprintln!(
        "{what}: {bits} bits in {:.2} s ({:.2} Mbit/s; limit {} Mbit/s, bound {bound})",
        m.seconds,
        m.rate() / 1e6,
        rate / 1_000_000
    );
    assert!(bits <= bound, "{what}: {bits} bits > {bound}");
    assert!(
        m.rate() >= 0.8 * rate as f64,
        "{what}: {:.2} Mbit/s is under 80% of the {} Mbit/s limit",
        m.rate() / 1e6,
        rate / 1_000_000
    );
}

#[test]
fn bandwidth_annotations_are_enforced_for_tun_and_veth_pods() {
    if !require_root("bandwidth_annotations_are_enforced_for_tun_and_veth_pods") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    let dir = tempdir("cni-bw");
    let sock = t.sockets[0].clone();
    // What containerd sends for kubernetes.io/ingress-bandwidth: 12M and
    // egress-bandwidth: 8M (here with a 1 Mbit burst; containerd's is
    // 2^32-1 bits, which lets the first 512 MB through unpoliced).
    let (in_rate, out_rate, burst) = (12_000_000u64, 8_000_000u64, 1_000_000u64);
    let runtime = json!({
        "portMappings": [],
        "bandwidth": {"ingressRate": in_rate, "ingressBurst": burst,
                      "egressRate": out_rate, "egressBurst": burst}
    });

    // 1. A TUN pod through the conflist the DaemonSet installs.
    let list = deployed_conflist(&sock, &dir, "10.244.1.230", "10.244.1.239");
    t.add_ns("bw").unwrap();
    let ns = format!("/var/run/netns/{}", t.ns("bw"));
    let e = env("bw0", &ns, "eth0");
    let result = add_chain(&t.ns("a"), &list, &runtime, &e);
    let routes = dataplane::daemon::request(&sock, "routes").unwrap();
    let rec = format!(
        "ingress_rate={in_rate} ingress_burst={burst} egress_rate={out_rate} egress_burst={burst}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.contains("pod bw0/eth0") && l.ends_with(&rec)),
        "{routes}"
    );
    // CHECK compares the daemon's limits with the runtime's.
    each_in_chain(&t.ns("a"), &list, &runtime, &e, &result, "CHECK");
    let mut other = runtime.clone();
    other["bandwidth"]["egressRate"] = json!(out_rate * 2);
    let (c, _, _) = chained(&list, &list["plugins"][0], &other, Some(&result));
    let r = plugin(CNI, "CHECK", &e, &c);
    assert_eq!(r.code, 110, "CHECK with other limits: {}", r.out);
    assert!(r.out.contains("limits pod"), "{}", r.out);
    let port = "pod/bw0/eth0";
    // Workers publish their counters every 100 ms (and at once after
    // attaching a pod): the new port shows up within that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !dataplane::daemon::request(&sock, "stats")
        .unwrap()
        .contains(&format!("port {port} "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{port} never in stats"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (drop_out, drop_in) = ("pod_egress_rate_limited", "pod_ingress_rate_limited");
    let (out0, in0) = (stat(&sock, drop_out), stat(&sock, drop_in));
    let paused0 = stat(&sock, &format!("{port} paused"));
    assert_limited(
        "TUN pod egress",
        iperf_to_ext(&t, "bw", 15201, false, 3),
        out_rate,
        burst,
    );
    // A TUN pod is shaped by not reading it: its own qdisc holds the
    // rest and pushes back on its TCP; Sluice drops nothing.
    assert_eq!(
        stat(&sock, drop_out),
        out0,
        "TUN egress is shaped, not policed"
    );
    assert!(
        stat(&sock, &format!("{port} paused")) > paused0,
        "the TUN pod was never left unread: the limit did not act"
    );
    // Towards the pod, frames wait for tokens in a short queue; what
    // overflows it is dropped and counted.
    let shaped0 = stat(&sock, &format!("{port} shaped"));
    assert_limited(
        "TUN pod ingress",
        iperf_to_ext(&t, "bw", 15202, true, 3),
        in_rate,
        burst,
    );
    assert!(
        stat(&sock, &format!("{port} shaped")) > shaped0,
        "no frame towards the pod waited for tokens: the limit did not act"
    );
    assert_eq!(
        stat(&sock, port),
        stat(&sock, drop_out) - out0 + stat(&sock, drop_in) - in0,
        "the port's count is its drops in both directions"
    );
    // The control: a pod of the same node without limits moves far more
    // than either limit (about 600 Mbit/s here), so the limits above are
    // the shaper's doing, not the path's.
    t.add_ns("bwu").unwrap();
    let ns_u = format!("/var/run/netns/{}", t.ns("bwu"));
    let e_u = env("bwu0", &ns_u, "eth0");
    let free = json!({"portMappings": []});
    let result_u = add_chain(&t.ns("a"), &list, &free, &e_u);
    let unlimited = iperf_to_ext(&t, "bwu", 15205, false, 2);
    eprintln!("unlimited TUN pod: {:.1} Mbit/s", unlimited.rate() / 1e6);
    assert!(
        unlimited.rate() > 5.0 * in_rate as f64,
        "the unlimited pod moved only {:.1} Mbit/s",
        unlimited.rate() / 1e6
    );
    assert_eq!(stat(&sock, "pod/bwu0/eth0 shaped"), 0);
    assert_eq!(stat(&sock, "pod/bwu0/eth0 paused"), 0);
    each_in_chain(&t.ns("a"), &list, &free, &e_u, &result_u, "DEL");
    // The admin command line takes the same limits, and the daemon names
    // what is wrong with them.
    let o = Command::new(SLUICE)
        .args(["--socket", &sock.to_string_lossy(), "pods", "add", "cli0"])
        .args(["10.244.1.240", &ns, "--ingress-rate", "5000000"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        text.contains("ingress_rate is set without ingress_burst"),
        "{text}"
    );
    // A daemon killed and restarted re-attaches the pod with its limits
    // (the kubelet does not repeat ADD).
    t.kill_daemon(0).unwrap();
    t.restart_daemon(0, Path::new(SLUICE)).unwrap();
    let routes = dataplane::daemon::request(&sock, "routes").unwrap();
    assert!(
        routes
            .lines()
            .any(|l| l.contains("pod bw0/eth0") && l.ends_with(&rec)),
        "{routes}"
    );
    assert_limited(
        "TUN pod egress after a restart",
        iperf_to_ext(&t, "bw", 15204, false, 2),
        out_rate,
        burst,
    );
    // The reference bandwidth plugin cannot shape a TUN pod (no host-side
    // veth): why the DaemonSet's conflist gives the bandwidth capability to
    // sluice-cni alone.
    let bw = json!({"type": "bandwidth", "capabilities": {"bandwidth": true}});
    let (c, _, exe) = chained(&list, &bw, &runtime, Some(&result));
    let r = in_node(&t.ns("a"), &exe, "ADD", &e, &c);
    assert_ne!(r.code, 0, "bandwidth on a TUN pod: {}", r.out);
    assert!(r.out.contains("veth"), "{}", r.out);
    each_in_chain(&t.ns("a"), &list, &runtime, &e, &result, "DEL");

    // 2. A veth pod with the reference plugin chained as the Calico docs
    // show: sluice-cni lists the host end, so `bandwidth` finds it and
    // installs its qdiscs (which AF_XDP bypasses); Sluice shapes.
    let mut list = list;
    list["plugins"][0]["mode"] = json!("veth");
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}));
    t.add_ns("bwv").unwrap();
    let ns = format!("/var/run/netns/{}", t.ns("bwv"));
    let e = env("bwv0", &ns, "eth0");
    let result = add_chain(&t.ns("a"), &list, &runtime, &e);
    let host = result["interfaces"][0].clone();
    assert!(host.get("sandbox").is_none(), "{result}");
    let host = host["name"].as_str().unwrap().to_string();
    assert!(host.starts_with("slp-"), "{result}");
    assert_eq!(result["ips"][0]["interface"], 1, "{result}");
    assert!(!result["interfaces"][1]["mac"].as_str().unwrap().is_empty());
    let qdisc = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ns("a"),
            "tc",
            "qdisc",
            "show",
            "dev",
            &host,
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&qdisc.stdout).contains("tbf"),
        "the bandwidth plugin's qdisc"
    );
    each_in_chain(&t.ns("a"), &list, &runtime, &e, &result, "CHECK");
    let out0 = stat(&sock, drop_out);
    assert_limited(
        "veth pod egress",
        iperf_to_ext(&t, "bwv", 15203, false, 3),
        out_rate,
        burst,
    );
    assert!(
        stat(&sock, "pod/bwv0/eth0 shaped") > 0,
        "no frame from the veth pod waited for tokens: the limit did not act"
    );
    // AF_XDP would lose unread frames: a veth pod is read as usual and its
    // frames wait in Sluice's short queue; what overflows it is counted.
    assert_eq!(
        stat(&sock, "pod/bwv0/eth0"),
        stat(&sock, drop_out) - out0,
        "the port's count is its egress drops"
    );
    each_in_chain(&t.ns("a"), &list, &runtime, &e, &result, "DEL");
    let links = Command::new("ip")
        .args(["netns", "exec", &t.ns("a"), "ip", "-br", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&host) && !links.contains("bwp"),
        "the veth pair and bandwidth's ifb are gone: {links}"
    );
    assert!(reservations(&dir, "sluice").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
