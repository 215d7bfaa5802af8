//! The upstream NetworkPolicy model in network namespaces with two real
//! daemons: namespaces x, y, z with pods a, b, c each (a and c on node-a
//! as TUN pods, b on node-b as veth + AF_XDP pods), each serving TCP and
//! UDP on ports 80 and 81, one Service per pod. Both daemons follow the
//! fake API server (real HTTP, the real `kube` client, in the external
//! host's namespace): the Nodes, the Services and EndpointSlices, and each
//! case's Namespaces, Pods and NetworkPolicies, written as objects (what
//! changed from the previous case is put, what is gone deleted).
//! Every case of network_policy.go (policy/tests/cases/upstream.rs, the
//! file the compiled-table and pipeline suites include) is run: its objects
//! put, both daemons waited for (until each shows the digest of the case's
//! model as `policy_input`: it read every object), then every pair probed at once
//! (kernel sockets in the pods: a TCP connect or a UDP echo, 500 ms
//! timeout, up to three attempts, and as upstream a second try of the
//! matrix when the first has wrong results), through the pod IP and through the Service ClusterIP, and
//! compared with the case's truth table. SCTP: this machine's kernel has
//! no SCTP (`socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)` fails with
//! EPROTONOSUPPORT, no sctp module under /lib/modules), so the three SCTP
//! cases are checked by the compiled-table and pipeline suites only. A
//! sample of the generated cases (every 25th of the 300) runs the same
//! way.
//!
//! One topology serves every case (built at the first, removed at exit);
//! the cases take turns.

#[path = "../../encap/tests/support/mod.rs"]
mod support;

#[path = "../../policy/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctrl::fakeapi::FakeApi;
use dataplane::daemon::request;
use dataplane::demo::{Svc, Topology, cluster_yaml_with};
use dataplane::netns;
use policy::{Cluster, Peer, Policy, PolicyPort, Port, Proto, Requirement, Selector};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const WAIT: Duration = Duration::from_millis(500);

/// The nine pods' admin names (`x-a`...), addresses and nodes.
fn pods() -> Vec<(String, Ipv4Addr, usize)> {
    (0..9)
        .map(|i| {
            let (n, p) = (i / 3, i % 3);
            let ip = common::ip(n, p);
            (
                format!("{}-{}", common::NS[n], common::PODS[p]),
                ip,
                usize::from(p == 1),
            )
        })
        .collect()
}

fn service_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 1, 10 + i as u8)
}

/// The pods' Services.
fn services() -> Vec<Svc> {
    let mut v = Vec::new();
    for (i, (name, ip, node)) in pods().into_iter().enumerate() {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        v.push(Svc {
            namespace: leak(common::NS[i / 3].to_string()),
            name: leak(format!("s-{name}")),
            ip: service_ip(i),
            ports: vec![
                ("serve-80-tcp", "TCP", 80, 80),
                ("serve-81-tcp", "TCP", 81, 81),
                ("serve-80-udp", "UDP", 80, 80),
                ("serve-81-udp", "UDP", 81, 81),
            ],
            endpoints: vec![(
                ip,
                if node == 0 { "node-a" } else { "node-b" },
                true,
                true,
                false,
            )],
            ..Svc::default()
        });
    }
    v
}

fn selector(s: &Selector) -> String {
    let mut y = String::from("{matchLabels: {");
    for (i, (k, v)) in s.labels.iter().enumerate() {
        let _ = write!(y, "{}\"{k}\": \"{v}\"", if i > 0 { ", " } else { "" });
    }
    y += "}, matchExpressions: [";
    for (i, r) in s.exprs.iter().enumerate() {
        let (k, op, vs): (&str, &str, &[String]) = match r {
            Requirement::In(k, vs) => (k, "In", vs),
            Requirement::NotIn(k, vs) => (k, "NotIn", vs),
            Requirement::Exists(k) => (k, "Exists", &[]),
            Requirement::DoesNotExist(k) => (k, "DoesNotExist", &[]),
        };
        let vs: Vec<String> = vs.iter().map(|v| format!("\"{v}\"")).collect();
        let _ = write!(
            y,
            "{}{{key: \"{k}\", operator: {op}, values: [{}]}}",
            if i > 0 { ", " } else { "" },
            vs.join(", ")
        );
    }
    y + "]}"
}

