//! Services end to end, in network namespaces with real daemons: two
//! Sluice nodes reading one cluster file (Nodes, Services,
//! EndpointSlices, as kubectl prints them), real clients (dig, the
//! kernel's sockets) and a real DNS server (dnsmasq) in a pod.

mod common;
#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::stat;
use dataplane::daemon::request;
use dataplane::demo::{self, Svc, Topology};
use dataplane::netns;
use support::require_root;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn the_demo_services_work_and_are_counted() {
    if !require_root("the_demo_services_work_and_are_counted") {
        return;
    }
    let t = Topology::build_services(std::path::Path::new(SLUICE)).expect("topology");
    let mut s = demo::Summary::default();
    demo::service_checks(&t, &mut s);
    let (a, b) = (&t.sockets[0], &t.sockets[1]);
    let listing = |sock| {
        let c = request(sock, "conntrack").unwrap();
        let st = request(sock, "status").unwrap();
        let sv = request(sock, "services").unwrap();
        format!("{c}\n{st}\n{sv}")
    };
    assert!(
        s.failed().is_empty(),
        "failed: {:?}\nnode-a:\n{}\nnode-b:\n{}",
        s.failed(),
        listing(a),
        listing(b)
    );
    // The empty service's reject was Sluice's, counted under its reason
    // (workers publish counters every 100 ms).
    wait_for("the reject counted", || {
        stat(a, "drop svc_reject_no_endpoints") >= 1 && stat(a, "icmp_sent") >= 1
    });
    // Node-a's pods (a1, a2) and its own stack opened UDP and TCP flows to
    // kube-dns: balanced there, translated both ways.
    assert!(stat(a, "service_flows") >= 5, "{}", listing(a));
    assert!(stat(a, "service_translated") >= 10);
}

/// Polls `cond` for up to 5 s.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached in 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const A1: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const A2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
const B1: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const B2: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 3);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);

/// A UDP server in `pod` on `bind` answering every datagram with the
/// pod's name, until `stop` is set (bounded: at most 60 s).
fn serve_udp(t: &Topology, pod: &'static str, bind: (Ipv4Addr, u16), stop: Arc<AtomicBool>) {
    let s = netns::run_in(&t.ns_path(pod), move || UdpSocket::bind(bind)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        let mut b = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            if let Ok((_, from)) = s.recv_from(&mut b) {
                let _ = s.send_to(pod.as_bytes(), from);
            }
        }
    });
}

/// One new flow from `pod` (a fresh socket) to `to`: who answered, from
/// which address. `Err` on no answer or a refusal (ICMP port unreachable).
///
/// Each call uses a source port no earlier call used: an ephemeral port
/// the kernel hands out again would make the datagram part of an old,
/// still-tracked flow (which keeps its backend, as in the kernel), not a
/// new one.
fn ask(t: &Topology, pod: &str, to: (Ipv4Addr, u16)) -> std::io::Result<(String, SocketAddr)> {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(20000);
    let sport = NEXT.fetch_add(1, Ordering::Relaxed);
    netns::run_in(&t.ns_path(pod), move || {
        let c = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, sport))?;
        c.set_read_timeout(Some(Duration::from_millis(500)))?;
        c.connect(to)?;
        c.send(b"who")?;
        let mut b = [0u8; 64];
        let n = c.recv(&mut b)?;
        Ok((
            String::from_utf8_lossy(b.get(..n).unwrap_or_default()).into_owned(),
            c.peer_addr()?,
        ))
    })
}

fn svc(name: &'static str, ports: Vec<(&'static str, &'static str, u16, u16)>) -> Svc {
    Svc {
        namespace: "e2e",
        name,
        ip: VIP,
        ports,
        endpoints: Vec::new(),
        ..Svc::default()
    }
}

fn ready(ip: Ipv4Addr, node: &'static str) -> (Ipv4Addr, &'static str, bool, bool, bool) {
    (ip, node, true, true, false)
}

