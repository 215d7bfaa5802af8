//! NetworkPolicy end to end, in network namespaces with real daemons: two
//! Sluice nodes reading one cluster file (Nodes, Services, EndpointSlices,
//! and now Namespaces, Pods and NetworkPolicies, as kubectl prints them),
//! real sockets in the pods (TUN pods on node-a, veth + AF_XDP pods on
//! node-b). The demo's policy checks (`dataplane::demo::policy_checks`):
//! Calico's "role=database accepts TCP 6379 from role=frontend only", a
//! live connection cut by a deny-all and resumed when the policy returns,
//! `sluice policy` and `sluice policy denied`; then the drops counted
//! under their reason on the database's node and none on the frontend's.

mod common;
#[path = "../../encap/tests/support/mod.rs"]
mod support;

use common::stat;
use dataplane::daemon::request;
use dataplane::demo::{self, Topology};
use support::require_root;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn the_database_policy_holds_in_real_namespaces_and_reaches_live_connections() {
    if !require_root("the_database_policy_holds_in_real_namespaces_and_reaches_live_connections") {
        return;
    }
    let t = Topology::build_services(std::path::Path::new(SLUICE)).expect("topology");
    let mut s = demo::Summary::default();
    demo::policy_checks(&t, &mut s);
    let (a, b) = (&t.sockets[0], &t.sockets[1]);
    assert!(
        s.failed().is_empty(),
        "failed: {:?}\nnode-b status:\n{}\nnode-b policy:\n{}",
        s.failed(),
        request(b, "status").unwrap_or_default(),
        request(b, "policy").unwrap_or_default()
    );
    // Workers publish counters every 100 ms.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        stat(b, "drop policy_ingress_denied") >= 3,
        "a2, b1, the wrong port, the live cut"
    );
    assert_eq!(
        stat(a, "drop policy_ingress_denied"),
        0,
        "node-a's pods are not isolated"
    );
    assert_eq!(
        stat(b, "drop policy_pod_pending"),
        0,
        "every pod was listed"
    );
}

/// Node-a's `policy_input` and `policies` lines.
fn policy_state(sock: &std::path::Path) -> (String, usize) {
    let st = request(sock, "status").unwrap_or_default();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .unwrap_or_default()
            .to_string()
    };
    (
        field("policy_input"),
        field("policies").parse().unwrap_or(0),
    )
}

/// A new pod's Pod object has no address until kubelet writes
/// status.podIP, after the CNI ADD. Attached under its name (`pod=`, which
/// sluice-cni takes from CNI_ARGS), it meets its policy from its first
/// packet: its allowed port answers at once, another does not; attached
/// without it, it passes nothing until the API shows its address.
#[test]
fn a_pod_attached_under_its_name_meets_its_policy_at_its_first_packet() {
    if !require_root("a_pod_attached_under_its_name_meets_its_policy_at_its_first_packet") {
        return;
    }
    let mut t = Topology::build_services(std::path::Path::new(SLUICE)).expect("topology");
    let a = t.sockets[0].clone();
    let pending = |name: &str| {
        format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: {name}, namespace: shop, labels: {{role: new}}}}\n  spec: {{containers: [{{name: c, image: none}}]}}\n  status: {{phase: Pending}}\n"
        )
    };
    let items = demo::policy_items(demo::DbPolicy::None)
        + &pending("new")
        + &pending("late")
        + "- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {name: new-7000, namespace: shop}\n  spec:\n    podSelector: {matchLabels: {role: new}}\n    policyTypes: [Ingress]\n    ingress: [{from: [{namespaceSelector: {}}], ports: [{protocol: TCP, port: 7000}]}]\n";
    let before = policy_state(&a).0;
    t.write_cluster_with(&demo::demo_services(), &items)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while policy_state(&a).1 != 1 || policy_state(&a).0 == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the policy was not applied: {}",
            request(&a, "status").unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let attach = |t: &mut Topology, tag: &str, ip: &str, name: &str| {
        t.add_ns(tag).unwrap();
        let r = request(
            &a,
            &format!(
                "pods add {tag} {ip} {} tun eth0 {name}",
                t.ns_path(tag).display()
            ),
        )
        .unwrap();
        assert!(r.starts_with("ok"), "pods add {tag}: {r}");
    };
    let wait = std::time::Duration::from_millis(1500);
    let new: std::net::Ipv4Addr = "10.244.1.50".parse().unwrap();
    attach(&mut t, "new", "10.244.1.50", "pod=shop/new");
    // No waiting: the reply to `pods add` came after the rules.
    assert!(
        demo::connects(&t, "a1", "new", (new, 7000), wait).unwrap(),
        "the allowed port, first try\n{}",
        request(&a, "policy 10.244.1.50").unwrap_or_default()
    );
    assert!(
        !demo::connects(&t, "a1", "new", (new, 7001), wait).unwrap(),
        "another port is denied"
    );
    assert!(
        request(&a, "routes").unwrap().contains("k8s shop/new"),
        "routes name the pod"
    );
    // The control: the same kind of pod attached without its name is
    // unknown to policy (no address in the API yet), so it passes nothing.
    let late: std::net::Ipv4Addr = "10.244.1.51".parse().unwrap();
    attach(&mut t, "late", "10.244.1.51", "");
    assert!(
        !demo::connects(&t, "a1", "late", (late, 7000), wait).unwrap(),
        "a pod policy does not know yet"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(stat(&a, "drop policy_pod_pending") > 0);
    // Detached, its address no longer stands for shop/new.
    assert!(
        request(&a, "pods del 10.244.1.50")
            .unwrap()
            .starts_with("ok")
    );
    assert!(
        !request(&a, "policy")
            .unwrap_or_default()
            .contains("pod 10.244.1.50 "),
        "{}",
        request(&a, "policy").unwrap_or_default()
    );
}
