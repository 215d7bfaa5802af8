//! The control plane's side of Services at scale: 30,000 services with
//! 100,000 endpoints (the figure; `cargo test` runs 300 / 1,000),
//! from Kubernetes objects to a table the workers load, and one endpoint
//! change. Printed before criterion runs (control-thread time, measured
//! once; no figure is asserted):
//! - the whole set: `ServiceCache::replace` (Services and EndpointSlices
//!   as the relist delivers them -> ports) and `ServiceTable::new`;
//! - bytes the table holds per service port and per endpoint (live heap,
//!   counting allocator);
//! - one EndpointSlice change: the cache's recompute and the table update,
//!   and end to end through the real kube client against the fake API
//!   server (watch event -> table published).
//!
//! `cargo bench -p sluice-benches --bench ctrl_services`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ctrl::kube_sync::SyncConfig;
use ctrl::node::AnnotationPolicy;
use ctrl::services::ServiceCache;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use lb::{NodeFacts, ServiceTable};
use sluice_benches::alloc::{CountingAlloc, live_bytes};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// (services, endpoints).
fn scale() -> (u32, u32) {
    if full_run() {
        (30_000, 100_000)
    } else {
        (300, 1_000)
    }
}

fn vip(i: u32) -> String {
    let [_, _, b, c] = (i + 16).to_be_bytes();
    format!("10.96.{b}.{c}")
}

fn service(i: u32) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": format!("ns{}", i % 100), "name": format!("svc-{i}")},
        "spec": {"clusterIP": vip(i), "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}
    }))
    .expect("service")
}

/// Service `i`'s slice with `n` endpoints starting at endpoint number `first`.
fn slice(i: u32, first: u32, n: u32, version: u32) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = (first..first + n)
        .map(|e| {
            let [_, a, b, c] = (e + 1).to_be_bytes();
            serde_json::json!({
                "addresses": [format!("10.{}.{b}.{c}", 128 + a)],
                "nodeName": format!("node-{}", e % 5000),
                "conditions": {"ready": version.is_multiple_of(2) || e != first}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": format!("ns{}", i % 100), "name": format!("svc-{i}-abcde"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": eps
    }))
    .expect("slice")
}

/// Every service's slice: endpoints spread so the total is `eps`.
fn objects(n: u32, eps: u32) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut next = 0;
    let mut slices = Vec::new();
    for i in 0..n {
        let k = eps / n + u32::from(i < eps % n);
        slices.push(slice(i, next, k, 0));
        next += k;
    }
    ((0..n).map(service).collect(), slices)
}

fn facts() -> NodeFacts {
    NodeFacts {
        name: "node-0".into(),
        zone: None,
        node_ips: vec![Ipv4Addr::new(192, 168, 0, 1)],
        cluster_cidrs: vec!["10.128.0.0/9".parse().expect("cidr")],
        service_cidrs: vec!["10.96.0.0/12".parse().expect("cidr")],
    }
}

fn one_shot() {
    let (n, eps) = scale();
    let (svcs, slices) = objects(n, eps);
    let mut cache = ServiceCache::new("node-0");
    let t = Instant::now();
    let u = cache.replace(svcs, slices);
    let convert = t.elapsed();
    let before = live_bytes();
    let t = Instant::now();
    let table = ServiceTable::new(facts(), u.upserts);
    let build = t.elapsed();
    let bytes = live_bytes() - before;
    println!(
        "services: {n} services / {eps} endpoints: objects -> ports {:.0} ms, ports -> table {:.0} ms (control-thread time, together {:.2} s); table {:.1} MB = {:.0} B per service port + its endpoints, {:.0} B per endpoint overall",
        convert.as_secs_f64() * 1e3,
        build.as_secs_f64() * 1e3,
        (convert + build).as_secs_f64(),
        bytes as f64 / 1e6,
        bytes as f64 / f64::from(n),
        bytes as f64 / f64::from(eps)
    );
    // One endpoint of one service stops being ready.
    let i = n / 2;
    let k = eps / n;
    let t = Instant::now();
    let u = cache.apply_slice(slice(i, i * k, k, 1));
    let recompute = t.elapsed();
    let t = Instant::now();
    let next = table.update(u.upserts, &u.removes);
    let update = t.elapsed();
    println!(
        "services: one endpoint change at {n} services: cache recompute {:.1} us, table update {:.1} us (generation {})",
        recompute.as_secs_f64() * 1e6,
        update.as_secs_f64() * 1e6,
        next.generation()
    );
}

/// Through the real client: relist the whole set, then one slice change,
/// each to the moment the table is published.
fn end_to_end() {
    let (n, eps) = scale();
    let (n, eps) = (n.min(5000), eps.min(16_000));
    let api = ctrl::fakeapi::FakeApi::start().expect("fake api");
    let (svcs, slices) = objects(n, eps);
    for s in svcs {
        api.put_service(s);
    }
    for s in slices {
        api.put_endpoint_slice(s);
    }
    let dir = std::env::temp_dir().join(format!("sluice-svc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kc = dir.join("kubeconfig");
    api.write_kubeconfig(&kc).expect("kubeconfig");
    let (tx, rx) = mpsc::channel::<(Instant, usize)>();
    let mut table = ServiceTable::new(facts(), []);
    let start = Instant::now();
    let sync = ctrl::service_sync::spawn(
        SyncConfig {
            kubeconfig: Some(kc),
            node_name: "node-0".into(),
            policy: AnnotationPolicy::default(),
            own: None,
            watch_timeout_secs: 290,
        },
        move |u| {
            table = table.update(u.upserts.iter().cloned(), &u.removes);
            let _ = tx.send((Instant::now(), table.len()));
        },
    )
    .expect("sync");
    let (at, ports) = rx.recv_timeout(Duration::from_secs(120)).expect("table");
    println!(
        "services end to end: {n} services / {eps} endpoints listed through kube -> table of {ports} ports in {:.0} ms wall",
        (at - start).as_secs_f64() * 1e3
    );
    let k = eps / n;
    let t0 = Instant::now();
    api.put_endpoint_slice(slice(n / 2, (n / 2) * k, k, 1));
    let (at, _) = rx.recv_timeout(Duration::from_secs(30)).expect("update");
    println!(
        "services end to end: one EndpointSlice change -> table published in {:.1} ms wall",
        (at - t0).as_secs_f64() * 1e3
    );
    drop(sync);
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench(c: &mut Criterion) {
    one_shot();
    end_to_end();
    let (n, eps) = scale();
    let (svcs, slices) = objects(n, eps);
    let mut cache = ServiceCache::new("node-0");
    let table = ServiceTable::new(facts(), cache.replace(svcs, slices).upserts);
    let k = eps / n;
    let mut v = 0;
    c.bench_function(&format!("services/one_endpoint_change/{n}"), |b| {
        b.iter(|| {
            v += 1;
            let u = cache.apply_slice(slice(n / 2, (n / 2) * k, k, v));
            black_box(table.update(u.upserts, &u.removes))
        })
    });
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);
