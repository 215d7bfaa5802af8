//! Issue 17: `node.uplink_mode`. `auto` on veth (no zero-copy AF_XDP)
//! takes the offload TAP; `afxdp` holds. Both demo nodes (TUN pods) run with
//! `uplink_mode: offload`: they say so (status, Prometheus), and pods
//! reach each other across VXLAN and the external host through SNAT, TCP
//! byte-exact both ways, with the uplink's frames going out through the
//! offload TAP, a TCP flow's segments merged into super-packets (UDP-tunnel
//! GSO across VXLAN, TSO through SNAT).

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
            st.contains(
                "uplink_mode offload\nuplink_mode_reason uplink_mode: offload\nuplink_receive tap\n"
            ),
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
    // (packets, bytes) node-a's offload TAP counted so far in direction
    // `dir`: "rx" is what the daemon wrote, "tx" what it read.
    let tap = |dir: &str| -> (u64, u64) {
        let out = std::process::Command::new("ip")
            .args(["-n", &t.ns("a"), "-s", "-j", "link", "show", "sluice-up"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let c = &v[0]["stats64"][dir];
        (
            c["packets"].as_u64().unwrap_or(0),
            c["bytes"].as_u64().unwrap_or(0),
        )
    };
    let written = || tap("rx");
    const N: usize = 30 << 20;
    for (client, server, addr) in [
        ("a1", "b1", Ipv4Addr::new(10, 244, 2, 2)),
        ("b1", "a1", Ipv4Addr::new(10, 244, 1, 2)),
        ("a1", "ext", Ipv4Addr::new(192, 168, 77, 100)),
    ] {
        let before = written();
        let read_before = tap("tx");
        let (ok, seen, _) = demo::tcp(&t, client, server, addr, N).unwrap();
        assert!(ok, "{client} -> {server}: 30 MB not byte-exact");
        let after = written();
        let read = tap("tx");
        let (reads, read_bytes) = (read.0 - read_before.0, read.1 - read_before.1);
        let (writes, bytes) = (after.0 - before.0, after.1 - before.1);
        eprintln!(
            "{client} -> {server} ({addr}, seen from {seen}): 30 MB byte-exact, {writes} writes ({bytes} bytes) to node-a's TAP"
        );
        if client == "b1" {
            // Node-b sends the flow as super-packets, and node-a reads
            // them whole from its TAP (the program at TCX ingress keeps
            // them whole): far fewer reads than segments.
            let segments = (N / 1400) as u64;
            eprintln!("  node-a read {reads} packets ({read_bytes} bytes) from its TAP");
            assert!(
                read_bytes > N as u64 / 2 && reads < segments / 3,
                "b1 -> a1: {reads} reads of {read_bytes} bytes for {segments} segments"
            );
        }
        if client == "a1" {
            // Across VXLAN and through SNAT alike, most of a TCP flow's
            // bytes leave node-a as super-packets through the TAP: far
            // fewer writes than 1.4 KB segments (lone frames go through
            // AF_XDP).
            let segments = (N / 1400) as u64;
            assert!(
                bytes > N as u64 / 2 && writes < segments / 3,
                "{client} -> {server}: {writes} writes of {bytes} bytes for {segments} segments"
            );
        }
    }
}

/// `uplink_mode: afxdp` holds where `auto` would take the offload TAP:
/// the nodes say so and create no TAP.
#[test]
fn a_forced_afxdp_mode_holds() {
    if !require_root("a_forced_afxdp_mode_holds") {
        return;
    }
    let t = Topology::build_tun_with_mode(Path::new(SLUICE), "afxdp").expect("topology");
    for s in &t.sockets {
        let st = daemon::request(s, "status").unwrap();
        assert!(
            st.contains(
                "uplink_mode afxdp\nuplink_mode_reason uplink_mode: afxdp\nuplink_receive afxdp\n"
            ),
            "{st}"
        );
    }
    let tap = std::process::Command::new("ip")
        .args(["-n", &t.ns("a"), "link", "show", "sluice-up"])
        .output()
        .unwrap();
    assert!(!tap.status.success(), "no offload TAP in afxdp mode");
    t.exec(
        "a1",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.2.2"],
    )
    .expect("a1 -> b1");
}

/// `uplink_mode: auto` on veth, which has no zero-copy AF_XDP, takes the
/// offload TAP where the kernel has UDP-tunnel GSO on TAP, and says why.
#[test]
fn auto_on_veth_takes_the_offload_tap() {
    if !require_root("auto_on_veth_takes_the_offload_tap") {
        return;
    }
    if let Err(e) = dataplane::port::tap::probe_tunnel_gso() {
        eprintln!("skipped: {e}");
        return;
    }
    let t = Topology::build_tun_with_mode(Path::new(SLUICE), "auto").expect("topology");
    let st = daemon::request(&t.sockets[0], "status").unwrap();
    assert!(
        st.contains("uplink_mode offload\nuplink_mode_reason auto: no zero-copy AF_XDP;")
            && st.contains("\nuplink_receive tap\n")
            && st.contains("uplink_zero_copy false\nuplink_copy_reason up-a refused zero-copy"),
        "{st}"
    );
    t.exec(
        "a1",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.2.2"],
    )
    .expect("a1 -> b1");
}
