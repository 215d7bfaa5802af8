//! The daemon's life on a node (issue 16), in the netns topology with
//! real daemons:
//! - it and sluice-cni run on nodes without iproute2, ethtool or
//!   util-linux (Talos, Bottlerocket, a distroless image): here both run
//!   with a `PATH` that holds nothing, and still attach TUN and veth pods
//!   (links, addresses, routes, offloads), find their next hops, and answer
//!   a runtime's ADD, CHECK and DEL (the test itself builds the topology
//!   with `ip`, as a node's provisioning would);
//! - a peer's MAC change reaches the snapshot from a netlink event;
//! - readiness follows the uplink's XDP program.

mod common;
#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::path::Path;

use dataplane::demo::{self, Topology};
use serde_json::{Value, json};
use support::require_root;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const CNI: &str = env!("CARGO_BIN_EXE_sluice-cni");

#[test]
fn the_daemon_and_the_cni_plugin_need_no_ip_ethtool_or_nsenter() {
    if !require_root("the_daemon_and_the_cni_plugin_need_no_ip_ethtool_or_nsenter") {
        return;
    }
    let mut t = Topology::build_without_tools(Path::new(SLUICE)).expect("topology");
    // TUN pods on node-a, veth pods (made by the daemon: pair, namespace,
    // rename, address, route, offloads) on node-b, across VXLAN with next
    // hops from the neighbour table.
    for (client, server, addr) in [("a1", "b1", "10.244.2.2"), ("b2", "a2", "10.244.1.3")] {
        let r = demo::udp(&t, client, server, addr.parse().unwrap());
        assert!(r.is_ok(), "udp {client} -> {server}: {r:?}");
    }
    // The CNI plugin, run as a runtime runs it, with nothing on PATH but an
    // empty directory and only its own directory on CNI_PATH.
    let empty = std::env::temp_dir().join(format!("no-tools-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let data = empty.join("ipam");
    let bin = Path::new(CNI).parent().unwrap().display().to_string();
    t.add_ns("c1").unwrap();
    let netns = t.ns_path("c1").display().to_string();
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "no-tools",
        "type": "sluice-cni",
        "socket": t.sockets[0],
        "mode": "veth",
        "ipam": {
            "type": "sluice-cni",
            "subnet": "usePodCidr",
            "rangeStart": "10.244.1.140",
            "rangeEnd": "10.244.1.150",
            "dataDir": data,
        }
    });
    let env = [
        ("CNI_CONTAINERID", "notools1"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let node = t.ns("a");
    let path = empty.display().to_string();
    let run = |cmd: &str, conf: &Value| {
        common::cni_plugin(Some(&node), CNI, cmd, &env, conf, &path, &bin)
    };
    let add = run("ADD", &conf);
    assert_eq!(add.code, 0, "ADD: {}", add.out);
    let result: Value = serde_json::from_str(&add.out).unwrap();
    let ip = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.244.1.14"), "{ip}");
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = result;
    let check = run("CHECK", &check_conf);
    assert_eq!(
        check.code, 0,
        "CHECK (reads the pod over rtnetlink): {}",
        check.out
    );
    // The pod reaches a pod on the other node.
    let pod_ip = ip.split('/').next().unwrap().to_string();
    let r = t.exec("c1", &["ping", "-c", "1", "-W", "2", "10.244.2.3"]);
    assert!(r.is_ok(), "ping from the CNI pod {pod_ip}: {r:?}");
    let del = run("DEL", &conf);
    assert_eq!(del.code, 0, "DEL: {}", del.out);
    assert!(
        t.ip("c1", &["link", "show", "dev", "eth0"]).is_err(),
        "DEL removed the pod's interface"
    );
    let _ = std::fs::remove_dir_all(&empty);
}

/// Issue 16 item 4: a peer's MAC change in the node's neighbour table
/// reaches the routing snapshot from the kernel's netlink event, not the
/// next 500 ms poll. Ten changes; every one must show in `sluice routes`
/// (a functional check with a 3 s deadline); the delays are printed, not
/// asserted (a figure for the issue, measured here through the admin
/// socket, polled every 2 ms).
#[test]
fn a_peer_mac_change_reaches_the_snapshot_from_a_netlink_event() {
    if !require_root("a_peer_mac_change_reaches_the_snapshot_from_a_netlink_event") {
        return;
    }
    let t = Topology::build(Path::new(SLUICE)).expect("topology");
    let next_hop = || {
        let r = dataplane::daemon::request(&t.sockets[0], "routes").unwrap();
        r.lines()
            .find(|l| l.starts_with("peer "))
            .and_then(|l| l.rsplit_once("next_hop ").map(|(_, m)| m.to_string()))
            .unwrap_or_default()
    };
    let mut delays = Vec::new();
    for i in 0..10u8 {
        let mac = format!("02:00:00:00:aa:{i:02x}");
        let at = std::time::Instant::now();
        t.ip(
            "a",
            &[
                "neigh",
                "replace",
                "192.168.77.2",
                "lladdr",
                &mac,
                "dev",
                "up-a",
                "nud",
                "permanent",
            ],
        )
        .unwrap();
        while next_hop() != mac {
            assert!(
                at.elapsed() < std::time::Duration::from_secs(3),
                "change {i} never reached the snapshot: {}",
                next_hop()
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        delays.push(at.elapsed());
    }
    delays.sort();
    eprintln!(
        "peer MAC change -> snapshot: median {:?}, max {:?} (10 changes)",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
}

/// Issue 16 item 2: readiness follows forwarding. With node-b's uplink
/// program detached behind the daemon's back nothing reaches its workers,
/// and `/readyz` turns 503 naming it (computed per request).
#[test]
fn readiness_follows_the_uplink_program() {
    if !require_root("readiness_follows_the_uplink_program") {
        return;
    }
    let t = Topology::build(Path::new(SLUICE)).expect("topology");
    let readyz = || demo::http_get(&t, "b", (std::net::Ipv4Addr::LOCALHOST, 9420), "/readyz");
    let (code, body) = readyz().unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("uplink_program attached"), "{body}");
    t.ip("b", &["link", "set", "dev", "up-b", "xdp", "off"])
        .unwrap();
    let (code, body) = readyz().unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("uplink_program detached"), "{body}");
}

/// Issue 16: a daemon killed (SIGKILL) and started again at once comes
/// back, five times running: the new one's AF_XDP binds are retried while
/// the kernel releases the old sockets (it exited at once with an AF_XDP
/// error and no errno before), it waits for the old one's node lock, and
/// after each restart a pod on node-a reaches a pod on node-b again.
#[test]
fn a_daemon_killed_and_started_at_once_comes_back() {
    if !require_root("a_daemon_killed_and_started_at_once_comes_back") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    for round in 0..5 {
        t.kill_and_restart_at_once(0, Path::new(SLUICE))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let ready = demo::http_get(&t, "a", (std::net::Ipv4Addr::LOCALHOST, 9420), "/readyz")
                .is_ok_and(|r| r.0 == 200);
            if ready {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: not ready again"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let r = demo::udp(&t, "a1", "b1", "10.244.2.2".parse().unwrap());
        assert!(
            r.is_ok(),
            "round {round}: a1 -> b1 after the restart: {r:?}"
        );
    }
}

/// Issue 16 item 1 (pod to pod across VXLAN): a TCP transfer from TUN pod
/// a1 (node-a) to veth pod b1 (node-b) survives node-a's daemon being
/// killed (SIGKILL) and started again at once mid-transfer, three times:
/// the pod keeps its persistent TUN device, the new daemon attaches to it,
/// and TCP retransmits over the gap. The bytes arrive intact. (Through
/// SNAT a transfer does not survive yet: conntrack lives in the process.)
#[test]
fn a_pod_to_pod_transfer_survives_kill_9_of_the_daemon() {
    use std::io::{Read, Write};
    if !require_root("a_pod_to_pod_transfer_survives_kill_9_of_the_daemon") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    for round in 0..3u16 {
        let port = 7000 + round;
        let l = dataplane::netns::run_in(&t.ns_path("b1"), move || {
            std::net::TcpListener::bind(("10.244.2.2", port))
        })
        .unwrap();
        let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let (mut s, _) = l.accept()?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
            let mut got = Vec::new();
            s.read_to_end(&mut got)?;
            Ok(got)
        });
        let mut c = dataplane::netns::run_in(&t.ns_path("a1"), move || {
            std::net::TcpStream::connect(("10.244.2.2", port))
        })
        .unwrap();
        // 20 MB in 64 KB writes, paced over about three seconds.
        let data: Vec<u8> = (0..20u32 << 20)
            .map(|i| (i * 7 + i / 251 + u32::from(round)) as u8)
            .collect();
        let sent = data.clone();
        let client = std::thread::spawn(move || -> std::io::Result<()> {
            c.set_write_timeout(Some(std::time::Duration::from_secs(30)))?;
            for chunk in sent.chunks(64 << 10) {
                c.write_all(chunk)?;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            c.shutdown(std::net::Shutdown::Write)
        });
        std::thread::sleep(std::time::Duration::from_secs(1));
        t.kill_and_restart_at_once(0, Path::new(SLUICE))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        client
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: client: {e}"));
        let got = server
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: server: {e}"));
        assert!(
            got == data,
            "round {round}: {} of {} bytes, intact: false",
            got.len(),
            data.len()
        );
    }
}

/// The daemon replaces only Sluice's own program on the uplink (a
/// predecessor's, atomically): a foreign XDP program there is refused with
/// a message that names it and says what to do, and left in place.
#[test]
fn a_foreign_xdp_program_on_the_uplink_is_refused_not_replaced() {
    if !require_root("a_foreign_xdp_program_on_the_uplink_is_refused_not_replaced") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    t.kill_daemon(0).unwrap();
    // `r0 = XDP_PASS; exit`, named "foreign", on up-a in place of Sluice's.
    let id = dataplane::netns::run_in(&t.ns_path("a"), || {
        let insns: [u8; 16] = [
            0xb7, 0, 0, 0, 2, 0, 0, 0, // mov64 r0, 2
            0x95, 0, 0, 0, 0, 0, 0, 0, // exit
        ];
        let name = std::ffi::CString::new("foreign").unwrap();
        let license = std::ffi::CString::new("GPL").unwrap();
        // SAFETY: the instructions are two valid `struct bpf_insn`s (8
        // bytes each), the strings outlive the call; null opts are allowed.
        let fd = unsafe {
            libbpf_sys::bpf_prog_load(
                libbpf_sys::BPF_PROG_TYPE_XDP,
                name.as_ptr(),
                license.as_ptr(),
                insns.as_ptr().cast(),
                2,
                std::ptr::null_mut(),
            )
        };
        assert!(fd >= 0, "loading the foreign program: {fd}");
        dataplane::port::xdp::detach("up-a")?;
        let ifindex = netcfg::if_index("up-a")?;
        // SAFETY: no pointers; null opts are allowed.
        let rc = unsafe {
            libbpf_sys::bpf_xdp_attach(
                ifindex as i32,
                fd,
                libbpf_sys::XDP_FLAGS_DRV_MODE,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "attaching the foreign program");
        let mut id = 0u32;
        // SAFETY: `id` is a live u32 the call writes.
        unsafe {
            libbpf_sys::bpf_xdp_query_id(
                ifindex as i32,
                libbpf_sys::XDP_FLAGS_DRV_MODE as i32,
                &mut id,
            )
        };
        Ok(id)
    })
    .unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &t.ns("a"), SLUICE, "run", "--config"])
        .arg(t.config_path(0))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("up-a has XDP program {id} (\"foreign\") attached"))
            && said.contains("not Sluice's")
            && said.contains("xdp off"),
        "{said}"
    );
    let still = dataplane::netns::run_in(&t.ns_path("a"), move || {
        let mut now = 0u32;
        // SAFETY: `now` is a live u32 the call writes.
        unsafe {
            libbpf_sys::bpf_xdp_query_id(
                netcfg::if_index("up-a")? as i32,
                libbpf_sys::XDP_FLAGS_DRV_MODE as i32,
                &mut now,
            )
        };
        Ok(now)
    })
    .unwrap();
    assert_eq!(still, id, "the foreign program was left in place");
}
