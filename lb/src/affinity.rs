//! sessionAffinity ClientIP: a client's new connections to a service port
//! go to the backend its last one went to, until `timeoutSeconds` pass
//! without a new connection (kube-proxy's nftables `update @affinity-*`
//! with the timeout, refreshed by each new connection).
//!
//! One table per worker (a pod's flows all start on its worker), of fixed
//! capacity chosen at start: no allocation per flow. A full probe window
//! evicts its stalest entry, so under pressure the oldest affinities go
//! first, as a timeout would take them.
//!
//! Bindings are keyed by the service port's name ([`port_key`]), not its
//! index in one table, so they outlive a new table and, mirrored to a state
//! file ([`AffinityTable::with_state`]), a restart of the daemon: a client
//! keeps its backend across an upgrade, as kube-proxy's clients keep theirs
//! in the kernel's `recent` lists. A restored binding is used only if it
//! names a backend the service port still has, so a corrupted file can
//! never steer a client anywhere else.

use std::net::Ipv4Addr;
use std::time::Duration;

use persist::Region;

use crate::maglev::mix;
use crate::model::PortName;
use crate::table::{Backend, Flow, ServiceTable, Verdict};

/// Slots probed per key.
const PROBE: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The service port's [`port_key`].
    port: u64,
    client: u32,
    backend: Option<Backend>,
    /// Milliseconds, same clock as `now`.
    used_ms: u64,
}

/// A worker's affinity entries.
#[derive(Debug)]
pub struct AffinityTable {
    slots: Box<[Slot]>,
    mask: usize,
    /// The state file the slots are mirrored to (one record each).
    region: Option<Region>,
}

