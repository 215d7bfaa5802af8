//! Services in the daemon: where the service table comes from (the API
//! server's Services and EndpointSlices through ctrl's Services thread, or
//! the cluster file), how each change reaches the workers (the control
//! state keeps the table; the next snapshot carries it, so a worker sees a
//! whole update or none), and what `sluice services`, `sluice status` and
//! `/metrics` say about it.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Ctx, StatsView, apply_view};
use crate::config::Config;

/// What the service table is built for on this node.
pub(super) fn facts(cfg: &Config) -> lb::NodeFacts {
    let name = cfg
        .kubernetes
        .as_ref()
        .map_or_else(|| cfg.name.clone(), |k| k.node_name.clone());
    lb::NodeFacts {
        name,
        zone: None,
        node_ips: vec![cfg.ip],
        // kube-proxy's local detector: the pod network, not the services.
        cluster_cidrs: cfg
            .cluster_cidrs
            .iter()
            .filter(|c| !cfg.service_cidrs.iter().any(|s| s.contains(&c.network())))
            .copied()
            .collect(),
        service_cidrs: cfg.service_cidrs.clone(),
    }
}

/// A change to the service table: applied to the control state's table and
/// published with the next snapshot.
fn apply(weak: &Weak<Ctx>, u: &ctrl::services::Update) {
    let Some(ctx) = weak.upgrade() else {
        return;
    };
    let Ok(mut ctl) = ctx.control.lock() else {
        return;
    };
    let next = Arc::new(ctl.services.update(u.upserts.iter().cloned(), &u.removes));
    tracing::info!(
        "services: {} ports ({} changed, {} removed), table generation {}",
        next.len(),
        u.upserts.len(),
        u.removes.len(),
        next.generation()
    );
    ctl.services = next.clone();
    ctl.services_at = Some(Instant::now());
    ctl.publish();
    drop(ctl);
    // Steered after the workers have the table: a frame steered early
    // would meet an old table and go nowhere.
    if let Some(np) = &ctx.node_ports {
        np.sync(&next);
    }
}

/// Starts whatever feeds the table: the cluster file (which also gives the
/// peers), or the Services thread beside the Node watcher.
pub(super) fn start(ctx: &Arc<Ctx>, cfg: &Config) -> std::io::Result<()> {
    if let Some(path) = &cfg.cluster_file {
        let (wv, ws, wp) = (
            Arc::downgrade(ctx),
            Arc::downgrade(ctx),
            Arc::downgrade(ctx),
        );
        let (vni, ip) = (cfg.vni, cfg.ip);
        let h = ctrl::cluster_file::spawn(
            path.clone(),
            cfg.name.clone(),
            ctrl::node::AnnotationPolicy::default(),
            Duration::from_millis(500),
            ctrl::cluster_file::Publish {
                view: Box::new(move |v, _| apply_view(&wv, v, vni, ip)),
                services: Box::new(move |u| apply(&ws, u)),
                policy: Box::new(move |c, problems| super::netpol::apply(&wp, c, problems)),
            },
        )?;
        if let Ok(mut f) = ctx.cluster.lock() {
            *f = Some(h);
        }
    }
    if let Some(k) = &cfg.kubernetes {
        let weak = Arc::downgrade(ctx);
        let h = ctrl::service_sync::spawn(super::sync_config(cfg, k), move |u| apply(&weak, u))?;
        if let Ok(mut s) = ctx.svc_sync.lock() {
            *s = Some(h);
        }
    }
    Ok(())
}

/// The services part of `sluice status` and `/readyz`: whether the table
/// is loaded (`None`: no source, nothing to wait for) and the text.
pub(super) fn status(ctx: &Ctx) -> (Option<bool>, String) {
    let (len, generation, age) = ctx
        .control
        .lock()
        .map(|c| {
            (
                c.services.len(),
                c.services.generation(),
                c.services_at.map(|t| t.elapsed()),
            )
        })
        .unwrap_or_default();
    let mut text = format!(
        "service_ports {len}\nservice_table_generation {generation}\nservice_table_age_ms {}\n",
        age.map_or("never".into(), |a| a.as_millis().to_string())
    );
    let file = ctx
        .cluster
        .lock()
        .ok()
        .and_then(|f| f.as_ref().map(|h| h.status()));
    let sync = ctx
        .svc_sync
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|h| h.status()));
    let ready = match (file, sync) {
        (Some(f), _) => {
            text += &format!(
                "services_source cluster_file\nservices_in_sync {}\n",
                f.in_sync
            );
            if let Some(e) = &f.last_error {
                text += &format!("services_last_error {e}\n");
            }
            for p in &f.problems {
                text += &format!("problem {p}\n");
            }
            Some(f.last_load.is_some())
        }
        (None, Some(s)) => {
            text += &format!(
                "services_source kubernetes\nservices_in_sync {}\nservices_api_errors {}\n",
                s.in_sync, s.errors
            );
            if let Some(e) = &s.last_error {
                text += &format!("services_last_error {}\n", e.replace('\n', " "));
            }
            for p in &s.problems {
                text += &format!("problem {p}\n");
            }
            Some(s.last_sync.is_some())
        }
        (None, None) => None,
    };
    (ready, text)
}

