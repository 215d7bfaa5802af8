//! The neighbour thread: next-hop MACs for the routing snapshot.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Ctx;

/// The neighbour thread: the next hops' MACs follow the kernel's table as
/// its change events arrive (a peer's new MAC reaches the snapshot within
/// the event's delivery), and every 500 ms regardless (which also asks the
/// kernel to resolve what it lacks).
pub(super) fn neighbour_main(c: &Ctx) {
    let mut watch = match netcfg::NeighbourWatch::new() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("neighbour events: {e}; polling every 500 ms");
            None
        }
    };
    let mut last = Instant::now();
    while !c.stop.load(Ordering::Relaxed) {
        let changed = match &mut watch {
            Some(w) => match w.wait(Duration::from_millis(100)) {
                Ok(events) => !events.is_empty(),
                Err(e) => {
                    tracing::warn!("neighbour events: {e}; polling every 500 ms");
                    watch = None;
                    false
                }
            },
            None => {
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        };
        if changed || last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            if let Ok(mut ctl) = c.control.lock() {
                ctl.refresh_neighbours();
            }
        }
    }
}
