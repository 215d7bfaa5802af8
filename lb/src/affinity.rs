//! sessionAffinity ClientIP: a client's new connections to a service port
//! go to the backend its last one went to, until `timeoutSeconds` pass
//! without a new connection (kube-proxy's nftables `update @affinity-*`
//! with the timeout, refreshed by each new connection).
//!
//! One table per worker (a pod's flows all start on its worker), of fixed
//! capacity chosen at start: no allocation per flow. A full probe window
//! evicts its stalest entry, so under pressure the oldest affinities go
//! first, as a timeout would take them.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::maglev::mix;
use crate::table::{Backend, Flow, PortId, ServiceTable, Verdict};

/// Slots probed per key.
const PROBE: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    port: PortId,
    client: u32,
    backend: Option<Backend>,
    /// Milliseconds, same clock as `now`.
    used_ms: u64,
}

/// A worker's affinity entries.
#[derive(Clone, Debug)]
pub struct AffinityTable {
    slots: Box<[Slot]>,
    mask: usize,
}

fn ms(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

impl AffinityTable {
    /// Room for about `capacity` clients (rounded up to a power of two).
    pub fn new(capacity: usize) -> AffinityTable {
        let n = capacity.max(PROBE).next_power_of_two();
        AffinityTable {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n - 1,
        }
    }

    fn home(&self, port: PortId, client: Ipv4Addr) -> usize {
        (mix(u64::from(port) << 32 | u64::from(u32::from(client))) as usize) & self.mask
    }

    /// The backend `client` is bound to on `port`, if the binding is younger
    /// than `timeout`; a hit refreshes it (it is a new connection).
    pub fn get(
        &mut self,
        now: Duration,
        port: PortId,
        client: Ipv4Addr,
        timeout: Duration,
    ) -> Option<Backend> {
        let now_ms = ms(now);
        let h = self.home(port, client);
        let c = u32::from(client);
        for i in 0..PROBE {
            let Some(s) = self.slots.get_mut((h + i) & self.mask) else {
                continue;
            };
            if s.backend.is_some() && s.port == port && s.client == c {
                if now_ms.saturating_sub(s.used_ms) >= ms(timeout) {
                    s.backend = None;
                    return None;
                }
                s.used_ms = now_ms;
                return s.backend;
            }
        }
        None
    }

    /// Binds `client` to `backend` on `port` from `now`.
    pub fn set(&mut self, now: Duration, port: PortId, client: Ipv4Addr, backend: Backend) {
        let h = self.home(port, client);
        let c = u32::from(client);
        let mut victim = h;
        let mut oldest = u64::MAX;
        for i in 0..PROBE {
            let at = (h + i) & self.mask;
            let Some(s) = self.slots.get(at) else {
                continue;
            };
            if s.backend.is_none() || (s.port == port && s.client == c) {
                victim = at;
                break;
            }
            if s.used_ms < oldest {
                oldest = s.used_ms;
                victim = at;
            }
        }
        if let Some(s) = self.slots.get_mut(victim) {
            *s = Slot {
                port,
                client: c,
                backend: Some(backend),
                used_ms: ms(now),
            };
        }
    }

    /// Live bindings (for `sluice services` and tests).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.backend.is_some()).count()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ServiceTable {
    /// [`ServiceTable::decide`] with session affinity: a client bound to a
    /// backend that still serves it keeps it; otherwise Maglev chooses and
    /// the choice is bound.
    pub fn decide_with_affinity(
        &self,
        affinity: &mut AffinityTable,
        now: Duration,
        f: &Flow,
    ) -> Verdict {
        let v = self.decide(f);
        let Verdict::Dnat {
            port,
            backend,
            masquerade,
        } = v
        else {
            return v;
        };
        let Some(timeout) = self.port(port).and_then(|p| p.spec.affinity) else {
            return v;
        };
        let crate::table::Lookup::Service(c) = self.lookup(f.src, f.dst, f.proto, f.dport) else {
            return v;
        };
        if let Some(b) = affinity.get(now, port, f.src, timeout)
            && c.set.contains(b)
        {
            return Verdict::Dnat {
                port,
                backend: b,
                masquerade: c.masquerade || b.ip == f.src,
            };
        }
        affinity.set(now, port, f.src, backend);
        Verdict::Dnat {
            port,
            backend,
            masquerade,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> Backend {
        Backend {
            ip: Ipv4Addr::new(10, 244, 1, n),
            port: 80,
        }
    }

    /// A binding lives until `timeout` passes without a new connection,
    /// each hit refreshing it; bindings are per (port, client); a full
    /// probe window evicts its stalest entry, never a fresher one.
    #[test]
    fn bindings_expire_refresh_and_evict_the_stalest() {
        let mut t = AffinityTable::new(8);
        let (c, to) = (Ipv4Addr::new(10, 244, 2, 9), Duration::from_secs(10));
        let s = Duration::from_secs;
        assert!(t.is_empty());
        t.set(s(100), 1, c, b(1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(s(109), 1, c, to), Some(b(1)), "within the timeout");
        assert_eq!(t.get(s(118), 1, c, to), Some(b(1)), "refreshed at 109");
        assert_eq!(t.get(s(118), 2, c, to), None, "another port");
        assert_eq!(t.get(s(118), 1, Ipv4Addr::new(10, 244, 2, 8), to), None);
        assert_eq!(t.get(s(128), 1, c, to), None, "10 s without a connection");
        assert!(t.is_empty(), "the expired binding is gone");
        // Rebinding a client replaces its entry in place.
        t.set(s(200), 1, c, b(2));
        t.set(s(201), 1, c, b(3));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(s(202), 1, c, to), Some(b(3)));
        // Eight slots: nine clients evict exactly one, the stalest.
        let mut t = AffinityTable::new(8);
        for i in 0..9u8 {
            t.set(s(300 + u64::from(i)), 1, Ipv4Addr::new(10, 0, 0, i), b(i));
        }
        assert_eq!(t.len(), 8);
        let kept: Vec<bool> = (0..9u8)
            .map(|i| t.get(s(309), 1, Ipv4Addr::new(10, 0, 0, i), to).is_some())
            .collect();
        assert_eq!(kept.iter().filter(|k| !**k).count(), 1, "{kept:?}");
        assert!(kept[8], "the newest stays");
        assert!(!kept[0], "the stalest went: {kept:?}");
    }
}