/// Flows, packets and bytes per service port, added over the workers.
fn hits(views: &[StatsView]) -> Vec<crate::counters::SvcStats> {
    let mut out: Vec<crate::counters::SvcStats> = Vec::new();
    for v in views {
        if out.len() < v.svc.len() {
            out.resize(v.svc.len(), crate::counters::SvcStats::default());
        }
        for (a, b) in out.iter_mut().zip(&v.svc) {
            a.add(b);
        }
    }
    out
}

/// `sluice services`: every service port, its frontends, its backends with
/// their conditions and which policy uses them, and its new flows.
pub(super) fn listing(ctx: &Ctx, views: &[StatsView]) -> String {
    let table = match ctx.control.lock() {
        Ok(c) => c.services.clone(),
        Err(_) => return "error: control state unavailable\n".into(),
    };
    let hits = hits(views);
    let mut out = format!("ok\nports {}\n", table.len());
    let mut ports: Vec<_> = table.ports().collect();
    ports.sort_by(|a, b| a.1.spec.name.cmp(&b.1.spec.name));
    for (id, p) in ports {
        let s = &p.spec;
        let proto = s.name.proto.name();
        let mut fronts: Vec<String> = s
            .cluster_ips
            .iter()
            .map(|ip| format!("{ip}:{}/{proto}", s.port))
            .collect();
        fronts.extend(
            s.external_ips
                .iter()
                .map(|ip| format!("external {ip}:{}", s.port)),
        );
        fronts.extend(
            s.load_balancer_ips
                .iter()
                .map(|ip| format!("lb {ip}:{}", s.port)),
        );
        fronts.extend(s.node_port.map(|n| format!("nodeport {n}")));
        out += &format!(
            "service {} frontends {} hits {} packets {} bytes {}{}{}\n",
            s.name,
            fronts.join(","),
            hits.get(id as usize).map_or(0, |h| h.flows),
            hits.get(id as usize).map_or(0, |h| h.packets),
            hits.get(id as usize).map_or(0, |h| h.bytes),
            s.affinity
                .map_or(String::new(), |a| format!(" affinity {}s", a.as_secs())),
            if p.has_any { "" } else { " no_endpoints" }
        );
        for e in &s.endpoints {
            let b = lb::Backend {
                ip: e.ip,
                port: e.port,
            };
            out += &format!(
                "  backend {b} ready {} serving {} terminating {} local {} in {}\n",
                e.ready,
                e.serving,
                e.terminating,
                e.local,
                match (p.cluster.contains(b), p.local.contains(b)) {
                    (true, true) => "cluster,local",
                    (true, false) => "cluster",
                    (false, true) => "local",
                    (false, false) => "none",
                }
            );
        }
    }
    out
}

/// The services part of `/metrics`.
pub(super) fn metrics(ctx: &Ctx, views: &[StatsView]) -> String {
    let Ok(table) = ctx.control.lock().map(|c| c.services.clone()) else {
        return String::new();
    };
    let hits = hits(views);
    let mut out = String::new();
    type Field = fn(&crate::counters::SvcStats) -> u64;
    let fields: [(&str, &str, Field); 3] = [
        (
            "sluice_service_flows_total",
            "New flows balanced to a backend, per service port.",
            |h| h.flows,
        ),
        (
            "sluice_service_packets_total",
            "Packets of service flows (both directions, as translated), per service port.",
            |h| h.packets,
        ),
        (
            "sluice_service_bytes_total",
            "Bytes (IP) of service flows, both directions, per service port.",
            |h| h.bytes,
        ),
    ];
    for (name, help, field) in fields {
        out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n");
        for (id, p) in table.ports() {
            out += &format!(
                "{name}{{service=\"{}\"}} {}\n",
                p.spec.name,
                hits.get(id as usize).map_or(0, field)
            );
        }
    }
    out += &format!(
        "# HELP sluice_service_ports Service ports in the table.\n# TYPE sluice_service_ports gauge\nsluice_service_ports {}\n",
        table.len()
    );
    out += &format!(
        "# HELP sluice_service_table_updates_total Updates applied to the service table.\n# TYPE sluice_service_table_updates_total counter\nsluice_service_table_updates_total {}\n",
        table.generation()
    );
    out
}
