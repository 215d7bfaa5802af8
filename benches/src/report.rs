//! How the side-by-side harness turns runs into figures: medians with
//! their range, Sluice/kernel ratios taken per run and then summarised,
//! "n/a" for a side that did not run, and which runs may rewrite
//! `benches/RESULTS.md`. Pure functions, unit-tested here, so a missing run
//! can never turn into a figure.

use crate::netbench::{Spread, median};

/// The per-run ratios `a[k] / b[k]` over the runs both sides made, as a
/// median with its range. Pairing by run means that drift in the machine
/// between runs cancels out of each ratio; `None` when either side has no
/// run (a ratio against nothing is not a figure).
pub fn paired_ratio(a: &[f64], b: &[f64]) -> Option<Spread> {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, d)| **d > 0.0)
        .map(|(n, d)| n / d)
        .collect();
    median(ratios)
}

/// `median (min-max)` scaled, or "n/a" for no runs.
pub fn fmt_spread(s: Option<Spread>, scale: f64, digits: usize) -> String {
    match s {
        Some((m, lo, hi)) => format!(
            "{:.d$} ({:.d$}-{:.d$})",
            m * scale,
            lo * scale,
            hi * scale,
            d = digits
        ),
        None => "n/a".into(),
    }
}

/// The median alone, or "n/a".
pub fn fmt_median(s: Option<Spread>, digits: usize) -> String {
    s.map_or("n/a".into(), |(m, _, _)| format!("{m:.digits$}"))
}

/// What the command line selected, for [`results_target`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--smoke`.
    pub smoke: bool,
    /// `--only`, `--dataplane`, `--no-tcp` or `--no-scaling` given.
    pub partial: bool,
}

/// Where the results go: an explicit `--out` always; the default file
/// (`benches/RESULTS.md`) only from a full run, so a partial or smoke run
/// never leaves its figures beside an analysis written for another run.
/// `Err` names why the default file is refused when `--out` points at it.
pub fn results_target(
    out: Option<&std::path::Path>,
    default: &std::path::Path,
    sel: &Selection,
) -> Result<Option<std::path::PathBuf>, String> {
    let full = !sel.smoke && !sel.partial;
    match out {
        Some(p) if !full && same_file(p, default) => Err(format!(
            "{} holds the full run's figures and analysis: a smoke or partial run \
             (--only, --dataplane, --no-tcp, --no-scaling) may not rewrite it; use another --out",
            default.display()
        )),
        Some(p) => Ok(Some(p.to_path_buf())),
        None if full => Ok(Some(default.to_path_buf())),
        None => Ok(None),
    }
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let canon = |p: &std::path::Path| {
        p.canonicalize().unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        })
    };
    canon(a) == canon(b)
}

/// A run that delivered nothing is a broken path, not a figure of 0.
pub fn require_delivery(what: &str, received: u64) -> Result<(), String> {
    if received == 0 {
        return Err(format!(
            "{what}: nothing was delivered (the path is broken, not slow)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn ratios_are_paired_by_run_then_summarised() {
        // Run 2 is slow for both sides (machine drift): per-run ratios are
        // all 2.0, while the ratio of medians would say 2.5 / 1.0.
        let s = [2.0, 0.2, 6.0];
        let k = [1.0, 0.1, 3.0];
        assert_eq!(paired_ratio(&s, &k), Some((2.0, 2.0, 2.0)));
        let s = [3.0, 1.0, 4.0];
        let k = [1.0, 1.0, 1.0];
        assert_eq!(paired_ratio(&s, &k), Some((3.0, 1.0, 4.0)));
    }

    #[test]
    fn a_side_without_runs_gives_no_figure() {
        assert_eq!(paired_ratio(&[1.0, 2.0], &[]), None);
        assert_eq!(paired_ratio(&[], &[1.0]), None);
        assert_eq!(paired_ratio(&[1.0], &[0.0]), None, "no division by zero");
        assert_eq!(fmt_spread(median(vec![]), 1.0, 2), "n/a");
        assert_eq!(fmt_median(None, 2), "n/a");
        assert_eq!(
            fmt_spread(median(vec![2.0, 1.0, 3.0]), 1e-6, 3),
            "0.000 (0.000-0.000)"
        );
        assert_eq!(
            fmt_spread(median(vec![2.0, 1.0, 3.0]), 1.0, 1),
            "2.0 (1.0-3.0)"
        );
    }

    #[test]
    fn only_a_full_run_writes_the_default_results_file() {
        let d = Path::new("/nonexistent/benches/RESULTS.md");
        let full = Selection::default();
        let smoke = Selection {
            smoke: true,
            partial: false,
        };
        let partial = Selection {
            smoke: false,
            partial: true,
        };
        assert_eq!(results_target(None, d, &full), Ok(Some(d.to_path_buf())));
        assert_eq!(results_target(None, d, &smoke), Ok(None));
        assert_eq!(results_target(None, d, &partial), Ok(None));
        let other = Path::new("/tmp/partial.md");
        assert_eq!(
            results_target(Some(other), d, &partial),
            Ok(Some(other.to_path_buf()))
        );
        assert!(results_target(Some(d), d, &partial).is_err());
        assert!(results_target(Some(d), d, &smoke).is_err());
        assert_eq!(results_target(Some(d), d, &full), Ok(Some(d.to_path_buf())));
    }

    #[test]
    fn nothing_delivered_is_an_error() {
        assert!(require_delivery("x", 0).unwrap_err().contains("x: nothing"));
        assert!(require_delivery("x", 1).is_ok());
    }
}
