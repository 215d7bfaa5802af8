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
        if hand_over {
            self.ctx.steer.leave_attached();
        }
        self.stop();
        let sync = self.ctx.sync.lock().ok().and_then(|mut s| s.take());
        if let Some(h) = sync {
            h.stop();
        }
        drop(self.ctx.file.lock().ok().and_then(|mut f| f.take()));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(np) = &self.ctx.node_ports {
            np.stop(hand_over);
        }
        // Handing over, the ports stay reserved, and recorded for the next
        // daemon; a clean stop gives them back.
        if let Some(r) = self.reserved.take()
            && !hand_over
        {
            match r.release() {
                Ok(()) => {
                    let _ = std::fs::remove_file(self.run_dir.join(RESERVED_FILE));
                }
                Err(e) => tracing::warn!("giving back the reserved SNAT ports: {e}"),
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        // The node lock goes last: the XDP program (held by the context)
        // is detached first, so a daemon that takes over never has its own
        // program detached by this one's exit.
        let lock = self.lock.take();
        drop(self);
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
