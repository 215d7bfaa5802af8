//! Issue 17: `node.uplink_mode`. Both demo nodes (TUN pods) run with
//! `uplink_mode: offload`: they say so (status, Prometheus), and pods
//! reach each other across VXLAN and the external host through SNAT, TCP
//! byte-exact both ways, with the uplink's frames going out through the
//! offload TAP.

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::path::Path;

use dataplane::daemon;
use dataplane::demo::{self, Topology};
use support::require_root;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn both_nodes_in_offload_mode_carry_pods_and_snat() {
    if !require_root("both_nodes_in_offload_mode_carry_pods_and_snat") {
        return;
    }
    if let Err(e) = dataplane::port::tap::probe_tunnel_gso() {
        eprintln!("skipped: {e}");
        return;
    }
    let t = Topology::build_tun_with_mode(Path::new(SLUICE), "offload").expect("topology");
    for s in &t.sockets {
        let st = daemon::request(s, "status").unwrap();
        assert!(
            st.contains("uplink_mode offload\nuplink_mode_reason uplink_mode: offload\n"),
            "{st}"
        );
    }
    let (_, metrics) = demo::http_get(&t, "a", (Ipv4Addr::LOCALHOST, 9420), "/metrics").unwrap();
    assert!(metrics.contains("\nsluice_uplink_offload 1\n"), "{metrics}");
    t.exec(
        "a1",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.2.2"],
    )
    .expect("a1 -> b1 across VXLAN");
    t.exec(
        "a1",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.77.100"],
    )
    .expect("a1 -> external host through SNAT");
    for (client, server, addr) in [
        ("a1", "b1", Ipv4Addr::new(10, 244, 2, 2)),
        ("b1", "a1", Ipv4Addr::new(10, 244, 1, 2)),
        ("a1", "ext", Ipv4Addr::new(192, 168, 77, 100)),
    ] {
        let (ok, seen, gbps) = demo::tcp(&t, client, server, addr, 30 << 20).unwrap();
        assert!(ok, "{client} -> {server}: 30 MB not byte-exact");
        eprintln!(
            "{client} -> {server} ({addr}): 30 MB byte-exact, {gbps:.2} Gbit/s, seen from {seen}"
        );
    }
    // The frames went out through the TAP: its receive counter (what
    // Sluice wrote into it) moved on node-a.
    let out = std::process::Command::new("ip")
        .args(["-n", &t.ns("a"), "-s", "-j", "link", "show", "sluice-up"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written = v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0);
    assert!(
        written > 100,
        "node-a wrote {written} frames to its offload TAP"
    );
}
