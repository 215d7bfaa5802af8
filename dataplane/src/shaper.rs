//! Per-pod rate limits: the `kubernetes.io/ingress-bandwidth` and
//! `kubernetes.io/egress-bandwidth` pod annotations, which the container
//! runtime hands to CNI plugins as `runtimeConfig.bandwidth` (rates in
//! bits per second, bursts in bits, as the reference `bandwidth` plugin
//! takes them).
//!
//! The reference plugin shapes the pod's host-side veth with a TBF qdisc
//! (and an IFB device for egress). Sluice's pods have no qdisc on their
//! path: a TUN pod has no host side at all, and AF_XDP transmit bypasses
//! qdiscs. So the workers hold a token bucket per direction, which starts
//! full as TBF's does, and shape where they can:
//!
//! - towards the pod, frames wait in the pod port's transmit queue until
//!   the bucket has tokens ([`TokenBucket::conforms`]); only a frame that
//!   finds the queue full is dropped;
//! - from a pod whose port keeps unread frames in a kernel queue (TUN: the
//!   pod's own qdisc, which pushes back on its TCP), the worker does not
//!   read while the bucket is empty;
//! - from a port that would lose unread frames (AF_XDP's RX ring), the
//!   worker reads them and they wait in a short queue of its own, as
//!   towards the pod.
//!
//! Drops are counted (`pod_ingress_rate_limited`,
//! `pod_egress_rate_limited`, and per port). A conforming bucket lets a
//! whole frame (or read burst) through and goes into debt for it, as
//! TBF's does for a packet larger than what is left.
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

/// A token bucket for one direction of one port.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Rate,
    /// Bit-nanoseconds available (bits x 10^9); negative: debt.
    tokens: i128,
    last: Option<Duration>,
}

fn scaled(bits: u128) -> i128 {
    i128::try_from(bits).unwrap_or(i128::MAX)
}

