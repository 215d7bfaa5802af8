//! The demo's NetworkPolicy part: Calico's install-guide policy ("pods
//! with role=database accept TCP 6379 only from role=frontend") in the
//! cluster file both daemons read, with the demo pods as Pod objects in
//! namespace `shop`: a1 is the frontend, b2 the database, a2 and b1 other
//! pods. Checked with real sockets in the pods' namespaces: who reaches the
//! database and on which port, a live connection cut when the policy turns
//! into a deny-all and let through again when it comes back, and what
//! `sluice policy` and `sluice policy denied` show.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::services::demo_services;
use super::{PODS, Summary, Topology};
use crate::{daemon, netns};

/// The database's port.
pub const DB_PORT: u16 = 6379;

fn role(name: &str) -> &'static str {
    match name {
        "a1" => "frontend",
        "b2" => "database",
        _ => "other",
    }
}

/// The policy the checks install: `allow` lets the frontend in on
/// [`DB_PORT`]; otherwise the database accepts nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbPolicy {
    /// No NetworkPolicy at all.
    None,
    /// role=frontend on TCP 6379.
    FrontendOnly,
    /// Nothing (ingress isolated, no rule).
    DenyAll,
}

/// Cluster-file items: namespace `shop`, the demo pods (labels, IPs) and
/// the database policy.
pub fn policy_items(p: DbPolicy) -> String {
    let mut y = String::from(
        "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: shop, labels: {tier: demo}}\n",
    );
    for (name, _, ip, _) in PODS {
        y += &format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: {name}, namespace: shop, labels: {{role: {}}}}}\n  spec: {{containers: [{{name: c, image: none}}]}}\n  status: {{phase: Running, podIP: {ip}}}\n",
            role(name)
        );
    }
    let ingress = match p {
        DbPolicy::None => return y,
        DbPolicy::FrontendOnly => format!(
            "[{{from: [{{podSelector: {{matchLabels: {{role: frontend}}}}}}], ports: [{{protocol: TCP, port: {DB_PORT}}}]}}]"
        ),
        DbPolicy::DenyAll => "[]".into(),
    };
    y += &format!(
        "- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {{name: database, namespace: shop}}\n  spec:\n    podSelector: {{matchLabels: {{role: database}}}}\n    policyTypes: [Ingress]\n    ingress: {ingress}\n"
    );
    y
}

/// A status field of node `i`.
fn status_field(t: &Topology, i: usize, key: &str) -> Option<String> {
    let st = daemon::request(t.sockets.get(i)?, "status").ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(str::to_string)
}

