//! Control plane at 5,000 nodes: what a Node list costs between its arrival
//! and a snapshot the workers can load, what one node update costs, and the
//! snapshot's memory per node. Figures in benches/README.md.
//!
//! `cargo bench -p sluice-benches --bench ctrl`
//!
//! Before criterion runs, the binary also measures the whole path through
//! the real kube client against the fake API server (list of 5,000 nodes
//! in pages -> view -> snapshot; one MODIFIED -> snapshot) and prints it.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ctrl::kube_sync::{SyncConfig, build_view};
use ctrl::node::{AnnotationPolicy, NodeRoute, SLUICE_VTEP_MAC};
use ctrl::view::ClusterView;
use dataplane::route::{Node as RouteNode, PeerSpec, Routes, Snapshot};
use encap::MacAddr;
use encap::vxlan::VxlanConfig;
use k8s_openapi::api::core::v1::Node;
use sluice_benches::alloc::{CountingAlloc, live_bytes};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn count() -> u32 {
    if full_run() { 5000 } else { 200 }
}

fn node(i: u32) -> Node {
    let [_, _, b, c] = (0x0a00_0000 + i).to_be_bytes();
    let cidr = format!("10.{}.{}.0/24", 64 + i / 256, i % 256);
    ctrl::node::node_object(
        &format!("node-{i:05}"),
        &format!("172.20.{b}.{c}"),
        Some(&cidr),
        &[(SLUICE_VTEP_MAC, &format!("0a:58:00:00:{b:02x}:{c:02x}"))],
    )
}

fn this_node() -> RouteNode {
    RouteNode {
        name: "node-00000".into(),
        ip: Ipv4Addr::new(172, 20, 0, 0),
        uplink_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        uplink_mtu: 1500,
        vtep_mac: MacAddr([0x0a, 0x58, 0, 0, 0, 0]),
        pod_cidr: "10.64.0.0/24".parse().expect("cidr"),
        gateway_ip: Ipv4Addr::new(10, 64, 0, 1),
        gateway_mac: None,
    }
}

fn peers(view: &ClusterView) -> impl Iterator<Item = PeerSpec> + '_ {
    view.peers.values().map(|r: &NodeRoute| PeerSpec {
        name: r.name.clone(),
        ip: r.ip,
        vtep_mac: r.vtep_mac,
        pod_cidrs: r.pod_cidrs.clone(),
    })
}

fn snapshot(view: &ClusterView, generation: u64) -> Snapshot {
    Snapshot::new(
        generation,
        this_node(),
        VxlanConfig::default(),
        vec!["10.0.0.0/8".parse().expect("cidr")],
        peers(view),
        &|ip| {
            let [_, _, b, c] = ip.octets();
            Some(MacAddr([2, 0x10, 0, 0, b, c]))
        },
    )
}

