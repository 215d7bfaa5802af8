//! The connection table's copy in a state file ([`persist::Region`]), so a
//! restarted daemon carries on every flow: entries, translations (and so
//! the SNAT ports in use), TCP window tracking and expiry times.
//!
//! Each slot of the table owns three 64-byte records, one cache line each:
//! two copies of the *dynamic* record (`3 * slot` and `3 * slot + 1`:
//! expiry, TCP state and windows, seen reply, an update count), and the
//! *static* record (`3 * slot + 2`: tuples, service, kind), written when
//! the entry is made. All carry the entry's creation id. A packet's update
//! rewrites the older dynamic copy with the count one past the newer's, so
//! a process killed mid-write tears only the copy being written and the
//! other still holds the entry as of the packet before: a live flow is
//! never lost to a kill (a single record rewritten in place was, about one
//! kill in a hundred under load). Creating an entry clears both dynamic
//! copies first and writes the first one last, so a process killed in
//! between leaves a slot that restores as empty.
//!
//! Restoring trusts nothing: it takes the newest whole ([`persist::read`])
//! dynamic copy carrying the static record's creation id, every field must decode (the
//! protocol, the TCP state, the kind matching the protocol, window scales
//! at most 14), the entry must not have expired, and neither tuple may be
//! in the table already. Anything else is counted and cleared.

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::ip_proto;
use persist::Region;

use crate::config::{ConntrackConfig, SnatConfig};
use crate::conntrack::{Conntrack, Entry, ProtoState};
use crate::tcp::{Sender, TcpState};
use crate::tuple::{Direction, Tuple};

/// Bytes per record.
pub const RECORD: usize = 64;
/// The record layout's version ([`persist::Spec::version`]).
pub const VERSION: u32 = 2;
/// Records per slot: two dynamic copies, then the static record.
const PER_SLOT: usize = 3;
/// Where a dynamic copy keeps its update count (body offset).
const COUNT_AT: usize = 44;
/// An entry's `service_gen` after a restore: the service table it was made
/// under is gone, so its service port is looked up again on its next packet.
pub(crate) const RESTORED: u32 = u32::MAX;

/// The state file layout for a tracker built with `cfg` and `snat`, in the
/// boot `epoch` ([`persist::boot_id`]). The settings an entry depends on
/// are in its parameters: a file written under other ones is discarded.
pub fn spec(cfg: &ConntrackConfig, snat: Option<&SnatConfig>, epoch: [u8; 16]) -> persist::Spec {
    let max = cfg.max_entries.min(crate::index::MAX_SLOTS);
    let range = |r: crate::PortRange| u64::from(r.min) << 16 | u64::from(r.max);
    let mut params = vec![("max_entries", max as u64)];
    if let Some(s) = snat {
        params.extend([
            ("snat_addr", u64::from(u32::from(s.snat_addr))),
            ("snat_ports", range(s.ports)),
            ("snat_icmp_ids", range(s.icmp_ids)),
            ("worker", u64::from(s.worker.0)),
            ("workers", u64::from(s.worker.1)),
        ]);
    }
    persist::Spec {
        kind: "conntrack",
        version: VERSION,
        record_len: RECORD,
        records: PER_SLOT * max,
        epoch,
        params,
    }
}

/// What a restore found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Entries carried on.
    pub entries: usize,
    /// Entries that had expired meanwhile.
    pub expired: usize,
    /// Slots torn by a kill (no whole dynamic copy of the entry the static
    /// record holds, or the static record half-written).
    pub torn: usize,
    /// Slots whose fields do not decode.
    pub invalid: usize,
    /// Entries whose tuple another restored entry holds.
    pub duplicate: usize,
}

/// The table's mirror.
#[derive(Debug)]
pub(crate) struct Mirror {
    region: Region,
    /// The next entry's creation id.
    next_id: u32,
}

fn tuple_to(b: &mut [u8], t: &Tuple) {
    let mut w = [0u8; 13];
    w[0..4].copy_from_slice(&t.src.octets());
    w[4..8].copy_from_slice(&t.dst.octets());
    w[8..10].copy_from_slice(&t.src_port.to_le_bytes());
    w[10..12].copy_from_slice(&t.dst_port.to_le_bytes());
    w[12] = t.proto;
    if let Some(d) = b.get_mut(..13) {
        d.copy_from_slice(&w);
    }
}

