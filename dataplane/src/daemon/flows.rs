//! The flow tables that outlive the daemon: each worker's conntrack (its
//! entries, translations and so its SNAT ports in use, TCP windows,
//! expiries) lives in `admin.run_dir/conntrack-<worker>.state`, mapped and
//! written through on every packet ([`nat::Conntrack::with_state`]). A new
//! daemon maps the files back and carries on; a file from another boot,
//! layout or configuration (the SNAT address or ports, the worker count,
//! `conntrack.max_entries`) is discarded with a log line naming what
//! changed, and its flows start afresh.
//!
//! Session affinity bindings (`affinity-<worker>.state`) outlive it the
//! same way ([`lb::AffinityTable::with_state`]).
//!
//! Time is `CLOCK_MONOTONIC`, which runs from boot: the expiries a file
//! holds stay right for any process of the same boot (the files carry the
//! boot id).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nat::{Conntrack, ConntrackConfig};
use persist::{Opened, Region};

use crate::worker::Worker;

/// Monotonic time since boot: what workers pass as `now`.
pub(crate) fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec the call writes; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The state file of worker `i`'s conntrack.
pub(super) fn conntrack_path(run_dir: &Path, i: usize) -> PathBuf {
    run_dir.join(format!("conntrack-{i}.state"))
}

/// How long a daemon waits for its predecessor to unmap a state file.
/// The predecessor has handed the node over (this daemon holds the node
/// lock) and is exiting: the kernel drops its mappings and locks when it
/// does, a few milliseconds later. kubelet's grace period (10 s in the
/// DaemonSet) bounds it too.
const PREDECESSOR_EXIT: Duration = Duration::from_secs(10);

/// [`Region::open`], retried every millisecond while the daemon that handed
/// the node over still has the file mapped (it released the node lock as
/// its workers stopped, before its process exited).
fn open_after_predecessor(path: &Path, spec: &persist::Spec) -> std::io::Result<(Region, Opened)> {
    let deadline = std::time::Instant::now() + PREDECESSOR_EXIT;
    let mut logged = false;
    loop {
        match Region::open(path, spec) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "{e} (waited {} s for the previous daemon to exit: \
                             find it with `fuser {}` and stop it)",
                            PREDECESSOR_EXIT.as_secs(),
                            path.display()
                        ),
                    ));
                }
                if !logged {
                    logged = true;
                    tracing::info!(
                        "waiting for the previous daemon to unmap {}",
                        path.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

/// Gives each worker its table back from `run_dir` (or a fresh one there).
/// Returns the summary `sluice status` shows.
pub(super) fn restore(
    run_dir: &Path,
    ct: &ConntrackConfig,
    workers: &mut [Worker],
) -> std::io::Result<String> {
    let epoch = persist::boot_id();
    let now = monotonic();
    let mut total = nat::Restored::default();
    let mut discarded = 0;
    let mut affinity_total = 0;
    for (i, w) in workers.iter_mut().enumerate() {
        let snat = w.snat().cloned();
        let spec = nat::state_spec(ct, snat.as_ref(), epoch);
        let path = conntrack_path(run_dir, i);
        let (region, how) = open_after_predecessor(&path, &spec)?;
        match &how {
            Opened::Fresh => {}
            Opened::Restored => {}
            Opened::Discarded(why) => {
                discarded += 1;
                tracing::warn!(
                    "flow state {} discarded: {why}; worker {i}'s flows start afresh",
                    path.display()
                );
            }
        }
        let (table, r) = Conntrack::with_state(ct.clone(), snat, region, now);
        if how == Opened::Restored {
            tracing::info!(
                "flow state {}: {} flows carried on ({} expired meanwhile, {} torn, {} invalid, {} duplicate)",
                path.display(),
                r.entries,
                r.expired,
                r.torn,
                r.invalid,
                r.duplicate
            );
        }
        w.ct = table;
        // Session affinity: kube-proxy's longest timeout is a day.
        let cap = crate::services::AFFINITY_ENTRIES;
        let apath = run_dir.join(format!("affinity-{i}.state"));
        let (aregion, ahow) =
            open_after_predecessor(&apath, &lb::affinity::state_spec(cap, epoch))?;
        if let Opened::Discarded(why) = &ahow {
            discarded += 1;
            tracing::warn!("affinity state {} discarded: {why}", apath.display());
        }
        let (aff, bindings) =
            lb::AffinityTable::with_state(cap, aregion, now, Duration::from_secs(86_400));
        if ahow == Opened::Restored {
            tracing::info!(
                "affinity state {}: {bindings} session affinity bindings carried on",
                apath.display()
            );
        }
        w.affinity = aff;
        affinity_total += bindings;
        total.entries += r.entries;
        total.expired += r.expired;
        total.torn += r.torn;
        total.invalid += r.invalid;
        total.duplicate += r.duplicate;
    }
    // Files of workers that no longer exist (fewer cores now).
    for i in workers.len()..256 {
        for p in [
            conntrack_path(run_dir, i),
            run_dir.join(format!("affinity-{i}.state")),
        ] {
            if std::fs::remove_file(&p).is_err() {
                continue;
            }
            tracing::warn!(
                "flow state {} discarded: the daemon has {} worker(s) now",
                p.display(),
                workers.len()
            );
        }
    }
    Ok(format!(
        "affinity_restored {affinity_total}\nflows_restored {}\nflows_restore_expired {}\nflows_restore_torn {}\nflows_restore_invalid {}\nflows_restore_duplicate {}\nflow_files_discarded {discarded}\n",
        total.entries, total.expired, total.torn, total.invalid, total.duplicate
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_still_mapped_by_the_exiting_predecessor_is_waited_for() {
        let dir = std::env::temp_dir().join(format!("flows-wait-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("conntrack-0.state");
        let spec = lb::affinity::state_spec(64, [1; 16]);
        let (old, _) = Region::open(&path, &spec).unwrap();
        // What failed the start-up before: the predecessor had released the
        // node lock, not yet its mappings.
        let e = Region::open(&path, &spec).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
        let t0 = std::time::Instant::now();
        let exiting = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(old);
        });
        let (_new, how) = open_after_predecessor(&path, &spec).unwrap();
        assert_eq!(how, Opened::Restored);
        assert!(t0.elapsed() >= Duration::from_millis(50));
        exiting.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