/// The stable key of a service port: a hash of its name (namespace,
/// service, port name, protocol), the same in every table and process.
pub fn port_key(name: &PortName) -> u64 {
    let text = format!("{name}/{:?}", name.proto);
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The record layout's version.
const VERSION: u32 = 1;
const RECORD: usize = 64;

/// The state file layout for a table of `capacity` (as
/// [`AffinityTable::new`] rounds it) in boot `epoch`.
pub fn state_spec(capacity: usize, epoch: [u8; 16]) -> persist::Spec {
    persist::Spec {
        kind: "affinity",
        version: VERSION,
        record_len: RECORD,
        records: capacity.max(PROBE).next_power_of_two(),
        epoch,
        params: Vec::new(),
    }
}

fn slot_to(b: &mut [u8], s: &Slot) {
    let mut w = [0u8; 26];
    w[0..8].copy_from_slice(&s.port.to_le_bytes());
    w[8..12].copy_from_slice(&s.client.to_le_bytes());
    if let Some(be) = s.backend {
        w[12..16].copy_from_slice(&be.ip.octets());
        w[16..18].copy_from_slice(&be.port.to_le_bytes());
    }
    w[18..26].copy_from_slice(&s.used_ms.to_le_bytes());
    if let Some(d) = b.get_mut(..26) {
        d.copy_from_slice(&w);
    }
}

fn slot_from(b: &[u8]) -> Option<Slot> {
    let b: &[u8; 26] = b.get(..26)?.try_into().ok()?;
    let u64_at = |i: usize| {
        b.get(i..i + 8)
            .and_then(|x| x.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let [.., i0, i1, i2, i3, p0, p1] = *b.get(..18)?.first_chunk::<18>()?;
    let ip = Ipv4Addr::new(i0, i1, i2, i3);
    let port = u16::from_le_bytes([p0, p1]);
    // A binding to nowhere is not one.
    if ip.is_unspecified() || port == 0 {
        return None;
    }
    Some(Slot {
        port: u64_at(0)?,
        client: u32::from_le_bytes(*b.get(8..12)?.first_chunk::<4>()?),
        backend: Some(Backend { ip, port }),
        used_ms: u64_at(18)?,
    })
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
            region: None,
        }
    }

    /// A table of `capacity` mirrored to `region` (laid out by
    /// [`state_spec`] for the same capacity): the bindings it holds that
    /// decode and are in their home window are taken back (those used
    /// before `now` minus `max_age` are not), and every change is written
    /// through. Returns the table and how many bindings came back.
    pub fn with_state(
        capacity: usize,
        mut region: Region,
        now: Duration,
        max_age: Duration,
    ) -> (AffinityTable, usize) {
        let mut t = AffinityTable::new(capacity);
        let mut back = 0;
        let oldest = ms(now).saturating_sub(ms(max_age));
        // Up to the writer's high-water mark (a sparse file's untouched
        // rest is never faulted in).
        for i in 0..t.slots.len().min(region.mark()) {
            let Some(rec) = region.record_mut(i) else {
                continue;
            };
            let s = persist::read(rec).and_then(slot_from);
            // In the window its key probes, and fresh enough.
            let fits = s.is_some_and(|s| {
                let h = t.home(s.port, Ipv4Addr::from(s.client));
                (i.wrapping_sub(h) & t.mask) < PROBE && s.used_ms >= oldest && s.used_ms <= ms(now)
            });
            match (s, fits) {
                (Some(s), true) => {
                    if let Some(d) = t.slots.get_mut(i) {
                        *d = s;
                        back += 1;
                    }
                }
                _ => persist::clear(rec),
            }
        }
        t.region = Some(region);
        (t, back)
    }

    /// Writes slot `at` through to the state file.
    fn sync(&mut self, at: usize) {
        if let (Some(r), Some(s)) = (self.region.as_mut(), self.slots.get(at)) {
            r.raise_mark(at + 1);
            if let Some(rec) = r.record_mut(at) {
                if s.backend.is_some() {
                    persist::write(rec, |b| slot_to(b, s));
                } else {
                    persist::clear(rec);
                }
            }
        }
    }

    fn home(&self, port: u64, client: Ipv4Addr) -> usize {
        (mix(port.rotate_left(32) ^ u64::from(u32::from(client))) as usize) & self.mask
    }

    /// The backend `client` is bound to on `port`, if the binding is younger
    /// than `timeout`; a hit refreshes it (it is a new connection).
    pub fn get(
        &mut self,
        now: Duration,
        port: u64,
        client: Ipv4Addr,
        timeout: Duration,
    ) -> Option<Backend> {
        let now_ms = ms(now);
        let h = self.home(port, client);
        let c = u32::from(client);
        for i in 0..PROBE {
            let at = (h + i) & self.mask;
            let Some(s) = self.slots.get_mut(at) else {
                continue;
            };
            if s.backend.is_some() && s.port == port && s.client == c {
                let b = if now_ms.saturating_sub(s.used_ms) >= ms(timeout) {
                    s.backend = None;
                    None
                } else {
                    s.used_ms = now_ms;
                    s.backend
                };
                self.sync(at);
                return b;
            }
        }
        None
    }

    /// Binds `client` to `backend` on `port` from `now`.
    pub fn set(&mut self, now: Duration, port: u64, client: Ipv4Addr, backend: Backend) {
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
        self.sync(victim);
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
        let Some((timeout, key)) = self
            .port(port)
            .and_then(|p| p.spec.affinity.map(|t| (t, p.key)))
        else {
            return v;
        };
        let crate::table::Lookup::Service(c) = self.lookup(f.src, f.dst, f.proto, f.dport) else {
            return v;
        };
        if let Some(b) = affinity.get(now, key, f.src, timeout)
            && c.set.contains(b)
        {
            return Verdict::Dnat {
                port,
                backend: b,
                masquerade: c.masquerade || b.ip == f.src,
            };
        }
        affinity.set(now, key, f.src, backend);
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

    fn spec() -> persist::Spec {
        state_spec(64, [3; 16])
    }

    /// Bindings written through to the state file come back in a new
    /// table (a restarted daemon), with their times; stale, corrupted and
    /// misplaced records do not.
    #[test]
    fn bindings_outlive_the_table_through_its_state_file() {
        let s = Duration::from_secs;
        let to = Duration::from_secs(10_800);
        let region = Region::anonymous(&spec()).unwrap();
        let (mut t, back) = AffinityTable::with_state(64, region, s(1000), to);
        assert_eq!(back, 0);
        let clients: Vec<Ipv4Addr> = (1..=20).map(|i| Ipv4Addr::new(10, 244, 2, i)).collect();
        for (i, c) in clients.iter().enumerate() {
            t.set(s(1000), 77, *c, b(i as u8));
        }
        t.set(s(1000), 78, clients[0], b(99));
        // An expired binding is cleared in the file too.
        assert_eq!(t.get(s(1000) + to, 78, clients[0], to), None);
        let bytes = t.region.as_ref().unwrap().bytes().to_vec();
        let region = Region::from_bytes(&spec(), &bytes).unwrap();
        let (mut t2, back) = AffinityTable::with_state(64, region, s(1010), to);
        assert_eq!(back, 20);
        for (i, c) in clients.iter().enumerate() {
            assert_eq!(t2.get(s(1010), 77, *c, to), Some(b(i as u8)), "client {c}");
        }
        assert_eq!(t2.get(s(1010), 78, clients[0], to), None);
        // Older than the longest timeout: not taken back.
        let region = Region::from_bytes(&spec(), &bytes).unwrap();
        let (_, back) = AffinityTable::with_state(64, region, s(1000) + to + s(1), to);
        assert_eq!(back, 0);
        // A record moved out of its key's probe window, and one naming
        // address 0.0.0.0: refused.
        let mut bad = bytes.clone();
        let rec = |i: usize| persist::HEADER_LEN + i * RECORD;
        let used: Vec<usize> = (0..64)
            .filter(|i| persist::read(&bytes[rec(*i)..rec(*i) + RECORD]).is_some())
            .collect();
        let (a, z) = (used[0], (used[0] + 32) % 64);
        bad.copy_within(rec(a)..rec(a) + RECORD, rec(z));
        let other = used[1];
        persist::write(&mut bad[rec(other)..rec(other) + RECORD], |b| {
            b[12..16].fill(0)
        });
        let region = Region::from_bytes(&spec(), &bad).unwrap();
        let (_, back) = AffinityTable::with_state(64, region, s(1010), to);
        // 20 good, less the zero backend, less the binding the copy landed
        // on (if it landed on one); the copy itself is refused.
        let expect = 19 - usize::from(used.contains(&z));
        assert_eq!(
            back, expect,
            "the misplaced copy and the zero backend are refused"
        );
    }

    /// Random records never panic, and whatever they restore, a service
    /// only ever sends a client to one of its own backends.
    #[test]
    fn random_records_never_send_a_client_outside_the_service() {
        use crate::model::{Endpoint, NodeFacts, PortName, Proto, ServicePort};
        use rand::RngExt;
        let backends = [b(1), b(2), b(3)];
        let port = ServicePort {
            affinity: Some(Duration::from_secs(10_800)),
            endpoints: backends
                .iter()
                .map(|x| Endpoint::ready(x.ip, x.port, false))
                .collect(),
            ..ServicePort::cluster_ip(
                PortName {
                    namespace: "ns".into(),
                    service: "svc".into(),
                    port: String::new(),
                    proto: Proto::Tcp,
                },
                Ipv4Addr::new(10, 96, 0, 10),
                80,
            )
        };
        let facts = NodeFacts {
            name: "n1".into(),
            zone: None,
            node_ips: vec![Ipv4Addr::new(192, 168, 0, 2)],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        };
        let table = ServiceTable::new(facts, [port]);
        let key = table.port(0).unwrap().key;
        let mut rng = rand::rng();
        for _ in 0..50 {
            let mut region = Region::anonymous(&spec()).unwrap();
            let n = region.records();
            region.raise_mark(n);
            for i in 0..n {
                let rec = region.record_mut(i).unwrap();
                persist::write(rec, |b| {
                    rng.fill(&mut b[..]);
                    // Some records under the service's key and our client.
                    if rng.random_bool(0.5) {
                        b[0..8].copy_from_slice(&key.to_le_bytes());
                        b[8..12].copy_from_slice(
                            &u32::from(Ipv4Addr::new(10, 244, 2, 9)).to_le_bytes(),
                        );
                        b[18..26].copy_from_slice(&1_000_000u64.to_le_bytes());
                    }
                });
            }
            let now = Duration::from_secs(1000);
            let (mut t, _) =
                AffinityTable::with_state(64, region, now, Duration::from_secs(10_800));
            let f = Flow {
                src: Ipv4Addr::new(10, 244, 2, 9),
                dst: Ipv4Addr::new(10, 96, 0, 10),
                proto: 6,
                sport: 40000,
                dport: 80,
            };
            match table.decide_with_affinity(&mut t, now, &f) {
                Verdict::Dnat { backend, .. } => {
                    assert!(backends.contains(&backend), "{backend:?}")
                }
                v => panic!("{v:?}"),
            }
        }
    }
}
