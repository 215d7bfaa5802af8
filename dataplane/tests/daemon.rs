//! The `sluice` daemon end to end, in network namespaces: the demo
//! topology (two Sluice nodes, TUN pods, an external host), then on the
//! same running daemons: worker pinning, idle CPU, bad input on the uplink
//! and on pod ports, and a peer added and removed at runtime while a
//! transfer runs. Plus start-up refusing a bad config, naming the field.

mod common;
#[path = "../../encap/tests/support/mod.rs"]
mod support;

use common::{flannel_node_c, pings};

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use dataplane::daemon::request;
use dataplane::demo::{self, Topology};
use encap::MacAddr;
use encap::vxlan::{self, EncapTemplate, OVERHEAD, TunnelEndpoint, Vni, VxlanConfig};
use etherparse::PacketBuilder;
use support::{PacketSocket, require_root};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn a_bad_config_fails_start_up_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("sluice-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (doc, field) in [
        (
            "node: {name: a, uplink: eth0, ip: 10.0.0.1, pod_cidr: 10.244.1.0/33}\n",
            "node.pod_cidr",
        ),
        (
            "node: {name: a, uplink: eth0, ip: 10.0.0.256, pod_cidr: 10.244.1.0/24}\n",
            "node.ip",
        ),
        (
            "node: {name: a, uplink: eth0, ip: 10.0.0.1, pod_cidr: 10.244.1.0/24}\nsnat: {ports: 9-3}\n",
            "snat.ports",
        ),
        (
            "node: {name: a, uplink: eth0, ip: 10.0.0.1, pod_cidr: 10.244.1.0/24}\nworkerz: {}\n",
            "workerz",
        ),
    ] {
        let f = dir.join("bad.yaml");
        std::fs::write(&f, doc).unwrap();
        let out = Command::new(SLUICE)
            .args(["run", "--config"])
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(field), "{field} not named in: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `stats` as (key, value) lines.
fn stats(sock: &std::path::Path) -> Vec<(String, u64)> {
    request(sock, "stats")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// One `stats` value; a key the daemon does not report is a failure (a
/// renamed counter must not read as 0).
fn stat(sock: &std::path::Path, key: &str) -> u64 {
    let all = stats(sock);
    all.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {key} in stats: {all:?}"))
}

/// CPU ticks (user + system) of process `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat are utime and stime; `after` starts at 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The CPU list the thread named `name` of `pid` may run on.
fn thread_affinity(pid: u32, name: &str) -> Option<String> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|s| s.trim().to_string());
        }
    }
    None
}

