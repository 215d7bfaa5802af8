//! Flows across daemon restarts (issue 16 item 1), in the netns topology
//! with real daemons: node-a's daemon (two workers) is killed with SIGKILL
//! and started again at once, or restarted gracefully (SIGTERM: it hands
//! the node over) with the next daemon started after it exits or before,
//! while two TCP transfers run:
//! - pod a1 (node-a, TUN) to the external host through SNAT: the
//!   masquerade entry, its port and its TCP window tracking come back from
//!   `admin.run_dir`, and the XDP program left on the uplink drops the
//!   server's packets during the gap instead of letting the kernel reset
//!   the connection;
//! - pod a2 (node-a, TUN) to pod b1 (node-b, veth) across VXLAN: the pod
//!   keeps its persistent TUN device.
//!
//! Both must arrive byte-identical, every round. Sizes and rounds:
//! `SLUICE_RESTART_MB` (default 300) and `SLUICE_RESTART_ROUNDS`
//! (default 20).

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::demo::Topology;
use support::require_root;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const EXT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);
const B1: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
/// The stream's period: a prime, so a segment repeated or skipped at any
/// offset shows as a mismatch.
const PERIOD: usize = 1_000_003;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Twice the period of pseudo-random bytes (any window of the stream is
/// one slice).
fn pattern(seed: u64) -> Arc<Vec<u8>> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v: Vec<u8> = (0..PERIOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    v.extend_from_within(..);
    Arc::new(v)
}

/// The stream's bytes at `off`, `n` long (`n` <= PERIOD).
fn window(p: &[u8], off: u64, n: usize) -> &[u8] {
    let at = (off % PERIOD as u64) as usize;
    &p[at..at + n]
}

/// One TCP transfer between two namespaces of the topology.
struct Transfer {
    what: &'static str,
    total: u64,
    /// Bytes the server has received and verified.
    got: Arc<AtomicU64>,
    server: JoinHandle<Result<u64, String>>,
    client: JoinHandle<Result<(), String>>,
}

#[allow(
    clippy::too_many_arguments,
    reason = "a transfer literal: each named at the call"
)]
fn start(
    t: &Topology,
    what: &'static str,
    client: &str,
    server: &str,
    listen: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
    total: u64,
    seed: u64,
) -> Transfer {
    let pat = pattern(seed);
    let l = dataplane::netns::run_in(&t.ns_path(server), move || TcpListener::bind(listen))
        .unwrap_or_else(|e| panic!("{what}: listen: {e}"));
    l.set_nonblocking(true).unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let (g, p) = (got.clone(), pat.clone());
    let server = std::thread::spawn(move || -> Result<u64, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("no connection".into());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 256 << 10];
        let mut off = 0u64;
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) => return Ok(off),
                Ok(n) => n,
                Err(e) => return Err(format!("read at byte {off}: {e}")),
            };
            let mut done = 0;
            while done < n {
                let k = (n - done).min(PERIOD);
                if buf[done..done + k] != *window(&p, off, k) {
                    return Err(format!("byte {off}..{}: corrupted", off + k as u64));
                }
                off += k as u64;
                done += k;
            }
            g.store(off, Ordering::Relaxed);
        }
    });
    let mut c = dataplane::netns::run_in(&t.ns_path(client), move || {
        TcpStream::connect_timeout(&to.into(), Duration::from_secs(10))
    })
    .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    let client = std::thread::spawn(move || -> Result<(), String> {
        c.set_write_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let mut off = 0u64;
        while off < total {
            let n = (total - off).min(64 << 10) as usize;
            c.write_all(window(&pat, off, n))
                .map_err(|e| format!("write at byte {off}: {e}"))?;
            off += n as u64;
        }
        c.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())
    });
    Transfer {
        what,
        total,
        got,
        server,
        client,
    }
}

impl Transfer {
    fn finish(self) -> Result<(), String> {
        let w = self.what;
        self.client
            .join()
            .map_err(|_| format!("{w}: client panicked"))?
            .map_err(|e| format!("{w}: client: {e}"))?;
        let got = self
            .server
            .join()
            .map_err(|_| format!("{w}: server panicked"))?
            .map_err(|e| format!("{w}: server: {e}"))?;
        if got != self.total {
            return Err(format!("{w}: {got} of {} bytes", self.total));
        }
        Ok(())
    }
}

