//! What an operator of the daemon relies on, end to end on one node in
//! network namespaces: `sluice check`, `uplink: auto`, the HTTP endpoints
//! (`/healthz`, `/readyz` 503 before the first snapshot and 200 after,
//! `/metrics` as Prometheus text with counters that move), the SNAT range
//! in `ip_local_reserved_ports` while running and given back after, and the
//! XDP program detached on a clean exit.
//!
//! Topology: a node namespace whose veth `up0` holds 192.168.91.1, and a
//! wire namespace at 192.168.91.100 playing the API server (the project's
//! fake, over real HTTP) and a sender of stray VXLAN.

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ctrl::fakeapi::FakeApi;
use support::{Netns, require_root};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 1);
const WIRE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 100);

/// The daemon, killed and reaped if the test fails before it stops it.
struct Daemon(Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP GET to the daemon's metrics address inside `ns`: (status
/// code, body).
fn get(ns: &Netns, path: &str) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let text = ns
        .enter(move || {
            let mut s = TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, 9420).into(),
                Duration::from_secs(2),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(req.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prometheus text exposition format 0.0.4, checked line by line: every
/// sample belongs to a family declared by `# TYPE` (counter or gauge)
/// with a `# HELP`, its labels are `name="value"` pairs, its value a
/// number; each family is declared once. Returns the samples by their
/// full name with labels.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut help = std::collections::BTreeSet::new();
    let mut types = std::collections::BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(help.insert(name.to_string()), "HELP {name} twice");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(f.len(), 2, "{line}");
            assert!(matches!(f[1], "counter" | "gauge"), "{line}");
            assert!(
                types.insert(f[0].to_string(), f[1]).is_none(),
                "TYPE {} twice",
                f[0]
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty(),
            "metric name {name:?}"
        );
        assert!(types.contains_key(name), "{name} has no TYPE before it");
        assert!(help.contains(name), "{name} has no HELP");
        if types[name] == "counter" {
            assert!(name.ends_with("_total"), "counter {name} without _total");
        }
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("labels of {line}"));
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(
                    !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        samples.push((series.to_string(), v));
    }
    assert!(!samples.is_empty(), "no samples");
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}

fn reserved_ports(ns: &Netns) -> String {
    let path = PathBuf::from(format!("/var/run/netns/{}", ns.name));
    dataplane::netns::run_in(&path, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
    })
    .unwrap()
    .trim()
    .to_string()
}

fn xdp_attached(ns: &Netns, dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-d", "link", "show", "dev", dev])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("prog/xdp") || text.contains(" xdp")
}