/// Through the real kube client against the fake API server: time to the
/// first complete view and snapshot, and from one update to a new
/// snapshot visible to workers.
fn end_to_end(n: u32) {
    let api = ctrl::fakeapi::FakeApi::start().expect("fake api");
    for i in 0..n {
        api.put_node(node(i));
    }
    let dir = std::env::temp_dir().join(format!("sluice-ctrl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kc = dir.join("kubeconfig");
    api.write_kubeconfig(&kc).expect("kubeconfig");
    let routes = Routes::new(snapshot(&ClusterView::default(), 0));
    let (tx, rx) = mpsc::channel::<(Instant, Duration, usize)>();
    let r = routes.clone();
    let mut generation = 0;
    let start = Instant::now();
    let sync = ctrl::kube_sync::spawn(
        SyncConfig {
            kubeconfig: Some(kc),
            node_name: "node-00000".into(),
            policy: AnnotationPolicy::default(),
            own: None,
            watch_timeout_secs: 290,
        },
        move |view, _| {
            // Control-thread work after the list arrived: snapshot build
            // and publication (the view was built just before).
            let t = Instant::now();
            generation += 1;
            r.store(snapshot(view, generation));
            let _ = tx.send((Instant::now(), t.elapsed(), view.peers.len()));
        },
    )
    .expect("sync");
    let (at, build, peers) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("initial view");
    println!(
        "ctrl end to end: {n} nodes listed through kube (pages of 500) -> snapshot with {peers} peers in {:.0} ms wall; snapshot build + publish {:.1} ms",
        (at - start).as_secs_f64() * 1e3,
        build.as_secs_f64() * 1e3
    );
    // One node changes its VTEP MAC.
    let mut changed = node(n / 2);
    if let Some(a) = changed.metadata.annotations.as_mut() {
        a.insert(SLUICE_VTEP_MAC.into(), "0a:58:ff:ff:ff:ff".into());
    }
    let t0 = Instant::now();
    api.put_node(changed);
    let (at, build, _) = rx.recv_timeout(Duration::from_secs(30)).expect("update");
    let visible = routes
        .load()
        .peers()
        .iter()
        .any(|p| p.spec.vtep_mac == MacAddr([0x0a, 0x58, 0xff, 0xff, 0xff, 0xff]));
    println!(
        "ctrl end to end: one node update -> snapshot visible to workers ({visible}) in {:.1} ms wall (API server event to publish), of which snapshot build {:.1} ms",
        (at - t0).as_secs_f64() * 1e3,
        build.as_secs_f64() * 1e3
    );
    drop(sync);
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench(c: &mut Criterion) {
    let n = count();
    let nodes: BTreeMap<String, Node> = (0..n).map(|i| (format!("node-{i:05}"), node(i))).collect();
    let mut g = c.benchmark_group(format!("ctrl_{n}_nodes"));
    g.sample_size(20);
    g.bench_function("list_to_view", |b| {
        b.iter(|| build_view(black_box(&nodes), "node-00000", AnnotationPolicy::default()))
    });
    let (view, _) = build_view(&nodes, "node-00000", AnnotationPolicy::default());
    g.bench_function("view_to_snapshot", |b| {
        b.iter(|| snapshot(black_box(&view), 1))
    });
    // One MODIFIED event as the control thread handles it: re-read that
    // node, update the view in place, rebuild and publish the snapshot.
    let routes = Routes::new(snapshot(&view, 1));
    let mut v = view.clone();
    let mut k = 0u32;
    g.bench_function("one_update_to_published_snapshot", |b| {
        b.iter(|| {
            k += 1;
            let mut n1 = node(n / 2);
            if let Some(a) = n1.metadata.annotations.as_mut() {
                let [_, _, x, y] = k.to_be_bytes();
                a.insert(
                    SLUICE_VTEP_MAC.into(),
                    format!("0a:58:ee:00:{x:02x}:{y:02x}"),
                );
            }
            let r = ctrl::node::node_route(&n1, AnnotationPolicy::default()).expect("route");
            v.peers.insert(r.name.clone(), r);
            routes.store(snapshot(&v, u64::from(k)));
        })
    });
}

fn memory() {
    let n = count();
    let nodes: BTreeMap<String, Node> = (0..n).map(|i| (format!("node-{i:05}"), node(i))).collect();
    let (view, _) = build_view(&nodes, "node-00000", AnnotationPolicy::default());
    let before = live_bytes();
    let snap = snapshot(&view, 1);
    let bytes = live_bytes() - before;
    println!(
        "ctrl memory: snapshot of {} peers holds {:.1} KiB: {:.0} bytes per node",
        snap.peers().len(),
        bytes as f64 / 1024.0,
        bytes as f64 / snap.peers().len() as f64
    );
    drop(snap);
}

criterion::criterion_group!(benches, bench);

fn main() {
    memory();
    end_to_end(count());
    benches();
    Criterion::default().configure_from_args().final_summary();
}