/// Writes `services` (plus the demo's) and waits until both nodes list
/// `expect_ports` service ports at a new table generation.
fn publish(t: &Topology, services: Vec<Svc>) {
    let gens: Vec<u64> = t.sockets.iter().map(|s| generation(s)).collect();
    let mut all = demo::demo_services();
    all.extend(services);
    t.write_cluster(&all).unwrap();
    for (s, g) in t.sockets.iter().zip(gens) {
        wait_for("the new service table", || generation(s) > g);
    }
    // The control state has published it; each worker loads it at its
    // next poll (an idle one sleeps up to max_sleep_ms, 50 ms): a flow
    // started before that meets the previous table.
    std::thread::sleep(Duration::from_millis(200));
}

fn generation(sock: &std::path::Path) -> u64 {
    let st = request(sock, "status").unwrap();
    st.lines()
        .find_map(|l| l.strip_prefix("service_table_generation ")?.parse().ok())
        .unwrap_or(0)
}

fn start() -> Option<Topology> {
    if !require_root("services e2e") {
        return None;
    }
    Some(Topology::build_services(std::path::Path::new(SLUICE)).expect("topology"))
}

/// e2e "should serve a basic endpoint from pods" and "should serve
/// multiport endpoints from pods", and "should be able to handle large
/// requests" across nodes; backends on both nodes all receive traffic.
#[test]
fn e2e_basic_and_multiport_endpoints_on_both_nodes() {
    let Some(t) = start() else { return };
    let stop = Arc::new(AtomicBool::new(false));
    for (pod, ip) in [("a2", A2), ("b1", B1), ("b2", B2)] {
        serve_udp(&t, pod, (ip, 8080), stop.clone());
        serve_udp(&t, pod, (ip, 8081), stop.clone());
    }
    let mut s = svc(
        "multi",
        vec![("p80", "UDP", 80, 8080), ("p81", "UDP", 81, 8081)],
    );
    s.endpoints = vec![
        ready(A2, "node-a"),
        ready(B1, "node-b"),
        ready(B2, "node-b"),
    ];
    publish(&t, vec![s]);
    for port in [80, 81] {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..60 {
            let (who, from) = ask(&t, "a1", (VIP, port)).expect("answered");
            assert_eq!(from, SocketAddr::from((VIP, port)), "from the ClusterIP");
            *seen.entry(who).or_insert(0) += 1;
        }
        assert_eq!(
            seen.len(),
            3,
            "port {port}: every backend, both nodes: {seen:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
}

/// e2e "should be able to create a functioning service with the same port
/// and different protocols": UDP 53 and TCP 53 on one ClusterIP reach
/// different target ports.
#[test]
fn e2e_same_port_different_protocols() {
    let Some(t) = start() else { return };
    let stop = Arc::new(AtomicBool::new(false));
    serve_udp(&t, "b1", (B1, 5353), stop.clone());
    let mut s = svc(
        "dual",
        vec![("dns", "UDP", 53, 5353), ("dns-tcp", "TCP", 53, 5354)],
    );
    s.endpoints = vec![ready(B1, "node-b")];
    publish(&t, vec![s]);
    assert_eq!(ask(&t, "a1", (VIP, 53)).expect("UDP").0, "b1");
    let l = netns::run_in(&t.ns_path("b1"), || TcpListener::bind((B1, 5354))).unwrap();
    let srv = std::thread::spawn(move || l.accept().map(|(_, peer)| peer));
    netns::run_in(&t.ns_path("a1"), || {
        TcpStream::connect_timeout(&SocketAddr::from((VIP, 53)), Duration::from_secs(3))
    })
    .expect("TCP 53 connects");
    assert_eq!(srv.join().unwrap().unwrap().ip(), std::net::IpAddr::V4(A1));
    stop.store(true, Ordering::Relaxed);
}

/// e2e "should have session affinity work for service with type
/// clusterIP", "... timeout work ..." and "should be able to switch
/// session affinity for service with type clusterIP".
#[test]
fn e2e_session_affinity_holds_times_out_and_switches() {
    let Some(t) = start() else { return };
    let stop = Arc::new(AtomicBool::new(false));
    for (pod, ip) in [("a2", A2), ("b1", B1), ("b2", B2)] {
        serve_udp(&t, pod, (ip, 8080), stop.clone());
    }
    let with = |affinity| {
        let mut s = svc("sticky", vec![("p", "UDP", 80, 8080)]);
        s.endpoints = vec![
            ready(A2, "node-a"),
            ready(B1, "node-b"),
            ready(B2, "node-b"),
        ];
        s.affinity_secs = affinity;
        s
    };
    let backends = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n)
            .map(|_| ask(&t, "a1", (VIP, 80)).expect("answered").0)
            .collect()
    };
    publish(&t, vec![with(Some(2))]);
    let held = backends(100);
    assert_eq!(held.len(), 1, "100 connections, one backend: {held:?}");
    std::thread::sleep(Duration::from_millis(2500));
    // After the timeout, new connections are balanced afresh (and bind
    // again): over several timeouts more than one backend answers.
    let mut after = std::collections::BTreeSet::new();
    for _ in 0..6 {
        after.extend(backends(1));
        std::thread::sleep(Duration::from_millis(2100));
    }
    assert!(after.len() > 1, "affinity expired: {after:?}");
    // Switched off: spread at once.
    publish(&t, vec![with(None)]);
    assert!(backends(30).len() > 1, "affinity off");
    // Switched on again: held.
    publish(&t, vec![with(Some(60))]);
    assert_eq!(backends(30).len(), 1, "affinity on");
    stop.store(true, Ordering::Relaxed);
}

