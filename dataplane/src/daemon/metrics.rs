//! The Prometheus endpoint and the health probes (`/metrics`, `/readyz`,
//! `/healthz`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Ctx, StatsView, control_status};
use crate::counters::{PortCounters, Reason};

/// The workers' views added up.
pub(super) fn sum_stats(views: &[StatsView]) -> StatsView {
    let mut s = StatsView::default();
    for v in views {
        let c = &v.counters;
        for (a, b) in s.counters.drops.iter_mut().zip(c.drops.iter()) {
            *a += b;
        }
        s.counters.encapsulated += c.encapsulated;
        s.counters.decapsulated += c.decapsulated;
        s.counters.nat += c.nat;
        s.counters.icmp_sent += c.icmp_sent;
        s.counters.arp_replies += c.arp_replies;
        s.counters.handed_off += c.handed_off;
        s.counters.handed_in += c.handed_in;
        s.counters.svc_flows += c.svc_flows;
        s.counters.svc_translated += c.svc_translated;
        s.counters.super_whole += c.super_whole;
        s.counters.super_cut += c.super_cut;
        s.ports.extend(v.ports.iter().cloned());
        s.conntrack_entries += v.conntrack_entries;
        s.nat_ports += v.nat_ports;
    }
    s
}

/// Prometheus text exposition of the workers' counters.
fn metrics_text(ctx: &Ctx) -> String {
    let views: Vec<StatsView> = ctx
        .stats
        .iter()
        .map(|m| m.lock().map(|s| s.clone()).unwrap_or_default())
        .collect();
    let s = sum_stats(&views);
    let mut out = String::new();
    type PortField = fn(&PortCounters) -> u64;
    let per_port: [(&str, &str, PortField); 6] = [
        (
            "sluice_rx_packets_total",
            "Frames received per port.",
            |p| p.rx,
        ),
        (
            "sluice_tx_packets_total",
            "Frames transmitted per port.",
            |p| p.tx,
        ),
        (
            "sluice_kernel_dropped_total",
            "Frames the kernel dropped before Sluice read them (AF_XDP ring full or fill ring empty), per port.",
            |p| p.kernel_dropped,
        ),
        (
            "sluice_rate_limited_total",
            "Frames dropped by a pod's bandwidth limits (both directions), per port.",
            |p| p.rate_limited,
        ),
        (
            "sluice_shaped_total",
            "Frames that waited for a pod's bandwidth tokens, per port.",
            |p| p.shaped,
        ),
        (
            "sluice_shaping_paused_total",
            "Polls that left a TUN pod unread while its egress bucket was in debt, per port.",
            |p| p.paused,
        ),
    ];
    for (name, help, field) in per_port {
        out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n");
        for p in &s.ports {
            out += &format!("{name}{{port=\"{}\"}} {}\n", p.name, field(p));
        }
    }
    out += "# HELP sluice_drops_total Packets dropped, by reason.\n# TYPE sluice_drops_total counter\n";
    for r in Reason::all() {
        out += &format!(
            "sluice_drops_total{{reason=\"{}\"}} {}\n",
            r.name(),
            s.counters.dropped(r)
        );
    }
    for (name, help, v) in [
        (
            "sluice_encapsulated_total",
            "Frames VXLAN-encapsulated.",
            s.counters.encapsulated,
        ),
        (
            "sluice_decapsulated_total",
            "Frames VXLAN-decapsulated.",
            s.counters.decapsulated,
        ),
        (
            "sluice_super_packets_whole_total",
            "Super-packets (TSO or UDP-tunnel GSO bursts) written whole to a TUN device or the uplink TAP.",
            s.counters.super_whole,
        ),
        (
            "sluice_super_packets_cut_total",
            "Super-packets the worker cut into segments for a port that takes none (AF_XDP).",
            s.counters.super_cut,
        ),
        (
            "sluice_nat_total",
            "Packets translated by SNAT.",
            s.counters.nat,
        ),
    ] {
        out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
    }
    out += &format!(
        "# HELP sluice_conntrack_entries Live conntrack entries.\n# TYPE sluice_conntrack_entries gauge\nsluice_conntrack_entries {}\n",
        s.conntrack_entries
    );
    out += &super::services::metrics(ctx, &views);
    out += &super::netpol::metrics(ctx, &views);
    out += &ctx.bind_mode.metrics();
    out
}

pub(super) fn metrics_main(ctx: &Ctx, l: &TcpListener) {
    while !ctx.stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = String::new();
                let mut r = BufReader::new(&s);
                let _ = r.read_line(&mut req);
                // The rest of the request, up to the blank line: closing
                // with a request half read would reset the connection
                // under the client's answer.
                let mut line = String::new();
                for _ in 0..64 {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(n) if n > 0 && !line.trim().is_empty() => {}
                        _ => break,
                    }
                }
                let (code, body) = if req.starts_with("GET /metrics") {
                    ("200 OK", metrics_text(ctx))
                } else if req.starts_with("GET /readyz") {
                    // Ready once routes are known; the dataplane keeps
                    // forwarding on the last snapshot either way.
                    let (ready, text) = control_status(ctx);
                    (
                        if ready {
                            "200 OK"
                        } else {
                            "503 Service Unavailable"
                        },
                        text,
                    )
                } else if req.starts_with("GET /healthz") {
                    ("200 OK", "ok\n".to_string())
                } else {
                    ("404 Not Found", "not found\n".to_string())
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            // Until a client connects or the daemon stops.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ctx.stopped.wait(l.as_raw_fd(), Duration::from_secs(1));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
