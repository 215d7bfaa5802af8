//! The connection table and the per-packet state machine.
//!
//! One entry serves both directions: the map holds the original tuple and
//! the reply tuple, each pointing at the entry's slot with the direction in
//! the low bit. Slots live in a slab with a free list, so a full table does
//! not allocate. Expiry is lazy on lookup and incremental in
//! [`Conntrack::handle_timeout`] (bounded work per call). Time is always a
//! parameter: nothing here reads a clock.

use std::time::Duration;

use encap::ip_proto;

use crate::config::{ConntrackConfig, SnatConfig};
use crate::index::{Index, prefetch};
use crate::packet::{Classified, Kind, OuterAddr, classify, rewrite, rewrite_icmp_error};
use crate::persist::Mirror;
use crate::service::{Nat, NoServices, Services};
use crate::tcp::{self, Sender, TcpState, Transition};
use crate::tuple::{Direction, Tuple};
use crate::verdict::{Accepted, CtState, DropReason, Verdict};

/// Protocol state of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoState {
    /// TCP state and per-direction window tracking.
    Tcp {
        /// State.
        state: TcpState,
        /// What each direction (original, reply) has sent.
        senders: [Sender; 2],
    },
    /// UDP.
    Udp,
    /// ICMP echo.
    Icmp,
    /// Any other protocol, by address pair.
    Other,
}

/// A tracked connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The original direction as the pod sent it.
    pub orig: Tuple,
    /// What replies carry: after SNAT, to the node address and port.
    pub reply: Tuple,
    /// Protocol state.
    pub proto: ProtoState,
    /// When the entry expires (same clock as `now`), in milliseconds.
    expires_ms: u64,
    /// A packet in the reply direction has been seen.
    pub seen_reply: bool,
    /// The service port the flow was balanced to ([`crate::Nat::service`];
    /// 0: none).
    pub service: u32,
    /// The service generation it was made or last revalidated under.
    service_gen: u32,
}

#[cfg(test)]
pub(crate) fn test_entry(orig: Tuple, reply: Tuple) -> Entry {
    Entry {
        orig,
        reply,
        proto: ProtoState::Udp,
        expires_ms: u64::MAX,
        seen_reply: false,
        service: 0,
        service_gen: 0,
    }
}

impl Entry {
    /// An entry read back from a state file (`crate::persist`): its
    /// service port is looked up again on its next packet.
    pub(crate) fn restored(
        orig: Tuple,
        reply: Tuple,
        proto: ProtoState,
        expires_ms: u64,
        seen_reply: bool,
        service: u32,
    ) -> Entry {
        Entry {
            orig,
            reply,
            proto,
            expires_ms,
            seen_reply,
            service,
            service_gen: crate::persist::RESTORED,
        }
    }

    /// When it expires, in milliseconds.
    pub(crate) fn expires_ms(&self) -> u64 {
        self.expires_ms
    }

    /// Whether the entry is translated.
    pub fn is_nat(&self) -> bool {
        self.reply.reversed() != self.orig
    }

    /// When it expires.
    pub fn expires(&self) -> Duration {
        Duration::from_millis(self.expires_ms)
    }
}

/// Packets [`Conntrack::process_burst`] prepares together (a worker's RX
/// burst); longer slices are processed in chunks of this size.
pub const BURST: usize = 32;

/// Packet origin: which side of the node it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// From a local pod: may create entries.
    Pod,
    /// From the uplink: only matches existing entries (replies, ICMP errors).
    Uplink,
    /// From the node's own stack towards a pod (a hostPort or NodePort
    /// connection the node DNATed, from an address outside the cluster):
    /// may create entries, which are never translated (the source is not
    /// a pod's). The pod's replies then match them in the reply direction.
    Host,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Drops per [`DropReason`] (`reason as usize`).
    pub drops: [u64; DropReason::ALL.len()],
    /// Entries created.
    pub created: u64,
    /// Entries removed by expiry.
    pub expired: u64,
    /// Unreplied entries evicted to make room.
    pub early_dropped: u64,
    /// UDP service entries removed because their backend stopped serving.
    pub stale_removed: u64,
}

