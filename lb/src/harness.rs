//! The `lb_table` fuzz target's body (also replayed by
//! `tests/fuzz_regressions.rs`): bytes drive a sequence of service table
//! updates (ports added, changed, removed, with arbitrary frontends,
//! policies and endpoint conditions) and first-packet decisions, and check
//! after every step:
//! - a decision is consistent with the lookup it rests on: a DNAT goes to
//!   a backend of the allowed set, which serves the port, with masquerade
//!   exactly when the lookup said so or the client is the backend;
//!   session affinity never picks outside the set;
//! - the incrementally updated table answers every probe as a table built
//!   from scratch from the same ports does, steers the same frontends and
//!   names the same Local-policy backends.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::affinity::AffinityTable;
use crate::model::{Endpoint, NodeFacts, PortName, Proto, ServicePort};
use crate::table::{Backend, Flow, Lookup, ServiceTable, Verdict};

/// What a run reached (the corpus test checks each is reached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exercised {
    /// Ports added or changed.
    pub upserts: u32,
    /// Ports removed.
    pub removes: u32,
    /// Decisions by outcome.
    pub dnat: u32,
    /// Rejections.
    pub reject: u32,
    /// Drops.
    pub drop: u32,
    /// Not a service.
    pub not_service: u32,
    /// Incremental-versus-rebuilt comparisons.
    pub rebuilds: u32,
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }
}

fn facts() -> NodeFacts {
    NodeFacts {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        node_ips: vec![Ipv4Addr::new(192, 168, 0, 2)],
        cluster_cidrs: vec![
            ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
        ],
        service_cidrs: vec![
            ipnet::Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default(),
        ],
    }
}

/// The addresses the run draws from: service addresses, node addresses,
/// pods, external clients.
fn addr(b: u8) -> Ipv4Addr {
    match b % 8 {
        0 | 1 => Ipv4Addr::new(10, 96, 0, 1 + b / 8 % 8),
        2 => Ipv4Addr::new(192, 168, 0, 2 + b / 8 % 2),
        3 | 4 => Ipv4Addr::new(10, 244, 1 + b / 8 % 2, 2 + b / 16 % 4),
        5 => Ipv4Addr::new(203, 0, 113, b),
        6 => Ipv4Addr::new(1, 2, 3, 4 + b / 8 % 2),
        _ if b & 8 != 0 => Ipv4Addr::new(192, 168, 99, b / 16 % 2),
        _ => Ipv4Addr::new(10, 111, 0, b / 16),
    }
}

fn proto(b: u8) -> Proto {
    match b % 3 {
        0 => Proto::Tcp,
        1 => Proto::Udp,
        _ => Proto::Sctp,
    }
}

fn port_spec(r: &mut Bytes<'_>) -> ServicePort {
    let (name, flags) = (r.byte(), r.byte());
    let p = proto(r.byte());
    let mut s = ServicePort::cluster_ip(
        PortName {
            namespace: "fuzz".into(),
            service: format!("s{}", name % 8),
            port: format!("p{}", name / 8 % 2),
            proto: p,
        },
        Ipv4Addr::new(10, 96, 0, 1 + r.byte() % 8),
        if flags & 1 == 0 { 53 } else { 80 },
    );
    if flags & 2 != 0 {
        s.node_port = Some(30000 + u16::from(r.byte() % 4));
    }
    if flags & 4 != 0 {
        s.external_ips = vec![Ipv4Addr::new(192, 168, 99, r.byte() % 2)];
    }
    if flags & 8 != 0 {
        s.load_balancer_ips = vec![Ipv4Addr::new(1, 2, 3, 4 + r.byte() % 2)];
        if flags & 16 != 0 {
            s.source_ranges =
                vec![ipnet::Ipv4Net::new(Ipv4Addr::new(203, 0, 113, 0), 25).unwrap_or_default()];
        }
    }
    s.internal_local = flags & 32 != 0;
    s.external_local = flags & 64 != 0;
    s.affinity = (flags & 128 != 0).then(|| Duration::from_secs(u64::from(r.byte() % 4)));
    for _ in 0..r.byte() % 5 {
        let (a, c) = (r.byte(), r.byte());
        s.endpoints.push(Endpoint {
            ip: Ipv4Addr::new(10, 244, 1 + a % 2, 2 + a / 2 % 4),
            port: 8080 + u16::from(c >> 6),
            ready: c & 1 != 0,
            serving: c & 2 != 0,
            terminating: c & 4 != 0,
            local: c & 8 != 0,
            zone_hints: if c & 16 != 0 {
                vec!["zone-a".into()]
            } else {
                Vec::new()
            },
            node_hints: if c & 32 != 0 {
                vec!["node-a".into()]
            } else {
                Vec::new()
            },
        });
    }
    s
}