fn tuple_from(b: &[u8]) -> Option<Tuple> {
    let b: &[u8; 13] = b.get(..13)?.try_into().ok()?;
    let [a0, a1, a2, a3, b0, b1, b2, b3, s0, s1, d0, d1, proto] = *b;
    Some(Tuple {
        src: Ipv4Addr::new(a0, a1, a2, a3),
        dst: Ipv4Addr::new(b0, b1, b2, b3),
        src_port: u16::from_le_bytes([s0, s1]),
        dst_port: u16::from_le_bytes([d0, d1]),
        proto,
    })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

const NO_TCP: u8 = 0xff;

fn sender_to(b: &mut [u8], at: usize, s: &Sender) {
    put(b, at, &s.end.to_le_bytes());
    put(b, at + 4, &s.maxend.to_le_bytes());
    put(b, at + 8, &s.maxwin.to_le_bytes());
    put(b, at + 12, &[s.scale]);
}

fn sender_from(b: &[u8], at: usize) -> Option<Sender> {
    let scale = *b.get(at + 12)?;
    (scale <= 14).then_some(Sender {
        end: u32_at(b, at)?,
        maxend: u32_at(b, at + 4)?,
        maxwin: u32_at(b, at + 8)?,
        scale,
    })
}

fn tcp_state(v: u8) -> Option<TcpState> {
    Some(match v {
        0 => TcpState::None,
        1 => TcpState::SynSent,
        2 => TcpState::SynRecv,
        3 => TcpState::Established,
        4 => TcpState::FinWait,
        5 => TcpState::CloseWait,
        6 => TcpState::LastAck,
        7 => TcpState::TimeWait,
        8 => TcpState::Close,
        9 => TcpState::SynSent2,
        _ => return None,
    })
}

/// The kind byte: which [`ProtoState`] variant, which must match the
/// protocol.
fn kind_of(p: &ProtoState) -> u8 {
    match p {
        ProtoState::Tcp { .. } => 0,
        ProtoState::Udp => 1,
        ProtoState::Icmp => 2,
        ProtoState::Other => 3,
    }
}

/// Writes the dynamic part of `e` (creation id `id`, update count `count`).
fn dynamic_to(b: &mut [u8], id: u32, count: u32, e: &Entry) {
    put(b, 0, &id.to_le_bytes());
    put(b, COUNT_AT, &count.to_le_bytes());
    put(b, 4, &e.expires_ms().to_le_bytes());
    let (state, senders) = match &e.proto {
        ProtoState::Tcp { state, senders } => (*state as u8, Some(senders)),
        _ => (NO_TCP, None),
    };
    put(b, 12, &[state, u8::from(e.seen_reply)]);
    if let Some([a, r]) = senders {
        sender_to(b, 16, a);
        sender_to(b, 29, r);
    }
}

fn static_to(b: &mut [u8], id: u32, e: &Entry) {
    put(b, 0, &id.to_le_bytes());
    tuple_to(b.get_mut(4..).unwrap_or_default(), &e.orig);
    tuple_to(b.get_mut(17..).unwrap_or_default(), &e.reply);
    put(b, 30, &e.service.to_le_bytes());
    put(b, 34, &[kind_of(&e.proto)]);
}

/// What a slot's records hold.
enum Slot {
    Empty,
    /// Torn, invalid or expired: cleared.
    Drop,
    Live(Entry),
}

/// A field that does not decode.
struct Invalid;

/// The newest whole dynamic copy among records `a` and `b` (whole
/// records, sequence words included) that carries creation id `id` (any,
/// if `None`): its index (0 or 1) and body. Counts compare as serial
/// numbers, so they may wrap.
fn newest<'a>(a: &'a [u8], b: &'a [u8], id: Option<u32>) -> Option<(usize, &'a [u8])> {
    let whole = |r: &'a [u8]| persist::read(r).filter(|d| id.is_none() || u32_at(d, 0) == id);
    let count = |d: &[u8]| u32_at(d, COUNT_AT).unwrap_or(0);
    match (whole(a), whole(b)) {
        (Some(x), Some(y)) if (count(y).wrapping_sub(count(x)) as i32) > 0 => Some((1, y)),
        (Some(x), _) => Some((0, x)),
        (None, Some(y)) => Some((1, y)),
        (None, None) => None,
    }
}