/// The connection tracker and NAT engine of one worker.
#[derive(Debug)]
pub struct Conntrack {
    pub(crate) cfg: ConntrackConfig,
    snat: Option<SnatConfig>,
    pub(crate) slots: Vec<Option<Entry>>,
    pub(crate) free: Vec<u32>,
    pub(crate) index: Index,
    pub(crate) live: usize,
    /// The table's copy in a state file, when it has one.
    pub(crate) mirror: Option<Mirror>,
    expiry_cursor: usize,
    evict_cursor: usize,
    pub(crate) rng: u64,
    counters: Counters,
}

/// Milliseconds of a `Duration`, without `as_millis`'s 128-bit arithmetic.
use crate::persist::ms;

impl Conntrack {
    /// A tracker; with `snat`, also a masquerading NAT. Allocates the whole
    /// table up front: no allocation happens per packet.
    /// `max_entries` is capped at 2^23 (8.4M) per worker.
    pub fn new(mut cfg: ConntrackConfig, snat: Option<SnatConfig>) -> Self {
        cfg.max_entries = cfg.max_entries.min(crate::index::MAX_SLOTS);
        let n = cfg.max_entries;
        let rng = snat.as_ref().map_or(1, |s| s.seed | 1);
        Conntrack {
            slots: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
            index: Index::with_capacity(2 * n),
            cfg,
            snat,
            live: 0,
            mirror: None,
            expiry_cursor: 0,
            evict_cursor: 0,
            rng,
            counters: Counters::default(),
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Every live entry (for a `conntrack -L`-like listing).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().flatten()
    }

    /// Translated ports (and ICMP identifiers) in use.
    pub fn nat_ports_in_use(&self) -> usize {
        self.entries().filter(|e| e.is_nat()).count()
    }

    /// The entry whose original or reply tuple is `t`, if live at `now`.
    pub fn lookup(&self, now: Duration, t: &Tuple) -> Option<(&Entry, Direction)> {
        let (slot, dir) = self.index.get(&self.slots, t, self.index.hash(t))?;
        let e = self.slots.get(slot as usize)?.as_ref()?;
        (e.expires_ms > ms(now)).then_some((e, dir))
    }

    /// Tracks (and translates, with SNAT) the IPv4 packet in `pkt`.
    pub fn process(&mut self, now: Duration, pkt: &mut [u8], origin: Origin) -> Verdict {
        self.process_with(now, pkt, origin, &mut NoServices)
    }

    /// [`process`](Self::process) with service NAT: a packet that would
    /// create an entry asks `services` for its translation (DNAT to a
    /// backend, masquerade) first; a UDP entry made under an older service
    /// generation whose backend stopped serving is replaced by a new flow.
    pub fn process_with<S: Services>(
        &mut self,
        now: Duration,
        pkt: &mut [u8],
        origin: Origin,
        services: &mut S,
    ) -> Verdict {
        let c = classify(pkt);
        let h = c.as_ref().map_or(0, |c| self.index.hash(&c.key()));
        self.finish(now, pkt, origin, c, h, services)
    }

    /// Reverse translation only: if `pkt` travels in the reply direction of
    /// a translated entry (a backend answering a service flow, or an ICMP
    /// error about one), tracks and translates it and returns the verdict;
    /// otherwise leaves it untouched and returns `None`. Never creates an
    /// entry. Workers call it where packets reach their pod, so replies are
    /// un-DNATed on the worker holding the flow, whatever path they took.
    pub fn reverse(&mut self, now: Duration, pkt: &mut [u8]) -> Option<Verdict> {
        let c = classify(pkt).ok()?;
        let key = c.key();
        let h = self.index.hash(&key);
        let (slot, dir) = self.index.get(&self.slots, &key, h)?;
        let e = self.slots.get(slot as usize)?.as_ref()?;
        if dir != Direction::Reply || !e.is_nat() || e.expires_ms <= ms(now) {
            return None;
        }
        Some(self.finish(now, pkt, Origin::Uplink, Ok(c), h, &mut NoServices))
    }

    /// [`process`](Self::process) for a burst of packets from one origin,
    /// as a worker receives them: `verdicts[i]` is the verdict for
    /// `pkts[i]`; only the first `min(pkts.len(), verdicts.len())` packets
    /// are processed (that number is returned).
    ///
    /// The result is exactly that of calling `process` on each packet in
    /// order. It is faster on a large table: every packet of a chunk of
    /// [`BURST`] is parsed and its index bucket prefetched, then the likely
    /// entry of each is prefetched, and only then are they tracked, so the
    /// cache misses of a burst overlap instead of adding up.
    pub fn process_burst<P: AsMut<[u8]>>(
        &mut self,
        now: Duration,
        pkts: &mut [P],
        origin: Origin,
        verdicts: &mut [Verdict],
    ) -> usize {
        let mut done = 0;
        for (pc, vc) in pkts.chunks_mut(BURST).zip(verdicts.chunks_mut(BURST)) {
            let mut prep = [(Err(DropReason::Malformed), 0u64); BURST];
            for (p, slot) in pc.iter_mut().zip(prep.iter_mut()) {
                let c = classify(p.as_mut());
                let h = c.as_ref().map_or(0, |c| self.index.hash(&c.key()));
                if c.is_ok() {
                    self.index.prefetch(h);
                }
                *slot = (c, h);
            }
            for (c, h) in prep.iter().take(pc.len()) {
                if c.is_ok()
                    && let Some(e) = self
                        .index
                        .likely_slot(*h)
                        .and_then(|s| self.slots.get(s as usize))
                {
                    prefetch(e);
                    prefetch(
                        std::ptr::from_ref(e)
                            .wrapping_add(1)
                            .cast::<u8>()
                            .wrapping_sub(1),
                    );
                }
            }
            for ((p, v), (c, h)) in pc.iter_mut().zip(vc.iter_mut()).zip(prep) {
                *v = self.finish(now, p.as_mut(), origin, c, h, &mut NoServices);
                done += 1;
            }
        }
        done
    }

    /// Tracks a classified packet whose lookup key hashes to `h`, and
    /// counts a drop.
    fn finish<S: Services>(
        &mut self,
        now: Duration,
        pkt: &mut [u8],
        origin: Origin,
        c: Result<Classified, DropReason>,
        h: u64,
        services: &mut S,
    ) -> Verdict {
        match c.and_then(|c| self.track(now, pkt, origin, c, h, services)) {
            Ok(Some(a)) => Verdict::Accept(a),
            Ok(None) => Verdict::Refused,
            Err(r) => {
                if let Some(c) = self.counters.drops.get_mut(r as usize) {
                    *c += 1;
                }
                Verdict::Drop(r)
            }
        }
    }

    /// `h` is the hash of `c.key()`. `Ok(None)`: the service hook refused
    /// the new flow.
    fn track<S: Services>(
        &mut self,
        now: Duration,
        pkt: &mut [u8],
        origin: Origin,
        c: Classified,
        h: u64,
        services: &mut S,
    ) -> Result<Option<Accepted>, DropReason> {
        if let Kind::IcmpError { quoted, quote_at } = c.kind {
            return self.related(now, pkt, c.l4, quote_at, &quoted, h).map(Some);
        }
        let found = match self.find(now, &c.tuple, h) {
            Some((slot, dir)) if dir == Direction::Original => {
                self.revalidate(slot, services).map(|_| (slot, dir))
            }
            other => other,
        };
        let (slot, dir) = match found {
            Some(found) => found,
            None => {
                if origin == Origin::Uplink {
                    return Err(DropReason::NoEntry);
                }
                // Only what can create an entry asks the services.
                if matches!(c.kind, Kind::IcmpEcho(false)) {
                    return Err(DropReason::NoEntry);
                }
                let Some(nat) = services.new_flow(now, &c.tuple) else {
                    return Ok(None);
                };
                let slot = self.create(now, &c, h, nat, services.generation())?;
                let e = self.entry_mut(slot).ok_or(DropReason::NoEntry)?;
                let target = e.reply.reversed();
                rewrite(pkt, c.l4, &c.tuple, &target);
                return Ok(Some(Accepted {
                    state: CtState::New,
                    dir: Direction::Original,
                    translated: target != c.tuple,
                    service: nat.service,
                }));
            }
        };
        // Disjoint borrows: the config is read while the entry is written
        // (a copy of `Timeouts` per packet cost 192 bytes of moves).
        let (cfg_liberal, timeouts) = (self.cfg.tcp_liberal, &self.cfg.timeouts);
        let e = self
            .slots
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .ok_or(DropReason::NoEntry)?;
        let timeout = match (&mut e.proto, c.kind) {
            (ProtoState::Tcp { state, senders }, Kind::Tcp(seg)) => {
                let next = match tcp::transition(dir, seg.flags, *state) {
                    Transition::Invalid => return Err(DropReason::TcpInvalidState),
                    Transition::Ignore => *state,
                    Transition::To(s) => s,
                };
                if !cfg_liberal && !tcp::in_window(senders, dir, &seg) {
                    return Err(DropReason::TcpOutOfWindow);
                }
                *state = next;
                tcp_timeout(timeouts, next)
            }
            (ProtoState::Udp, _) => {
                if dir == Direction::Reply || e.seen_reply {
                    timeouts.udp_replied
                } else {
                    timeouts.udp_unreplied
                }
            }
            (ProtoState::Icmp, _) => timeouts.icmp,
            _ => timeouts.other,
        };
        if dir == Direction::Reply {
            e.seen_reply = true;
        }
        e.expires_ms = ms(now.saturating_add(timeout));
        if let Some(m) = &mut self.mirror {
            m.update(slot, e);
        }
        let target = match dir {
            Direction::Original => e.reply.reversed(),
            Direction::Reply => e.orig.reversed(),
        };
        rewrite(pkt, c.l4, &c.tuple, &target);
        Ok(Some(Accepted {
            state: CtState::Established,
            dir,
            translated: target != c.tuple,
            service: e.service,
        }))
    }

    /// A UDP service entry made under another service generation: kept
    /// (and stamped with the current one) while its backend serves, removed
    /// when it does not, so the packet starts a new flow to a live backend.
    /// TCP entries are left to finish, as kube-proxy leaves them.
    fn revalidate<S: Services>(&mut self, slot: u32, services: &mut S) -> Option<()> {
        let current = services.generation();
        let e = self.entry_mut(slot)?;
        if e.service_gen == crate::persist::RESTORED {
            // Made by the daemon before a restart: its backend stands (the
            // flow carries on); its service port is looked up again, the
            // old process's numbering being gone.
            if e.service != 0 {
                e.service = services.service_of(&e.orig);
            }
            e.service_gen = current;
            return Some(());
        }
        if e.service == 0 || e.service_gen == current || e.orig.proto != ip_proto::UDP {
            return Some(());
        }
        if services.still_serves(e.service, (e.reply.src, e.reply.src_port)) {
            e.service_gen = current;
            return Some(());
        }
        self.remove(slot);
        self.counters.stale_removed += 1;
        None
    }

    /// An ICMP error: find the flow its quote belongs to and translate the
    /// quote and the outer address back (Linux `nf_nat_icmp_reply_translation`).
    fn related(
        &mut self,
        now: Duration,
        pkt: &mut [u8],
        l4: usize,
        quote_at: usize,
        quoted: &Tuple,
        h: u64,
    ) -> Result<Accepted, DropReason> {
        // The quote is a packet that travelled the other way: its reverse
        // is the tuple of the direction the error travels (`h` is its hash).
        let key = quoted.reversed();
        let (slot, dir) = self
            .find(now, &key, h)
            .ok_or(DropReason::IcmpErrorNoEntry)?;
        let e = self.entry_mut(slot).ok_or(DropReason::IcmpErrorNoEntry)?;
        if !e.is_nat() {
            return Ok(Accepted {
                state: CtState::Related,
                dir,
                translated: false,
                service: e.service,
            });
        }
        let (to, outer) = match dir {
            // Towards the pod: the quote is our translated packet.
            Direction::Reply => (
                e.orig,
                OuterAddr {
                    src: (e.reply.src != e.orig.dst).then_some(e.orig.dst),
                    dst: Some(e.orig.src),
                },
            ),
            // From the pod about a reply it received.
            Direction::Original => (
                e.reply,
                OuterAddr {
                    src: Some(e.reply.dst),
                    dst: (e.reply.src != e.orig.dst).then_some(e.reply.src),
                },
            ),
        };
        let service = e.service;
        rewrite_icmp_error(pkt, l4, quote_at, quoted, &to, outer);
        Ok(Accepted {
            state: CtState::Related,
            dir,
            translated: true,
            service,
        })
    }

    /// Looks a tuple up; an expired entry found on the way is removed.
    fn find(&mut self, now: Duration, t: &Tuple, h: u64) -> Option<(u32, Direction)> {
        let (slot, dir) = self.index.get(&self.slots, t, h)?;
        let expired = self
            .slots
            .get(slot as usize)?
            .as_ref()
            .is_some_and(|e| e.expires_ms <= ms(now));
        if expired {
            self.remove(slot);
            self.counters.expired += 1;
            return None;
        }
        Some((slot, dir))
    }

    fn entry_mut(&mut self, slot: u32) -> Option<&mut Entry> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Creates the entry for a new flow from a pod.
    /// `h` is the hash of `c.tuple`, which the caller found absent.
    fn create(
        &mut self,
        now: Duration,
        c: &Classified,
        h: u64,
        nat: Nat,
        service_gen: u32,
    ) -> Result<u32, DropReason> {
        let t = &self.cfg.timeouts;
        let (proto, timeout) = match c.kind {
            Kind::Tcp(seg) => {
                let syn_only = seg.flags.contains(encap::tcp::TcpFlags::SYN)
                    && !seg.flags.contains(encap::tcp::TcpFlags::ACK);
                let state = match tcp::transition(Direction::Original, seg.flags, TcpState::None) {
                    Transition::To(s) if syn_only || self.cfg.tcp_loose => s,
                    _ => return Err(DropReason::TcpNotSyn),
                };
                let mut senders = [Sender::default(); 2];
                tcp::in_window(&mut senders, Direction::Original, &seg);
                (ProtoState::Tcp { state, senders }, tcp_timeout(t, state))
            }
            Kind::Udp => (ProtoState::Udp, t.udp_unreplied),
            Kind::IcmpEcho(true) => (ProtoState::Icmp, t.icmp),
            // An echo reply with no request, or an error: nothing to track.
            Kind::IcmpEcho(false) | Kind::IcmpError { .. } => return Err(DropReason::NoEntry),
            Kind::Other => (ProtoState::Other, t.other),
        };
        let orig = c.tuple;
        // The tuple after DNAT: what SNAT policy and allocation see.
        let mut to = orig;
        if let Some((addr, port)) = nat.dnat {
            to.dst = addr;
            if matches!(orig.proto, ip_proto::TCP | ip_proto::UDP) {
                to.dst_port = port;
            }
        }
        let masq = nat.masquerade.map(|addr| (addr, self.snat.as_ref()));
        let reply = match (
            masq,
            self.snat.as_ref().filter(|s| s.applies(to.src, to.dst)),
        ) {
            (Some((addr, s)), _) => {
                let range = s.map_or(crate::config::SNAT_PORTS, |s| {
                    s.slice(if orig.proto == ip_proto::ICMP {
                        s.icmp_ids
                    } else {
                        s.ports
                    })
                });
                let probes = s.map_or(128, |s| s.max_probes);
                self.allocate(&to, addr, range, true, probes)
                    .ok_or(DropReason::PortExhausted)?
            }
            (None, Some(s)) => {
                let (addr, range, random) = (
                    s.snat_addr,
                    s.slice(if orig.proto == ip_proto::ICMP {
                        s.icmp_ids
                    } else {
                        s.ports
                    }),
                    s.random_fully,
                );
                let probes = s.max_probes;
                self.allocate(&to, addr, range, random, probes)
                    .ok_or(DropReason::PortExhausted)?
            }
            // A DNATed flow whose reply tuple another flow holds (one
            // client port to two services sharing a backend): the source
            // port is remapped, the address kept, as Linux's
            // get_unique_tuple does for the implicit source binding.
            (None, None)
                if nat.dnat.is_some()
                    && matches!(orig.proto, ip_proto::TCP | ip_proto::UDP)
                    && self.index.contains(&self.slots, &to.reversed()) =>
            {
                let (range, probes) = self
                    .snat
                    .as_ref()
                    .map_or((crate::config::SNAT_PORTS, 128), |s| {
                        (s.slice(s.ports), s.max_probes)
                    });
                self.allocate(&to, to.src, range, true, probes)
                    .ok_or(DropReason::PortExhausted)?
            }
            (None, None) => to.reversed(),
        };
        // Allocation proved a translated reply tuple free. An untranslated
        // flow's reply tuple can still be another flow's original tuple
        // (both ends opening the same ports): refuse, as Linux does.
        if reply == to.reversed() && self.index.contains(&self.slots, &reply) {
            return Err(DropReason::PortExhausted);
        }
        if self.live >= self.cfg.max_entries && !self.early_drop(now) {
            return Err(DropReason::TableFull);
        }
        let entry = Entry {
            orig,
            reply,
            proto,
            expires_ms: ms(now.saturating_add(timeout)),
            seen_reply: false,
            service: nat.service,
            service_gen,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                if let Some(x) = self.slots.get_mut(s as usize) {
                    *x = Some(entry);
                }
                s
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as u32
            }
        };
        let hr = self.index.hash(&reply);
        // Sizing (two values per entry, 15 ways per 10 on average) leaves
        // room for every entry the slab can hold; were it ever full, the
        // flow is refused rather than left half-indexed.
        if !self.index.insert(h, slot, Direction::Original) {
            self.release(slot);
            return Err(DropReason::TableFull);
        }
        if !self.index.insert(hr, slot, Direction::Reply) {
            self.index.remove(&self.slots, &orig, h);
            self.release(slot);
            return Err(DropReason::TableFull);
        }
        self.live += 1;
        self.counters.created += 1;
        if let (Some(m), Some(Some(e))) = (&mut self.mirror, self.slots.get(slot as usize)) {
            m.create(slot, e);
        }
        Ok(slot)
    }

