//! A worker thread's life: pinned to its core, it polls its ports and
//! between polls takes commands (pods added and removed, a conntrack
//! listing) and publishes its counters without waiting for a lock.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{Cmd, Ctx};
use crate::counters::PortCounters;
use crate::worker::{IdlePolicy, Role, Worker};

pub(super) fn worker_main(
    ctx: &Ctx,
    index: usize,
    mut w: Worker,
    rx: Receiver<Cmd>,
    idle: IdlePolicy,
    core: Option<usize>,
) {
    let pinned = core
        .and_then(|c| core_affinity::set_for_current(core_affinity::CoreId { id: c }).then_some(c));
    let mut last = Instant::now();
    let between = |w: &mut Worker| {
        let mut commanded = false;
        while let Ok(cmd) = rx.try_recv() {
            commanded = true;
            match cmd {
                Cmd::AddPod {
                    name,
                    ip,
                    mac,
                    port,
                    limits,
                } => {
                    w.remove_pod(ip);
                    w.add_port_labelled(port, Role::Pod { ip, mac }, format!("pod/{name}"));
                    w.limit_pod(ip, limits);
                }
                Cmd::DelPod { ip, reply } => {
                    let _ = reply.send(w.remove_pod(ip).is_some());
                }
                Cmd::Conntrack { reply } => {
                    let _ = reply.send(conntrack_listing(w));
                }
            }
        }
        // Publish counters at most every 100 ms (at once after a command:
        // a pod just attached shows up in `stats`), never waiting for the
        // lock.
        if (commanded || last.elapsed() >= Duration::from_millis(100))
            && let Some(Ok(mut s)) = ctx.stats.get(index).map(Mutex::try_lock)
        {
            s.counters = w.counters.clone();
            s.ports = w
                .ports()
                .map(|p| PortCounters {
                    kernel_dropped: p.port.kernel_drops(),
                    ..p.counters.clone()
                })
                .collect();
            s.conntrack_entries = w.conntrack().len();
            s.nat_ports = w.conntrack().nat_ports_in_use();
            s.svc.clone_from(&w.svc);
            s.policy.clone_from(&w.policy);
            s.pinned_core = pinned;
            last = Instant::now();
        }
    };
    if let Err(e) = w.run(&ctx.stop, idle, super::flows::monotonic, between) {
        tracing::error!("worker {index} failed: {e}");
        ctx.request_stop();
    }
    // Handing over: the uplink socket is left for the next daemon, and
    // not polled again.
    if ctx.handing_over.load(Ordering::SeqCst)
        && let Some(h) = w.uplink_port_mut().and_then(|p| p.hand_over())
    {
        match (h, ctx.handed.lock()) {
            (Ok(h), Ok(mut v)) => v.push(h),
            (Err(e), _) => tracing::warn!("worker {index}: uplink socket not handed over: {e}"),
            _ => {}
        }
    }
    // No longer forwarding: a daemon handing over can let the next one in
    // now, while this one's sockets and devices close (they are dropped
    // with the worker, in parallel; the next daemon retries what is still
    // busy).
    ctx.parked.fetch_add(1, Ordering::SeqCst);
    drop(w);
}

fn conntrack_listing(w: &Worker) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for e in w.conntrack().entries() {
        let proto = match e.orig.proto {
            6 => "tcp",
            17 => "udp",
            1 => "icmp",
            _ => "other",
        };
        let state = match e.proto {
            nat::ProtoState::Tcp { state, .. } => format!("{state:?} "),
            _ => String::new(),
        };
        let o = e.orig;
        let r = e.reply;
        let _ = writeln!(
            s,
            "{proto} {state}src={} dst={} sport={} dport={} src={} dst={} sport={} dport={}{}",
            o.src,
            o.dst,
            o.src_port,
            o.dst_port,
            r.src,
            r.dst,
            r.src_port,
            r.dst_port,
            if e.seen_reply {
                " [ASSURED]"
            } else {
                " [UNREPLIED]"
            }
        );
    }
    s
}
