//! Per-flow verdicts: what a worker decided for the flows of its pods, so
//! a flow is decided once (at its first packet) and its replies pass.
//!
//! An entry is one direction of one local pod: the flow's tuple as the pod
//! sees it (what it sent, before service DNAT; what it received, after the
//! reverse translation), whether its first packet left the pod (egress)
//! or reached it (ingress), and the destination the verdict was decided
//! for (after DNAT: the service backend, not the ClusterIP). A packet
//! checked for a pod matches an entry in the original direction (same
//! tuple, same side) or as a reply (reversed tuple, other side). Both
//! directions of a flow hash alike, so one probe finds either.
//!
//! The table is a fixed array probed linearly over a short window:
//! nothing is allocated after the first insert, a full window evicts the
//! entry closest to expiry (counted), and expiry is lazy. Each entry keeps
//! the policy generation it was decided under; the caller re-decides one
//! whose generation is old ([`Hit::generation`]), which is how a new deny
//! reaches a live flow at its next packet without a scan. Time is a
//! parameter (milliseconds on the caller's clock).

use std::net::Ipv4Addr;

use crate::compile::Side;

/// A packet's flow, as the checks see it: addresses, IP protocol, ports
/// (ICMP echo: the identifier as both; no ports: 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl Key {
    /// The other direction's key.
    pub fn reversed(&self) -> Key {
        Key {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// A hash both directions share.
    fn hash(&self) -> u64 {
        let a = (u64::from(self.src.to_bits()) << 16) | u64::from(self.sport);
        let b = (u64::from(self.dst.to_bits()) << 16) | u64::from(self.dport);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = lo.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ hi.rotate_left(29);
        h ^= u64::from(self.proto) << 56;
        h = (h ^ (h >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^ (h >> 29)
    }
}

/// Which way a checked packet crosses its local pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Leaving the pod: its egress rules.
    Egress,
    /// Reaching the pod: its ingress rules.
    Ingress,
}

impl Dir {
    fn other(self) -> Dir {
        match self {
            Dir::Egress => Dir::Ingress,
            Dir::Ingress => Dir::Egress,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    key: Key,
    /// `None`: free.
    dir: Option<Dir>,
    /// The destination address and port decided for.
    target: (Ipv4Addr, u16),
    verdict: Side,
    generation: u32,
    expires_ms: u64,
}

const FREE: Slot = Slot {
    key: Key {
        proto: 0,
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        sport: 0,
        dport: 0,
    },
    dir: None,
    target: (Ipv4Addr::UNSPECIFIED, 0),
    verdict: Side::Open,
    generation: 0,
    expires_ms: 0,
};

/// Slots probed from a key's hash.
const WINDOW: usize = 8;

/// An entry a packet matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Where it is ([`FlowTable::update`]).
    pub slot: usize,
    /// The packet is a reply (the entry was made by the other direction).
    pub reply: bool,
    /// The side the entry was decided for.
    pub dir: Dir,
    /// What was decided.
    pub verdict: Side,
    /// The policy generation it was decided under.
    pub generation: u32,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Entries made.
    pub inserted: u64,
    /// Live entries evicted to make room (their flows are decided again,
    /// as new, at their next packet).
    pub evicted: u64,
}

/// The per-worker verdict table.
#[derive(Debug)]
pub struct FlowTable {
    slots: Box<[Slot]>,
    capacity: usize,
    counters: FlowCounters,
}

impl FlowTable {
    /// A table of `capacity` slots (rounded up to a power of two),
    /// allocated at the first insert.
    pub fn new(capacity: usize) -> FlowTable {
        FlowTable {
            slots: Box::new([]),
            capacity: capacity.max(WINDOW).next_power_of_two(),
            counters: FlowCounters::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> &FlowCounters {
        &self.counters
    }

    /// Live entries (a scan: for status, not packets).
    pub fn len(&self, now_ms: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| s.dir.is_some() && s.expires_ms > now_ms)
            .count()
    }

    /// Whether no entry is live.
    pub fn is_empty(&self, now_ms: u64) -> bool {
        self.len(now_ms) == 0
    }

    fn window(&self, k: &Key) -> impl Iterator<Item = usize> + use<> {
        let mask = self.slots.len().wrapping_sub(1);
        let start = (k.hash() as usize) & mask;
        let n = if self.slots.is_empty() { 0 } else { WINDOW };
        (0..n).map(move |i| (start + i) & mask)
    }

    /// Entry `slot`'s original key and the destination it was decided
    /// for (what a re-check decides again).
    pub fn decided_for(&self, slot: usize) -> Option<(Key, (Ipv4Addr, u16))> {
        self.slots.get(slot).map(|s| (s.key, s.target))
    }

    /// The live entry a packet with `k`, crossing its pod in `dir`,
    /// belongs to.
    #[inline]
    pub fn find(&self, now_ms: u64, k: &Key, dir: Dir) -> Option<Hit> {
        let rk = k.reversed();
        for i in self.window(k) {
            let Some(s) = self.slots.get(i) else { break };
            let Some(sd) = s.dir else { continue };
            if s.expires_ms <= now_ms {
                continue;
            }
            let reply = if sd == dir && s.key == *k {
                false
            } else if sd == dir.other() && s.key == rk {
                true
            } else {
                continue;
            };
            return Some(Hit {
                slot: i,
                reply,
                dir: sd,
                verdict: s.verdict,
                generation: s.generation,
            });
        }
        None
    }

    /// Pushes entry `slot`'s expiry to `now_ms + ttl_ms`.
    pub fn refresh(&mut self, slot: usize, now_ms: u64, ttl_ms: u64) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.expires_ms = now_ms.saturating_add(ttl_ms);
        }
    }

    /// Records a re-check of entry `slot`.
    pub fn update(&mut self, slot: usize, verdict: Side, generation: u32) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.verdict = verdict;
            s.generation = generation;
        }
    }

    /// Records the verdict for a new flow whose first packet has `k`,
    /// crosses its pod in `dir` and was decided for `target`.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        now_ms: u64,
        k: &Key,
        dir: Dir,
        target: (Ipv4Addr, u16),
        verdict: Side,
        generation: u32,
        ttl_ms: u64,
    ) {
        if self.slots.is_empty() {
            self.slots = vec![FREE; self.capacity].into_boxed_slice();
        }
        let mut victim: Option<(usize, u64)> = None;
        for i in self.window(k) {
            let Some(s) = self.slots.get(i) else { break };
            if s.dir.is_none() || s.expires_ms <= now_ms {
                victim = Some((i, 0));
                break;
            }
            if victim.is_none_or(|(_, e)| s.expires_ms < e) {
                victim = Some((i, s.expires_ms));
            }
        }
        let Some((i, live)) = victim else { return };
        if live != 0 {
            self.counters.evicted += 1;
        }
        if let Some(s) = self.slots.get_mut(i) {
            *s = Slot {
                key: *k,
                dir: Some(dir),
                target,
                verdict,
                generation,
                expires_ms: now_ms.saturating_add(ttl_ms),
            };
            self.counters.inserted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_small() {
        // What benches/README.md says the table costs per entry.
        assert!(size_of::<Slot>() <= 48, "{}", size_of::<Slot>());
    }

    #[test]
    fn both_directions_are_found_and_a_full_window_evicts_the_oldest() {
        let k = Key {
            proto: 6,
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            sport: 1000,
            dport: 80,
        };
        let mut t = FlowTable::new(8);
        t.insert(0, &k, Dir::Egress, (k.dst, 80), Side::Denied, 1, 100);
        let h = t.find(1, &k, Dir::Egress).unwrap();
        assert!(!h.reply);
        let h = t.find(1, &k.reversed(), Dir::Ingress).unwrap();
        assert!(h.reply && h.verdict == Side::Denied && h.generation == 1);
        // The other side of the same pod is another entry.
        assert!(t.find(1, &k, Dir::Ingress).is_none());
        assert!(t.find(100, &k, Dir::Egress).is_none(), "expired");
        // Eight more flows in an eight-slot table: the eighth evicts the
        // entry closest to expiry (the first flow's).
        for i in 0..8u16 {
            let k2 = Key {
                sport: 2000 + i,
                ..k
            };
            t.insert(
                10 + u64::from(i),
                &k2,
                Dir::Egress,
                (k.dst, 80),
                Side::Open,
                1,
                100,
            );
        }
        assert_eq!(t.len(20), 8);
        assert_eq!(t.counters().evicted, 1);
        assert!(t.find(20, &k, Dir::Egress).is_none());
        let k9 = Key { sport: 3000, ..k };
        t.insert(20, &k9, Dir::Egress, (k.dst, 80), Side::Open, 1, 100);
        assert_eq!(t.counters().evicted, 2);
        assert!(
            t.find(21, &Key { sport: 2000, ..k }, Dir::Egress).is_none(),
            "the oldest evicted"
        );
        assert!(t.find(21, &k9, Dir::Egress).is_some());
    }
}
