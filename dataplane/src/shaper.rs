//! Per-pod rate limits: the `kubernetes.io/ingress-bandwidth` and
//! `kubernetes.io/egress-bandwidth` pod annotations, which the container
//! runtime hands to CNI plugins as `runtimeConfig.bandwidth` (rates in
//! bits per second, bursts in bits, as the reference `bandwidth` plugin
//! takes them).
//!
//! The reference plugin shapes the pod's host-side veth with a TBF qdisc
//! (and an IFB device for egress). Sluice's pods have no qdisc on their
//! path: a TUN pod has no host side at all, and AF_XDP transmit bypasses
//! qdiscs. So the workers police each direction with a token bucket, as
//! Linux's `tc police` does: a packet that finds too few tokens is dropped
//! and counted (`pod_ingress_rate_limited` / `pod_egress_rate_limited`,
//! and per port). The bucket starts full, as TBF's does.
//!
//! Time is passed in (the worker's clock), so the bucket is exact and
//! testable; tokens are kept in bit-nanoseconds, so no rounding drifts.

use std::fmt;
use std::time::Duration;

/// One direction's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Sustained rate, bits per second (> 0).
    pub bits_per_sec: u64,
    /// Bucket size, bits (> 0): what may pass at line rate after a pause.
    pub burst_bits: u64,
}

/// A pod's limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodLimits {
    /// Traffic to the pod.
    pub ingress: Option<Rate>,
    /// Traffic from the pod.
    pub egress: Option<Rate>,
}

const KEYS: [&str; 4] = [
    "ingress_rate",
    "ingress_burst",
    "egress_rate",
    "egress_burst",
];

impl PodLimits {
    /// Whether neither direction is limited.
    pub fn is_unlimited(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    /// Parses `key=value` words (`ingress_rate`, `ingress_burst`,
    /// `egress_rate`, `egress_burst`; bits per second and bits). A rate
    /// needs its burst and the reverse, as the `bandwidth` plugin requires.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<PodLimits, String> {
        let mut v = [None::<u64>; 4];
        for w in words {
            let (k, val) = w
                .split_once('=')
                .ok_or_else(|| format!("{w:?} is not KEY=VALUE"))?;
            let i = KEYS
                .iter()
                .position(|x| *x == k)
                .ok_or_else(|| format!("{k:?} is not one of {}", KEYS.join(", ")))?;
            let n: u64 = val
                .parse()
                .map_err(|_| format!("{k}: {val:?} is not a whole number"))?;
            if let Some(slot) = v.get_mut(i) {
                *slot = Some(n).filter(|n| *n > 0);
            }
        }
        let dir = |rate: Option<u64>, burst: Option<u64>, name: &str| match (rate, burst) {
            (None, None) => Ok(None),
            (Some(r), Some(b)) => Ok(Some(Rate {
                bits_per_sec: r,
                burst_bits: b,
            })),
            (Some(_), None) => Err(format!("{name}_rate is set without {name}_burst")),
            (None, Some(_)) => Err(format!("{name}_burst is set without {name}_rate")),
        };
        let [ir, ib, er, eb] = v;
        Ok(PodLimits {
            ingress: dir(ir, ib, "ingress")?,
            egress: dir(er, eb, "egress")?,
        })
    }
}

/// The `key=value` words [`PodLimits::parse`] reads (empty if unlimited).
impl fmt::Display for PodLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (name, r) in [("ingress", self.ingress), ("egress", self.egress)] {
            if let Some(r) = r {
                write!(
                    f,
                    "{sep}{name}_rate={} {name}_burst={}",
                    r.bits_per_sec, r.burst_bits
                )?;
                sep = " ";
            }
        }
        Ok(())
    }
}

const NANOS: u128 = 1_000_000_000;

/// A token bucket policing one direction of one port.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Rate,
    /// Bit-nanoseconds available (bits x 10^9).
    tokens: u128,
    last: Option<Duration>,
}

