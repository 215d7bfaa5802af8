//! Tuple -> entry index: a fixed-size table of cache-line buckets.
//!
//! Each value is a `u32`: slot number (23 bits), an 8-bit tag from the
//! tuple's hash, and the direction (low bit). The tuples themselves live in
//! the slab entries, which a lookup reads anyway: 4 bytes per direction
//! instead of 21 with the tuple as a map key. The tag keeps a probe from
//! reading (and missing cache on) a slab entry whose hash merely shares the
//! bucket.
//!
//! A bucket is one 64-byte cache line: 15 values and an overflow count. A
//! tuple's home bucket comes from its hash; when the home bucket is full the
//! value goes to the next bucket with room, and every bucket it passes over
//! counts it in `overflow`, so a lookup stops at the first bucket whose
//! count is zero. The table is sized once, for twice the entry limit at
//! under 70% occupancy, and never grows, so an insert never allocates or
//! rehashes.
//!
//! Why not a general hash map: a lookup here is the bucket line, then the
//! slab entry. Knowing where the bucket is lets a worker prefetch the
//! buckets of a whole burst, then the entries, before processing any packet
//! ([`crate::Conntrack::process_burst`]): at 1M entries, where both reads
//! miss every cache, that is what keeps memory latency from adding up per
//! packet. A general map (hashbrown) does not expose the bucket address.

use core::hash::BuildHasher;
use std::collections::hash_map::RandomState;

use crate::conntrack::Entry;
use crate::tuple::{Direction, Tuple};

/// Values per bucket.
const WAYS: usize = 15;

/// A free value (slot numbers stop below `MAX_SLOTS`, so no stored value is
/// all ones).
const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket {
    vals: [u32; WAYS],
    /// Values whose home bucket is at or before this one and which are
    /// stored after it.
    overflow: u32,
}

impl Bucket {
    /// Whether stored value `v` is a value with tag `tg`.
    #[inline(always)]
    fn tag_matches(v: u32, tg: u32) -> bool {
        (v ^ tg) & TAG_MASK == 0 && v != EMPTY
    }
}

const EMPTY_BUCKET: Bucket = Bucket {
    vals: [EMPTY; WAYS],
    overflow: 0,
};

/// The index over a slab of entries.
#[derive(Debug)]
pub(crate) struct Index {
    buckets: Vec<Bucket>,
    mask: usize,
    /// Per-table random key, so flows an outsider picks cannot be aimed at
    /// one bucket without knowing it.
    key: u64,
}

/// The tuple's hash: one keyed 128-bit multiply over its two packed words,
/// folded (wyhash's `mum`). Derived `Hash` would feed the hasher field by
/// field, with a length prefix per address: several times slower.
fn hash_tuple(key: u64, t: &Tuple) -> u64 {
    let a = (u64::from(t.src.to_bits()) << 32) | u64::from(t.dst.to_bits());
    // The ports in the low bits. The low bits of a product depend only on
    // the low bits of its factors: with the ports packed at the top (as
    // this once did) they reached the home bucket through the fold alone,
    // and flows differing only in source port (one pod's many connections
    // to one server) filled about a quarter of the buckets.
    let b = (u64::from(t.proto) << 32) | (u64::from(t.src_port) << 16) | u64::from(t.dst_port);
    let r = u128::from(a ^ key)
        .wrapping_mul(u128::from(b ^ 0xe703_7ed1_a0b4_28db ^ key.rotate_left(32)));
    let h = (r as u64) ^ ((r >> 64) as u64);
    // One more odd multiply spreads every bit of that upward (the tag is
    // bits 40..48: with some keys, flows differing only in source port
    // once reached a third of the tags), then the home bucket, the low
    // bits, takes the high half folded down.
    let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 32)
}

/// Most slots an index can address (2^23 - 1): the per-worker table limit.
pub(crate) const MAX_SLOTS: usize = (1 << 23) - 1;

const TAG_MASK: u32 = 0xff << 1;

/// The tag bits of a hash, placed as in a stored value.
const fn tag(h: u64) -> u32 {
    ((h >> 40) as u32 & 0xff) << 1
}

/// The slot a stored value names.
const fn slot_of(v: u32) -> u32 {
    v >> 9
}

/// The tuple an index value refers to.
fn tuple_of(slots: &[Option<Entry>], v: u32) -> Option<&Tuple> {
    let e = slots.get(slot_of(v) as usize)?.as_ref()?;
    Some(if v & 1 == 0 { &e.orig } else { &e.reply })
}