/// Decodes slot records `dynamic` and `stat` (bodies) into an entry.
fn decode(dynamic: &[u8], stat: &[u8]) -> Result<Entry, Invalid> {
    let inv = |_| Invalid;
    let orig = stat.get(4..).and_then(tuple_from).ok_or(Invalid)?;
    let reply = stat.get(17..).and_then(tuple_from).ok_or(Invalid)?;
    let service = u32_at(stat, 30).ok_or(Invalid)?;
    let kind = *stat.get(34).ok_or(Invalid)?;
    let expires_ms = u64_at(dynamic, 4).ok_or(Invalid)?;
    let (state, seen) = match dynamic.get(12..14) {
        Some(&[s, r]) if r <= 1 => (s, r == 1),
        _ => return Err(Invalid),
    };
    if orig.proto != reply.proto {
        return Err(Invalid);
    }
    let proto = match (kind, orig.proto) {
        (0, ip_proto::TCP) => ProtoState::Tcp {
            state: tcp_state(state).ok_or(Invalid)?,
            senders: [
                sender_from(dynamic, 16).ok_or(Invalid)?,
                sender_from(dynamic, 29).ok_or(Invalid)?,
            ],
        },
        (1, ip_proto::UDP) => ProtoState::Udp,
        (2, ip_proto::ICMP) => ProtoState::Icmp,
        // ICMP messages other than echo and errors are tracked as "other".
        (3, p) if !matches!(p, ip_proto::TCP | ip_proto::UDP) => ProtoState::Other,
        _ => return Err(Invalid),
    };
    if !matches!(proto, ProtoState::Tcp { .. }) && state != NO_TCP {
        return Err(inv(()));
    }
    // The tuples' shape per protocol, as `classify` and allocation make
    // them: ICMP carries the identifier as the source port and no
    // destination port; other protocols no ports. (An ICMP entry with a
    // destination port would translate requests whose replies it never
    // matches.)
    let portless = |t: &Tuple| match proto {
        ProtoState::Icmp => t.dst_port == 0,
        ProtoState::Other => t.src_port == 0 && t.dst_port == 0,
        _ => true,
    };
    if !portless(&orig) || !portless(&reply) {
        return Err(Invalid);
    }
    Ok(Entry::restored(
        orig, reply, proto, expires_ms, seen, service,
    ))
}

impl Mirror {
    pub(crate) fn new(region: Region) -> Mirror {
        Mirror { region, next_id: 1 }
    }

    /// Records a new entry in `slot`: both dynamic copies cleared, static
    /// written, the first dynamic copy written.
    pub(crate) fn create(&mut self, slot: u32, e: &Entry) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let i = PER_SLOT * slot as usize;
        self.region.raise_mark(i + PER_SLOT);
        for c in [i, i + 1] {
            if let Some(r) = self.region.record_mut(c) {
                persist::clear(r);
            }
        }
        if let Some(r) = self.region.record_mut(i + 2) {
            persist::write(r, |b| static_to(b, id, e));
        }
        if let Some(r) = self.region.record_mut(i) {
            persist::write(r, |b| dynamic_to(b, id, 1, e));
        }
    }

    /// Records a packet's change to the entry in `slot`: the older dynamic
    /// copy is rewritten (two cache lines read, one written), so the newer
    /// one stays whole whenever the process dies.
    #[inline]
    pub(crate) fn update(&mut self, slot: u32, e: &Entry) {
        let i = PER_SLOT * slot as usize;
        let (Some(a), Some(b)) = (self.region.record(i), self.region.record(i + 1)) else {
            return;
        };
        let (older, id, count) = match newest(a, b, None) {
            Some((n, d)) => (
                i + 1 - n,
                u32_at(d, 0).unwrap_or(0),
                u32_at(d, COUNT_AT).unwrap_or(0).wrapping_add(1),
            ),
            // Neither whole (never, while this process writes them): the
            // creation id from the static record.
            None => {
                let id = self
                    .region
                    .record(i + 2)
                    .and_then(|s| u32_at(persist::body(s), 0))
                    .unwrap_or(0);
                (i, id, 1)
            }
        };
        if let Some(r) = self.region.record_mut(older) {
            persist::write(r, |b| dynamic_to(b, id, count, e));
        }
    }

    /// Forgets the entry in `slot`.
    pub(crate) fn remove(&mut self, slot: u32) {
        let i = PER_SLOT * slot as usize;
        for c in [i, i + 1] {
            if let Some(r) = self.region.record_mut(c) {
                persist::clear(r);
            }
        }
    }

    /// Slots the region has records for.
    pub(crate) fn slots(&self) -> usize {
        self.region.records() / PER_SLOT
    }

    /// What `slot` holds at `now` (milliseconds); a slot that is not
    /// [`Slot::Empty`] or [`Slot::Live`] is counted in `r`.
    fn load(&self, slot: usize, now_ms: u64, r: &mut Restored) -> Slot {
        let i = PER_SLOT * slot;
        let (Some(a), Some(b), Some(s)) = (
            self.region.record(i),
            self.region.record(i + 1),
            self.region.record(i + 2),
        ) else {
            return Slot::Empty;
        };
        let empty = |d: &[u8]| persist::read(d).is_none() && !persist::torn(d);
        if empty(a) && empty(b) {
            // Never written, or removed.
            return Slot::Empty;
        }
        let Some(s) = persist::read(s) else {
            r.torn += 1;
            return Slot::Drop;
        };
        // No whole copy of this entry: torn by a kill mid-create (or both
        // copies, which one process never leaves).
        let Some((_, d)) = newest(a, b, u32_at(s, 0)) else {
            r.torn += 1;
            return Slot::Drop;
        };
        match decode(d, s) {
            Ok(e) if e.expires_ms() <= now_ms => {
                r.expired += 1;
                Slot::Drop
            }
            Ok(e) => Slot::Live(e),
            Err(Invalid) => {
                r.invalid += 1;
                Slot::Drop
            }
        }
    }

    /// Clears the records of `slot` (a rejected entry).
    pub(crate) fn discard(&mut self, slot: usize) {
        for i in PER_SLOT * slot..PER_SLOT * (slot + 1) {
            if let Some(r) = self.region.record_mut(i) {
                persist::clear(r);
            }
        }
    }
}

