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
        let (region, how) = Region::open(&path, &spec)?;
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
        let (aregion, ahow) = Region::open(&apath, &lb::affinity::state_spec(cap, epoch))?;
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