/// Session affinity across daemon restarts (issue 16): a client bound to
/// one of three backends stays bound through five kill -9 restarts of its
/// node's daemon: the bindings live in `admin.run_dir` with the flows. (A
/// daemon that lost them would rebalance: the same backend five times by
/// chance is 1 in 243.)
#[test]
fn session_affinity_survives_daemon_restarts() {
    let Some(mut t) = start() else { return };
    let stop = Arc::new(AtomicBool::new(false));
    for (pod, ip) in [("a2", A2), ("b1", B1), ("b2", B2)] {
        serve_udp(&t, pod, (ip, 8080), stop.clone());
    }
    let mut s = svc("sticky", vec![("p", "UDP", 80, 8080)]);
    s.endpoints = vec![
        ready(A2, "node-a"),
        ready(B1, "node-b"),
        ready(B2, "node-b"),
    ];
    s.affinity_secs = Some(600);
    publish(&t, vec![s]);
    let backends = |t: &Topology, n: usize| -> std::collections::BTreeSet<String> {
        (0..n)
            .map(|_| ask(t, "a1", (VIP, 80)).expect("answered").0)
            .collect()
    };
    let held = backends(&t, 10);
    assert_eq!(held.len(), 1, "{held:?}");
    for round in 0..5 {
        t.kill_and_restart_at_once(0, std::path::Path::new(SLUICE))
            .unwrap();
        wait_for("node-a ready after the restart", || {
            demo::http_get(&t, "a", (Ipv4Addr::LOCALHOST, 9420), "/readyz")
                .is_ok_and(|r| r.0 == 200)
        });
        let after = backends(&t, 5);
        assert_eq!(after, held, "round {round}: the client was rebalanced");
    }
    let status = request(&t.sockets[0], "status").unwrap();
    assert!(
        status.lines().any(|l| l
            .strip_prefix("affinity_restored ")
            .is_some_and(|n| n != "0")),
        "{status}"
    );
    stop.store(true, Ordering::Relaxed);
}

