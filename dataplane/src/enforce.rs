//! NetworkPolicy in the pipeline: where a worker checks a pod's egress
//! and ingress, and what it counts and logs.
//!
//! - Egress: a packet from a pod's own port, looked up by the tuple the
//!   pod sent; a flow's first packet is decided after service DNAT (for the
//!   backend, not the ClusterIP) and before SNAT ([`Worker::egress_lookup`],
//!   [`Worker::egress_first`]).
//! - Ingress: a packet about to reach a pod, on the worker owning its
//!   port, by the tuple the pod receives (after the reverse translation of
//!   a service flow) ([`Worker::police_ingress`]).
//! - Each worker keeps the verdicts of its pods' flows
//!   ([`policy::FlowTable`]) with the policy generation they were decided
//!   under: a reply finds its flow's verdict; a flow decided under an older
//!   generation is decided again at its next packet, so a new deny cuts a
//!   live flow within one packet.
//! - Nothing is checked while no policy exists, nor for a pod isolated in
//!   neither direction. Policies existing, a local pod whose labels are not
//!   known yet is held back ([`Reason::PolicyPending`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::icmp::{IcmpPacket, QuotedL4};
use encap::ip_proto;
use encap::ipv4::Ipv4Packet;
use policy::verdict::{self, Outcome};
use policy::{Dir, Key, Side, Tables};

use crate::buf::Buf;
use crate::counters::Reason;
use crate::route::Snapshot;
use crate::worker::Worker;

/// Flows (pod directions) a worker keeps verdicts for.
pub const FLOW_ENTRIES: usize = 64 * 1024;

/// Denied flows a worker's log keeps.
pub const DENIED_LOG: usize = 64;

/// At most one denied flow logged per this many milliseconds per worker.
const LOG_EVERY_MS: u64 = 10;

/// Flows and packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    /// Flows decided (first packets, re-checks).
    pub flows: u64,
    /// Packets.
    pub packets: u64,
}

/// One policy's counters on one worker (indexed by the policy's id,
/// [`policy::RuleId::policy`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyHits {
    /// Allowed by each ingress rule.
    pub ingress: Vec<Hits>,
    /// Allowed by each egress rule.
    pub egress: Vec<Hits>,
    /// Denied while this policy was the first isolating the pod
    /// (ingress, egress).
    pub denied: [Hits; 2],
}

/// A denied flow, as logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    /// Sequence number on its worker.
    pub seq: u64,
    /// When (the worker's clock, ms).
    pub at_ms: u64,
    /// The flow as its pod saw it.
    pub key: Key,
    /// The side that refused it.
    pub dir: Dir,
    /// The first policy isolating the pod on that side.
    pub policy: Option<u32>,
}

/// What a worker publishes about policy: counters by policy, the denied
/// log, and totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyView {
    /// By policy id (grows when a new id first appears, not per packet).
    pub by_policy: Vec<PolicyHits>,
    /// The last denied flows (a ring, `DENIED_LOG` long).
    pub denied: Vec<Denied>,
    /// Denied flows ever logged (the next sequence number).
    pub logged: u64,
    /// When the last one was logged.
    last_log_ms: u64,
    /// Flows decided at their first packet.
    pub decided: u64,
    /// Flows decided again after a policy change.
    pub rechecked: u64,
    /// Live verdicts evicted to make room.
    pub evicted: u64,
}

impl PolicyView {
    fn slot(&mut self, id: u32) -> Option<&mut PolicyHits> {
        let i = usize::try_from(id).ok()?;
        if i > 1 << 20 {
            return None;
        }
        if self.by_policy.len() <= i {
            self.by_policy.resize(i + 1, PolicyHits::default());
        }
        self.by_policy.get_mut(i)
    }

    /// Counts a packet the verdict `side` (for `dir`) let through or
    /// refused; `new`: the flow was decided at it.
    fn count(&mut self, t: &Tables, pod: Ipv4Addr, dir: Dir, side: Side, new: bool) {
        let hits = match side {
            Side::Allowed(r) => {
                let Some(p) = self.slot(r.policy) else { return };
                let rules = match dir {
                    Dir::Ingress => &mut p.ingress,
                    Dir::Egress => &mut p.egress,
                };
                let i = usize::from(r.rule);
                if rules.len() <= i {
                    rules.resize(i + 1, Hits::default());
                }
                rules.get_mut(i)
            }
            Side::Denied => {
                let egress = dir == Dir::Egress;
                let Some(id) = t.pod(pod).and_then(|p| p.isolated_by(egress)) else {
                    return;
                };
                let Some(p) = self.slot(id) else { return };
                p.denied.get_mut(usize::from(egress))
            }
            Side::Open | Side::FromNode => return,
        };
        if let Some(h) = hits {
            h.packets += 1;
            h.flows += u64::from(new);
        }
    }

    /// Logs a denied flow, at most one per `LOG_EVERY_MS`.
    fn log(&mut self, t: &Tables, now_ms: u64, key: Key, dir: Dir) {
        if self.logged > 0 && now_ms < self.last_log_ms.saturating_add(LOG_EVERY_MS) {
            return;
        }
        let pod = verdict::pod_of(&key, dir);
        let d = Denied {
            seq: self.logged,
            at_ms: now_ms,
            key,
            dir,
            policy: t.pod(pod).and_then(|p| p.isolated_by(dir == Dir::Egress)),
        };
        let i = (self.logged % DENIED_LOG as u64) as usize;
        if let Some(slot) = self.denied.get_mut(i) {
            *slot = d;
        } else {
            self.denied.push(d);
        }
        self.logged += 1;
        self.last_log_ms = now_ms;
    }
}