/// Installs `p` and waits (up to 5 s) until both nodes compiled it.
pub fn install(t: &Topology, p: DbPolicy) -> io::Result<Duration> {
    let before: Vec<u64> = (0..2)
        .map(|i| {
            status_field(t, i, "policy_generation")
                .and_then(|g| g.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    let start = Instant::now();
    t.write_cluster_with(&demo_services(), &policy_items(p))?;
    let want = usize::from(p != DbPolicy::None);
    while start.elapsed() < Duration::from_secs(5) {
        let done = (0..2).all(|i| {
            let g: u64 = status_field(t, i, "policy_generation")
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            let n: usize = status_field(t, i, "policies")
                .and_then(|g| g.parse().ok())
                .unwrap_or(usize::MAX);
            g > before.get(i).copied().unwrap_or(0) && n == want
        });
        if done {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::other(format!("policy {p:?} not applied in 5 s")))
}

/// Whether `client` completes a TCP handshake with `server` listening on
/// `(addr, port)` within `wait`.
pub fn connects(
    t: &Topology,
    client: &str,
    server: &str,
    (addr, port): (Ipv4Addr, u16),
    wait: Duration,
) -> io::Result<bool> {
    let l = netns::run_in(&t.ns_path(server), move || TcpListener::bind((addr, port)))?;
    let r = netns::run_in(&t.ns_path(client), move || {
        Ok(TcpStream::connect_timeout(&(addr, port).into(), wait).is_ok())
    });
    drop(l);
    r
}

/// A live connection from the frontend to the database: cut at its next
/// segment when the policy becomes a deny-all, through again when the
/// policy comes back. Returns what went wrong, if anything.
fn live_cut(t: &Topology, db: Ipv4Addr) -> Result<(), String> {
    let e = |x: io::Error| x.to_string();
    let l = netns::run_in(&t.ns_path("b2"), move || TcpListener::bind((db, DB_PORT))).map_err(e)?;
    let mut c = netns::run_in(&t.ns_path("a1"), move || {
        TcpStream::connect_timeout(&(db, DB_PORT).into(), Duration::from_secs(3))
    })
    .map_err(e)?;
    let (mut s, _) = l.accept().map_err(e)?;
    let mut b = [0u8; 5];
    c.write_all(b"live1").map_err(e)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(e)?;
    s.read_exact(&mut b)
        .map_err(|x| format!("before the deny: {x}"))?;
    install(t, DbPolicy::DenyAll).map_err(e)?;
    c.write_all(b"live2").map_err(e)?;
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .map_err(e)?;
    if s.read_exact(&mut b).is_ok() {
        return Err("a segment got through the deny-all".into());
    }
    install(t, DbPolicy::FrontendOnly).map_err(e)?;
    // TCP retransmits what was dropped (its timer has backed off by now).
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(e)?;
    s.read_exact(&mut b)
        .map_err(|x| format!("after the policy came back: {x}"))?;
    if &b != b"live2" {
        return Err(format!("got {b:?}"));
    }
    Ok(())
}

/// The demo's policy checks; the policy is removed at the end, so later
/// checks see none.
pub fn policy_checks(t: &Topology, s: &mut Summary) {
    let db = PODS[3].2;
    let r = install(t, DbPolicy::FrontendOnly);
    s.check(
        r.is_ok(),
        format!(
            "policy shop/database (role=database accepts TCP {DB_PORT} from role=frontend only) compiled on both nodes in {:?}",
            r.as_ref().map_err(ToString::to_string)
        ),
    );
    let short = Duration::from_millis(1000);
    for (client, port, want) in [
        ("a1", DB_PORT, true),
        ("a2", DB_PORT, false),
        ("b1", DB_PORT, false),
        ("a1", DB_PORT + 1, false),
    ] {
        let r = connects(t, client, "b2", (db, port), short);
        s.check(
            r.as_ref().is_ok_and(|&c| c == want),
            format!(
                "policy: {client} ({}) -> b2 (database) tcp {port}: {} (want {})",
                role(client),
                match &r {
                    Ok(true) => "connected".to_string(),
                    Ok(false) => "no answer".to_string(),
                    Err(e) => e.to_string(),
                },
                if want { "connected" } else { "denied" }
            ),
        );
    }
    // The database's own egress is not isolated.
    let r = connects(t, "b2", "a2", (PODS[1].2, 5201), short);
    s.check(
        matches!(r, Ok(true)),
        format!("policy: b2 (database) -> a2 tcp 5201, egress open: {r:?}"),
    );
    let r = live_cut(t, db);
    s.check(
        r.is_ok(),
        format!("policy: a live frontend connection is cut by a deny-all and resumes when the policy returns: {r:?}"),
    );
    let listing = t
        .sockets
        .get(1)
        .and_then(|sock| daemon::request(sock, "policy").ok())
        .unwrap_or_default();
    s.check(
        listing.contains(&format!("pod {db} isolated_ingress true"))
            && listing.contains("hits shop/database ingress rule 0 allowed_flows"),
        format!(
            "sluice policy on node-b: b2 isolated, rule hits counted ({} lines)",
            listing.lines().count()
        ),
    );
    let denied = t
        .sockets
        .get(1)
        .and_then(|sock| daemon::request(sock, "policy denied").ok())
        .unwrap_or_default();
    let a2 = PODS[1].2;
    s.check(
        denied
            .lines()
            .any(|l| l.contains(&format!("{a2}:")) && l.contains("policy shop/database")),
        format!(
            "sluice policy denied on node-b names a2's flow and the policy ({} flows logged)",
            denied.lines().filter(|l| l.starts_with("denied ")).count()
        ),
    );
    let r = install(t, DbPolicy::None);
    s.check(r.is_ok(), format!("policy removed: {r:?}"));
}