/// e2e "should preserve UDP traffic when server pod cycles for a
/// ClusterIP service" and "should be rejected when no endpoints exist":
/// one connected UDP socket sends every 100 ms while the service's only
/// backend goes away (rejected while empty, not black-holed) and a new
/// one comes (answered by the new backend within a datagram of the table
/// update: no stale flow).
#[test]
fn e2e_udp_backend_scaled_to_zero_and_back() {
    let Some(t) = start() else { return };
    let stop = Arc::new(AtomicBool::new(false));
    serve_udp(&t, "b1", (B1, 8080), stop.clone());
    serve_udp(&t, "b2", (B2, 8080), stop.clone());
    let mut s = svc("cycle", vec![("p", "UDP", 80, 8080)]);
    s.endpoints = vec![ready(B1, "node-b")];
    publish(&t, vec![s.clone()]);
    let client = netns::run_in(&t.ns_path("a1"), || {
        let c = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        c.set_read_timeout(Some(Duration::from_millis(100)))?;
        c.connect((VIP, 80))?;
        Ok(c)
    })
    .unwrap();
    // One datagram, 100 ms to answer: Ok(who), Err(refused), Err(timeout).
    let tick = || -> Result<String, std::io::ErrorKind> {
        let _ = client.send(b"tick");
        let mut b = [0u8; 64];
        match client.recv(&mut b) {
            Ok(n) => Ok(String::from_utf8_lossy(&b[..n]).into_owned()),
            Err(e) => {
                std::thread::sleep(Duration::from_millis(20));
                Err(e.kind())
            }
        }
    };
    for _ in 0..5 {
        assert_eq!(tick(), Ok("b1".into()));
    }
    // Scale to zero: rejected (ECONNREFUSED on the connected socket).
    s.endpoints.clear();
    publish(&t, vec![s.clone()]);
    let mut refused = 0;
    for _ in 0..5 {
        if tick() == Err(std::io::ErrorKind::ConnectionRefused) {
            refused += 1;
        }
    }
    assert!(refused >= 2, "rejected while empty ({refused} of 5)");
    // Back with b2: the first datagram after the update is answered by b2.
    s.endpoints = vec![ready(B2, "node-b")];
    publish(&t, vec![s]);
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(tick());
    }
    assert_eq!(got.first(), Some(&Ok("b2".to_string())), "{got:?}");
    assert!(got.iter().all(|g| g == &Ok("b2".to_string())), "{got:?}");
    stop.store(true, Ordering::Relaxed);
}

