//! Tuple -> entry index. The table stores only a `u32` per direction:
//! slot number (23 bits), an 8-bit tag from the tuple's hash, and the
//! direction (low bit). The tuples it compares against live in the slab
//! entries, which a lookup reads anyway: 5 bytes per bucket instead of 21
//! with the tuple as a map key. The tag keeps a probe from dereferencing
//! (and missing cache on) a slab entry whose control byte merely collided.

use core::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::conntrack::Entry;
use crate::tuple::{Direction, Tuple};

/// The index over a slab of entries.
#[derive(Debug)]
pub(crate) struct Index {
    table: HashTable<u32>,
    /// Per-table random key (drawn from hashbrown's randomly seeded
    /// builder), so flows an outsider picks cannot be aimed at one bucket
    /// chain without knowing it.
    key: u64,
}

/// The tuple's hash: one keyed 128-bit multiply over its two packed words,
/// folded (wyhash's `mum`). Derived `Hash` would feed the hasher field by
/// field, with a length prefix per address: several times slower.
fn hash_tuple(key: u64, t: &Tuple) -> u64 {
    let a = (u64::from(t.src.to_bits()) << 32) | u64::from(t.dst.to_bits());
    let b = (u64::from(t.src_port) << 48) | (u64::from(t.dst_port) << 32) | u64::from(t.proto);
    let r = u128::from(a ^ key)
        .wrapping_mul(u128::from(b ^ 0xe703_7ed1_a0b4_28db ^ key.rotate_left(32)));
    (r as u64) ^ ((r >> 64) as u64)
}

/// Most slots an index can address (2^23): the per-worker table limit.
pub(crate) const MAX_SLOTS: usize = 1 << 23;

const TAG_MASK: u32 = 0xff << 1;

/// The tag bits of a hash, placed as in a stored value.
const fn tag(h: u64) -> u32 {
    ((h >> 40) as u32 & 0xff) << 1
}

/// The slot a stored value names.
const fn slot_of(v: u32) -> u32 {
    v >> 9
}

/// Whether stored value `v` is tuple `t` (hash `h`): the tag first, the
/// slab entry only when the tag agrees.
fn matches(slots: &[Option<Entry>], v: u32, t: &Tuple, h: u64) -> bool {
    v & TAG_MASK == tag(h) && tuple_of(slots, v).as_ref() == Some(t)
}

/// The tuple an index value refers to.
fn tuple_of(slots: &[Option<Entry>], v: u32) -> Option<Tuple> {
    let e = slots.get(slot_of(v) as usize)?.as_ref()?;
    Some(if v & 1 == 0 { e.orig } else { e.reply })
}

impl Index {
    pub(crate) fn with_capacity(n: usize) -> Self {
        let key = DefaultHashBuilder::default().hash_one(0x5175_1ce0_u64) | 1;
        Index {
            table: HashTable::with_capacity(n),
            key,
        }
    }

    pub(crate) fn hash(&self, t: &Tuple) -> u64 {
        hash_tuple(self.key, t)
    }

    /// The slot and direction holding `t` (whose hash is `h`).
    pub(crate) fn get(
        &self,
        slots: &[Option<Entry>],
        t: &Tuple,
        h: u64,
    ) -> Option<(u32, Direction)> {
        let v = *self.table.find(h, |&v| matches(slots, v, t, h))?;
        let dir = if v & 1 == 0 {
            Direction::Original
        } else {
            Direction::Reply
        };
        Some((slot_of(v), dir))
    }

    /// Whether `t` is indexed.
    pub(crate) fn contains(&self, slots: &[Option<Entry>], t: &Tuple) -> bool {
        self.get(slots, t, self.hash(t)).is_some()
    }

    /// Indexes direction `dir` of the entry in `slot` (already in the slab),
    /// whose tuple hashes to `h`.
    pub(crate) fn insert(&mut self, slots: &[Option<Entry>], h: u64, slot: u32, dir: Direction) {
        let key = self.key;
        let v = (slot << 9) | tag(h) | dir.index() as u32;
        self.table.insert_unique(h, v, |&x| {
            tuple_of(slots, x).map_or(0, |t| hash_tuple(key, &t))
        });
    }

    /// Removes `t` (its entry must still be in the slab).
    pub(crate) fn remove(&mut self, slots: &[Option<Entry>], t: &Tuple) {
        let h = self.hash(t);
        if let Ok(e) = self.table.find_entry(h, |&v| matches(slots, v, t, h)) {
            e.remove();
        }
    }
}
