//! `sluice-cni` called exactly as a container runtime calls it
//! (environment + network configuration on stdin, fresh network
//! namespaces), against the real daemon of the two-node netns topology.

mod common;
#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Run;
use dataplane::demo::Topology;
use rscni_types::types::{CNIResultWithVersion, ErrorResult};
use serde_json::{Value, json};
use support::require_root;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const CNI: &str = env!("CARGO_BIN_EXE_sluice-cni");
/// Where Debian's containernetworking-plugins puts the reference plugins.
const CNI_PLUGINS: &str = "/usr/lib/cni";

/// Runs plugin `exe` with `CNI_COMMAND=cmd` and the other `CNI_*` from
/// `env`, `conf` on stdin: what a runtime does.
fn plugin(exe: &str, cmd: &str, env: &[(&str, &str)], conf: &Value) -> Run {
    run_plugin(None, exe, cmd, env, conf)
}

/// [`common::cni_plugin`] with the node's usual `PATH` and the reference
/// plugins and ours on `CNI_PATH`.
fn run_plugin(
    netns: Option<&str>,
    exe: &str,
    cmd: &str,
    env: &[(&str, &str)],
    conf: &Value,
) -> Run {
    let cni_path = format!("{CNI_PLUGINS}:{}", bin_dir().display());
    common::cni_plugin(
        netns,
        exe,
        cmd,
        env,
        conf,
        "/usr/sbin:/usr/bin:/sbin:/bin",
        &cni_path,
    )
}

fn bin_dir() -> PathBuf {
    Path::new(CNI).parent().unwrap().to_path_buf()
}

fn env<'a>(id: &'a str, netns: &'a str, ifname: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
    ]
}

/// The pod's view of `dev`: (IPv4 addresses, MTU), or None if absent.
fn link(t: &Topology, tag: &str, dev: &str) -> Option<(Vec<String>, u64)> {
    let out = Command::new("ip")
        .args(["-n", &t.ns(tag), "-j", "addr", "show", "dev", dev])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let l = v.get(0)?;
    let addrs = l["addr_info"]
        .as_array()?
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect();
    Some((addrs, l["mtu"].as_u64()?))
}

fn default_route_dev(t: &Topology, tag: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", &t.ns(tag), "-j", "route", "show", "default"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0)?["dev"].as_str().map(str::to_string)
}

fn conf(version: &str, name: &str, socket: &Path, data_dir: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": name,
        "type": "sluice-cni",
        "socket": socket,
        "ipam": {
            "type": "sluice-cni",
            "subnet": "usePodCidr",
            // Clear of the demo's own pods (.2, .3).
            "rangeStart": "10.244.1.100",
            "rangeEnd": "10.244.1.120",
            "dataDir": data_dir,
        }
    })
}

