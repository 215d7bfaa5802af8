//! Services on the worker's per-packet path, over replaying ports (no I/O),
//! with 10, 1,000 and 10,000 services in the table:
//! - `worker_burst32/pod_to_service/N`: a pod's established UDP flows to 32
//!   different ClusterIPs (spread over the table), DNATed to backends on a
//!   peer node and VXLAN-encapsulated; beside it in the same run the same
//!   traffic sent straight to the backend (`pod_to_peer_encap`) and a pod's
//!   established SNAT flows (`pod_to_outside_snat`): the service's cost is
//!   the difference, per packet.
//! - `lb_decide/N`: the first packet's decision alone (frontend lookup,
//!   policy, Maglev), as conntrack asks it once per new flow.
//! - `service_table/build/N` and `update_one/N`: the control side, a whole
//!   table and one endpoint change (what the workers see next).
//!
//! `cargo bench -p sluice-benches --bench services`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use dataplane::route::{PeerSpec, Routes};
use dataplane::worker::Worker;
use encap::MacAddr;
use lb::{Endpoint, NodeFacts, PortName, Proto, ServicePort, ServiceTable};
use nat::ConntrackConfig;
use sluice_benches::replay;

const SIZES: [u32; 3] = [10, 1000, 10_000];

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + i)
}

fn backend(i: u32, k: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 2, (2 + (i * 3 + k) % 250) as u8)
}

/// `n` UDP services, port 53, three ready backends each on node b.
fn ports(n: u32) -> Vec<ServicePort> {
    (0..n)
        .map(|i| {
            let mut p = ServicePort::cluster_ip(
                PortName {
                    namespace: "bench".into(),
                    service: format!("svc-{i}"),
                    port: "dns".into(),
                    proto: Proto::Udp,
                },
                vip(i),
                53,
            );
            p.endpoints = (0..3)
                .map(|k| Endpoint::ready(backend(i, k), 5353, false))
                .collect();
            p
        })
        .collect()
}

fn facts() -> NodeFacts {
    NodeFacts {
        name: "a".into(),
        zone: None,
        node_ips: vec![Ipv4Addr::new(192, 0, 2, 1)],
        cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
        service_cidrs: vec!["10.96.0.0/12".parse().expect("cidr")],
    }
}

fn udp(dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 244, 1, 2], dst.octets(), 64)
        .udp(sport, 53)
        .write(&mut v, &[0x5a; 18])
        .expect("packet");
    v
}

fn worker(frames: Vec<Vec<u8>>, table: Option<Arc<ServiceTable>>) -> Worker {
    let peer = PeerSpec {
        name: "b".into(),
        ip: Ipv4Addr::new(192, 0, 2, 2),
        vtep_mac: MacAddr([2, 0xee, 0, 0, 0, 2]),
        pod_cidrs: vec!["10.244.2.0/24".parse().expect("cidr")],
    };
    let w = replay::replay_worker(
        replay::bench_node("10.244.1.0/24"),
        [peer],
        "10.244.0.0/16",
        ConntrackConfig::default().max_entries,
        vec![],
        Ipv4Addr::new(10, 244, 1, 2),
        frames,
    );
    if let Some(t) = table {
        let r: &Routes = w.routes();
        r.store(r.load_full().as_ref().clone().with_services(t));
    }
    w
}

fn bench(c: &mut Criterion) {
    let now = Duration::from_secs(1);
    let mut g = c.benchmark_group("worker_burst32");
    g.throughput(Throughput::Elements(32));
    // The baselines, in the same run.
    let direct: Vec<Vec<u8>> = (0..32)
        .map(|k| udp(backend(k, 0), 40000 + k as u16))
        .collect();
    let mut w = worker(direct, None);
    g.bench_function("pod_to_peer_encap/64B", |b| b.iter(|| w.poll(now)));
    let outside: Vec<Vec<u8>> = (0..32)
        .map(|k| udp(Ipv4Addr::new(198, 51, 100, 1 + k as u8), 40000))
        .collect();
    let mut w = worker(outside, None);
    g.bench_function("pod_to_outside_snat/64B", |b| b.iter(|| w.poll(now)));
    for n in SIZES {
        let table = Arc::new(ServiceTable::new(facts(), ports(n)));
        let frames: Vec<Vec<u8>> = (0..32u32)
            .map(|k| udp(vip(k * (n / 32).max(1) % n), 40000 + k as u16))
            .collect();
        let mut w = worker(frames, Some(table));
        g.bench_function(format!("pod_to_service/{n}"), |b| b.iter(|| w.poll(now)));
    }
    drop(g);
    let mut g = c.benchmark_group("lb_decide");
    for n in SIZES {
        let table = ServiceTable::new(facts(), ports(n));
        let mut k = 0u32;
        g.bench_function(format!("{n}"), |b| {
            b.iter(|| {
                k = k.wrapping_add(7919);
                black_box(table.decide(&lb::Flow {
                    src: Ipv4Addr::new(10, 244, 1, 2),
                    dst: vip(k % n),
                    proto: 17,
                    sport: k as u16,
                    dport: 53,
                }))
            })
        });
    }
    drop(g);
    let mut g = c.benchmark_group("service_table");
    g.sample_size(10);
    for n in SIZES {
        let all = ports(n);
        g.bench_function(format!("build/{n}"), |b| {
            b.iter(|| ServiceTable::new(facts(), all.clone()))
        });
        let table = ServiceTable::new(facts(), all.clone());
        let mut one = all[all.len() / 2].clone();
        one.endpoints.pop();
        g.bench_function(format!("update_one/{n}"), |b| {
            b.iter(|| table.update([one.clone()], &[]))
        });
    }
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);
