//! NetworkPolicy verdicts, the first packet's decision alone (what a
//! worker asks once per new flow), with 0, 100 and 10,000 rules selecting
//! the destination pod (issue 18 item 4; goal: <= 200 ns at 10,000):
//! - `policy_decide/allowed/N`: a peer the last rules allow;
//! - `policy_decide/denied/N`: a peer no rule names (every candidate
//!   looked at, the worst case of the index);
//! - `policy_compile/N`: the tables built from the objects (the control
//!   side; 200 peer pods);
//! - `policy_worker/{established,first}/N`: the whole worker per packet
//!   (bursts of 32 through `Worker::poll`, VXLAN from a peer's pod to the
//!   local pod, the ingress check at delivery), for one flow's packets
//!   (its verdict found in the flow table) and for first packets (262,144
//!   flows cycling through a 65,536-entry table: each packet decided and
//!   inserted, evicting a live verdict); `none`: no policy in the cluster,
//!   `0`: policies exist but none selects the pod.
//!
//! `cargo bench -p sluice-benches --bench policy`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::Criterion;
use policy::{
    Cluster, Namespace, Peer, Pod, Policy, PolicyPort, Port, Proto, Rule, Selector, Tables,
};

const SIZES: [u32; 3] = [0, 100, 10_000];
const PEERS: u32 = 200;

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 10)) + i)
}

/// One namespace, the target pod and 200 peer pods labelled `id`; `n`
/// rules selecting the target, rule k allowing peer k % 200 on TCP port
/// 1000 + k % 50.
fn cluster(n: u32) -> Cluster {
    let mut c = Cluster::default();
    c.namespaces.push(Namespace {
        name: "bench".into(),
        labels: Default::default(),
    });
    let pod = |name: String, id: String, a: Ipv4Addr| Pod {
        namespace: "bench".into(),
        name,
        labels: [("id".to_string(), id)].into_iter().collect(),
        ip: Some(a),
        host_network: false,
        ports: Vec::new(),
    };
    c.pods.push(pod(
        "target".into(),
        "target".into(),
        Ipv4Addr::new(10, 244, 9, 9),
    ));
    for i in 0..PEERS {
        c.pods.push(pod(format!("peer-{i}"), i.to_string(), ip(i)));
    }
    let rules: Vec<Rule> = (0..n)
        .map(|k| Rule {
            peers: vec![Peer::Pods {
                namespaces: None,
                pods: Some(Selector::label("id", &(k % PEERS).to_string())),
            }],
            ports: vec![PolicyPort {
                proto: Proto::Tcp,
                port: Port::Range(1000 + (k % 50) as u16, 1000 + (k % 50) as u16),
            }],
        })
        .collect();
    if n > 0 {
        c.policies.push(Policy {
            namespace: "bench".into(),
            name: "many".into(),
            select: Selector::label("id", "target"),
            isolates_ingress: true,
            isolates_egress: false,
            ingress: rules,
            egress: Vec::new(),
        });
    }
    c
}

/// Peer pod `i` (on the peer node, 10.244.2.0/24) and the target's
/// address for the worker benchmark.
fn remote(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 2, 10 + (i % PEERS) as u8)
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const PEER_NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// [`cluster`] with the target at [`LOCAL`] and the peers on the peer
/// node; `none`: no policy at all; n = 0: one policy selecting nobody.
fn worker_cluster(n: u32, none: bool) -> Cluster {
    let mut c = cluster(n);
    for p in &mut c.pods {
        p.ip = match p.name.strip_prefix("peer-") {
            Some(i) => Some(remote(i.parse().unwrap_or(0))),
            None => Some(LOCAL),
        };
    }
    if n == 0 && !none {
        c.policies.push(Policy {
            namespace: "bench".into(),
            name: "nobody".into(),
            select: Selector::label("id", "nobody"),
            isolates_ingress: true,
            isolates_egress: true,
            ingress: Vec::new(),
            egress: Vec::new(),
        });
    }
    c
}