impl TokenBucket {
    /// A full bucket for `rate`.
    pub fn new(rate: Rate) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: scaled(u128::from(rate.burst_bits) * NANOS),
            last: None,
        }
    }

    /// Adds the tokens earned since the last look, up to the burst. A
    /// clock that goes backwards adds nothing.
    fn refill(&mut self, now: Duration) {
        let cap = scaled(u128::from(self.rate.burst_bits) * NANOS);
        if let Some(last) = self.last {
            let dt = now.saturating_sub(last).as_nanos();
            let earned = scaled(dt.saturating_mul(u128::from(self.rate.bits_per_sec)));
            self.tokens = self.tokens.saturating_add(earned).min(cap);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    fn cost(bytes: usize) -> i128 {
        scaled((bytes as u128).saturating_mul(8 * NANOS))
    }

    /// Shaping: whether anything may be sent now (the bucket is not empty
    /// or in debt).
    pub fn conforms(&mut self, now: Duration) -> bool {
        self.refill(now);
        self.tokens > 0
    }

    /// Spends `bytes` that were let through after [`Self::conforms`]
    /// (possibly into debt).
    pub fn charge(&mut self, bytes: usize) {
        self.tokens = self.tokens.saturating_sub(Self::cost(bytes));
    }

    /// How many frames of up to `frame_bytes` may be let through on the
    /// tokens there are (as of the last [`Self::conforms`]): those that
    /// fit, plus the one that goes into debt.
    pub fn affordable(&self, frame_bytes: usize) -> usize {
        if self.tokens <= 0 {
            return 0;
        }
        let n = self.tokens / Self::cost(frame_bytes).max(1) + 1;
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// How long from `now` until the bucket conforms again (zero if it
    /// does).
    pub fn wait(&mut self, now: Duration) -> Duration {
        self.refill(now);
        if self.tokens > 0 {
            return Duration::ZERO;
        }
        let rate = i128::from(self.rate.bits_per_sec.max(1));
        // Whole nanoseconds until the tokens pass zero.
        let ns = (-self.tokens) / rate + 1;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
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

    /// Lets a frame of `bytes` through if the bucket conforms.
    fn pass(b: &mut TokenBucket, now: Duration, bytes: usize) -> bool {
        let ok = b.conforms(now);
        if ok {
            b.charge(bytes);
        }
        ok
    }

    #[test]
    fn a_full_bucket_passes_its_burst_then_the_rate() {
        // 8 Mbit/s = 1000 bytes per ms; burst 3000 bytes.
        let mut b = TokenBucket::new(rate(8_000_000, 24_000));
        let t0 = Duration::from_secs(5);
        assert!(pass(&mut b, t0, 1000));
        assert!(pass(&mut b, t0, 1000));
        assert!(pass(&mut b, t0, 1000));
        assert!(!pass(&mut b, t0, 1), "burst spent");
        // 1 ms refills 1000 bytes exactly: one frame, then empty again.
        assert!(pass(&mut b, t0 + MS, 1000));
        assert!(!pass(&mut b, t0 + MS, 1));
        // A long pause refills only to the burst.
        let t1 = t0 + Duration::from_secs(10);
        let mut passed = 0;
        while pass(&mut b, t1, 100) {
            passed += 100;
        }
        assert_eq!(passed, 3000);
    }

    #[test]
    fn over_any_window_at_most_burst_plus_rate_plus_a_frame_passes() {
        // Offered 4x the rate in 500-byte frames for one simulated second,
        // every 100 us.
        let r = rate(10_000_000, 100_000);
        let mut b = TokenBucket::new(r);
        let mut passed_bits = 0u64;
        let mut t = Duration::ZERO;
        let step = Duration::from_micros(100);
        while t <= Duration::from_secs(1) {
            // 10 Mbit/s is 125 bytes per 100 us: offer 500.
            if pass(&mut b, t, 500) {
                passed_bits += 4000;
            }
            t += step;
        }
        let bound = r.burst_bits + r.bits_per_sec + 4000;
        assert!(passed_bits <= bound, "{passed_bits} > {bound}");
        // And it is not starved: within a frame of the rate.
        assert!(passed_bits + 4000 >= r.bits_per_sec, "{passed_bits}");
    }

    #[test]
    fn shaping_goes_into_debt_and_says_how_long_to_wait() {
        // 8 Mbit/s = 1 byte per us; burst 1000 bytes.
        let mut b = TokenBucket::new(rate(8_000_000, 8_000));
        let t = Duration::from_secs(1);
        assert!(b.conforms(t));
        assert_eq!(b.wait(t), Duration::ZERO);
        // A 1500-byte frame is let through whole: 500 bytes of debt.
        b.charge(1500);
        assert!(!b.conforms(t));
        assert_eq!(b.wait(t), Duration::from_nanos(500_001));
        assert!(!b.conforms(t + Duration::from_micros(500)));
        assert!(b.conforms(t + Duration::from_micros(501)));
        // One byte of tokens: one frame (into debt), not more.
        assert_eq!(b.affordable(1500), 1);
        let mut full = TokenBucket::new(rate(8_000_000, 8 * 3000));
        assert!(full.conforms(t));
        assert_eq!(full.affordable(1500), 3);
        assert_eq!(full.affordable(1000), 4);
        // Over a long run the bytes let through follow the rate: sending
        // whenever it conforms, 1500 bytes at a time, for 100 ms.
        let mut sent = 0u64;
        let mut now = t + Duration::from_micros(501);
        let end = now + Duration::from_millis(100);
        while now < end {
            if b.conforms(now) {
                b.charge(1500);
                sent += 1500;
            }
            now += b.wait(now).max(Duration::from_micros(1));
        }
        // 100 ms at 1 byte/us, plus at most the burst and one frame.
        assert!((100_000..=100_000 + 1000 + 1500).contains(&sent), "{sent}");
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let mut b = TokenBucket::new(rate(8_000, 8_000));
        let t = Duration::from_secs(100);
        assert!(pass(&mut b, t, 1000));
        assert!(!pass(&mut b, t - Duration::from_secs(50), 1));
        assert!(!pass(&mut b, t, 1));
        assert!(pass(&mut b, t + Duration::from_secs(1), 1000));
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        // containerd passes a burst of u32::MAX bits with an annotation.
        let mut b = TokenBucket::new(rate(u64::MAX, u64::MAX));
        assert!(pass(&mut b, Duration::ZERO, 1500));
        // (10^28 ns) x (1.8 x 10^19 bit/s) saturates, and caps at the burst.
        assert!(pass(&mut b, Duration::MAX, usize::MAX));
        assert!(!b.conforms(Duration::MAX));
        assert!(b.wait(Duration::MAX) > Duration::ZERO);
        let mut small = TokenBucket::new(rate(1, 1));
        assert!(pass(&mut small, Duration::ZERO, usize::MAX));
        assert_eq!(small.wait(Duration::ZERO), Duration::from_nanos(u64::MAX));
    }

    /// Zero means "no limit" as in the bandwidth plugin's annotations: a
    /// rate and burst of zero leave the direction unlimited; a zero rate
    /// beside a burst is a burst without a rate.
    #[test]
    fn zero_is_unlimited_and_either_direction_limits() {
        assert!(PodLimits::default().is_unlimited());
        let z = PodLimits::parse(["ingress_rate=0", "ingress_burst=0"]).unwrap();
        assert!(z.is_unlimited(), "{z:?}");
        let one = PodLimits::parse(["egress_rate=1", "egress_burst=1"]).unwrap();
        assert_eq!(one.egress, Some(rate(1, 1)));
        assert!(!one.is_unlimited());
        let ing = PodLimits::parse(["ingress_rate=1", "ingress_burst=1"]).unwrap();
        assert!(!ing.is_unlimited());
        assert!(
            PodLimits::parse(["ingress_rate=0", "ingress_burst=5"])
                .unwrap_err()
                .contains("ingress_burst is set without ingress_rate")
        );
    }

    /// The refill: tokens earned are elapsed time x rate, capped at the
    /// burst, counted from the latest time seen; the wait is the debt
    /// divided by the rate, rounded up to the next nanosecond.
    #[test]
    fn refill_and_wait_are_exact() {
        // 1 bit per ns (1 Gbit/s), burst 1000 bits.
        let mut b = TokenBucket::new(rate(1_000_000_000, 1000));
        let t = Duration::from_secs(5);
        assert!(b.conforms(t));
        // 1000 bits of debt after a 250-byte frame on 125 bytes of tokens.
        b.charge(250);
        assert_eq!(b.wait(t), Duration::from_nanos(1001));
        // 400 ns later: 600 bits of debt left.
        assert_eq!(
            b.wait(t + Duration::from_nanos(400)),
            Duration::from_nanos(601)
        );
        // Long after: capped at the burst, exactly 125 bytes pass.
        assert!(b.conforms(t + Duration::from_secs(1)));
        assert_eq!(
            b.affordable(125),
            2,
            "125 bytes fit, the next goes into debt"
        );
        b.charge(125);
        assert!(!b.conforms(t + Duration::from_secs(1)));
        // A rate that does not divide the debt: 3 bits/s, 10 bits owed.
        let mut slow = TokenBucket::new(rate(3, 8));
        assert!(slow.conforms(Duration::ZERO));
        slow.charge(2);
        // 8 bits of tokens, 16 spent: 8 owed (x10^9) / 3 = 2666666666.67.
        assert_eq!(
            slow.wait(Duration::ZERO),
            Duration::from_nanos(2_666_666_667)
        );
        assert_eq!(
            slow.wait(Duration::from_secs(1)),
            Duration::from_nanos(1_666_666_667)
        );
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