fn peer(p: &Peer) -> String {
    match p {
        Peer::Pods { namespaces, pods } => {
            let mut parts = Vec::new();
            if let Some(s) = pods {
                parts.push(format!("podSelector: {}", selector(s)));
            }
            if let Some(s) = namespaces {
                parts.push(format!("namespaceSelector: {}", selector(s)));
            }
            format!("{{{}}}", parts.join(", "))
        }
        Peer::Block { cidr, except } => {
            let ex: Vec<String> = except.iter().map(|e| format!("\"{e}\"")).collect();
            format!(
                "{{ipBlock: {{cidr: \"{cidr}\", except: [{}]}}}}",
                ex.join(", ")
            )
        }
    }
}

fn port(pp: &PolicyPort) -> String {
    let proto = match pp.proto {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
        Proto::Sctp => "SCTP",
    };
    match &pp.port {
        Port::Any => format!("{{protocol: {proto}}}"),
        Port::Range(lo, hi) if lo == hi => format!("{{protocol: {proto}, port: {lo}}}"),
        Port::Range(lo, hi) => format!("{{protocol: {proto}, port: {lo}, endPort: {hi}}}"),
        Port::Named(n) => format!("{{protocol: {proto}, port: \"{n}\"}}"),
    }
}

fn rules(rs: &[policy::Rule], peers_key: &str) -> String {
    let v: Vec<String> = rs
        .iter()
        .map(|r| {
            let peers: Vec<String> = r.peers.iter().map(peer).collect();
            let ports: Vec<String> = r.ports.iter().map(port).collect();
            format!(
                "{{{peers_key}: [{}], ports: [{}]}}",
                peers.join(", "),
                ports.join(", ")
            )
        })
        .collect();
    format!("[{}]", v.join(", "))
}

fn policy_item(p: &Policy) -> String {
    let mut types = Vec::new();
    if p.isolates_ingress {
        types.push("Ingress");
    }
    if p.isolates_egress {
        types.push("Egress");
    }
    format!(
        "- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {{name: \"{}\", namespace: \"{}\"}}\n  spec:\n    podSelector: {}\n    policyTypes: [{}]\n    ingress: {}\n    egress: {}\n",
        p.name,
        p.namespace,
        selector(&p.select),
        types.join(", "),
        rules(&p.ingress, "from"),
        rules(&p.egress, "to")
    )
}

/// The cluster's objects as YAML list items (namespaces without the
/// automatic name label: the API server adds it, and so does the model).
fn items(c: &Cluster) -> String {
    let mut y = String::new();
    for n in &c.namespaces {
        let labels: Vec<String> = n
            .labels
            .iter()
            .filter(|(k, _)| *k != "kubernetes.io/metadata.name")
            .map(|(k, v)| format!("\"{k}\": \"{v}\""))
            .collect();
        let _ = write!(
            y,
            "- apiVersion: v1\n  kind: Namespace\n  metadata: {{name: \"{}\", labels: {{{}}}}}\n",
            n.name,
            labels.join(", ")
        );
    }
    for p in &c.pods {
        let labels: Vec<String> = p
            .labels
            .iter()
            .map(|(k, v)| format!("\"{k}\": \"{v}\""))
            .collect();
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|np| {
                format!(
                    "{{name: \"{}\", containerPort: {}, protocol: {}}}",
                    np.name,
                    np.port,
                    match np.proto {
                        Proto::Tcp => "TCP",
                        Proto::Udp => "UDP",
                        Proto::Sctp => "SCTP",
                    }
                )
            })
            .collect();
        let _ = write!(
            y,
            "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: \"{}\", namespace: \"{}\", labels: {{{}}}}}\n  spec: {{containers: [{{name: c, image: none, ports: [{}]}}]}}\n  status: {{phase: Running, podIP: \"{}\"}}\n",
            p.name,
            p.namespace,
            labels.join(", "),
            ports.join(", "),
            p.ip.map(|a| a.to_string()).unwrap_or_default()
        );
    }
    for p in &c.policies {
        y += &policy_item(p);
    }
    y
}

