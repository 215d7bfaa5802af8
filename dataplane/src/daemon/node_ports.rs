//! Services from outside the node, when Sluice serves them
//! (`services.node_ports: true`, a node without kube-proxy): which
//! frontends the uplink's XDP program steers to the workers (NodePorts on
//! the node IP, externalIPs, LoadBalancer IPs), and the healthCheckNodePort
//! answers a cloud load balancer probes (kube-proxy's
//! pkg/proxy/healthcheck/service_health.go: 200 while the service has a
//! ready endpoint on this node, else 503, with the same JSON body and
//! headers).
//!
//! Both follow the service table: [`NodePorts::sync`] runs after every
//! table update on the control side, never on a worker.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::port::xdp::{Frontend, SteerProgram};

/// One health-check port's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Health {
    namespace: String,
    name: String,
    /// Ready endpoints of the service on this node.
    local: usize,
}

/// What the health-check listeners answer, by port.
type Answers = Arc<Mutex<BTreeMap<u16, Health>>>;

/// The steered frontends and the health-check server.
pub(super) struct NodePorts {
    prog: Arc<SteerProgram>,
    /// What the XDP map holds (sorted).
    steered: Mutex<Vec<Frontend>>,
    /// What the health-check server answers (it binds these ports).
    answers: Answers,
    stop: Arc<AtomicBool>,
    server: Mutex<Option<JoinHandle<()>>>,
    /// Where the health checks listen (the node IP: kube-proxy's
    /// `--nodeport-addresses` default is every address; the node IP is
    /// what a cloud load balancer probes).
    bind: Ipv4Addr,
}

impl std::fmt::Debug for NodePorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePorts")
            .field("steered", &self.steered.lock().map(|s| s.len()).ok())
            .finish_non_exhaustive()
    }
}

impl NodePorts {
    /// Serves NodePorts through `prog`; health checks on `bind`.
    pub(super) fn new(prog: Arc<SteerProgram>, bind: Ipv4Addr) -> std::io::Result<NodePorts> {
        let answers: Answers = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answers.clone(), stop.clone());
        // What a predecessor's program steered (its map taken over): the
        // first sync removes what the services no longer have.
        let steered = Mutex::new(prog.frontends());
        let server = std::thread::Builder::new()
            .name("sluice-healthcheck".into())
            .spawn(move || serve(bind, &a, &s))?;
        Ok(NodePorts {
            prog,
            steered,
            answers,
            stop,
            server: Mutex::new(Some(server)),
            bind,
        })
    }

    /// Makes the XDP map and the health checks follow `table`.
    pub(super) fn sync(&self, table: &lb::ServiceTable) {
        let new = table.steered();
        if let Ok(mut old) = self.steered.lock() {
            // Stopped (for good, or handing the map over): never written
            // again (checked under the lock `freeze` takes).
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            match self.prog.sync_frontends(&old, &new) {
                Ok(()) => {
                    if *old != new {
                        tracing::info!("node ports: {} frontends steered", new.len());
                    }
                    *old = new;
                }
                // The next update retries (the sync is idempotent).
                Err(e) => tracing::error!("node ports: {e}"),
            }
        }
        let mut want: BTreeMap<u16, Health> = BTreeMap::new();
        for (_, p) in table.ports() {
            let s = &p.spec;
            let Some(port) = s.health_check_node_port else {
                continue;
            };
            let h = want.entry(port).or_insert_with(|| Health {
                namespace: s.name.namespace.clone(),
                name: s.name.service.clone(),
                local: 0,
            });
            let mut ips: Vec<Ipv4Addr> = s
                .endpoints
                .iter()
                .filter(|e| e.local && e.ready)
                .map(|e| e.ip)
                .collect();
            ips.sort_unstable();
            ips.dedup();
            h.local = h.local.max(ips.len());
        }
        if let Ok(mut a) = self.answers.lock()
            && *a != want
        {
            tracing::info!(
                "node ports: health checks on {}:{:?}",
                self.bind,
                want.keys().collect::<Vec<_>>()
            );
            *a = want;
        }
    }

    /// Stops writing the steering map (a hand-over: the next daemon takes
    /// it over) and the health checks.
    pub(super) fn freeze(&self) {
        // Under the map's lock: a sync in progress finishes first.
        let _held = self.steered.lock();
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Empties the steering map and stops the health checks (a clean stop;
    /// a hand-over only [freezes](NodePorts::freeze) the map, for the next
    /// daemon to take over).
    pub(super) fn stop(&self) {
        self.freeze();
        if let Ok(mut old) = self.steered.lock() {
            if let Err(e) = self.prog.sync_frontends(&old, &[]) {
                tracing::warn!("node ports: {e}");
            }
            old.clear();
        }
        if let Some(h) = self.server.lock().ok().and_then(|mut s| s.take()) {
            let _ = h.join();
        }
    }
}

/// The health-check server: binds what `answers` names, drops what it no
/// longer names, answers each connection at once. A port another process
/// holds is retried on the next round (and logged once).
fn serve(bind: Ipv4Addr, answers: &Answers, stop: &AtomicBool) {
    let mut open: BTreeMap<u16, TcpListener> = BTreeMap::new();
    let mut failed: BTreeMap<u16, String> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let want = answers.lock().map(|a| a.clone()).unwrap_or_default();
        open.retain(|p, _| want.contains_key(p));
        failed.retain(|p, _| want.contains_key(p));
        for &port in want.keys() {
            if open.contains_key(&port) {
                continue;
            }
            match TcpListener::bind(SocketAddr::from((bind, port))) {
                Ok(l) if l.set_nonblocking(true).is_ok() => {
                    failed.remove(&port);
                    open.insert(port, l);
                }
                Ok(_) => {}
                Err(e) => {
                    let e = e.to_string();
                    if failed.get(&port) != Some(&e) {
                        tracing::warn!(
                            "healthCheckNodePort {bind}:{port}: {e} (is kube-proxy running? \
                             services.node_ports needs a node without it)"
                        );
                        failed.insert(port, e);
                    }
                }
            }
        }
        for (port, l) in &open {
            while let Ok((conn, _)) = l.accept() {
                if let Some(h) = want.get(port) {
                    answer(conn, h);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// kube-proxy's answer (service_health.go `ServeHTTP`), to any request.
fn answer(mut conn: TcpStream, h: &Health) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = conn.set_write_timeout(Some(Duration::from_millis(500)));
    // Read the request head (bounded); its content does not matter.
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..) {
        match conn.read(rest) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got += n;
                if buf
                    .get(..got)
                    .is_some_and(|b| b.windows(4).any(|w| w == b"\r\n\r\n"))
                {
                    break;
                }
            }
        }
        if got == buf.len() {
            break;
        }
    }
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": true\n}}",
        h.namespace, h.name, h.local
    );
    let status = if h.local > 0 {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n\
         X-Load-Balancing-Endpoint-Weight: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        h.local,
        body.len()
    );
}
