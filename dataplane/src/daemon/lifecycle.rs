//! How a daemon ends: a clean stop ([`Daemon::join`]: `sluice shutdown`),
//! a hand-over to the next daemon ([`Daemon::hand_over`]: SIGTERM, as
//! kubelet sends for a restart or a rolling update), and the clean-up
//! after the last one (`sluice cleanup`, when Sluice leaves the node).

use std::time::Duration;

use super::{Daemon, lock};
use crate::config::Config;
use crate::reserved_ports::Reservation;

/// The SNAT ports this node's daemons reserved, in `admin.run_dir`.
pub(super) const RESERVED_FILE: &str = "reserved-ports";

impl Daemon {
    /// Stops and waits for every thread; the XDP program is detached and
    /// the reserved SNAT ports are given back. Pods keep their devices
    /// (persistent TUN, veth pairs) and the flow tables stay in
    /// `admin.run_dir`, for a daemon started later.
    pub fn join(self) {
        self.finish(false);
    }

    /// Stops for the daemon that takes over (SIGTERM: a restart or a rolling
    /// update): as [`Daemon::join`], but the XDP program stays on the
    /// uplink, dropping what Sluice owns until the next daemon's program
    /// replaces it, and the SNAT ports stay reserved. Nothing the flows
    /// need is torn down.
    pub fn hand_over(self) {
        self.finish(true);
    }

    fn finish(mut self, hand_over: bool) {
        let t0 = std::time::Instant::now();
        if hand_over {
            self.ctx.steer.leave_attached();
            self.ctx
                .handing_over
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.stop();
        let step = |what: &str| tracing::debug!("stop: {what} at +{} ms", t0.elapsed().as_millis());
        // The workers first. Handing over, the node goes to the next daemon
        // as soon as they stop forwarding, while their sockets and devices
        // close (the next one retries those until they are free), once the
        // steering map is frozen and the metrics listener (the last
        // thread) is closed. The program stays attached, so nothing in the
        // rest of the stop can detach it.
        let workers = self.ctx.cmds.len().min(self.threads.len());
        let mut lock = self.lock.take();
        if hand_over {
            let deadline = t0 + Duration::from_secs(2);
            while self.ctx.parked.load(std::sync::atomic::Ordering::SeqCst) < workers
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            step("workers stopped forwarding");
            // Nothing here writes the steering map after this.
            if let Some(np) = &self.ctx.node_ports {
                np.freeze();
            }
            if let Some(t) = self.threads.pop() {
                let _ = t.join();
            }
            // A daemon waiting to take over gets the uplink sockets, still
            // bound: it carries on with them, nothing is unbound.
            let sockets = self
                .ctx
                .handed
                .lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default();
            let n = sockets.len();
            // (The offer goes here, its socket file with it, before the
            // lock: the next daemon binds its own once it holds the lock.)
            match self.offer.take().and_then(|mut o| o.give(sockets)) {
                Some(sent) => {
                    tracing::info!("handed {sent} of {workers} uplink socket(s) to the next daemon")
                }
                None if n > 0 => {
                    tracing::info!("no daemon waiting to take over: uplink sockets close")
                }
                None => {}
            }
            step("metrics listener closed; node released");
            drop(lock.take());
            tracing::info!("handed over in {} ms", t0.elapsed().as_millis());
            // The workers drop their ports (sockets, devices) in parallel:
            // each socket the kernel unbinds waits out RCU grace periods,
            // which overlap here rather than queue at the process's exit.
            // (Bounded: a worker that never parked is left to the exit.)
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            let mut closing: Vec<_> = self
                .threads
                .drain(..workers.min(self.threads.len()))
                .collect();
            while !closing.is_empty() && std::time::Instant::now() < deadline {
                closing.retain(|t| !t.is_finished());
                std::thread::sleep(Duration::from_millis(1));
            }
            step("uplink sockets closed");
            return;
        }
        for t in self.threads.drain(..workers) {
            let _ = t.join();
        }
        step("workers stopped");
        let sync = self.ctx.sync.lock().ok().and_then(|mut s| s.take());
        if let Some(h) = sync {
            h.stop();
        }
        drop(self.ctx.file.lock().ok().and_then(|mut f| f.take()));
        step("control plane stopped");
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        step("threads joined");
        if let Some(np) = &self.ctx.node_ports {
            np.stop();
        }
        step("node ports stopped");
        // (Handing over, the ports stay reserved, and recorded for the next
        // daemon.)
        if let Some(r) = self.reserved.take() {
            match r.release() {
                Ok(()) => {
                    let _ = std::fs::remove_file(self.run_dir.join(RESERVED_FILE));
                }
                Err(e) => tracing::warn!("giving back the reserved SNAT ports: {e}"),
            }
        }
        // (Handing over, the next daemon may have bound its own socket there.)
        let _ = std::fs::remove_file(&self.socket);
        // On a clean stop the node lock goes last: the XDP program (held by
        // the context) is detached first, so a daemon that takes over never
        // has its own program detached by this one's exit.
        drop(self);
        tracing::info!(
            "stopped in {} ms; releasing the node",
            t0.elapsed().as_millis()
        );
        drop(lock);
    }
}

/// Undoes what daemons leave on the node for their successor, once none
/// runs (the node lock is free): detaches the XDP program from the uplink,
/// gives back the SNAT ports they reserved, removes the flow tables.
/// Returns what it did, line by line.
pub fn cleanup(cfg: &Config) -> std::io::Result<String> {
    let _lock = lock::NodeLock::acquire(&cfg.state_dir, Duration::ZERO).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{e}; `sluice shutdown` stops it cleanly (then no clean-up is needed)"),
        )
    })?;
    let mut cfg = cfg.clone();
    super::resolve_uplink(&mut cfg)?;
    let mut out = String::new();
    if crate::port::xdp::detach(&cfg.uplink)? {
        out += &format!("detached the XDP program from {}\n", cfg.uplink);
    }
    let file = cfg.run_dir.join(RESERVED_FILE);
    if let Some(r) = Reservation::recorded(&file) {
        r.release()?;
        out += &format!("gave back reserved ports {}\n", r.ranges());
        let _ = std::fs::remove_file(&file);
    }
    for e in std::fs::read_dir(&cfg.run_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "state") && std::fs::remove_file(&p).is_ok() {
            out += &format!("removed {}\n", p.display());
        }
    }
    Ok(out)
}