/// VXLAN frames from the peer node: peer pod `k % 200` to the target on
/// TCP port 1000 + k % 50 (what rule k allows), source ports from
/// `sports`.
fn frames(ks: &[u32], sports: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    ks.iter()
        .flat_map(|&k| sports.clone().map(move |sp| (k, sp)))
        .map(|(k, sp)| {
            let (peer, port) = (remote(k), 1000 + (k % 50) as u16);
            let mut ip = Vec::new();
            etherparse::PacketBuilder::ipv4(peer.octets(), LOCAL.octets(), 64)
                .tcp(sp as u16, port, 1, 65535)
                .ack(1)
                .write(&mut ip, &[0; 18])
                .expect("packet");
            let mut inner = vec![2, 0xee, 0, 0, 0, 1, 2, 0xee, 0, 0, 0, 2, 8, 0];
            inner.extend_from_slice(&ip);
            let tmpl = encap::vxlan::EncapTemplate::new(
                &encap::vxlan::VxlanConfig::default(),
                &encap::vxlan::TunnelEndpoint {
                    local_mac: encap::MacAddr([2, 0x10, 0, 0, 0, 2]),
                    next_hop_mac: encap::MacAddr([2, 0x10, 0, 0, 0, 1]),
                    local_ip: PEER_NODE,
                    remote_ip: Ipv4Addr::new(192, 0, 2, 1),
                },
            );
            let mut b = sluice_benches::frames::with_headroom(&inner);
            let end = b.len();
            let r = encap::vxlan::encapsulate(&mut b, encap::vxlan::OVERHEAD..end, &tmpl)
                .expect("encap");
            b[r].to_vec()
        })
        .collect()
}

fn policy_worker(n: u32, none: bool, uplink: Vec<Vec<u8>>) -> dataplane::worker::Worker {
    let node = sluice_benches::replay::bench_node("10.244.1.0/24");
    let peer = dataplane::route::PeerSpec {
        name: "b".into(),
        ip: PEER_NODE,
        vtep_mac: encap::MacAddr([2, 0xee, 0, 0, 0, 2]),
        pod_cidrs: vec!["10.244.2.0/24".parse().expect("cidr")],
    };
    let w = sluice_benches::replay::replay_worker(
        node.clone(),
        [peer],
        "10.244.0.0/16",
        nat::ConntrackConfig::default().max_entries,
        uplink,
        LOCAL,
        Vec::new(),
    );
    let t = Tables::build(
        &worker_cluster(n, none),
        |p| p.ip == Some(LOCAL),
        &[node.ip, node.gateway_ip],
    )
    .with_generation(1);
    let snap = (**w.routes().load())
        .clone()
        .with_policy(std::sync::Arc::new(t));
    w.routes().store(snap);
    w
}

fn worker_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_worker");
    g.throughput(criterion::Throughput::Elements(32));
    let now = std::time::Duration::from_secs(1);
    for (label, n, none) in [
        ("none", 0u32, true),
        ("0", 0, false),
        ("100", 100, false),
        ("10000", 10_000, false),
    ] {
        let k = n.saturating_sub(1);
        let mut w = policy_worker(n, none, frames(&[k], 40000..40001));
        w.poll(now);
        g.bench_function(format!("established/{label}"), |b| b.iter(|| w.poll(now)));
        assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
        // One flow, decided once (when the pod is isolated at all).
        assert_eq!(w.policy.decided, u64::from(n > 0));
        // Four times the table's size: every packet is a first packet.
        let ks = [
            k,
            k.saturating_sub(1),
            k.saturating_sub(2),
            k.saturating_sub(3),
        ];
        let mut w = policy_worker(n, none, frames(&ks, 0..65_536));
        g.bench_function(format!("first/{label}"), |b| b.iter(|| w.poll(now)));
        assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
        // Every packet a first packet (once the table is full, each
        // evicts a verdict).
        if n > 0 {
            assert!(w.policy.decided > 65_536, "{}", w.policy.decided);
            assert!(w.policy.evicted > 0);
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let target = Ipv4Addr::new(10, 244, 9, 9);
    let mut g = c.benchmark_group("policy_decide");
    for n in SIZES {
        let t = Tables::build(&cluster(n), |p| p.name == "target", &[]);
        // The last rule's peer and port: allowed (Open with no policy).
        let k = n.saturating_sub(1);
        let (peer, port) = (ip(k % PEERS), 1000 + (k % 50) as u16);
        assert!(t.decide(peer, target, 6, port).allowed());
        g.bench_function(format!("allowed/{n}"), |b| {
            b.iter(|| black_box(t.decide(black_box(peer), target, 6, port)))
        });
        let stranger = Ipv4Addr::new(10, 244, 200, 1);
        assert_eq!(t.decide(stranger, target, 6, 80).allowed(), n == 0);
        g.bench_function(format!("denied/{n}"), |b| {
            b.iter(|| black_box(t.decide(black_box(stranger), target, 6, 80)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("policy_compile");
    g.sample_size(10);
    for n in SIZES {
        let cl = cluster(n);
        g.bench_function(format!("{n}"), |b| {
            b.iter(|| black_box(Tables::build(&cl, |p| p.name == "target", &[])))
        });
    }
    g.finish();
}

criterion::criterion_group!(policy_benches, benches, worker_benches);
criterion::criterion_main!(policy_benches);