/// Waits up to `secs` for `child` to exit; kills it and returns `None` if
/// it does not.
fn wait_exit(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the admin socket answers `status`.
fn request_ok(sock: &Path) -> bool {
    dataplane::daemon::request(sock, "status").is_ok_and(|r| r.starts_with("ok"))
}

fn config(dir: &Path, kubeconfig: &Path) -> String {
    format!(
        "node:
  name: node-a
  uplink: auto
  ip: {NODE_IP}
  pod_cidr: 10.244.1.0/24
  gateway: {WIRE_IP}
cluster_cidrs: [10.244.0.0/16]
kubernetes:
  kubeconfig: {kc}
  watch_timeout_secs: 2
workers:
  cores: [0]
admin:
  socket: {dir}/a.sock
  state_dir: {dir}/state
  run_dir: {dir}/run
",
        kc = kubeconfig.display(),
        dir = dir.display()
    )
}

#[test]
fn check_readiness_metrics_reserved_ports_and_a_clean_exit() {
    if !require_root("check_readiness_metrics_reserved_ports_and_a_clean_exit") {
        return;
    }
    let node = Netns::new("ops-n");
    let wire = Netns::new("ops-w");
    node.ip(&[
        "link", "add", "up0", "type", "veth", "peer", "name", "w0", "netns", &wire.name,
    ]);
    node.ip(&["addr", "add", "192.168.91.1/24", "dev", "up0"]);
    wire.ip(&["addr", "add", "192.168.91.100/24", "dev", "w0"]);
    node.ip(&["link", "set", "up0", "up"]);
    wire.ip(&["link", "set", "w0", "up"]);
    // Native XDP on a veth needs GRO on; software checksums on the
    // sending side, so no partial checksum reaches AF_XDP (as the demo).
    node.exec(&["ethtool", "-K", "up0", "gro", "on", "tx", "off"]);
    wire.exec(&["ethtool", "-K", "w0", "gro", "on", "tx", "off"]);
    let dir = std::env::temp_dir().join(format!("sluice-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // The API server, failing until released: no snapshot from it yet.
    let listener = wire
        .enter(|| std::net::TcpListener::bind((WIRE_IP, 0)))
        .unwrap();
    let api = FakeApi::start_on(listener).unwrap();
    api.put_node(ctrl::node::node_object(
        "node-a",
        "192.168.91.1",
        Some("10.244.1.0/24"),
        &[],
    ));
    let kc = dir.join("kubeconfig");
    api.write_kubeconfig(&kc).unwrap();
    api.set_fail(Some(503));
    let cfg = dir.join("sluice.yaml");
    std::fs::write(&cfg, config(&dir, &kc)).unwrap();

    // `sluice check`: the config is valid; a bad one is refused naming the
    // field, with exit code 2, as `run` does.
    let out = Command::new(SLUICE)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        config(&dir, &kc).replace("pod_cidr: 10.244.1.0/24", "pod_cidr: 10.244.1.0/40"),
    )
    .unwrap();
    let out = Command::new(SLUICE)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node.pod_cidr"),
        "{out:?}"
    );

    assert!(!reserved_ports(&node).contains("61000-65535"));
    assert!(!xdp_attached(&node, "up0"));
    let log = std::fs::File::create(dir.join("sluice.log")).unwrap();
    let mut d = Daemon(Some(
        dataplane::demo::spawn_sluice(&node.name, Path::new(SLUICE), &cfg, log).unwrap(),
    ));
    let logs = || std::fs::read_to_string(dir.join("sluice.log")).unwrap_or_default();
    wait_for("the daemon's HTTP endpoint", 15, || {
        get(&node, "/healthz").is_some()
    });
    assert_eq!(get(&node, "/healthz"), Some((200, "ok\n".into())));
    // Before the first snapshot from the API server: not ready (twice,
    // some time apart: it stays so while the server fails).
    for _ in 0..2 {
        let (code, body) = get(&node, "/readyz").unwrap();
        assert_eq!(code, 503, "ready without a snapshot: {body}");
        assert!(body.contains("in_sync false"), "{body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(get(&node, "/nothing").map(|r| r.0), Some(404));

    // `uplink: auto` found the interface holding node.ip, and the XDP
    // program is on it; the SNAT range is reserved while running.
    assert!(logs().contains("uplink up0"), "{}", logs());
    assert!(xdp_attached(&node, "up0"), "no XDP program on up0");
    let reserved = reserved_ports(&node);
    assert!(reserved.contains("61000-65535"), "reserved: {reserved:?}");

    // The API server answers: ready.
    api.set_fail(None);
    wait_for("ready after the first sync", 30, || {
        get(&node, "/readyz").is_some_and(|r| r.0 == 200)
    });

    // Metrics: valid exposition; stray VXLAN from an unknown VTEP moves
    // the uplink's receive counter and its drop reason's.
    let m0 = parse_prometheus(&get(&node, "/metrics").unwrap().1);
    let rx = "sluice_rx_packets_total{port=\"up0\"}";
    let unknown = "sluice_drops_total{reason=\"vxlan_unknown_vtep\"}";
    let (rx0, unk0) = (sample(&m0, rx), sample(&m0, unknown));
    const STRAY: usize = 5;
    wire.enter(|| {
        let s = UdpSocket::bind((WIRE_IP, 0))?;
        // VXLAN header (I flag, VNI 1), then an inner Ethernet + IPv4 frame.
        let mut p = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        p.extend_from_slice(&[0x0a, 0x58, 0, 0, 0, 1, 0x0a, 0x58, 0, 0, 0, 2, 0x08, 0x00]);
        p.extend_from_slice(&[0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&[10, 244, 2, 2, 10, 244, 1, 2]);
        for _ in 0..STRAY {
            s.send_to(&p, (NODE_IP, 8472))?;
        }
        Ok(())
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = get(&node, "/metrics").unwrap().1;
        let m = parse_prometheus(&last);
        if sample(&m, unknown) >= unk0 + STRAY as f64 && sample(&m, rx) >= rx0 + STRAY as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the counters did not move:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let m1 = parse_prometheus(&get(&node, "/metrics").unwrap().1);
    assert_eq!(
        sample(&m1, unknown),
        unk0 + STRAY as f64,
        "exactly the strays"
    );

    // veth has no zero-copy AF_XDP: the daemon asked for it, was refused,
    // bound in copy mode and says so (log, status, Prometheus); with no
    // uplink_mode set (afxdp) it sends through AF_XDP.
    assert_eq!(sample(&m1, "sluice_uplink_zero_copy"), 0.0);
    assert_eq!(sample(&m1, "sluice_uplink_offload"), 0.0);
    let st = dataplane::daemon::request(&dir.join("a.sock"), "status").unwrap();
    assert!(
        st.contains("uplink_mode afxdp\nuplink_mode_reason uplink_mode: afxdp\n")
            && st.contains("uplink_zero_copy false\n")
            && st.contains("uplink_copy_reason up0 refused zero-copy: Operation not supported"),
        "{st}"
    );
    assert!(
        logs().contains("AF_XDP in copy mode (up0 refused zero-copy"),
        "{}",
        logs()
    );

    // A second daemon on the node (a rolling update's surge, a second
    // start by hand): it waits for the node lock, then refuses naming the
    // holder, having touched nothing: the first keeps its program, its
    // admin socket and its readiness.
    let first = d.0.as_ref().unwrap().id();
    let cfg2 = dir.join("second.yaml");
    std::fs::write(&cfg2, format!("{}  lock_wait_secs: 1\n", config(&dir, &kc))).unwrap();
    let log2 = dir.join("second.log");
    let mut second = dataplane::demo::spawn_sluice(
        &node.name,
        Path::new(SLUICE),
        &cfg2,
        std::fs::File::create(&log2).unwrap(),
    )
    .unwrap();
    let status = wait_exit(&mut second, 15).expect("the second daemon gives up");
    let said = std::fs::read_to_string(&log2).unwrap();
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("another sluice daemon") && said.contains(&format!("pid {first}")),
        "the refusal names the holder: {said}"
    );
    assert!(
        xdp_attached(&node, "up0"),
        "the first daemon's program is still on up0"
    );
    assert_eq!(
        get(&node, "/readyz").map(|r| r.0),
        Some(200),
        "the first is still ready"
    );
    assert!(
        request_ok(&dir.join("a.sock")),
        "the first's admin socket still answers"
    );

    // SIGTERM (kubelet stopping the pod for a restart or a rolling
    // update): exit 0, handing the node over: the XDP program stays on the
    // uplink and the SNAT range stays reserved, for the next daemon.
    let pid = d.0.as_ref().unwrap().id();
    // `ip netns exec` execs the daemon: the child is the daemon itself.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let mut child = d.0.take().unwrap();
    let status = wait_exit(&mut child, 10)
        .unwrap_or_else(|| panic!("the daemon did not stop on SIGTERM: {}", logs()));
    assert!(status.success(), "exit: {status:?}: {}", logs());
    assert!(logs().contains("handed over"), "{}", logs());
    assert!(
        xdp_attached(&node, "up0"),
        "the program stays for the next daemon"
    );
    assert!(
        reserved_ports(&node).contains("61000"),
        "the SNAT range stays reserved"
    );
    // `sluice cleanup` (Sluice leaving the node) undoes both, and says so.
    let out = Command::new("ip")
        .args(["netns", "exec", &node.name, SLUICE, "cleanup", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("detached the XDP program from up0"), "{said}");
    assert!(said.contains("gave back reserved ports 61000"), "{said}");
    assert!(!xdp_attached(&node, "up0"), "XDP program left on up0");
    let after = reserved_ports(&node);
    assert!(
        !after.contains("61000"),
        "reserved after cleanup: {after:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