impl TokenBucket {
    /// A full bucket for `rate`.
    pub fn new(rate: Rate) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: u128::from(rate.burst_bits) * NANOS,
            last: None,
        }
    }

    /// Its limit.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Whether a packet of `bytes` may pass at `now`; if so its tokens are
    /// spent. A clock that goes backwards adds nothing.
    pub fn admit(&mut self, now: Duration, bytes: usize) -> bool {
        let cap = u128::from(self.rate.burst_bits) * NANOS;
        if let Some(last) = self.last {
            let dt = now.saturating_sub(last).as_nanos();
            self.tokens = self
                .tokens
                .saturating_add(dt.saturating_mul(u128::from(self.rate.bits_per_sec)))
                .min(cap);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        let need = (bytes as u128).saturating_mul(8 * NANOS);
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rate(bits_per_sec: u64, burst_bits: u64) -> Rate {
        Rate {
            bits_per_sec,
            burst_bits,
        }
    }

    #[test]
    fn a_full_bucket_passes_its_burst_then_the_rate() {
        // 8 Mbit/s = 1000 bytes per ms; burst 3000 bytes.
        let mut b = TokenBucket::new(rate(8_000_000, 24_000));
        let t0 = Duration::from_secs(5);
        assert!(b.admit(t0, 1000));
        assert!(b.admit(t0, 1000));
        assert!(b.admit(t0, 1000));
        assert!(!b.admit(t0, 1), "burst spent");
        // 1 ms refills 1000 bytes exactly.
        assert!(!b.admit(t0 + MS / 2, 1000));
        assert!(b.admit(t0 + MS, 1000));
        assert!(!b.admit(t0 + MS, 1));
        // A long pause refills only to the burst.
        let t1 = t0 + Duration::from_secs(10);
        let mut passed = 0;
        while b.admit(t1, 100) {
            passed += 100;
        }
        assert_eq!(passed, 3000);
    }

    #[test]
    fn over_any_window_at_most_burst_plus_rate_passes() {
        // Offered 4x the rate in 1500-byte packets for one simulated
        // second, every 100 us.
        let r = rate(10_000_000, 100_000);
        let mut b = TokenBucket::new(r);
        let mut passed_bits = 0u64;
        let mut t = Duration::ZERO;
        let step = Duration::from_micros(100);
        while t <= Duration::from_secs(1) {
            // 4x: 10 Mbit/s is 125 bytes per 100 us -> offer 500.
            if b.admit(t, 500) {
                passed_bits += 4000;
            }
            t += step;
        }
        let bound = r.burst_bits + r.bits_per_sec;
        assert!(passed_bits <= bound, "{passed_bits} > {bound}");
        // And it is not starved: within a packet of the bound.
        assert!(passed_bits + 4000 >= r.bits_per_sec, "{passed_bits}");
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let mut b = TokenBucket::new(rate(8_000, 8_000));
        let t = Duration::from_secs(100);
        assert!(b.admit(t, 1000));
        assert!(!b.admit(t - Duration::from_secs(50), 1));
        assert!(!b.admit(t, 1));
        assert!(b.admit(t + Duration::from_secs(1), 1000));
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        // containerd passes a burst of u32::MAX bits with an annotation.
        let mut b = TokenBucket::new(rate(u64::MAX, u64::MAX));
        assert!(b.admit(Duration::ZERO, 1500));
        // (10^28 ns) x (1.8 x 10^19 bit/s) saturates, and caps at the burst.
        assert!(b.admit(Duration::MAX, 1500));
        assert!(!b.admit(Duration::MAX, usize::MAX));
        let mut small = TokenBucket::new(rate(1, 1));
        assert!(!small.admit(Duration::MAX, usize::MAX));
    }

    #[test]
    fn limits_round_trip_through_their_words_and_bad_words_are_named() {
        let l = PodLimits {
            ingress: Some(rate(10_000_000, 4_294_967_295)),
            egress: Some(rate(1_000_000, 800_000)),
        };
        let s = l.to_string();
        assert_eq!(PodLimits::parse(s.split_whitespace()), Ok(l));
        assert_eq!(PodLimits::default().to_string(), "");
        assert_eq!(PodLimits::parse([]), Ok(PodLimits::default()));
        let only_egress = PodLimits {
            ingress: None,
            egress: Some(rate(5, 6)),
        };
        assert_eq!(
            PodLimits::parse(only_egress.to_string().split_whitespace()),
            Ok(only_egress)
        );
        for (words, needle) in [
            (&["ingress_rate=5"][..], "ingress_rate is set without"),
            (&["egress_burst=5"][..], "egress_burst is set without"),
            (
                &["ingress_rate=x", "ingress_burst=1"][..],
                "not a whole number",
            ),
            (&["speed=1"][..], "\"speed\" is not one of"),
            (&["ingress_rate"][..], "not KEY=VALUE"),
        ] {
            let e = PodLimits::parse(words.iter().copied()).unwrap_err();
            assert!(e.contains(needle), "{words:?}: {e}");
        }
    }
}