/// Waits until every transfer has moved `share` of its bytes.
fn wait_share(ts: &[&Transfer], share: f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while ts
        .iter()
        .any(|t| (t.got.load(Ordering::Relaxed) as f64) < share * t.total as f64)
    {
        assert!(
            Instant::now() < deadline,
            "transfers stalled before the restart"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn status_value(t: &Topology, key: &str) -> u64 {
    let s = dataplane::daemon::request(&t.sockets[0], "status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug)]
enum Restart {
    Kill9,
    Graceful,
    NewFirst,
    /// A rolling update's surge pod: the next daemon, with
    /// `admin.take_over`, asks for the node; the old one gets SIGTERM once
    /// the new one serves.
    TakeOver,
}

fn restart(t: &mut Topology, how: Restart) -> std::io::Result<()> {
    match how {
        Restart::Kill9 => t.kill_and_restart_at_once(0, Path::new(SLUICE)),
        Restart::Graceful => t.graceful_restart(0, Path::new(SLUICE), false),
        Restart::NewFirst => t.graceful_restart(0, Path::new(SLUICE), true),
        Restart::TakeOver => t.take_over_restart(0, Path::new(SLUICE)),
    }
}

fn transfers_survive(name: &str, how: Restart) {
    transfers_survive_in(name, how, None, env_or("SLUICE_RESTART_ROUNDS", 20));
}

/// [`transfers_survive`] with both nodes' `node.uplink_mode` set to
/// `mode` (`None`: the default), `rounds` times.
fn transfers_survive_in(name: &str, how: Restart, mode: Option<&'static str>, rounds: u64) {
    if !require_root(name) {
        return;
    }
    let mb = env_or("SLUICE_RESTART_MB", 300);
    let mut t = match mode {
        Some(m) => Topology::build_with_mode(Path::new(SLUICE), m),
        None => Topology::build(Path::new(SLUICE)),
    }
    .expect("topology");
    let started = Instant::now();
    for round in 0..rounds {
        let total = mb << 20;
        let port = 7100 + round as u16;
        let snat = start(
            &t,
            "a1 -> external host (SNAT)",
            "a1",
            "ext",
            (EXT, port),
            (EXT, port),
            total,
            round,
        );
        let vxlan = start(
            &t,
            "a2 -> b1 (VXLAN)",
            "a2",
            "b1",
            (B1, port),
            (B1, port),
            total,
            round + 99,
        );
        // Mid-transfer: a third of the way through both.
        wait_share(&[&snat, &vxlan], 1.0 / 3.0);
        restart(&mut t, how).unwrap_or_else(|e| panic!("round {round}: {e}\n{}", t.daemon_log(0)));
        let carried = status_value(&t, "flows_restored");
        // A successor waiting when the old daemon got SIGTERM (or asking
        // for the node) takes its uplink sockets, still bound (one per
        // worker); otherwise the new daemon binds its own.
        let taken = status_value(&t, "uplink_sockets_taken_over");
        let want = if matches!(how, Restart::NewFirst | Restart::TakeOver) {
            2
        } else {
            0
        };
        assert_eq!(
            taken,
            want,
            "round {round} ({how:?}): uplink sockets taken over\n{}",
            t.daemon_log(0)
        );
        for r in [snat.finish(), vxlan.finish()] {
            if let Err(e) = r {
                panic!(
                    "round {round} ({how:?}): {e}\nnode-a log:\n{}",
                    t.daemon_log(0)
                );
            }
        }
        assert!(
            carried >= 1,
            "round {round}: the new daemon carried no flow on ({carried})"
        );
    }
    eprintln!(
        "{name}: {rounds} rounds of 2 x {mb} MB, each across a {how:?} restart: intact, in {:.0?}",
        started.elapsed()
    );
    // The file-backed tables, not luck: they are there, one per worker.
    for w in 0..2 {
        assert!(t.run_dir(0).join(format!("conntrack-{w}.state")).exists());
    }
}

#[test]
fn transfers_through_snat_and_vxlan_survive_kill_9_and_an_immediate_start() {
    transfers_survive(
        "transfers_through_snat_and_vxlan_survive_kill_9_and_an_immediate_start",
        Restart::Kill9,
    );
}

/// The same with the offload uplink (the steering program at TCX ingress,
/// the TAP both ways): the program stays when the daemon is killed and
/// drops what is Sluice's until the next one replaces it and opens a new
/// TAP. Fewer rounds: the mechanism differs from AF_XDP's only there.
#[test]
fn transfers_survive_kill_9_with_the_offload_uplink() {
    if dataplane::port::tap::probe_tunnel_gso().is_err() {
        eprintln!("skipped: no UDP-tunnel GSO on TAP");
        return;
    }
    transfers_survive_in(
        "transfers_survive_kill_9_with_the_offload_uplink",
        Restart::Kill9,
        Some("offload"),
        env_or("SLUICE_RESTART_OFFLOAD_ROUNDS", 5),
    );
}

#[test]
fn transfers_survive_a_graceful_restart() {
    transfers_survive("transfers_survive_a_graceful_restart", Restart::Graceful);
}

#[test]
fn transfers_survive_the_new_daemon_starting_before_the_old_one_exits() {
    transfers_survive(
        "transfers_survive_the_new_daemon_starting_before_the_old_one_exits",
        Restart::NewFirst,
    );
}

/// A DaemonSet rolling update with a surge pod (deploy/kubernetes): the
/// new daemon takes the node over from the running one, sockets still
/// bound, before the old one gets its SIGTERM. Fewer rounds: the path
/// differs from the next-daemon-first restart only in who starts it.
#[test]
fn transfers_survive_a_rolling_update_that_takes_over() {
    transfers_survive_in(
        "transfers_survive_a_rolling_update_that_takes_over",
        Restart::TakeOver,
        None,
        env_or("SLUICE_RESTART_TAKE_OVER_ROUNDS", 5),
    );
}

/// Issue 16 item 1d: state files that cannot be trusted (random bytes, a
/// file from another layout version, a truncated one) are discarded with a
/// log line naming the file and the reason; the daemon starts clean and
/// forwards.
#[test]
fn corrupted_and_foreign_state_files_are_discarded_with_a_log_line() {
    if !require_root("corrupted_and_foreign_state_files_are_discarded_with_a_log_line") {
        return;
    }
    let mut t = Topology::build(Path::new(SLUICE)).expect("topology");
    t.kill_daemon(0).unwrap();
    let run = t.run_dir(0);
    // Random bytes where worker 0's table was.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let junk: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(run.join("conntrack-0.state"), &junk).unwrap();
    // A well-formed file of a layout version this daemon does not know.
    let foreign = persist::Spec {
        kind: "conntrack",
        version: 99,
        record_len: 64,
        records: 128,
        epoch: persist::boot_id(),
        params: Vec::new(),
    };
    std::fs::remove_file(run.join("conntrack-1.state")).unwrap();
    let (r, _) = persist::Region::open(&run.join("conntrack-1.state"), &foreign).unwrap();
    drop(r);
    // Cut short.
    let aff = run.join("affinity-0.state");
    let bytes = std::fs::read(&aff).unwrap();
    std::fs::write(&aff, &bytes[..5000]).unwrap();
    let before = t.daemon_log(0).len();
    t.restart_daemon(0, Path::new(SLUICE)).unwrap();
    let log = t.daemon_log(0)[before..].to_string();
    let version = format!("version is 99 in the file, {} now", nat::STATE_VERSION);
    for (file, why) in [
        ("conntrack-0.state", "not a sluice state file"),
        ("conntrack-1.state", version.as_str()),
        ("affinity-0.state", "5000 bytes where the layout needs"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(file) && l.contains("discarded") && l.contains(why)),
            "no log line for {file} ({why}):\n{log}"
        );
    }
    assert_eq!(status_value(&t, "flow_files_discarded"), 3);
    assert_eq!(status_value(&t, "flows_restored"), 0);
    // Started clean: it forwards across VXLAN and through SNAT.
    let r = dataplane::demo::udp(&t, "a1", "b1", B1);
    assert!(r.is_ok(), "a1 -> b1: {r:?}");
    let r = dataplane::demo::tcp(&t, "a1", "ext", EXT, 1 << 20);
    assert!(r.is_ok_and(|r| r.0), "a1 -> external host through SNAT");
}

/// A connection from outside to a NodePort that node-a serves (DNAT to
/// pod b1 on node-b, masqueraded) survives node-a's daemon restarting, by
/// SIGTERM, by SIGKILL, with the next daemon started first and taking over (admin.take_over): the new XDP
/// program takes over the old one's frontends map, so the connection's
/// packets are steered to Sluice (and held while no socket is bound) from
/// the first frame, never passed to the kernel, which would reset it; the
/// DNAT and masquerade entries come back from the state files.
#[test]
fn a_node_port_connection_survives_restarts() {
    if !require_root("a_node_port_connection_survives_restarts") {
        return;
    }
    let mut t = Topology::build_services(Path::new(SLUICE)).expect("topology");
    let node_a = Ipv4Addr::new(192, 168, 77, 1);
    let target = (B1, dataplane::demo::DNS_TARGET);
    for (round, how) in [
        Restart::Graceful,
        Restart::Kill9,
        Restart::NewFirst,
        Restart::TakeOver,
    ]
    .into_iter()
    .enumerate()
    {
        let total = 100 << 20;
        let tr = start(
            &t,
            "external host -> NodePort on node-a -> b1",
            "ext",
            "b1",
            target,
            (node_a, dataplane::demo::WEB_NODE_PORT),
            total,
            round as u64,
        );
        wait_share(&[&tr], 1.0 / 3.0);
        restart(&mut t, how).unwrap_or_else(|e| panic!("{how:?}: {e}"));
        if let Err(e) = tr.finish() {
            panic!("{how:?}: {e}\nnode-a log:\n{}", t.daemon_log(0));
        }
    }
}
