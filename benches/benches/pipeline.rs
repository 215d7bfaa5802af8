//! The worker's per-packet cost over replaying ports (no I/O): a burst of
//! 32 frames through `Worker::poll` for each path: pod -> remote pod (VXLAN
//! encap), uplink VXLAN -> pod (decap), pod -> outside (conntrack hit +
//! SNAT). Figures per packet in benches/README.md.
//!
//! `cargo bench -p sluice-benches --bench pipeline`

use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use dataplane::route::{Node, PeerSpec};
use dataplane::worker::Worker;
use encap::MacAddr;
use encap::vxlan::{self, EncapTemplate, OVERHEAD, TunnelEndpoint, VxlanConfig};
use nat::ConntrackConfig;
use sluice_benches::frames::with_headroom;
use sluice_benches::replay;

fn node() -> Node {
    replay::bench_node("10.244.1.0/24")
}

fn worker(uplink: Vec<Vec<u8>>, pod: Vec<Vec<u8>>) -> Worker {
    let peer = PeerSpec {
        name: "b".into(),
        ip: Ipv4Addr::new(192, 0, 2, 2),
        vtep_mac: MacAddr([2, 0xee, 0, 0, 0, 2]),
        pod_cidrs: vec!["10.244.2.0/24".parse().expect("cidr")],
    };
    replay::replay_worker(
        node(),
        [peer],
        "10.244.0.0/16",
        ConntrackConfig::default().max_entries,
        uplink,
        Ipv4Addr::new(10, 244, 1, 2),
        pod,
    )
}

fn ip(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(src, dst, 64)
        .udp(40000, 53)
        .write(&mut v, &vec![0x5a; payload])
        .expect("packet");
    v
}

fn vxlan_to_pod(payload: usize) -> Vec<u8> {
    let mut inner = vec![2, 0xee, 0, 0, 0, 1, 2, 0xee, 0, 0, 0, 2, 8, 0];
    inner.extend_from_slice(&ip([10, 244, 2, 3], [10, 244, 1, 2], payload));
    let tmpl = EncapTemplate::new(
        &VxlanConfig::default(),
        &TunnelEndpoint {
            local_mac: MacAddr([2, 0x10, 0, 0, 0, 2]),
            next_hop_mac: node().uplink_mac,
            local_ip: Ipv4Addr::new(192, 0, 2, 2),
            remote_ip: node().ip,
        },
    );
    let mut b = with_headroom(&inner);
    let end = b.len();
    let r = vxlan::encapsulate(&mut b, OVERHEAD..end, &tmpl).expect("encap");
    b[r].to_vec()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("worker_burst32");
    g.throughput(Throughput::Elements(32));
    let now = Duration::from_secs(1);
    for (name, payload) in [("64B", 18usize), ("1400B", 1354)] {
        let mut w = worker(vec![], vec![ip([10, 244, 1, 2], [10, 244, 2, 3], payload)]);
        g.bench_function(format!("pod_to_peer_encap/{name}"), |b| {
            b.iter(|| w.poll(now))
        });
        let mut w = worker(vec![vxlan_to_pod(payload)], vec![]);
        g.bench_function(format!("peer_to_pod_decap/{name}"), |b| {
            b.iter(|| w.poll(now))
        });
        let mut w = worker(
            vec![],
            vec![ip([10, 244, 1, 2], [198, 51, 100, 1], payload)],
        );
        g.bench_function(format!("pod_to_outside_snat/{name}"), |b| {
            b.iter(|| w.poll(now))
        });
    }
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);