/// The flow key of the IPv4 packet at the front of `p`, as the policy
/// checks see it, and whether the packet is an ICMP error (the key is
/// then the reverse of the packet it quotes).
pub fn key_of(p: &[u8]) -> Option<(Key, bool)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    let mut k = Key {
        proto: ip.protocol(),
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        sport: 0,
        dport: 0,
    };
    // A later fragment has no ports: it meets port-less rules only.
    if ip.frag_offset() != 0 {
        return Some((k, false));
    }
    let l4 = ip.payload();
    let port = |at: usize| {
        l4.get(at..at + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map_or(0, u16::from_be_bytes)
    };
    match k.proto {
        ip_proto::TCP | ip_proto::UDP | 132 => {
            k.sport = port(0);
            k.dport = port(2);
        }
        ip_proto::ICMP => {
            let Ok(icmp) = IcmpPacket::new_checked_v4(l4) else {
                return Some((k, false));
            };
            if icmp.is_echo() {
                k.sport = icmp.echo_ident();
                k.dport = k.sport;
            } else if icmp.is_error()
                && let Ok(q) = icmp.quoted()
                && let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (q.src, q.dst)
            {
                let (sport, dport) = match q.l4 {
                    QuotedL4::Ports { src, dst } => (src, dst),
                    QuotedL4::EchoId(id) => (id, id),
                    QuotedL4::None => (0, 0),
                };
                let quoted = Key {
                    proto: q.protocol,
                    src,
                    dst,
                    sport,
                    dport,
                };
                return Some((quoted.reversed(), true));
            }
        }
        _ => {}
    }
    Some((k, false))
}

/// An egress check begun before service DNAT ([`Worker::egress_lookup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Decided: nothing more to do.
    Done,
    /// A new flow: decide it for the destination after DNAT.
    First(Key),
}

/// Whether the packet's pod on side `dir` (its source for egress, its
/// destination for ingress) is a known pod isolated in neither direction:
/// nothing to check, not even the packet's ports.
fn open(t: &Tables, ip: &[u8], dir: Dir) -> bool {
    let at = match dir {
        Dir::Egress => 12,
        Dir::Ingress => 16,
    };
    let Some(a) = ip.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return false;
    };
    t.isolated(Ipv4Addr::from(a)) == Some((false, false))
}

fn ms(now: Duration) -> u64 {
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

impl Worker {
    /// Applies an outcome: counts it, logs a denied new flow, and says
    /// whether the packet passes.
    fn apply(
        &mut self,
        t: &Tables,
        now: Duration,
        key: &Key,
        here: Dir,
        o: Outcome,
    ) -> Result<(), Reason> {
        let Outcome::Flow {
            verdict,
            dir,
            new,
            rechecked,
        } = o
        else {
            return if o.passes() {
                Ok(())
            } else {
                Err(Reason::PolicyPending)
            };
        };
        self.policy.decided += u64::from(new);
        self.policy.rechecked += u64::from(rechecked);
        self.policy.evicted = self.policy_flows.counters().evicted;
        // The pod the verdict is about: a reply's verdict is its flow's
        // opening side, the same pod.
        let pod = verdict::pod_of(key, here);
        self.policy.count(t, pod, dir, verdict, new || rechecked);
        if verdict.allows() {
            return Ok(());
        }
        if new || rechecked {
            let k = if dir == here { *key } else { key.reversed() };
            self.policy.log(t, ms(now), k, dir);
        }
        Err(match dir {
            Dir::Egress => Reason::PolicyEgress,
            Dir::Ingress => Reason::PolicyIngress,
        })
    }

    /// Starts the egress check of a packet from pod `pod`'s own port,
    /// before any service translation: `Ok(Done)` when it passes on what is
    /// known, `Ok(First)` for a new flow ([`Worker::egress_first`] after
    /// DNAT), `Err` for a drop.
    pub(crate) fn egress_lookup(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        buf: &Buf,
    ) -> Result<Pending, Reason> {
        let t = &*snap.policy;
        if !t.enforcing() || open(t, buf.data(), Dir::Egress) {
            return Ok(Pending::Done);
        }
        let Some((key, related)) = key_of(buf.data()) else {
            return Ok(Pending::Done);
        };
        match verdict::lookup(
            t,
            &mut self.policy_flows,
            ms(now),
            &key,
            Dir::Egress,
            related,
        ) {
            Some(o) => self
                .apply(t, now, &key, Dir::Egress, o)
                .map(|()| Pending::Done),
            None => Ok(Pending::First(key)),
        }
    }

    /// Decides a new flow's egress for the destination the packet in `buf`
    /// now carries (after service DNAT).
    pub(crate) fn egress_first(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        key: Key,
        buf: &Buf,
    ) -> Result<(), Reason> {
        let t = &*snap.policy;
        let target = key_of(buf.data()).map_or((key.dst, key.dport), |(k, _)| (k.dst, k.dport));
        let o = verdict::first(
            t,
            &mut self.policy_flows,
            ms(now),
            &key,
            Dir::Egress,
            target,
        );
        self.apply(t, now, &key, Dir::Egress, o)
    }

    /// Checks a packet about to reach a local pod on this worker (after any
    /// reverse translation: the tuple the pod receives).
    pub(crate) fn police_ingress(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        buf: &Buf,
    ) -> Result<(), Reason> {
        let t = &*snap.policy;
        if !t.enforcing() || open(t, buf.data(), Dir::Ingress) {
            return Ok(());
        }
        let Some((key, related)) = key_of(buf.data()) else {
            return Ok(());
        };
        let o = verdict::check(
            t,
            &mut self.policy_flows,
            ms(now),
            &key,
            Dir::Ingress,
            related,
        );
        self.apply(t, now, &key, Dir::Ingress, o)
    }
}
