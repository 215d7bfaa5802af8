//! The verdict for one packet of a local pod: from the flow's entry
//! ([`crate::flows`]) when it has one decided under the current policy
//! generation, else decided now from the compiled tables and recorded.
//! What a worker calls for a pod's egress and for its ingress.
//!
//! A worker looks a packet up by the tuple its pod sees
//! ([`lookup`]); a packet of no known flow is decided by [`first`] for the
//! destination after service DNAT. [`check`] is both, for a packet whose
//! destination is not translated.

use std::net::Ipv4Addr;

use crate::compile::{Side, Tables};
use crate::flows::{Dir, FlowTable, Key};

/// How long an entry lives without packets, by IP protocol (ms). TCP's
/// is long: a reply after a quiet hour must still find its flow.
pub fn idle_ms(proto: u8) -> u64 {
    match proto {
        6 | 132 => 24 * 3600 * 1000,
        17 => 180 * 1000,
        1 => 30 * 1000,
        _ => 600 * 1000,
    }
}

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pod is isolated in neither direction: passes, nothing recorded.
    Open,
    /// Policies exist and the pod's labels are not known yet: held back
    /// (a pod is isolated before its first packet).
    Pending,
    /// The flow's verdict.
    Flow {
        /// What was decided, for the side in `dir`.
        verdict: Side,
        /// The side the verdict is for (a reply's is the other side's:
        /// the direction that opened the flow).
        dir: Dir,
        /// Decided at this packet (a flow's first packet).
        new: bool,
        /// Decided again at this packet (the policy generation changed).
        rechecked: bool,
    },
}

impl Outcome {
    /// Whether the packet passes.
    pub fn passes(&self) -> bool {
        match self {
            Outcome::Open => true,
            Outcome::Pending => false,
            Outcome::Flow { verdict, .. } => verdict.allows(),
        }
    }
}

/// `k`'s local pod in direction `dir`.
pub fn pod_of(k: &Key, dir: Dir) -> Ipv4Addr {
    match dir {
        Dir::Egress => k.src,
        Dir::Ingress => k.dst,
    }
}

/// Decides a flow from `k.src` to `target` for the side `dir` of its pod
/// (an ingress verdict's target is the pod itself).
pub fn decide(t: &Tables, k: &Key, dir: Dir, (dst, port): (Ipv4Addr, u16)) -> Side {
    match dir {
        Dir::Egress => t.egress(k.src, dst, k.proto, port),
        Dir::Ingress => t.ingress(k.src, dst, k.proto, port),
    }
}

/// The verdict for a packet with key `k` (as its local pod sees it)
/// crossing that pod in `dir` at `now_ms`, from what is known: `None`
/// when it opens a new flow ([`first`] decides it). `related`: an ICMP
/// error, with `k` the reverse of the packet it quotes; it passes only as
/// a reply to a flow that passes.
#[inline]
pub fn lookup(
    t: &Tables,
    flows: &mut FlowTable,
    now_ms: u64,
    k: &Key,
    dir: Dir,
    related: bool,
) -> Option<Outcome> {
    if !t.enforcing() {
        return Some(Outcome::Open);
    }
    match t.isolated(pod_of(k, dir)) {
        None => return Some(Outcome::Pending),
        Some((false, false)) => return Some(Outcome::Open),
        Some(_) => {}
    }
    let denied = Outcome::Flow {
        verdict: Side::Denied,
        dir,
        new: false,
        rechecked: false,
    };
    let generation = t.generation();
    match flows.find(now_ms, k, dir) {
        Some(hit) if related && !hit.reply => Some(denied),
        Some(hit) => {
            let stale = hit.generation != generation;
            let verdict = if stale {
                let (key, target) = flows
                    .decided_for(hit.slot)
                    .unwrap_or((*k, (k.dst, k.dport)));
                let v = decide(t, &key, hit.dir, target);
                flows.update(hit.slot, v, generation);
                v
            } else {
                hit.verdict
            };
            if verdict.allows() {
                flows.refresh(hit.slot, now_ms, idle_ms(k.proto));
            }
            Some(Outcome::Flow {
                verdict,
                dir: hit.dir,
                new: false,
                rechecked: stale,
            })
        }
        None if related => Some(denied),
        None => None,
    }
}

/// Decides the first packet of a flow ([`lookup`] said `None`) for the
/// destination `target` (after service DNAT) and records the verdict
/// under `k`.
pub fn first(
    t: &Tables,
    flows: &mut FlowTable,
    now_ms: u64,
    k: &Key,
    dir: Dir,
    target: (Ipv4Addr, u16),
) -> Outcome {
    let verdict = decide(t, k, dir, target);
    flows.insert(
        now_ms,
        k,
        dir,
        target,
        verdict,
        t.generation(),
        idle_ms(k.proto),
    );
    Outcome::Flow {
        verdict,
        dir,
        new: true,
        rechecked: false,
    }
}

/// [`lookup`], then [`first`] for an untranslated destination.
pub fn check(
    t: &Tables,
    flows: &mut FlowTable,
    now_ms: u64,
    k: &Key,
    dir: Dir,
    related: bool,
) -> Outcome {
    lookup(t, flows, now_ms, k, dir, related)
        .unwrap_or_else(|| first(t, flows, now_ms, k, dir, (k.dst, k.dport)))
}
