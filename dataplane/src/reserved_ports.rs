//! The SNAT port range kept out of the host's ephemeral ports while the
//! daemon runs: `net.ipv4.ip_local_reserved_ports` (per network namespace),
//! so a local socket never picks a port whose replies the XDP program would
//! steer to Sluice. Ports stay usable by explicit bind. A clean stop gives
//! back exactly the ports this daemon added, leaving what others reserved
//! (before or meanwhile) in place.

use std::io;

const PATH: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Inclusive port ranges, sorted and merged.
pub type Ranges = Vec<(u16, u16)>;

/// Parses the kernel's list ("1-3,8,61000-65535"; empty for none).
/// Entries that do not parse are skipped (the kernel never writes them).
pub fn parse(s: &str) -> Ranges {
    let mut v: Ranges = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .filter_map(|t| match t.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => t.parse().ok().map(|p| (p, p)),
        })
        .filter(|(a, b)| a <= b)
        .collect();
    normalize(&mut v);
    v
}

/// Formats ranges as the kernel takes them.
pub fn format(r: &[(u16, u16)]) -> String {
    r.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn normalize(v: &mut Ranges) {
    v.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(v.len());
    for &(a, b) in v.iter() {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *v = out;
}

/// `r` with the ports of `cut` removed.
pub fn subtract(r: &[(u16, u16)], cut: &[(u16, u16)]) -> Ranges {
    let mut cur: Ranges = r.to_vec();
    for &(c0, c1) in cut {
        let mut next = Vec::with_capacity(cur.len() + 1);
        for (a, b) in cur {
            if b < c0 || a > c1 {
                next.push((a, b));
                continue;
            }
            if a < c0 {
                next.push((a, c0 - 1));
            }
            if b > c1 {
                next.push((c1 + 1, b));
            }
        }
        cur = next;
    }
    cur
}

/// `a` and `b` together.
pub fn union(a: &[(u16, u16)], b: &[(u16, u16)]) -> Ranges {
    let mut v: Ranges = a.iter().chain(b).copied().collect();
    normalize(&mut v);
    v
}

/// Ports this daemon reserved; [`Reservation::release`] gives them back.
#[derive(Debug)]
pub struct Reservation {
    /// The ports of the range that were not reserved before.
    added: Ranges,
}

impl Reservation {
    /// Reserves `range` in the current network namespace.
    pub fn take(range: (u16, u16)) -> io::Result<Reservation> {
        let old = parse(&std::fs::read_to_string(PATH)?);
        let added = subtract(&[range], &old);
        if !added.is_empty() {
            write(&union(&old, &[range]))?;
        }
        Ok(Reservation { added })
    }

    /// Records what this reservation added in `file`, for a daemon that
    /// takes over after this one stops or dies ([`Reservation::inherit`]):
    /// the last daemon's clean stop then gives back exactly what the first
    /// one added.
    pub fn record(&self, file: &std::path::Path) -> io::Result<()> {
        std::fs::write(file, format!("{}\n", format(&self.added)))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))
    }

    /// The reservation recorded in `file`, if there is one.
    pub fn recorded(file: &std::path::Path) -> Option<Reservation> {
        let s = std::fs::read_to_string(file).ok()?;
        Some(Reservation {
            added: parse(s.trim()),
        })
    }

    /// The ports it holds, as the kernel lists them.
    pub fn ranges(&self) -> String {
        format(&self.added)
    }

    /// Adds to this reservation what a previous daemon recorded in `file`
    /// ([`Reservation::record`]).
    pub fn inherit(&mut self, file: &std::path::Path) {
        if let Ok(s) = std::fs::read_to_string(file) {
            self.added = union(&self.added, &parse(s.trim()));
        }
    }

    /// Removes the ports [`Reservation::take`] added (as the list stands
    /// now). Runs in the namespace the reservation was taken in.
    pub fn release(&self) -> io::Result<()> {
        if self.added.is_empty() {
            return Ok(());
        }
        let now = parse(&std::fs::read_to_string(PATH)?);
        write(&subtract(&now, &self.added))
    }
}

/// Writes the list, newline-terminated: the kernel ignores an empty write,
/// so clearing the last range needs the newline.
fn write(r: &[(u16, u16)]) -> io::Result<()> {
    std::fs::write(PATH, format!("{}\n", format(r)))
        .map_err(|e| io::Error::new(e.kind(), format!("{PATH}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_list_round_trips() {
        assert_eq!(parse(""), vec![]);
        assert_eq!(parse("\n"), vec![]);
        assert_eq!(parse("8,1-3,2-5\n"), vec![(1, 5), (8, 8)]);
        assert_eq!(parse("61000-65535"), vec![(61000, 65535)]);
        assert_eq!(format(&parse("8,1-3,4")), "1-4,8");
        assert_eq!(parse("x,3-1,7"), vec![(7, 7)], "garbage is skipped");
    }

    #[test]
    fn only_the_added_ports_are_given_back() {
        // Another owner had 60000-61500 reserved: ours adds 61501-65535,
        // and releasing leaves theirs, and what was reserved meanwhile.
        let before = parse("22,60000-61500");
        let added = subtract(&[(61000, 65535)], &before);
        assert_eq!(added, vec![(61501, 65535)]);
        let running = union(&before, &[(61000, 65535)]);
        assert_eq!(format(&running), "22,60000-65535");
        let meanwhile = union(&running, &[(5000, 5001)]);
        assert_eq!(
            format(&subtract(&meanwhile, &added)),
            "22,5000-5001,60000-61500"
        );
        assert_eq!(subtract(&[(1, 10)], &[(1, 10)]), vec![]);
        assert_eq!(subtract(&[(1, 10)], &[(3, 4)]), vec![(1, 2), (5, 10)]);
        assert_eq!(
            subtract(&[(0, 65535)], &[(0, 0), (65535, 65535)]),
            vec![(1, 65534)]
        );
    }
}