/// The shared topology: the demo's two nodes and the nine model pods with
/// their servers.
struct E2e {
    t: Topology,
    api: FakeApi,
    stop: Arc<AtomicBool>,
    /// The objects the API server holds for the cases, by (kind,
    /// namespace, name).
    last: BTreeMap<(String, String, String), serde_yaml::Value>,
    dir: std::path::PathBuf,
}

/// YAML list items as objects by (kind, namespace, name).
fn objects(items: &str) -> BTreeMap<(String, String, String), serde_yaml::Value> {
    let v: serde_yaml::Value =
        serde_yaml::from_str(&format!("items:\n{items}")).expect("the test's own YAML");
    let s = |v: &serde_yaml::Value| v.as_str().unwrap_or_default().to_string();
    v["items"]
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|o| {
                    let key = (
                        s(&o["kind"]),
                        s(&o["metadata"]["namespace"]),
                        s(&o["metadata"]["name"]),
                    );
                    (key, o.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Creates or replaces `o` (of `kind`) in the API server.
fn put(api: &FakeApi, kind: &str, o: &serde_yaml::Value) {
    fn typed<T: serde::de::DeserializeOwned>(o: &serde_yaml::Value) -> T {
        serde_yaml::from_value(o.clone()).expect("the test's own object")
    }
    match kind {
        "Namespace" => api.put_namespace(typed(o)),
        "Pod" => api.put_pod(typed(o)),
        "NetworkPolicy" => api.put_network_policy(typed(o)),
        "Service" => api.put_service(typed(o)),
        "EndpointSlice" => api.put_endpoint_slice(typed(o)),
        k => panic!("no kind {k} in this test"),
    };
}

fn delete(api: &FakeApi, (kind, ns, name): &(String, String, String)) {
    match kind.as_str() {
        "Namespace" => api.delete_namespace(name),
        "Pod" => api.delete_pod(ns, name),
        "NetworkPolicy" => api.delete_network_policy(ns, name),
        k => panic!("no kind {k} in this test"),
    }
}

static E2E: Mutex<Option<E2e>> = Mutex::new(None);
static BUILT: AtomicBool = AtomicBool::new(false);

extern "C" fn tear_down() {
    println!(
        "netpol e2e: {} probes, {} got through only on a second or third attempt",
        PROBES.load(Ordering::Relaxed),
        RETRIED.load(Ordering::Relaxed)
    );
    let e = E2E
        .lock()
        .map(|mut g| g.take())
        .unwrap_or_else(|p| p.into_inner().take());
    if let Some(e) = e {
        e.stop.store(true, Ordering::Relaxed);
        drop(e.t);
        drop(e.api);
        let _ = std::fs::remove_dir_all(&e.dir);
    }
}

fn serve(t: &Topology, name: &str, ip: Ipv4Addr, stop: &Arc<AtomicBool>) {
    for port in [80u16, 81] {
        let l = netns::run_in(&t.ns_path(name), move || TcpListener::bind((ip, port))).unwrap();
        l.set_nonblocking(true).unwrap();
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.write_all(b"hi");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let u = netns::run_in(&t.ns_path(name), move || UdpSocket::bind((ip, port))).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = u.recv_from(&mut b) {
                    let _ = u.send_to(&b[..n], from);
                }
            }
        });
    }
}