/// Milliseconds of `d` (as the table keeps expiries).
pub(crate) fn ms(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

impl Conntrack {
    /// The state region the table is mirrored to, if any.
    pub fn state(&self) -> Option<&Region> {
        self.mirror.as_ref().map(|m| &m.region)
    }

    /// A tracker (as [`Conntrack::new`]) whose table lives on in `region`,
    /// a state file laid out by [`spec`] for the same `cfg` and `snat`:
    /// the entries it holds that are whole, valid and alive at `now` are
    /// carried on (the rest are cleared and counted), and every change from
    /// now on is written through to it.
    pub fn with_state(
        cfg: ConntrackConfig,
        snat: Option<SnatConfig>,
        region: Region,
        now: Duration,
    ) -> (Conntrack, Restored) {
        let mut ct = Conntrack::new(cfg, snat);
        let mut m = Mirror::new(region);
        let mut r = Restored::default();
        let now_ms = ms(now);
        // Up to the high-water mark: the untouched rest of a sparse file is
        // never faulted in.
        let used = m.region.mark().div_ceil(PER_SLOT);
        for slot in 0..m.slots().min(ct.cfg.max_entries).min(used) {
            let e = match m.load(slot, now_ms, &mut r) {
                Slot::Empty => continue,
                Slot::Drop => {
                    m.discard(slot);
                    continue;
                }
                Slot::Live(e) => e,
            };
            if ct.index.contains(&ct.slots, &e.orig) || ct.index.contains(&ct.slots, &e.reply) {
                r.duplicate += 1;
                m.discard(slot);
                continue;
            }
            if ct.slots.len() <= slot {
                ct.slots.resize(slot + 1, None);
            }
            if let Some(s) = ct.slots.get_mut(slot) {
                *s = Some(e);
            }
            let (ho, hr) = (ct.index.hash(&e.orig), ct.index.hash(&e.reply));
            if !ct.index.insert(ho, slot as u32, Direction::Original) {
                if let Some(s) = ct.slots.get_mut(slot) {
                    *s = None;
                }
                r.duplicate += 1;
                m.discard(slot);
                continue;
            }
            if !ct.index.insert(hr, slot as u32, Direction::Reply) {
                ct.index.remove(&ct.slots, &e.orig, ho);
                if let Some(s) = ct.slots.get_mut(slot) {
                    *s = None;
                }
                r.duplicate += 1;
                m.discard(slot);
                continue;
            }
            ct.live += 1;
            r.entries += 1;
        }
        // Refilled in place: the free list keeps the capacity `new` gave it,
        // so no packet ever grows it.
        let free: Vec<u32> = (0..ct.slots.len() as u32)
            .rev()
            .filter(|s| ct.slots.get(*s as usize).is_some_and(Option::is_none))
            .collect();
        ct.free.clear();
        ct.free.extend(free);
        ct.mirror = Some(m);
        (ct, r)
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
