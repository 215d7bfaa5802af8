//! The `service_objects` fuzz target's body (replayed by
//! `tests/fuzz_regressions.rs`): bytes become Service and EndpointSlice
//! objects, well-formed or not (arbitrary addresses, ports, protocols,
//! conditions, names, labels; and raw bytes read as JSON), applied,
//! changed and deleted through [`ServiceCache`], with the updates applied
//! to a service table. After every step:
//! - nothing panicked on any object;
//! - the table built from the updates answers as the table built from
//!   scratch from the cache's current ports ([`ServiceCache::all_ports`]):
//!   the increments lose nothing and leave nothing behind.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use lb::{NodeFacts, ServicePort, ServiceTable};
use serde_json::{Value, json};

use crate::services::ServiceCache;

/// What a run reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exercised {
    /// Services applied (decoded).
    pub services: u32,
    /// Slices applied.
    pub slices: u32,
    /// Deletions.
    pub deletes: u32,
    /// Raw JSON decoded into an object.
    pub raw_decoded: u32,
    /// Ports published non-empty.
    pub ports: u32,
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn addr(b: u8) -> Value {
    match b % 8 {
        0 => json!(format!("10.96.0.{}", b / 8)),
        1 => json!(format!("10.244.{}.{}", b / 64, b % 64)),
        2 => json!("None"),
        3 => json!(format!("fd00::{b}")),
        4 => json!(""),
        5 => json!("10.96.0.300"),
        6 => json!(format!("192.168.99.{}", b / 8)),
        _ => json!(" 10.96.0.1"),
    }
}

fn proto(b: u8) -> Value {
    match b % 5 {
        0 => json!("TCP"),
        1 => json!("UDP"),
        2 => json!("SCTP"),
        3 => Value::Null,
        _ => json!("tcp"),
    }
}

fn port(b: u8) -> Value {
    match b % 6 {
        0 => json!(53),
        1 => json!(80),
        2 => json!(0),
        3 => json!(70000),
        4 => json!(-1),
        _ => json!(8080),
    }
}

#[allow(
    clippy::indexing_slicing,
    reason = "indices are taken modulo the arrays' lengths"
)]
fn service(r: &mut Bytes<'_>) -> Value {
    let (name, ty, flags) = (r.byte() % 4, r.byte(), r.byte());
    let mut spec = json!({
        "type": (["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"][usize::from(ty % 4)]),
        "clusterIP": addr(r.byte()),
        "ports": (0..r.byte() % 3).map(|i| json!({
            "name": (["", "dns", "http"][usize::from(i) % 3]),
            "protocol": proto(r.byte()), "port": port(r.byte()),
            "nodePort": if flags & 1 != 0 { json!(30000 + u32::from(r.byte())) } else { Value::Null },
        })).collect::<Vec<_>>(),
    });
    if flags & 2 != 0 {
        spec["externalIPs"] = json!([addr(r.byte())]);
    }
    if flags & 4 != 0 {
        spec["externalTrafficPolicy"] = json!("Local");
        spec["internalTrafficPolicy"] = json!("Local");
    }
    if flags & 8 != 0 {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] =
            json!({"clientIP": {"timeoutSeconds": i32::from(r.byte()) - 10}});
    }
    if flags & 16 != 0 {
        spec["loadBalancerSourceRanges"] = json!(["203.0.113.0/25", "bad", " 10.0.0.0/8"]);
    }
    let mut meta = json!({"namespace": "ns", "name": format!("s{name}")});
    if flags & 32 != 0 {
        meta["labels"] = json!({"service.kubernetes.io/service-proxy-name": "other"});
    }
    let status = json!({"loadBalancer": {"ingress": [{"ip": addr(r.byte()), "ipMode": if flags & 64 != 0 { "Proxy" } else { "VIP" }}]}});
    json!({"metadata": meta, "spec": spec, "status": status})
}

#[allow(
    clippy::indexing_slicing,
    reason = "indices are taken modulo the arrays' lengths"
)]
fn slice(r: &mut Bytes<'_>) -> Value {
    let (svc, name, at) = (r.byte() % 4, r.byte() % 3, r.byte());
    json!({
        "metadata": {"namespace": "ns", "name": format!("e{name}"),
                     "labels": {"kubernetes.io/service-name": format!("s{svc}")}},
        "addressType": (["IPv4", "IPv6", "FQDN"][usize::from(at % 3)]),
        "ports": (0..r.byte() % 3).map(|i| json!({
            "name": (["", "dns", "http"][usize::from(i) % 3]),
            "protocol": proto(r.byte()), "port": port(r.byte()),
        })).collect::<Vec<_>>(),
        "endpoints": (0..r.byte() % 4).map(|_| {
            let c = r.byte();
            json!({
                "addresses": [addr(r.byte())],
                "nodeName": if c & 1 != 0 { "node-a" } else { "node-b" },
                "conditions": {
                    "ready": if c & 2 != 0 { json!(c & 4 != 0) } else { Value::Null },
                    "serving": if c & 8 != 0 { json!(c & 16 != 0) } else { Value::Null },
                    "terminating": json!(c & 32 != 0),
                },
            })
        }).collect::<Vec<_>>(),
    })
}

fn facts() -> NodeFacts {
    NodeFacts {
        name: "node-a".into(),
        ..NodeFacts::default()
    }
}

fn ports_of(t: &ServiceTable) -> BTreeMap<String, ServicePort> {
    t.ports()
        .map(|(_, p)| (p.spec.name.to_string(), p.spec.clone()))
        .collect()
}

/// Runs the operations `data` encodes; panics if an invariant breaks.
#[allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a fuzz harness: a broken invariant must crash the fuzzer; indices are taken modulo the array lengths"
)]
pub fn service_objects(data: &[u8]) -> Exercised {
    let mut ex = Exercised::default();
    // Raw bytes as objects: never a panic.
    if let Ok(s) = serde_json::from_slice::<Service>(data) {
        ex.raw_decoded += 1;
        let _ = crate::services::service_ports(&s, &[], "node-a");
    }
    if let Ok(s) = serde_json::from_slice::<EndpointSlice>(data) {
        ex.raw_decoded += 1;
        let mut c = ServiceCache::new("node-a");
        let _ = c.apply_slice(s);
    }
    let mut r = Bytes(data);
    let mut cache = ServiceCache::new("node-a");
    let mut table = ServiceTable::new(facts(), []);
    while !r.done() {
        let op = r.byte();
        let u = match op % 5 {
            0 | 1 => match serde_json::from_value::<Service>(service(&mut r)) {
                Ok(s) => {
                    ex.services += 1;
                    cache.apply_service(s)
                }
                Err(_) => continue,
            },
            2 | 3 => match serde_json::from_value::<EndpointSlice>(slice(&mut r)) {
                Ok(s) => {
                    ex.slices += 1;
                    cache.apply_slice(s)
                }
                Err(_) => continue,
            },
            _ => {
                ex.deletes += 1;
                let k = ("ns".to_string(), format!("s{}", r.byte() % 4));
                if op & 0x80 != 0 {
                    cache.delete_slice(&("ns".to_string(), format!("e{}", r.byte() % 3)))
                } else {
                    cache.delete_service(&k)
                }
            }
        };
        ex.ports += u.upserts.len() as u32;
        table = table.update(u.upserts, &u.removes);
        let fresh = ServiceTable::new(facts(), cache.all_ports());
        let (a, b) = (ports_of(&table), ports_of(&fresh));
        if a != b {
            panic!(
                "incremental table differs from the rebuilt one: {:?} vs {:?}",
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>()
            );
        }
    }
    ex
}