/// Hints the CPU to pull the cache line at `p` into L1; no effect on
/// correctness.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: PREFETCHT0 is a hint: it never faults, dereferences nothing
    // architecturally, and is valid for any address. SSE is part of the
    // x86_64 baseline, so the instruction always exists.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Index {
    /// An index for up to `values` values (two per entry).
    pub(crate) fn with_capacity(values: usize) -> Self {
        let key = RandomState::new().hash_one(0x5175_1ce0_u64) | 1;
        // At most 10 of 15 ways used on average: an overflowing bucket is
        // rare (under 5% at the limit, under 1% at half of it).
        let n = values.div_ceil(10).max(1).next_power_of_two();
        Index {
            buckets: vec![EMPTY_BUCKET; n],
            mask: n - 1,
            key,
        }
    }

    pub(crate) fn hash(&self, t: &Tuple) -> u64 {
        hash_tuple(self.key, t)
    }

    fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    /// Starts pulling the home bucket of hash `h` into cache.
    pub(crate) fn prefetch(&self, h: u64) {
        if let Some(b) = self.buckets.get(self.home(h)) {
            prefetch(b);
        }
    }

    /// The slot of the first value in `h`'s home bucket whose tag matches:
    /// the entry a lookup will most likely read, for prefetching.
    pub(crate) fn likely_slot(&self, h: u64) -> Option<u32> {
        let b = self.buckets.get(self.home(h))?;
        let tg = tag(h);
        b.vals
            .iter()
            .find(|&&v| Bucket::tag_matches(v, tg))
            .map(|&v| slot_of(v))
    }

    /// Walks `t`'s probe sequence: the bucket and way holding it, and how
    /// many buckets were passed over.
    fn locate(&self, slots: &[Option<Entry>], t: &Tuple, h: u64) -> Option<(usize, usize, usize)> {
        let tg = tag(h);
        let mut b = self.home(h);
        for passed in 0..self.buckets.len() {
            let bucket = self.buckets.get(b)?;
            for (way, &v) in bucket.vals.iter().enumerate() {
                if Bucket::tag_matches(v, tg) && tuple_of(slots, v) == Some(t) {
                    return Some((b, way, passed));
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// The slot and direction holding `t` (whose hash is `h`).
    pub(crate) fn get(
        &self,
        slots: &[Option<Entry>],
        t: &Tuple,
        h: u64,
    ) -> Option<(u32, Direction)> {
        let (b, way, _) = self.locate(slots, t, h)?;
        let v = *self.buckets.get(b)?.vals.get(way)?;
        let dir = if v & 1 == 0 {
            Direction::Original
        } else {
            Direction::Reply
        };
        Some((slot_of(v), dir))
    }

    /// Whether `t` is indexed.
    pub(crate) fn contains(&self, slots: &[Option<Entry>], t: &Tuple) -> bool {
        self.locate(slots, t, self.hash(t)).is_some()
    }

    /// Indexes direction `dir` of the entry in `slot`, whose tuple hashes
    /// to `h` and is not indexed yet. Returns false only if every bucket is
    /// full, which sizing rules out while the slab respects its limit.
    pub(crate) fn insert(&mut self, h: u64, slot: u32, dir: Direction) -> bool {
        let v = (slot << 9) | tag(h) | dir.index() as u32;
        let home = self.home(h);
        let mask = self.mask;
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let Some(bucket) = self.buckets.get_mut(b) else {
                return false;
            };
            if let Some(w) = bucket.vals.iter_mut().find(|w| **w == EMPTY) {
                *w = v;
                // Count it in every bucket it passed over.
                let mut p = home;
                while p != b {
                    if let Some(x) = self.buckets.get_mut(p) {
                        x.overflow += 1;
                    }
                    p = (p + 1) & mask;
                }
                return true;
            }
            b = (b + 1) & mask;
        }
        false
    }

    /// Removes `t`, whose hash is `h` (its entry must still be in the slab).
    pub(crate) fn remove(&mut self, slots: &[Option<Entry>], t: &Tuple, h: u64) {
        let Some((b, way, passed)) = self.locate(slots, t, h) else {
            return;
        };
        if let Some(w) = self.buckets.get_mut(b).and_then(|x| x.vals.get_mut(way)) {
            *w = EMPTY;
        }
        let mut p = self.home(h);
        for _ in 0..passed {
            if let Some(x) = self.buckets.get_mut(p) {
                x.overflow -= 1;
            }
            p = (p + 1) & self.mask;
        }
    }

    /// Bytes the index holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.buckets.len() * size_of::<Bucket>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slab of entries with distinct original tuples, all in one bucket
    /// (the index key is fixed so the test can aim at it).
    fn entry(i: u32) -> Entry {
        let t = Tuple {
            src: std::net::Ipv4Addr::from_bits(i),
            dst: std::net::Ipv4Addr::new(192, 0, 2, 1),
            src_port: 1,
            dst_port: 2,
            proto: 17,
        };
        crate::conntrack::test_entry(t, t.reversed())
    }

    #[test]
    fn overflow_chains_survive_removal_in_any_order() {
        // A table of 4 buckets, 60 ways, filled far past one bucket: every
        // tuple is forced into bucket 0's chain by a constant hash.
        let mut ix = Index::with_capacity(31);
        assert_eq!(ix.buckets.len(), 4);
        let slots: Vec<Option<Entry>> = (0..40).map(|i| Some(entry(i))).collect();
        let h = |i: u32| u64::from(i) << 40; // home bucket 0, tag = i
        for i in 0..40 {
            assert!(ix.insert(h(i), i, Direction::Original));
        }
        // 15 per bucket: buckets 0 and 1 full, 10 in bucket 2.
        assert_eq!(ix.buckets[0].overflow, 25);
        assert_eq!(ix.buckets[1].overflow, 10);
        assert_eq!(ix.buckets[2].overflow, 0);
        for i in 0..40 {
            let t = slots[i as usize].as_ref().map(|e| e.orig).expect("entry");
            assert_eq!(ix.get(&slots, &t, h(i)), Some((i, Direction::Original)));
        }
        // Remove the ones in the home bucket first: the chain must still
        // reach the others.
        for i in (0..40).step_by(3) {
            let t = slots[i as usize].as_ref().map(|e| e.orig).expect("entry");
            ix.remove(&slots, &t, h(i));
        }
        // 14 removed: 5 from bucket 0, 5 from bucket 1, 4 from bucket 2.
        assert_eq!(ix.buckets[0].overflow, 25 - 5 - 4);
        assert_eq!(ix.buckets[1].overflow, 10 - 4);
        for i in 0..40 {
            let t = slots[i as usize].as_ref().map(|e| e.orig).expect("entry");
            let want = (i % 3 != 0).then_some((i, Direction::Original));
            assert_eq!(ix.get(&slots, &t, h(i)), want, "tuple {i}");
        }
        // Room freed in bucket 0 is reused before the chain grows.
        assert!(ix.insert(h(0), 0, Direction::Original));
        let t0 = slots[0].as_ref().map(|e| e.orig).expect("entry");
        assert_eq!(ix.locate(&slots, &t0, h(0)).map(|x| x.0), Some(0));
    }

    /// The hash spreads tuples that differ in any one field over the
    /// buckets and the tags (a weak hash still finds entries, by probing
    /// and full compares, but turns every lookup into a long walk: the
    /// difference mutation testing cannot see through a correctness test).
    #[test]
    fn the_hash_spreads_every_field_over_buckets_and_tags() {
        let ix = Index::with_capacity(2 * 16_384);
        let base = Tuple {
            src: std::net::Ipv4Addr::new(10, 244, 1, 2),
            dst: std::net::Ipv4Addr::new(198, 51, 100, 7),
            src_port: 40000,
            dst_port: 53,
            proto: 17,
        };
        let vary: [&dyn Fn(u32) -> Tuple; 5] = [
            &|i| Tuple {
                src: std::net::Ipv4Addr::from_bits(0x0af4_0000 + i),
                ..base
            },
            &|i| Tuple {
                dst: std::net::Ipv4Addr::from_bits(0xc633_0000 + i),
                ..base
            },
            &|i| Tuple {
                src_port: i as u16,
                ..base
            },
            &|i| Tuple {
                dst_port: i as u16,
                ..base
            },
            &|i| Tuple {
                proto: i as u8,
                src_port: (i >> 8) as u16,
                ..base
            },
        ];
        for (field, f) in vary.iter().enumerate() {
            let n = 4096u32;
            let (mut homes, mut tags) = (std::collections::HashSet::new(), [false; 256]);
            for i in 0..n {
                let h = ix.hash(&f(i));
                homes.insert(ix.home(h));
                tags[(tag(h) >> 1) as usize] = true;
            }
            eprintln!("field {field}: {} distinct buckets", homes.len());
            // 4096 balls in 4096 bins: about 63% distinct if uniform.
            assert!(
                homes.len() > 2200,
                "field {field}: {} distinct buckets of 4096",
                homes.len()
            );
            assert!(
                tags.iter().filter(|t| **t).count() > 240,
                "field {field}: tags do not vary"
            );
        }
        // Both directions of a flow hash apart (no symmetric cancellation).
        assert_ne!(ix.hash(&base), ix.hash(&base.reversed()));
        // Each table draws its own key: flows crafted to collide in one
        // worker's table (hash flooding) do not collide in another's.
        let hashes: std::collections::HashSet<u64> = (0..8)
            .map(|_| Index::with_capacity(64).hash(&base))
            .collect();
        assert_eq!(hashes.len(), 8, "tables share a hash key");
    }

    #[test]
    fn sized_for_one_million_entries_in_16_mib() {
        let ix = Index::with_capacity(2 * 1_001_024);
        assert_eq!(size_of::<Bucket>(), 64);
        assert_eq!(ix.bytes(), 16 << 20);
    }
}