/// A VXLAN frame to node-a from `from` with VNI `vni` carrying `inner_ip`.
fn vxlan_frame(dst_mac: [u8; 6], from: Ipv4Addr, vni: u32, inner_ip: &[u8]) -> Vec<u8> {
    let mut inner = vec![0x0a, 0x58, 192, 168, 77, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
    inner.extend_from_slice(inner_ip);
    let cfg = VxlanConfig {
        vni: Vni::new(vni).unwrap(),
        ..VxlanConfig::default()
    };
    let t = EncapTemplate::new(
        &cfg,
        &TunnelEndpoint {
            local_mac: MacAddr([2, 0, 0, 0, 0, 9]),
            next_hop_mac: MacAddr(dst_mac),
            local_ip: from,
            remote_ip: Ipv4Addr::new(192, 168, 77, 1),
        },
    );
    let mut b = vec![0; OVERHEAD];
    b.extend_from_slice(&inner);
    let end = b.len();
    let r = vxlan::encapsulate(&mut b, OVERHEAD..end, &t).unwrap();
    b[r].to_vec()
}

fn udp_ip(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(1000, 2000)
        .write(&mut v, b"bad input test")
        .unwrap();
    v
}

#[test]
fn daemon_end_to_end() {
    if !require_root("daemon_end_to_end") {
        return;
    }
    let mut t = Topology::build(std::path::Path::new(SLUICE)).expect("topology");
    let a = t.sockets[0].clone();

    // 1 and 3: every pod reaches every pod (ping, 10 MB TCP intact, UDP);
    // pods reach the external host through SNAT, which sees the node IP;
    // the node's kernel still serves on the uplink.
    let s = demo::checks(&t);
    assert!(s.failed().is_empty(), "failed: {:?}", s.failed());
    assert_eq!(s.lines.len(), 12 * 3 + 6 + 2 + 1, "checks run");

    // `sluice conntrack` lists the SNAT flows the checks opened: a1's UDP
    // echo to the external host, translated to node-a's IP and a port of
    // the SNAT range, replied.
    let out = Command::new(SLUICE)
        .args(["--socket", &a.to_string_lossy(), "conntrack"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let echo = listing
        .lines()
        .find(|l| {
            l.starts_with("udp src=10.244.1.2 dst=192.168.77.100 ")
                && l.contains(" dport=5300 src=192.168.77.100 dst=192.168.77.1 sport=5300 ")
        })
        .unwrap_or_else(|| panic!("no SNAT entry for a1's UDP echo:\n{listing}"));
    assert!(echo.ends_with(" [ASSURED]"), "{echo}");
    let port: u16 = echo
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("dport="))
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{echo}"));
    assert!(
        (61000..=65535).contains(&port),
        "translated port {port}: {echo}"
    );

    // 4: the pod's MTU is the uplink's minus 50. A pod that still uses
    // a larger MTU (1600, set by hand here) sending a 1600-byte DF ping is told
    // "fragmentation needed" with the overlay MTU, by Sluice.
    let mtu = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ns("a1"),
            "cat",
            "/sys/class/net/eth0/mtu",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1450");
    t.ip("a2", &["link", "set", "eth0", "mtu", "1600"]).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &t.ns("a2")])
        .args([
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1572",
            "10.244.2.2",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Frag needed and DF set (mtu = 1450)") || text.contains("mtu=1450"),
        "{text}"
    );
    assert!(stat(&a, "drop frag_needed") >= 1);
    assert!(stat(&a, "icmp_sent") >= 1);
    t.ip("a2", &["link", "set", "eth0", "mtu", "1450"]).unwrap();

    // Node-a runs two workers (one per uplink queue); its pods sit on
    // different workers, so pod-to-pod and reply traffic crossed between
    // them.
    assert_eq!(stat(&a, "workers"), 2);
    assert!(stat(&a, "handed_off") > 0, "no frame crossed workers");
    assert_eq!(stat(&a, "drop handoff_full"), 0);

    // 7: each worker is pinned to its configured core (node-a: 0 and 1)...
    let pid = t.daemon_pid(0).unwrap();
    assert_eq!(
        thread_affinity(pid, "sluice-worker-0").as_deref(),
        Some("0")
    );
    assert_eq!(
        thread_affinity(pid, "sluice-worker-1").as_deref(),
        Some("1")
    );
    assert_eq!(stat(&a, "worker_core_0"), 0);
    assert_eq!(stat(&a, "worker_core_1"), 1);
    // ... and an idle daemon (both workers) uses under 5% of a core over
    // 10 s.
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let ticks = cpu_ticks(pid) - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let core_share = ticks as f64 / hz / 10.0;
    eprintln!("idle CPU: {:.2}% of a core", core_share * 100.0);
    assert!(
        core_share < 0.05,
        "idle daemon used {:.1}% of a core",
        core_share * 100.0
    );

    // 5: bad input on the uplink (from the wire) and on a pod port.
    let wire = t.ns("wire");
    let up_a_mac = {
        let out = Command::new("ip")
            .args(["-n", &t.ns("a"), "-br", "link", "show", "dev", "up-a"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let m: MacAddr = text.split_whitespace().nth(2).unwrap().parse().unwrap();
        m.0
    };
    let good_inner = udp_ip([10, 244, 2, 2], [10, 244, 1, 2]);
    let node_b = Ipv4Addr::new(192, 168, 77, 2);
    let mut bad_flags = vxlan_frame(up_a_mac, node_b, 1, &good_inner);
    bad_flags[14 + 20 + 8] = 0;
    let mut bad_inner_sum = good_inner.clone();
    bad_inner_sum[10] ^= 0x55;
    let mut bad_outer_sum = vxlan_frame(up_a_mac, node_b, 1, &good_inner);
    bad_outer_sum[14 + 10] ^= 0x55;
    let uplink_frames: Vec<(&str, Vec<u8>)> = vec![
        (
            "vxlan_unknown_vtep",
            vxlan_frame(up_a_mac, Ipv4Addr::new(192, 168, 77, 50), 1, &good_inner),
        ),
        (
            "vxlan_unknown_vni",
            vxlan_frame(up_a_mac, node_b, 7, &good_inner),
        ),
        ("vxlan_no_i_flag", bad_flags),
        (
            "bad_ip_checksum",
            vxlan_frame(up_a_mac, node_b, 1, &bad_inner_sum),
        ),
        ("vxlan_bad_ip_checksum", bad_outer_sum),
        (
            "vxlan_inner_spoofed",
            vxlan_frame(
                up_a_mac,
                node_b,
                1,
                &udp_ip([10, 244, 9, 9], [10, 244, 1, 2]),
            ),
        ),
        // Truncated: cut inside the VXLAN header, the outer IPv4 length
        // now overstates it.
        (
            "malformed",
            vxlan_frame(up_a_mac, node_b, 1, &good_inner)[..OVERHEAD - 4].to_vec(),
        ),
    ];
    let before: Vec<(String, u64)> = stats(&a);
    let get = |v: &[(String, u64)], k: &str| {
        v.iter()
            .find(|x| x.0 == k)
            .map(|x| x.1)
            .unwrap_or_else(|| panic!("no {k} in stats"))
    };
    {
        // The topology owns the namespace: this handle must not delete it.
        let w = support::Netns { name: wire.clone() };
        let sock: PacketSocket = w.packet_socket("w-a");
        std::mem::forget(w);
        for (_, f) in &uplink_frames {
            sock.send(f);
        }
    }
    // Pod port: a1's TUN, raw frames from inside the pod.
    let a1 = support::Netns { name: t.ns("a1") };
    let pod_sock = a1.packet_socket("eth0");
    std::mem::forget(a1);
    let mut bad_sum = udp_ip([10, 244, 1, 2], [10, 244, 2, 2]);
    bad_sum[10] ^= 0x55;
    let mut bad_ihl = udp_ip([10, 244, 1, 2], [10, 244, 2, 2]);
    bad_ihl[0] = 0x43;
    let pod_frames: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", vec![0x45, 0, 0, 40, 0, 0]),
        ("bad_ip_checksum", bad_sum),
        ("malformed", bad_ihl),
        ("spoofed_source", udp_ip([10, 244, 1, 99], [10, 244, 2, 2])),
    ];
    for (_, f) in &pod_frames {
        pod_sock.send(f);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = stats(&a);
    let mut want: std::collections::BTreeMap<&str, u64> = Default::default();
    for (k, _) in uplink_frames.iter().chain(&pod_frames) {
        *want.entry(k).or_default() += 1;
    }
    for (k, n) in want {
        let got = get(&after, &format!("drop {k}")) - get(&before, &format!("drop {k}"));
        assert!(got >= n, "drop {k}: {got} < {n}");
    }
    assert!(t.daemon_alive(0), "daemon survived bad input");
    assert!(
        pings(&t, "a1", "10.244.2.2"),
        "traffic continues after bad input"
    );

    // 6: a peer added and removed at runtime while a TCP transfer runs
    // between two other pods.
    flannel_node_c(&mut t);
    assert!(!pings(&t, "a1", "10.244.3.2"), "node-c is not a peer yet");
    let transfer = {
        let t2 = &t;
        std::thread::scope(|sc| {
            let h = sc.spawn(|| demo::tcp(t2, "a2", "b2", Ipv4Addr::new(10, 244, 2, 3), 200 << 20));
            std::thread::sleep(Duration::from_millis(200));
            let r = request(
                &a,
                "peers add node-c 192.168.77.3 0a:5e:00:00:00:03 10.244.3.0/24",
            )
            .unwrap();
            assert!(r.starts_with("ok"), "{r}");
            let mut reachable = false;
            for _ in 0..20 {
                if pings(t2, "a1", "10.244.3.2") {
                    reachable = true;
                    break;
                }
            }
            let r = request(&a, "peers del node-c").unwrap();
            assert!(r.contains("removed"), "{r}");
            let after_del = pings(t2, "a1", "10.244.3.2");
            (h.join().unwrap(), reachable, after_del)
        })
    };
    let (tcp, reachable, after_del) = transfer;
    assert!(reachable, "the new peer became reachable");
    assert!(!after_del, "the removed peer is unreachable");
    let (intact, _, mbps) = tcp.expect("transfer");
    assert!(
        intact,
        "200 MB transfer across the peer changes arrived intact"
    );
    eprintln!("transfer during peer changes: {mbps:.0} MB/s");
}