/// kube-proxy's terminating fallback (KEP-1669): a service whose only
/// endpoints are serving and terminating still serves; one that is not
/// serving is never used (rejected).
#[test]
fn a_terminating_only_service_still_serves() {
    let Some(t) = start() else { return };
    let stop = Arc::new(AtomicBool::new(false));
    serve_udp(&t, "b2", (B2, 8080), stop.clone());
    let mut s = svc("ending", vec![("p", "UDP", 80, 8080)]);
    s.endpoints = vec![(B2, "node-b", false, true, true)];
    publish(&t, vec![s.clone()]);
    assert_eq!(
        ask(&t, "a1", (VIP, 80))
            .expect("served while terminating")
            .0,
        "b2"
    );
    s.endpoints = vec![(B2, "node-b", false, false, true)];
    publish(&t, vec![s]);
    let e = ask(&t, "a1", (VIP, 80)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    stop.store(true, Ordering::Relaxed);
}

/// A CoreDNS-like server (dnsmasq, UDP and TCP) in pod b1 answers `dig`
/// from every other pod through the ClusterIP, over UDP and TCP, and the
/// node's own stack too; with kube-proxy's iptables DNAT rule for the
/// ClusterIP programmed on node-a, the node's queries still work (the
/// kernel DNATs first; Sluice routes the pod address).
#[test]
fn dns_through_the_cluster_ip_with_dig_and_dnsmasq() {
    let Some(t) = start() else { return };
    if Command::new("dnsmasq").arg("--version").output().is_err()
        || Command::new("dig").arg("-v").output().is_err()
    {
        panic!("dnsmasq and dig are needed (dnsmasq-base, dnsutils)");
    }
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _dnsmasq = Kill(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &t.ns("b1"),
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=10.244.2.2",
                "--port=5353",
                "--address=/kube.test/10.96.0.1",
                "--user=root",
                "--pid-file=",
            ])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let dig = |ns: &str, tcp: bool| {
        let mut args = vec![
            "netns",
            "exec",
            ns,
            "dig",
            "@10.96.0.10",
            "-p",
            "53",
            "kube.test",
            "A",
            "+short",
            "+time=2",
            "+tries=2",
        ];
        if tcp {
            args.push("+tcp");
        }
        let out = Command::new("ip").args(&args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for pod in ["a1", "a2", "b2"] {
        for tcp in [false, true] {
            assert_eq!(dig(&t.ns(pod), tcp), "10.96.0.1", "{pod} tcp={tcp}");
        }
    }
    assert_eq!(dig(&t.ns("a"), false), "10.96.0.1", "node-a's own stack");
    t.exec(
        "a",
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "10.96.0.10",
            "-p",
            "udp",
            "--dport",
            "53",
            "-j",
            "DNAT",
            "--to-destination",
            "10.244.2.2:5353",
        ],
    )
    .unwrap();
    assert_eq!(
        dig(&t.ns("a"), false),
        "10.96.0.1",
        "with kube-proxy's DNAT on the node"
    );
}

const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

/// e2e "should only allow access from service loadbalancer source ranges":
/// a LoadBalancer IP the external host routes to node-a answers sources in
/// `loadBalancerSourceRanges` and drops the others (counted); the NodePort
/// of the same service ignores the ranges, as kube-proxy's does.
#[test]
fn e2e_load_balancer_source_ranges() {
    let Some(t) = start() else { return };
    let lb_ip = Ipv4Addr::new(203, 0, 113, 10);
    t.ip(
        "ext",
        &["route", "add", "203.0.113.10/32", "via", "192.168.77.1"],
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    serve_udp(&t, "b2", (B2, 8080), stop.clone());
    let lb = |ranges: Vec<&'static str>| {
        let mut s = svc("lb", vec![("p80", "UDP", 80, 8080)]);
        s.endpoints = vec![ready(B2, "node-b")];
        s.external = Some(demo::Exposure {
            node_ports: vec![30090],
            lb_ip: Some(lb_ip),
            source_ranges: ranges,
            ..demo::Exposure::default()
        });
        s
    };
    publish(&t, vec![lb(vec!["192.168.77.100/32"])]);
    let (who, from) = ask(&t, "ext", (lb_ip, 80)).expect("an allowed source");
    assert_eq!((who.as_str(), from), ("b2", SocketAddr::from((lb_ip, 80))));
    let before = stat(&t.sockets[0], "drop svc_source_range");
    publish(&t, vec![lb(vec!["10.0.0.0/8"])]);
    let e = ask(&t, "ext", (lb_ip, 80)).expect_err("a source outside the ranges");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::WouldBlock,
        "dropped, not refused: {e}"
    );
    wait_for("the drop counted", || {
        stat(&t.sockets[0], "drop svc_source_range") > before
    });
    let (who, from) = ask(&t, "ext", (NODE_A, 30090)).expect("the NodePort ignores the ranges");
    assert_eq!(
        (who.as_str(), from),
        ("b2", SocketAddr::from((NODE_A, 30090)))
    );
    stop.store(true, Ordering::Relaxed);
}

