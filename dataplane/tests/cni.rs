//! `sluice-cni` called exactly as a container runtime calls it
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
use rscni_types::types::{CNIResultWithVersion, ErrorResult};
use serde_json::{Value, json};
use support::require_root;

use common::cni::*;

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
        // As kubelet's runtime passes them: the pod's identity.
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-{i};K8S_POD_INFRA_CONTAINER_ID={id}"
        );
        let mut e = env(&id, &ns, "eth0");
        e.push(("CNI_ARGS", &args));

        let add = plugin(CNI, "ADD", &e, &c);
        assert_eq!(add.code, 0, "{version} ADD: {}", add.out);
        // The daemon knows the pod by name (NetworkPolicy from its first
        // packet, before status.podIP).
        let routes = dataplane::daemon::request(&socket, "routes").unwrap();
        assert!(
            routes.contains(&format!("k8s shop/web-{i}")),
            "{version}: {routes}"
        );
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
        let id = format!("rs{i}");
        let args = format!("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=r{i}");
        let mut e = env(&id, &ns, "eth0");
        e.push(("CNI_ARGS", &args));
        let r = plugin(CNI, "ADD", &e, &c);
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
    // The pods' Kubernetes names came back from their records.
    for i in 0..3 {
        assert!(routes.contains(&format!("k8s shop/r{i}")), "{routes}");
    }
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