fn reservations(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(dir.join(name))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The address of an ADD result of either layout.
fn address(v: &Value) -> String {
    v["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn add_check_del_for_every_spec_version() {
    if !require_root("add_check_del_for_every_spec_version") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    let dir = tempdir("cni-versions");
    let socket = t.sockets[0].clone();
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .into_iter()
        .enumerate()
    {
        let tag = format!("p{i}");
        t.add_ns(&tag).unwrap();
        let ns = format!("/var/run/netns/{}", t.ns(&tag));
        let id = format!("ctr{i}");
        let name = format!("net{i}");
        let c = conf(version, &name, &socket, &dir);
        let e = env(&id, &ns, "eth0");

        let add = plugin(CNI, "ADD", &e, &c);
        assert_eq!(add.code, 0, "{version} ADD: {}", add.out);
        let r: Value = serde_json::from_str(&add.out).unwrap();
        assert_eq!(r["cniVersion"], version);
        if version.starts_with('1') {
            // Parses as the spec's result type.
            let typed: CNIResultWithVersion = serde_json::from_str(&add.out).expect("spec result");
            assert_eq!(
                typed.result().interfaces[0].sandbox.as_deref(),
                Some(ns.as_str())
            );
        } else {
            assert_eq!(r["ips"][0]["version"], "4", "0.x layout: {}", add.out);
        }
        let addr = address(&r);
        assert!(
            addr.starts_with("10.244.1.1") && addr.ends_with("/32"),
            "{addr}"
        );
        assert_eq!(r["interfaces"][0]["name"], "eth0");
        // In the pod: the interface, the address, MTU 1450, the route.
        let (addrs, mtu) = link(&t, &tag, "eth0").expect("eth0 in the pod");
        assert_eq!((addrs, mtu), (vec![addr.clone()], 1450));
        assert_eq!(default_route_dev(&t, &tag).as_deref(), Some("eth0"));
        // And it is wired: the remote pod on node b answers.
        assert!(
            common::pings(&t, &tag, "10.244.2.2"),
            "{version}: ping across VXLAN"
        );

        if !version.starts_with("0.3") {
            let mut chk = c.clone();
            chk["prevResult"] = r.clone();
            let check = plugin(CNI, "CHECK", &e, &chk);
            assert_eq!(check.code, 0, "{version} CHECK: {}", check.out);
            // A result that does not match fails CHECK.
            let mut wrong = chk.clone();
            wrong["prevResult"]["ips"][0]["address"] = json!("10.244.1.119/32");
            assert_ne!(plugin(CNI, "CHECK", &e, &wrong).code, 0);
        }

        let del = plugin(CNI, "DEL", &e, &c);
        assert_eq!(del.code, 0, "{version} DEL: {}", del.out);
        assert!(link(&t, &tag, "eth0").is_none(), "eth0 removed");
        assert!(reservations(&dir, &name).is_empty(), "address released");
        let again = plugin(CNI, "DEL", &e, &c);
        assert_eq!(again.code, 0, "second DEL: {}", again.out);
        // DEL with the netns already gone.
        let gone = env(&id, "", "eth0");
        assert_eq!(plugin(CNI, "DEL", &gone, &c).code, 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_or_environment_fails_cleanly_and_leaves_nothing() {
    if !require_root("bad_config_or_environment_fails_cleanly_and_leaves_nothing") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    let dir = tempdir("cni-errors");
    let socket = t.sockets[0].clone();
    t.add_ns("bad").unwrap();
    let ns = format!("/var/run/netns/{}", t.ns("bad"));
    let c = conf("1.0.0", "errs", &socket, &dir);
    let code_of = |r: &Run| {
        let _: ErrorResult = serde_json::from_str(&r.out).expect("spec error result");
        serde_json::from_str::<Value>(&r.out).unwrap()["code"]
            .as_i64()
            .unwrap()
    };
    // No such netns: the spec's invalid-netns code, nothing reserved.
    let r = plugin(CNI, "ADD", &env("c1", "/var/run/netns/nope", "eth0"), &c);
    assert_eq!((r.code, code_of(&r)), (8, 8), "{}", r.out);
    assert!(r.out.contains("/var/run/netns/nope"));
    // The daemon refuses (an interface of that name exists: lo): the
    // reserved address goes back.
    let r = plugin(CNI, "ADD", &env("c2", &ns, "lo"), &c);
    assert!(r.code >= 100, "{}", r.out);
    assert!(r.out.contains("lo"), "{}", r.out);
    assert!(
        reservations(&dir, "errs").is_empty(),
        "address not left reserved"
    );
    // Daemon down: try again later (11).
    let mut down = c.clone();
    down["socket"] = json!("/run/nonexistent-sluice.sock");
    let r = plugin(CNI, "ADD", &env("c3", &ns, "eth0"), &down);
    assert_eq!((r.code, code_of(&r)), (11, 11), "{}", r.out);
    // Bad config: 7, naming the field.
    let mut bad = c.clone();
    bad["ipam"]["rangeStart"] = json!("10.9.9.9");
    let r = plugin(CNI, "ADD", &env("c4", &ns, "eth0"), &bad);
    assert_eq!((r.code, code_of(&r)), (7, 7), "{}", r.out);
    assert!(r.out.contains("rangeStart"), "{}", r.out);
    assert!(link(&t, "bad", "eth0").is_none(), "nothing half-created");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_and_gc_on_spec_1_1() {
    if !require_root("status_and_gc_on_spec_1_1") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    let dir = tempdir("cni-gc");
    let socket = t.sockets[0].clone();
    let c = conf("1.1.0", "gcnet", &socket, &dir);
    assert_eq!(plugin(CNI, "STATUS", &[], &c).code, 0);
    let mut ids = Vec::new();
    for i in 0..3 {
        let tag = format!("g{i}");
        t.add_ns(&tag).unwrap();
        let ns = format!("/var/run/netns/{}", t.ns(&tag));
        let id = format!("gc{i}");
        let r = plugin(CNI, "ADD", &env(&id, &ns, "eth0"), &c);
        assert_eq!(r.code, 0, "{}", r.out);
        ids.push((id, tag));
    }
    assert_eq!(reservations(&dir, "gcnet").len(), 3);
    // Only gc0 is still valid: the others' addresses are released and the
    // daemon detaches them.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc0", "ifname": "eth0"}]);
    let r = plugin(CNI, "GC", &[], &gc);
    assert_eq!(r.code, 0, "{}", r.out);
    assert_eq!(reservations(&dir, "gcnet").len(), 1);
    assert!(link(&t, "g0", "eth0").is_some());
    assert!(link(&t, "g1", "eth0").is_none(), "detached by GC");
    assert!(link(&t, "g2", "eth0").is_none(), "detached by GC");
    // STATUS with the daemon gone: 50.
    let mut down = c.clone();
    down["socket"] = json!("/run/nonexistent-sluice.sock");
    assert_eq!(plugin(CNI, "STATUS", &[], &down).code, 50);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_killed_daemon_comes_back_with_its_pods_and_no_address_twice() {
    if !require_root("a_killed_daemon_comes_back_with_its_pods_and_no_address_twice") {
        return;
    }
    let sluice = Path::new(SLUICE);
    let mut t = Topology::build(sluice).expect("topology");
    let dir = tempdir("cni-restart");
    let socket = t.sockets[0].clone();
    let c = conf("1.0.0", "restart", &socket, &dir);
    let mut addrs = Vec::new();
    for i in 0..3 {
        let tag = format!("r{i}");
        t.add_ns(&tag).unwrap();
        let ns = format!("/var/run/netns/{}", t.ns(&tag));
        let r = plugin(CNI, "ADD", &env(&format!("rs{i}"), &ns, "eth0"), &c);
        assert_eq!(r.code, 0, "{}", r.out);
        addrs.push(address(&serde_json::from_str(&r.out).unwrap()));
        assert!(common::pings(&t, &tag, "10.244.2.2"));
    }
    // r0 talks the whole time: 60 pings, 0.2 s apart (bounded: 12 s).
    let pinger = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ns("r0"),
            "ping",
            "-c",
            "60",
            "-i",
            "0.2",
            "-W",
            "1",
            "10.244.2.2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let index = |ns: String| -> String {
        let out = Command::new("ip")
            .args(["-n", &ns, "-o", "link", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let before: Vec<String> = (0..3).map(|i| index(t.ns(&format!("r{i}")))).collect();
    t.kill_daemon(0).unwrap();
    // The TUN devices are persistent: each pod keeps its interface, its
    // address and its routes while no daemon runs.
    for (i, a) in addrs.iter().enumerate() {
        let tag = format!("r{i}");
        let (got, _) = link(&t, &tag, "eth0").expect("the pod keeps its interface");
        assert_eq!(&got[..], std::slice::from_ref(a));
        assert_eq!(default_route_dev(&t, &tag).as_deref(), Some("eth0"));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    t.restart_daemon(0, sluice).unwrap();
    // Re-attached from the daemon's state on disk to the same devices, no
    // ADD repeated.
    for (i, a) in addrs.iter().enumerate() {
        let tag = format!("r{i}");
        let (got, mtu) = link(&t, &tag, "eth0").expect("re-attached");
        assert_eq!((&got[..], mtu), (std::slice::from_ref(a), 1450));
        assert_eq!(default_route_dev(&t, &tag).as_deref(), Some("eth0"));
        assert_eq!(
            index(t.ns(&tag)),
            before[i],
            "r{i}: the same device, not a new one"
        );
    }
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "60 packets transmitted, N received": some lost while it was down,
    // and traffic resumed after.
    let received: u32 = text
        .split(", ")
        .find_map(|p| p.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let last_seq_ok = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            l.split("icmp_seq=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(received > 10 && last_seq_ok >= 55, "{text}");
    for i in 0..3 {
        assert!(
            common::pings(&t, &format!("r{i}"), "10.244.2.2"),
            "r{i} after restart"
        );
    }
    // A new pod gets a new address: none handed out twice.
    t.add_ns("r3").unwrap();
    let ns = format!("/var/run/netns/{}", t.ns("r3"));
    let r = plugin(CNI, "ADD", &env("rs3", &ns, "eth0"), &c);
    assert_eq!(r.code, 0, "{}", r.out);
    let fresh = address(&serde_json::from_str(&r.out).unwrap());
    assert!(!addrs.contains(&fresh), "{fresh} handed out twice");
    let routes = dataplane::daemon::request(&socket, "routes").unwrap();
    let mut ips: Vec<&str> = routes
        .lines()
        .filter(|l| l.starts_with("pod "))
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    let n = ips.len();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), n, "one pod per address: {routes}");
    assert_eq!(n, 6, "a1, a2 and four CNI pods: {routes}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn host_local_as_delegated_ipam_with_use_pod_cidr() {
    if !require_root("host_local_as_delegated_ipam_with_use_pod_cidr") {
        return;
    }
    if !Path::new(CNI_PLUGINS).join("host-local").exists() {
        panic!("{CNI_PLUGINS}/host-local missing: apt install containernetworking-plugins");
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    let dir = tempdir("cni-hostlocal");
    let socket = t.sockets[0].clone();
    // host-local 1.1.1 speaks up to 1.0.0: a 1.1.0 config is passed down.
    for (i, version) in ["0.4.0", "1.1.0"].into_iter().enumerate() {
        let tag = format!("h{i}");
        t.add_ns(&tag).unwrap();
        let ns = format!("/var/run/netns/{}", t.ns(&tag));
        let c = json!({
            "cniVersion": version,
            "name": "hl",
            "type": "sluice-cni",
            "socket": socket,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "usePodCidr", "rangeStart": "10.244.1.130", "rangeEnd": "10.244.1.140"}]],
                "dataDir": dir,
            }
        });
        let id = format!("hl{i}");
        let e = env(&id, &ns, "eth0");
        let r = plugin(CNI, "ADD", &e, &c);
        assert_eq!(r.code, 0, "{version}: {}", r.out);
        let addr = address(&serde_json::from_str(&r.out).unwrap());
        let ip = addr.trim_end_matches("/32");
        let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert!(
            (130..=140).contains(&last),
            "{addr} from host-local's range"
        );
        // host-local's own store has it, under the network's name.
        assert!(dir.join("hl").join(ip).exists());
        assert_eq!(
            link(&t, &tag, "eth0").map(|l| l.0),
            Some(vec![addr.clone()])
        );
        assert!(common::pings(&t, &tag, "10.244.2.2"));
        let d = plugin(CNI, "DEL", &e, &c);
        assert_eq!(d.code, 0, "{}", d.out);
        assert!(!dir.join("hl").join(ip).exists(), "released by host-local");
        assert!(link(&t, &tag, "eth0").is_none());
        assert_eq!(plugin(CNI, "DEL", &e, &c).code, 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Serves HTTP (`/peer` -> the client's address as the pod sees it, any
/// other request -> `name`) and UDP (any datagram -> `name <bytes
/// received>`) on `ip` in the namespace at `ns` until `stop`.
fn serve(
    ns: &Path,
    ip: Ipv4Addr,
    name: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let (tcp, udp) = dataplane::netns::run_in(ns, move || {
        Ok((
            std::net::TcpListener::bind((ip, 8080))?,
            std::net::UdpSocket::bind((ip, 5300))?,
        ))
    })
    .expect("bind in the pod");
    tcp.set_nonblocking(true).unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let (n2, s2) = (name.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while !s2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = udp.recv_from(&mut b) {
                let _ = udp.send_to(format!("{n2} {n}").as_bytes(), from);
            }
        }
    });
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                    let mut req = Vec::new();
                    let mut b = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&b[..n]),
                        }
                    }
                    let body = if req.starts_with(b"GET /peer ") {
                        format!("{}\n", peer.ip())
                    } else {
                        format!("{name}\n")
                    };
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    });
}

/// `curl` from pod `tag`: the body, or None.
fn curl(t: &Topology, tag: &str, url: &str) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ns(tag),
            "curl",
            "-s",
            "--max-time",
            "3",
            url,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One UDP request of `size` bytes from the pod at `ns` to `to`: the reply.
fn udp_ask(ns: &Path, to: Ipv4Addr, size: usize) -> Option<String> {
    dataplane::netns::run_in(ns, move || {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
        let mut b = [0u8; 256];
        // Bounded retries: a first datagram may wait on ARP-less TUN
        // setup or a peer's neighbour resolution.
        for _ in 0..3 {
            s.send_to(&vec![0x5a; size], (to, 5300))?;
            if let Ok(n) = s.recv(&mut b) {
                return Ok(String::from_utf8_lossy(&b[..n]).into_owned());
            }
        }
        Err(std::io::Error::other("no answer"))
    })
    .ok()
}

#[test]
fn conformance_two_nodes_ten_pods_each() {
    if !require_root("conformance_two_nodes_ten_pods_each") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    let dir = tempdir("cni-conformance");
    // (tag, node) for 10 pods per node.
    let pods: Vec<(String, usize)> = (0..2)
        .flat_map(|node| (0..10).map(move |i| (format!("c{node}x{i}"), node)))
        .collect();
    for (tag, _) in &pods {
        t.add_ns(tag).unwrap();
    }
    let confs: Vec<Value> = (0..2)
        .map(|node| {
            let mut c = conf(
                "1.1.0",
                "k8s-pod-network",
                &t.sockets[node],
                &dir.join(format!("n{node}")),
            );
            let net = if node == 0 { "10.244.1" } else { "10.244.2" };
            c["ipam"]["rangeStart"] = json!(format!("{net}.150"));
            c["ipam"]["rangeEnd"] = json!(format!("{net}.200"));
            c
        })
        .collect();
    // All twenty ADDs at once, as a kubelet starting pods does.
    let added: Vec<(String, usize, Ipv4Addr)> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .map(|(tag, node)| {
                let ns = format!("/var/run/netns/{}", t.ns(tag));
                let c = &confs[*node];
                s.spawn(move || {
                    let r = plugin(CNI, "ADD", &env(tag, &ns, "eth0"), c);
                    assert_eq!(r.code, 0, "{tag}: {}", r.out);
                    let a = address(&serde_json::from_str(&r.out).unwrap());
                    (
                        tag.clone(),
                        *node,
                        a.trim_end_matches("/32").parse().unwrap(),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<Ipv4Addr> = added.iter().map(|a| a.2).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "twenty distinct addresses");
    for (_, node, ip) in &added {
        let net = if *node == 0 { 1 } else { 2 };
        assert_eq!(ip.octets()[2], net, "{ip} from its node's pod CIDR");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (tag, _, ip) in &added {
        serve(&t.ns_path(tag), *ip, tag.clone(), stop.clone());
    }
    serve(
        &t.ns_path("ext"),
        "192.168.77.100".parse().unwrap(),
        "external".into(),
        stop.clone(),
    );

    let mut failures = Vec::new();
    for (from, node, _) in &added {
        for (to, _, ip) in &added {
            if from == to {
                continue;
            }
            match curl(&t, from, &format!("http://{ip}:8080/")) {
                Some(b) if b == *to => {}
                other => failures.push(format!("http {from} -> {to}: {other:?}")),
            }
            match udp_ask(&t.ns_path(from), *ip, 64) {
                Some(b) if b == format!("{to} 64") => {}
                other => failures.push(format!("udp {from} -> {to}: {other:?}")),
            }
        }
        // Out of the cluster through SNAT.
        match curl(&t, from, "http://192.168.77.100:8080/") {
            Some(b) if b == "external" => {}
            other => failures.push(format!("http {from} -> external: {other:?}")),
        }
        // 2000 bytes across nodes: two IP fragments at MTU 1450.
        let (far, _, far_ip) = added.iter().find(|p| p.1 != *node).unwrap();
        match udp_ask(&t.ns_path(from), *far_ip, 2000) {
            Some(b) if b == format!("{far} 2000") => {}
            other => failures.push(format!("udp 2000 B {from} -> {far}: {other:?}")),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Deleting the pods frees their addresses.
    std::thread::scope(|s| {
        for (tag, node, _) in &added {
            let ns = format!("/var/run/netns/{}", t.ns(tag));
            let c = &confs[*node];
            s.spawn(move || {
                let r = plugin(CNI, "DEL", &env(tag, &ns, "eth0"), c);
                assert_eq!(r.code, 0, "{tag}: {}", r.out);
            });
        }
    });
    for node in 0..2 {
        assert!(reservations(&dir.join(format!("n{node}")), "k8s-pod-network").is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn veth_mode_attaches_through_af_xdp_with_a_gateway() {
    if !require_root("veth_mode_attaches_through_af_xdp_with_a_gateway") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    let dir = tempdir("cni-veth");
    let mut c = conf("1.1.0", "vethnet", &t.sockets[0], &dir);
    c["mode"] = json!("veth");
    t.add_ns("v0").unwrap();
    let ns = format!("/var/run/netns/{}", t.ns("v0"));
    let e = env("veth0", &ns, "net1");
    let r = plugin(CNI, "ADD", &e, &c);
    assert_eq!(r.code, 0, "{}", r.out);
    let v: Value = serde_json::from_str(&r.out).unwrap();
    // A veth has a next hop: the pod CIDR's gateway.
    assert_eq!(v["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(v["routes"][0]["gw"], "10.244.1.1");
    let addr = address(&v);
    assert_eq!(link(&t, "v0", "net1"), Some((vec![addr], 1450)));
    assert!(
        common::pings(&t, "v0", "10.244.2.2"),
        "veth pod across VXLAN"
    );
    let mut chk = c.clone();
    chk["prevResult"] = v;
    assert_eq!(plugin(CNI, "CHECK", &e, &chk).code, 0);
    assert_eq!(plugin(CNI, "DEL", &e, &c).code, 0);
    assert!(link(&t, "v0", "net1").is_none());
    assert_eq!(plugin(CNI, "DEL", &e, &c).code, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

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
