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
use policy::Tables;
use sluice_benches::alloc::{CountingAlloc, live_bytes};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;
use sluice_benches::policy::{cluster, frames, policy_worker};

const SIZES: [u32; 3] = [0, 100, 10_000];

fn ip(i: u32) -> Ipv4Addr {
    sluice_benches::policy::peer_ip(i)
}

const PEERS: u32 = sluice_benches::policy::PEERS;

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
        let mut polls = 0u64;
        g.bench_function(format!("first/{label}"), |b| {
            b.iter(|| {
                polls += 1;
                w.poll(now)
            })
        });
        assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
        // Nearly every packet a first packet (the flows cycle through four
        // times the table's size; once it is full, each evicts a verdict,
        // and about 1.6% of the entries outlive a cycle in a window the
        // cycle's inserts touched less), however many polls ran (one under
        // `cargo test`, none when filtered out).
        let packets = polls * 32;
        if n > 0 {
            assert!(
                w.policy.decided * 100 >= packets * 95 && w.policy.decided <= packets,
                "{} decided, {packets} packets",
                w.policy.decided
            );
            if packets > 2 * dataplane::enforce::FLOW_ENTRIES as u64 {
                assert!(w.policy.evicted > 0);
            }
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

/// A change reaching the workers with 5,000 pods and 1,000 policies: the
/// objects turned into the model, the model compiled for one node's 256
/// pods, the snapshot published (what a watch event costs the control
/// thread until the workers' next burst sees it). Criterion's figure, plus
/// p50 / p99 over 50 label flips printed; and the memory the compiled
/// tables hold per rule.
fn change_benches(c: &mut Criterion) {
    let (ns, mut pods, nps) = sluice_benches::policy::api_objects(100, 50, 1000);
    let local: ipnet::Ipv4Net = sluice_benches::policy::BIG_LOCAL.parse().expect("cidr");
    let node = sluice_benches::replay::bench_node(sluice_benches::policy::BIG_LOCAL);
    let ips = [node.ip, node.gateway_ip];
    let snap = dataplane::route::Snapshot::new(
        1,
        node,
        encap::vxlan::VxlanConfig::default(),
        vec!["10.0.0.0/8".parse().expect("cidr")],
        [],
        &|_| None,
    );
    let routes = dataplane::route::Routes::new(snap.clone());
    let mut generation = 0u32;
    let mut change = |pods: &[k8s_openapi::api::core::v1::Pod]| {
        let (m, _) = ctrl::netpol::cluster(&ns, pods, &nps);
        generation += 1;
        let t = Tables::build(&m, |p| p.ip.is_some_and(|a| local.contains(&a)), &ips)
            .with_generation(generation);
        routes.store(snap.clone().with_policy(std::sync::Arc::new(t)));
    };
    let mut g = c.benchmark_group("policy_change");
    g.sample_size(10);
    g.bench_function("5000_pods_1000_policies", |b| b.iter(|| change(&pods)));
    g.finish();
    let mut times = Vec::new();
    for i in 0..50 {
        let at = i * 97 % pods.len();
        let labels = pods[at].metadata.labels.get_or_insert_default();
        labels.insert("app".into(), format!("app-{}", i % 20));
        let start = std::time::Instant::now();
        change(&pods);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "policy_change 5,000 pods / 1,000 policies, 50 label flips: p50 {:.1} ms, p99 {:.1} ms",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
    // Memory: what the compiled tables hold, per rule.
    for n in [100u32, 10_000] {
        let cl = cluster(n);
        let before = live_bytes();
        let t = Tables::build(&cl, |p| p.name == "target", &[]);
        let held = live_bytes() - before;
        println!(
            "policy_memory {n} rules selecting one pod: {held} bytes, {:.0} per rule",
            held as f64 / f64::from(n)
        );
        drop(t);
    }
    let (m, _) = ctrl::netpol::cluster(&ns, &pods, &nps);
    let before = live_bytes();
    let t = Tables::build(&m, |p| p.ip.is_some_and(|a| local.contains(&a)), &ips);
    let held = live_bytes() - before;
    let entries: usize = t
        .pod_ips()
        .iter()
        .filter_map(|ip| t.pod(*ip))
        .map(|p| p.entries().0 + p.entries().1)
        .sum();
    println!(
        "policy_memory 5,000 pods / 1,000 policies, 256 local pods: {held} bytes for {entries} compiled entries, {:.0} per entry",
        held as f64 / entries.max(1) as f64
    );
}

criterion::criterion_group!(policy_benches, benches, worker_benches, change_benches);
criterion::criterion_main!(policy_benches);