/// A lookup's outcome in comparable form.
fn outcome(t: &ServiceTable, src: Ipv4Addr, dst: Ipv4Addr, p: u8, port: u16) -> String {
    match t.lookup(src, dst, p, port) {
        Lookup::NotService => "none".into(),
        Lookup::Reject(r) => format!("reject {r:?}"),
        Lookup::Drop(d) => format!("drop {d:?}"),
        Lookup::Service(c) => {
            let mut b: Vec<Backend> = c.set.backends.clone();
            b.sort();
            format!("{} {:?} {} {b:?}", c.port.spec.name, c.kind, c.masquerade)
        }
    }
}

/// Runs the operations `data` encodes; panics if an invariant breaks.
#[allow(
    clippy::panic,
    reason = "a fuzz harness: a broken invariant must crash the fuzzer"
)]
pub fn table_ops(data: &[u8]) -> Exercised {
    let mut r = Bytes(data);
    let mut ex = Exercised::default();
    let mut ports: BTreeMap<PortName, ServicePort> = BTreeMap::new();
    let mut t = ServiceTable::new(facts(), []);
    let mut aff = AffinityTable::new(64);
    let mut now = Duration::from_secs(1);
    while let Some(op) = r.next() {
        match op % 4 {
            0 => {
                let s = port_spec(&mut r);
                ports.insert(s.name.clone(), s.clone());
                t = t.update([s], &[]);
                ex.upserts += 1;
            }
            1 => {
                let b = r.byte();
                let name = ports
                    .keys()
                    .nth(usize::from(b) % ports.len().max(1))
                    .cloned();
                if let Some(n) = name {
                    ports.remove(&n);
                    t = t.update([], &[n]);
                    ex.removes += 1;
                }
            }
            2 => {
                let f = Flow {
                    src: addr(r.byte()),
                    dst: addr(r.byte()),
                    proto: proto(r.byte()).number(),
                    sport: u16::from(r.byte()),
                    dport: match r.byte() % 4 {
                        0 => 53,
                        1 => 80,
                        2 => 30000 + u16::from(r.byte() % 4),
                        _ => 8080,
                    },
                };
                now += Duration::from_millis(u64::from(r.byte()) * 20);
                let plain = t.decide(&f);
                let sticky = t.decide_with_affinity(&mut aff, now, &f);
                for v in [plain, sticky] {
                    match (t.lookup(f.src, f.dst, f.proto, f.dport), v) {
                        (
                            Lookup::Service(c),
                            Verdict::Dnat {
                                port,
                                backend,
                                masquerade,
                            },
                        ) => {
                            assert_eq!(port, c.id);
                            assert!(c.set.contains(backend), "{backend} outside the set");
                            assert!(c.port.serves(backend), "{backend} does not serve");
                            assert_eq!(masquerade, c.masquerade || backend.ip == f.src);
                        }
                        (Lookup::Reject(a), Verdict::Reject(b)) => assert_eq!(a, b),
                        (Lookup::Drop(a), Verdict::Drop(b)) => assert_eq!(a, b),
                        (Lookup::NotService, Verdict::NotService) => {}
                        (l, v) => panic!("lookup {l:?} but verdict {v:?}"),
                    }
                }
                match plain {
                    Verdict::Dnat { .. } => ex.dnat += 1,
                    Verdict::Reject(_) => ex.reject += 1,
                    Verdict::Drop(_) => ex.drop += 1,
                    Verdict::NotService => ex.not_service += 1,
                }
                // Maglev's choice depends on the flow only.
                assert_eq!(t.decide(&f), plain);
            }
            _ => {
                let fresh = ServiceTable::new(facts(), ports.values().cloned());
                assert_eq!(fresh.len(), t.len());
                for a in 0..32u8 {
                    for src in [addr(3), addr(5), addr(2)] {
                        for p in [Proto::Tcp, Proto::Udp] {
                            for port in [53, 80, 30000, 30001, 30002, 30003] {
                                let dst = addr(a);
                                assert_eq!(
                                    outcome(&t, src, dst, p.number(), port),
                                    outcome(&fresh, src, dst, p.number(), port),
                                    "{src} -> {dst}:{port}"
                                );
                            }
                        }
                    }
                }
                // What the uplink steers and the Local-policy backends
                // (kept incrementally) match the rebuilt table's, and a
                // frontend is steered exactly when it answers outside.
                assert_eq!(t.steered(), fresh.steered());
                for a in 0..8u8 {
                    for port in 8080..8084u16 {
                        let ep = Ipv4Addr::new(10, 244, 1 + a % 2, 2 + a / 2 % 4);
                        for p in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
                            assert_eq!(
                                t.external_local_backend(ep, p.number(), port),
                                fresh.external_local_backend(ep, p.number(), port),
                                "{ep}:{port}"
                            );
                        }
                    }
                }
                for (ip, p, port) in t.steered() {
                    assert!(
                        t.is_frontend(ip, p, port),
                        "{ip}:{port} steered, no frontend"
                    );
                }
                ex.rebuilds += 1;
            }
        }
    }
    ex
}
