//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4):
//! a lookup table of prime size M in which every backend owns about M/N
//! slots, filled from per-backend permutations so that adding or removing
//! one backend moves few flows. The permutations depend only on the
//! backends' addresses and ports, through a fixed hash, so every worker on
//! every node builds the same table and a flow's hash picks the same
//! backend everywhere.

use std::net::Ipv4Addr;

/// Table sizes: primes, each about twice the previous. A port with N
/// backends gets the smallest size of at least 64 x N (the paper's
/// M >> N), capped at the last.
const SIZES: [u32; 11] = [
    67, 131, 257, 521, 1031, 2053, 4099, 8209, 16411, 32771, 65537,
];

/// splitmix64's finalizer: a fixed, well-mixed 64-bit hash (the same on
/// every build, unlike `std`'s hashers).
pub const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key(ip: Ipv4Addr, port: u16) -> u64 {
    u64::from(u32::from(ip)) << 16 | u64::from(port)
}

/// A built table: slot -> backend index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maglev {
    slots: Box<[u16]>,
}

impl Maglev {
    /// The table for `backends` (address and port), indexed in their order.
    /// Empty for no backends; at most 65,535 backends are used.
    pub fn new(backends: &[(Ipv4Addr, u16)]) -> Maglev {
        let n = backends.len().min(usize::from(u16::MAX));
        if n <= 1 {
            return Maglev {
                slots: vec![0u16; n].into_boxed_slice(),
            };
        }
        let want = (n as u64).saturating_mul(64);
        let m = SIZES
            .iter()
            .copied()
            .find(|&s| u64::from(s) >= want)
            .unwrap_or(65537);
        let m64 = u64::from(m);
        // Per backend: (offset, skip, next j).
        let mut perm: Vec<(u64, u64, u64)> = backends
            .iter()
            .take(n)
            .map(|&(ip, port)| {
                let k = key(ip, port);
                let offset = mix(k ^ 0x6d61_676c_6576_3031) % m64;
                let skip = mix(k ^ 0x736b_6970_5f5f_3032) % (m64 - 1) + 1;
                (offset, skip, 0)
            })
            .collect();
        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; m as usize];
        let mut filled = 0u32;
        'fill: loop {
            for (i, p) in perm.iter_mut().enumerate() {
                // The next preferred slot of backend i that is still free.
                loop {
                    let c = (p.0 + p.2 * p.1) % m64;
                    p.2 += 1;
                    if let Some(s) = table.get_mut(c as usize)
                        && *s == EMPTY
                    {
                        *s = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
        }
        Maglev {
            slots: table.into_iter().map(|s| s as u16).collect(),
        }
    }

    /// The backend index for a flow hash (`None` with no backends).
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<usize> {
        let n = self.slots.len() as u64;
        if n == 0 {
            return None;
        }
        self.slots.get((hash % n) as usize).map(|&i| usize::from(i))
    }

    /// Table size (0 or 1 for no or one backend).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there is no backend.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots each backend owns (for tests and `sluice services`).
    pub fn shares(&self, backends: usize) -> Vec<usize> {
        let mut c = vec![0; backends];
        for &s in self.slots.iter() {
            if let Some(x) = c.get_mut(usize::from(s)) {
                *x += 1;
            }
        }
        c
    }
}

/// The flow hash backends are chosen by: the 5-tuple under a fixed mix,
/// so the same flow hashes alike on every worker and node.
#[inline]
pub fn flow_hash(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> u64 {
    let a = u64::from(u32::from(src)) << 32 | u64::from(u32::from(dst));
    let b = u64::from(proto) << 32 | u64::from(sport) << 16 | u64::from(dport);
    mix(mix(a) ^ b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<(Ipv4Addr, u16)> {
        (0..n)
            .map(|i| {
                (
                    Ipv4Addr::new(10, 244, (i / 200) as u8, (i % 200) as u8 + 2),
                    8080,
                )
            })
            .collect()
    }

    #[test]
    fn every_backend_gets_a_fair_share() {
        for n in [2, 3, 10, 100, 1000] {
            let b = backends(n);
            let t = Maglev::new(&b);
            assert!(t.len() >= 64 * n.min(1024), "size {} for {n}", t.len());
            let shares = t.shares(n);
            let (min, max) = (*shares.iter().min().unwrap(), *shares.iter().max().unwrap());
            // The paper: every backend within a few slots of M/N.
            assert!(max - min <= 1 + t.len() / n / 10, "{n}: {min}..{max}");
        }
    }

    #[test]
    fn the_table_depends_only_on_the_backends() {
        let b = backends(7);
        assert_eq!(Maglev::new(&b), Maglev::new(&b.clone()));
        // Pinned: a change in the hash would break agreement between
        // nodes running different builds.
        let t = Maglev::new(&b);
        let picks: Vec<usize> = (0..8u64).map(|h| t.pick(mix(h)).unwrap()).collect();
        assert_eq!(picks, PINNED, "the table changed");
        assert_eq!(Maglev::new(&[]).pick(5), None);
        assert_eq!(Maglev::new(&b[..1]).pick(12345), Some(0));
    }
    const PINNED: [usize; 8] = [3, 0, 5, 1, 0, 3, 3, 3];

    /// Removing one of N backends moves only the flows it had (plus a few
    /// percent), and adding it back restores the table.
    #[test]
    fn minimal_disruption_when_a_backend_goes() {
        let n = 50;
        let all = backends(n);
        let before = Maglev::new(&all);
        let mut fewer = all.clone();
        let gone = fewer.remove(17);
        let after = Maglev::new(&fewer);
        let (mut moved, mut had) = (0, 0);
        for h in 0..100_000u64 {
            let h = mix(h);
            let b = all[before.pick(h).unwrap()];
            let a = fewer[after.pick(h).unwrap()];
            if b == gone {
                had += 1;
            } else if a != b {
                moved += 1;
            }
        }
        let share = 100_000 / n;
        assert!((share / 2..share * 2).contains(&had), "{had}");
        // Flows of surviving backends that moved: a small fraction.
        assert!(moved < 100_000 / 20, "{moved} moved");
        assert_eq!(Maglev::new(&all), before);
    }
}