fn build() -> E2e {
    let dir = std::env::temp_dir().join(format!("sluice-netpol-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    // The API server listens in the external host's namespace, where both
    // nodes reach it over the wire; node-a runs two workers.
    let (mut t, api) = Topology::build_kube_with(std::path::Path::new(SLUICE), 2, |t| {
        let l = netns::run_in(&t.ns_path("ext"), || TcpListener::bind("192.168.77.100:0"))?;
        let api = FakeApi::start_on(l)?;
        for (name, ip, cidr) in [
            ("node-a", "192.168.77.1", "10.244.1.0/24"),
            ("node-b", "192.168.77.2", "10.244.2.0/24"),
        ] {
            api.put_node(ctrl::node::node_object(name, ip, Some(cidr), &[]));
        }
        let svc = cluster_yaml_with(&[], &services());
        let items = svc.split_once("items:\n").map_or("", |(_, i)| i);
        for ((kind, _, _), o) in objects(items) {
            put(&api, &kind, &o);
        }
        api.write_kubeconfig(&kc)?;
        Ok((kc.clone(), api))
    })
    .expect("topology");
    for (name, ip, node) in pods() {
        t.add_ns(&name).unwrap();
        let kind = if node == 0 { "tun" } else { "veth" };
        let r = request(
            &t.sockets[node],
            &format!("pods add {name} {ip} {} {kind}", t.ns_path(&name).display()),
        )
        .unwrap();
        assert!(r.starts_with("ok"), "pods add {name}: {r}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for (name, ip, _) in pods() {
        serve(&t, &name, ip, &stop);
    }
    E2e {
        t,
        api,
        stop,
        last: BTreeMap::new(),
        dir,
    }
}

/// Node `i`'s `policy_input`: the digest of the model it enforces.
fn input(t: &Topology, i: usize) -> String {
    request(&t.sockets[i], "status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| Some(l.strip_prefix("policy_input ")?.to_string()))
        .unwrap_or_default()
}

/// Puts `c`'s objects in the API server (deleting those it no longer
/// has) and waits until both daemons enforce exactly that model.
fn install(e: &mut E2e, c: &Cluster) {
    let now = objects(&items(c));
    for (key, o) in &now {
        if e.last.get(key) != Some(o) {
            put(&e.api, &key.0, o);
        }
    }
    for key in e.last.keys().filter(|k| !now.contains_key(*k)) {
        delete(&e.api, key);
    }
    e.last = now;
    let want = format!("{:016x}", c.digest());
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..2).any(|i| input(&e.t, i) != want) {
        assert!(
            Instant::now() < deadline,
            "the model (digest {want}) was not applied in 10 s:\n{}",
            request(&e.t.sockets[0], "status").unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A probe from pod `from` to `dst:port`: up to three attempts (a new
/// connection or datagram each), as a lost first SYN is not a verdict.
/// First attempts that failed where a later one got through are counted.
fn probe(t: &Topology, from: &str, dst: Ipv4Addr, proto: Proto, port: u16) -> bool {
    for attempt in 0..3 {
        if probe_once(t, from, dst, proto, port) {
            if attempt > 0 {
                RETRIED.fetch_add(1, Ordering::Relaxed);
            }
            return true;
        }
    }
    false
}

/// Probes whose first attempt failed and a later one got through.
static RETRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Probes run.
static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn probe_once(t: &Topology, from: &str, dst: Ipv4Addr, proto: Proto, port: u16) -> bool {
    let to = SocketAddr::from((dst, port));
    netns::run_in(&t.ns_path(from), move || {
        Ok(match proto {
            Proto::Tcp => TcpStream::connect_timeout(&to, WAIT)
                .and_then(|mut s| {
                    s.set_read_timeout(Some(WAIT))?;
                    let mut b = [0u8; 2];
                    s.read_exact(&mut b)
                })
                .is_ok(),
            _ => {
                let u = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                u.set_read_timeout(Some(WAIT / 2))?;
                let mut ok = false;
                for _ in 0..2 {
                    u.send_to(b"probe", to)?;
                    let mut b = [0u8; 16];
                    if let Ok((n, src)) = u.recv_from(&mut b)
                        && src == to
                        && &b[..n] == b"probe"
                    {
                        ok = true;
                        break;
                    }
                }
                ok
            }
        })
    })
    .unwrap_or(false)
}

/// Every pair (not a pod to itself), via pod IP and ClusterIP, probed at
/// once: (from, to, via, reached).
#[allow(clippy::needless_range_loop)]
fn probe_all(
    t: &Topology,
    names: &[String],
    ips: &[Ipv4Addr],
    proto: Proto,
    port: u16,
) -> Vec<(usize, usize, &'static str, bool)> {
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for f in 0..9 {
            for to in 0..9 {
                if f == to {
                    continue;
                }
                for (via, dst) in [("pod IP", ips[to]), ("ClusterIP", service_ip(to))] {
                    let from = names[f].as_str();
                    PROBES.fetch_add(1, Ordering::Relaxed);
                    handles.push((
                        f,
                        to,
                        via,
                        s.spawn(move || probe(t, from, dst, proto, port)),
                    ));
                }
            }
        }
        handles
            .into_iter()
            .map(|(f, to, via, h)| (f, to, via, h.join().unwrap_or(false)))
            .collect()
    })
}

/// The pipeline suites' `validate`, against the real daemons: every pair
/// (not a pod to itself), via pod IP and ClusterIP, all probes at once.
fn in_netns(case: &str, c: &Cluster, proto: Proto, port: u16, want: &common::Reach) {
    if !support::require_root(case) {
        return;
    }
    if proto == Proto::Sctp {
        // No SCTP sockets here (see the module's note).
        return;
    }
    let mut g = E2E.lock().unwrap_or_else(|p| p.into_inner());
    if !BUILT.swap(true, Ordering::SeqCst) {
        *g = Some(build());
        // SAFETY: registers a plain extern "C" function, run once at exit.
        unsafe {
            libc::atexit(tear_down);
        }
    }
    let e = g.as_mut().expect("topology built");
    install(e, c);
    let names: Vec<String> = pods().into_iter().map(|p| p.0).collect();
    let ips: Vec<Ipv4Addr> = pods().into_iter().map(|p| p.1).collect();
    let t = &e.t;
    // Upstream's ValidateOrFail: a second try of the whole matrix when
    // the first has wrong results (a lost SYN is not a verdict).
    let mut wrong = Vec::new();
    let mut pairs = Vec::new();
    for attempt in ["first", "second"] {
        wrong.clear();
        pairs.clear();
        for (f, to, via, got) in probe_all(t, &names, &ips, proto, port) {
            if got != want.0[f][to] {
                pairs.push((ips[f], ips[to]));
                wrong.push(format!(
                    "{} -> {} via {via}: {got} (want {})",
                    common::name(f),
                    common::name(to),
                    want.0[f][to]
                ));
            }
        }
        if wrong.is_empty() {
            break;
        }
        println!(
            "{case}, {proto:?}/{port}: {} wrong on the {attempt} try: {}",
            wrong.len(),
            wrong.join("; ")
        );
    }
    let drops = |i: usize| -> String {
        request(&t.sockets[i], "stats")
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                (l.starts_with("drop ") && !l.ends_with(" 0"))
                    || (l.starts_with("port ") && !l.contains("kernel_dropped 0"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let logged = |i: usize| -> String {
        request(&t.sockets[i], "policy denied")
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                pairs
                    .iter()
                    .any(|(a, b)| l.contains(&format!(" {a}:")) && l.contains(&format!(" {b}:")))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        wrong.is_empty(),
        "{case}, {proto:?}/{port}, netns: {} wrong:\n{}\nnode-a drops: {}\nnode-b drops: {}\ndenied flows logged for them:\n{}\n{}",
        wrong.len(),
        wrong.join("\n"),
        drops(0),
        drops(1),
        logged(0),
        logged(1)
    );
}

mod upstream {
    use super::common::*;
    #[allow(unused_imports)]
    use super::in_netns as validate;

    include!("../../policy/tests/cases/upstream.rs");
}

/// Every 25th generated case (named `case N: ...`), and the named ones.
fn sampled(case: &str, c: &Cluster, proto: Proto, port: u16, want: &common::Reach) {
    let n: Option<usize> = case
        .strip_prefix("case ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok());
    if n.is_some_and(|n| n % 25 != 0) {
        return;
    }
    in_netns(case, c, proto, port, want);
}

mod generated {
    use super::common::*;
    #[allow(unused_imports)]
    use super::sampled as validate;

    include!("../../policy/tests/cases/generated.rs");
}
