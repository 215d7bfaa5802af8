//! Services end to end, in network namespaces with real daemons: two
//! Sluice nodes reading one cluster file (Nodes, Services,
//! EndpointSlices, as kubectl prints them), real clients (dig, the
//! kernel's sockets) and a real DNS server (dnsmasq) in a pod.

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use dataplane::daemon::request;
use dataplane::demo::{self, Topology};
use support::require_root;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// `stats` value by key; a missing key fails (a renamed counter must not
/// read as 0).
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
}

/// Polls `cond` for up to 5 s.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached in 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}