/// The packets kube-proxy-style rules on `node` DNATed (the counter of
/// the KUBE-NODEPORTS DNAT rule).
fn kube_proxy_hits(t: &Topology, node: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ns(node),
            "iptables",
            "-t",
            "nat",
            "-L",
            "KUBE-NODEPORTS",
        ])
        .args(["-v", "-x", "-n"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("DNAT"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A service rule for [`program_kube_proxy`]: protocol, ClusterIP (`None`:
/// a NodePort), port, DNAT target (`None`: KUBE-MARK-DROP, a Local policy
/// with no endpoint on the node), masquerade.
type KubeRule = (
    &'static str,
    Option<&'static str>,
    u16,
    Option<&'static str>,
    bool,
);

/// kube-proxy's iptables rules in miniature on `node`: KUBE-SERVICES from
/// PREROUTING and OUTPUT, one match per ClusterIP port, KUBE-NODEPORTS for
/// local addresses, the masquerade and drop marks, DNAT to the endpoint,
/// KUBE-POSTROUTING masquerading marked packets (iptables-restore, as
/// kube-proxy loads them).
fn program_kube_proxy(t: &Topology, node: &str, rules: &[KubeRule]) {
    let mut r = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
         :KUBE-MARK-DROP - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
         -A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n\
         -A POSTROUTING -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n-A KUBE-MARK-DROP -j MARK --or-mark 0x8000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n-A KUBE-POSTROUTING -j MASQUERADE\n",
    );
    for (proto, cluster_ip, port, to, masq) in rules {
        let (chain, m) = match cluster_ip {
            Some(ip) => ("KUBE-SERVICES", format!("-d {ip}/32 ")),
            None => ("KUBE-NODEPORTS", String::new()),
        };
        let m = format!("{m}-p {proto} -m {proto} --dport {port}");
        if *masq {
            let from = if cluster_ip.is_some() {
                "! -s 10.244.0.0/16 "
            } else {
                ""
            };
            r += &format!("-A {chain} {from}{m} -j KUBE-MARK-MASQ\n");
        }
        r += &match to {
            Some(ep) => format!("-A {chain} {m} -j DNAT --to-destination {ep}\n"),
            None => format!("-A {chain} {m} -j KUBE-MARK-DROP\n"),
        };
    }
    r += "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n\
          *filter\n:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\n-A FORWARD -j KUBE-FIREWALL\n\
          -A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP\nCOMMIT\n";
    let file = std::env::temp_dir().join(format!("kube-proxy-{}-{node}.rules", t.ns(node)));
    std::fs::write(&file, r).unwrap();
    let load = format!("iptables-restore --noflush < {}", file.display());
    let out = Command::new("ip")
        .args(["netns", "exec", &t.ns(node), "sh", "-c", &load])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A NodePort with kube-proxy's rules on both nodes: node-b
/// (`services.node_ports: false`) leaves it to its kernel, which DNATs to
/// b1 through the host device and masquerades; node-a
/// (`services.node_ports: true`) serves it before netfilter sees it (the
/// rule's counter stays 0, Sluice counts the flow). Both answer from the
/// NodePort and b1 sees the node's gateway address either way.
#[test]
fn e2e_node_port_with_and_without_kube_proxy_rules() {
    let Some(t) = start() else { return };
    for node in ["a", "b"] {
        program_kube_proxy(
            &t,
            node,
            &[("udp", None, 30053, Some("10.244.2.2:5353"), true)],
        );
    }
    let flows = stat(&t.sockets[0], "service_flows");
    let bind = (B1, demo::DNS_TARGET);
    let r = demo::udp_via(&t, "ext", "b1", bind, (NODE_B, demo::WEB_NODE_PORT));
    assert_eq!(
        r.unwrap(),
        Ipv4Addr::new(10, 244, 2, 1),
        "node-b: kube-proxy's masquerade"
    );
    assert!(kube_proxy_hits(&t, "b") >= 1, "node-b's kernel DNATed it");
    let r = demo::udp_via(&t, "ext", "b1", bind, (NODE_A, demo::WEB_NODE_PORT));
    assert_eq!(
        r.unwrap(),
        Ipv4Addr::new(10, 244, 1, 1),
        "node-a: Sluice's masquerade"
    );
    assert_eq!(
        kube_proxy_hits(&t, "a"),
        0,
        "node-a's netfilter never saw it"
    );
    wait_for("node-a balanced it", || {
        stat(&t.sockets[0], "service_flows") > flows
    });
    // Per service port, in `sluice services` and Prometheus: the datagram
    // and its answer (1000 bytes of payload each, IP packets of 1028).
    let listed = request(&t.sockets[0], "services").unwrap();
    let line = listed
        .lines()
        .find(|l| l.starts_with("service default/web:udp/UDP "))
        .unwrap_or_else(|| panic!("{listed}"));
    let field = |k: &str| -> u64 {
        let w: Vec<&str> = line.split_whitespace().collect();
        let i = w.iter().position(|x| *x == k).unwrap();
        w[i + 1].parse().unwrap()
    };
    assert!(
        field("packets") >= 2 && field("bytes") >= 2 * 1028,
        "{line}"
    );
    let (_, metrics) = demo::http_get(&t, "a", (Ipv4Addr::LOCALHOST, 9420), "/metrics").unwrap();
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("sluice_service_bytes_total{service=\"default/web:udp/UDP\"} ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no service bytes in /metrics"));
    assert_eq!(bytes, field("bytes"));
}

/// Everything the demo checks of Services, with kube-proxy's iptables
/// rules for the demo's Services on both nodes (a node where kube-proxy
/// still runs beside Sluice): pods never cross netfilter, node-a's
/// NodePorts are taken by XDP before it (its rules count nothing), and the
/// node's own queries are DNATed by the kernel first, then routed by
/// Sluice.
#[test]
fn the_demo_services_work_with_kube_proxy_rules_on_both_nodes() {
    let Some(t) = start() else { return };
    for (node, local) in [("a", "10.244.1.2:8080"), ("b", "10.244.2.3:8080")] {
        let mut rules: Vec<KubeRule> = vec![
            ("udp", Some("10.96.0.10"), 53, Some("10.244.2.2:5353"), true),
            ("tcp", Some("10.96.0.10"), 53, Some("10.244.2.2:5353"), true),
            (
                "udp",
                None,
                demo::WEB_NODE_PORT,
                Some("10.244.2.2:5353"),
                true,
            ),
            (
                "tcp",
                None,
                demo::WEB_NODE_PORT,
                Some("10.244.2.2:5353"),
                true,
            ),
            ("udp", None, demo::LOCAL_NODE_PORT, Some(local), false),
            ("tcp", None, demo::LOCAL_NODE_PORT, Some(local), false),
        ];
        if node == "a" {
            rules.push(("udp", None, demo::REMOTE_ONLY_NODE_PORT, None, false));
        }
        program_kube_proxy(&t, node, &rules);
    }
    let mut s = demo::Summary::default();
    demo::service_checks(&t, &mut s);
    assert!(s.failed().is_empty(), "failed: {:?}", s.failed());
    assert_eq!(
        kube_proxy_hits(&t, "a"),
        0,
        "node-a's NodePorts never reached netfilter"
    );
}

/// e2e "should have session affinity work for NodePort service" and
/// "should be able to switch session affinity for NodePort service": new
/// flows from the external host (each from its own source port) through
/// node-a's NodePort, which node-a serves itself on two workers, hold one
/// backend while affinity is on and spread when it is off.
#[test]
fn e2e_session_affinity_for_a_node_port_from_outside() {
    let Some(t) = start() else { return };
    let stop = Arc::new(AtomicBool::new(false));
    for (pod, ip) in [("a2", A2), ("b1", B1), ("b2", B2)] {
        serve_udp(&t, pod, (ip, 8080), stop.clone());
    }
    let with = |affinity| {
        let mut s = svc("sticky-np", vec![("p", "UDP", 80, 8080)]);
        s.endpoints = vec![
            ready(A2, "node-a"),
            ready(B1, "node-b"),
            ready(B2, "node-b"),
        ];
        s.affinity_secs = affinity;
        s.external = Some(demo::Exposure {
            node_ports: vec![30092],
            ..demo::Exposure::default()
        });
        s
    };
    let backends = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n)
            .map(|_| ask(&t, "ext", (NODE_A, 30092)).expect("answered").0)
            .collect()
    };
    publish(&t, vec![with(Some(60))]);
    let held = backends(40);
    assert_eq!(held.len(), 1, "40 flows, one backend: {held:?}");
    publish(&t, vec![with(None)]);
    assert!(backends(30).len() > 1, "affinity off");
    publish(&t, vec![with(Some(60))]);
    assert_eq!(backends(30).len(), 1, "affinity on again");
    stop.store(true, Ordering::Relaxed);
}