    /// Frees one entry that never saw a reply (or has expired), examining at
    /// most `early_drop_budget` slots. Established (replied) flows are never
    /// evicted.
    fn early_drop(&mut self, now: Duration) -> bool {
        let n = self.slots.len();
        if n == 0 {
            return false;
        }
        for _ in 0..self.cfg.early_drop_budget.min(n) {
            self.evict_cursor = (self.evict_cursor + 1) % n;
            let c = self.evict_cursor;
            let victim = self
                .slots
                .get(c)
                .and_then(|s| s.as_ref())
                .is_some_and(|e| !e.seen_reply || e.expires_ms <= ms(now));
            if victim {
                self.remove(c as u32);
                self.counters.early_dropped += 1;
                return true;
            }
        }
        false
    }

    fn remove(&mut self, slot: u32) {
        // Unindex while the entry is still in the slab (the index compares
        // against it), then free the slot.
        let Some(e) = self
            .slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .copied()
        else {
            return;
        };
        let (ho, hr) = (self.index.hash(&e.orig), self.index.hash(&e.reply));
        self.index.remove(&self.slots, &e.orig, ho);
        self.index.remove(&self.slots, &e.reply, hr);
        self.release(slot);
        self.live -= 1;
    }

    /// Empties a slot and returns it to the free list.
    fn release(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = None;
        }
        if let Some(m) = &mut self.mirror {
            m.remove(slot);
        }
        self.free.push(slot);
    }

    /// Removes expired entries, examining at most `expiry_budget` slots from
    /// where the previous call stopped, so a million expiring entries cost
    /// the same per call as none. Returns the number removed.
    pub fn handle_timeout(&mut self, now: Duration) -> usize {
        let n = self.slots.len();
        let mut removed = 0;
        for _ in 0..self.cfg.expiry_budget.min(n) {
            self.expiry_cursor = (self.expiry_cursor + 1) % n;
            let c = self.expiry_cursor;
            if self
                .slots
                .get(c)
                .and_then(|s| s.as_ref())
                .is_some_and(|e| e.expires_ms <= ms(now))
            {
                self.remove(c as u32);
                removed += 1;
            }
        }
        self.counters.expired += removed as u64;
        removed
    }
}

fn tcp_timeout(t: &crate::config::Timeouts, s: TcpState) -> Duration {
    match s {
        TcpState::None | TcpState::SynSent | TcpState::SynSent2 => t.tcp_syn_sent,
        TcpState::SynRecv => t.tcp_syn_recv,
        TcpState::Established => t.tcp_established,
        TcpState::FinWait => t.tcp_fin_wait,
        TcpState::CloseWait => t.tcp_close_wait,
        TcpState::LastAck => t.tcp_last_ack,
        TcpState::TimeWait => t.tcp_time_wait,
        TcpState::Close => t.tcp_close,
    }
}
