//! NetworkPolicy end to end, in network namespaces with real daemons: two
//! Sluice nodes reading one cluster file (Nodes, Services, EndpointSlices,
//! and now Namespaces, Pods and NetworkPolicies, as kubectl prints them),
//! real sockets in the pods (TUN pods on node-a, veth + AF_XDP pods on
//! node-b). The demo's policy checks (`dataplane::demo::policy_checks`):
//! Calico's "role=database accepts TCP 6379 from role=frontend only", a
//! live connection cut by a deny-all and resumed when the policy returns,
//! `sluice policy` and `sluice policy denied`; then the drops counted
//! under their reason on the database's node and none on the frontend's.

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use dataplane::daemon::request;
use dataplane::demo::{self, Topology};
use support::require_root;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn stat(sock: &std::path::Path, key: &str) -> u64 {
    let out = request(sock, "stats").unwrap();
    out.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == key).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no {key:?} in stats:\n{out}"))
}

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
