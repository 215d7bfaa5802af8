//! Criterion benchmarks for conntrack + SNAT (`nat`): lookup hit with 1k and
//! 1M live entries (original and reply direction), new flow with port
//! allocation, expiry cost per entry, and memory per tracked flow at 1M.
//!
//! `cargo bench -p sluice-benches --bench nat`. Figures: benches/README.md.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use nat::{Conntrack, ConntrackConfig, Origin, PortRange, SnatConfig, Verdict};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use sluice_benches::alloc::{CountingAlloc, count, live_bytes};
use sluice_benches::frames::{pod_udp, reply_to};

/// Packets per burst, as a worker's RX batch.
const BURST: usize = 32;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn snat() -> SnatConfig {
    let mut s = SnatConfig::new(
        vec!["10.244.0.0/16".parse().expect("cidr")],
        vec!["10.96.0.0/12".parse().expect("cidr")],
        Ipv4Addr::new(192, 0, 2, 10),
    );
    s.ports = PortRange {
        min: 1024,
        max: 65535,
    };
    s
}

/// A tracker holding `n` live, replied UDP flows; returns it with the
/// original packet and the reply of flow 0.
fn filled(n: u32) -> (Conntrack, Vec<u8>, Vec<u8>) {
    filled_with(n, None)
}

/// [`filled`], the table mirrored to the state file at `state` (on tmpfs,
/// as the daemon's `/run/sluice`) when given.
fn filled_with(n: u32, state: Option<&std::path::Path>) -> (Conntrack, Vec<u8>, Vec<u8>) {
    let cfg = ConntrackConfig {
        max_entries: n as usize + 1024,
        ..ConntrackConfig::default()
    };
    let mut ct = match state {
        None => Conntrack::new(cfg, Some(snat())),
        Some(path) => {
            let spec = nat::state_spec(&cfg, Some(&snat()), persist::boot_id());
            let _ = std::fs::remove_file(path);
            let (region, _) = persist::Region::open(path, &spec).expect("state file");
            Conntrack::with_state(cfg, Some(snat()), region, Duration::from_secs(1)).0
        }
    };
    let now = Duration::from_secs(1);
    let mut first = None;
    for i in 0..n {
        let original = pod_udp(i, 64);
        let mut p = original.clone();
        assert!(
            matches!(ct.process(now, &mut p, Origin::Pod), Verdict::Accept(_)),
            "flow {i}"
        );
        let mut r = reply_to(&p);
        let reply = r.clone();
        assert!(matches!(
            ct.process(now, &mut r, Origin::Uplink),
            Verdict::Accept(_)
        ));
        if i == 0 {
            first = Some((original, reply));
        }
    }
    let (o, r) = first.expect("n > 0");
    (ct, o, r)
}

/// Whether this is a real benchmark run (`cargo bench` passes `--bench`);
/// under `cargo test` each benchmark runs once as a smoke test, on small tables.
fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn big() -> u32 {
    if full_run() { 1_000_000 } else { 10_000 }
}

fn hits(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack_hit");
    g.throughput(Throughput::Elements(1));
    for n in [1_000u32, big()] {
        let (mut ct, original, reply) = filled(n);
        let now = Duration::from_secs(2);
        g.bench_function(format!("{n}/original+snat"), |b| {
            b.iter_batched_ref(
                || original.clone(),
                |p| ct.process(now, black_box(p), Origin::Pod),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("{n}/reply+reverse-nat"), |b| {
            b.iter_batched_ref(
                || reply.clone(),
                |p| ct.process(now, black_box(p), Origin::Uplink),
                BatchSize::SmallInput,
            )
        });
    }
}

/// Hits spread over the whole table: each timed iteration is a burst of 32
/// packets of flows drawn at random from the `n` live ones, so at 1M entries
/// the index and slab reads miss the cache as a worker's would.
/// The hit path with the table written through to a state file on tmpfs
/// (what the daemon runs, so flows survive a restart), next to the same
/// table in memory only: the cost of the write-through per packet.
fn mirrored_hits(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack_hit_mirrored");
    g.throughput(Throughput::Elements(1));
    let path =
        std::path::Path::new("/dev/shm").join(format!("sluice-bench-{}.state", std::process::id()));
    for n in [1_000u32, big()] {
        for (label, state) in [("memory", None), ("state-file", Some(path.as_path()))] {
            let (mut ct, original, reply) = filled_with(n, state);
            let now = Duration::from_secs(2);
            g.bench_function(format!("{n}/{label}/original+snat"), |b| {
                b.iter_batched_ref(
                    || original.clone(),
                    |p| ct.process(now, black_box(p), Origin::Pod),
                    BatchSize::SmallInput,
                )
            });
            g.bench_function(format!("{n}/{label}/reply+reverse-nat"), |b| {
                b.iter_batched_ref(
                    || reply.clone(),
                    |p| ct.process(now, black_box(p), Origin::Uplink),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    let _ = std::fs::remove_file(&path);
    g.finish();
}

fn random_hits(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack_hit_random");
    g.throughput(Throughput::Elements(BURST as u64));
    for n in [1_000u32, big()] {
        let (mut ct, _, _) = filled(n);
        let now = Duration::from_secs(2);
        let mut rng = StdRng::seed_from_u64(7);
        g.bench_function(format!("{n}/original+snat/burst32/process"), |b| {
            b.iter_batched_ref(
                || {
                    (0..BURST)
                        .map(|_| pod_udp(rng.random_range(0..n), 64))
                        .collect::<Vec<_>>()
                },
                |burst| {
                    for p in burst.iter_mut() {
                        black_box(ct.process(now, black_box(p), Origin::Pod));
                    }
                },
                BatchSize::SmallInput,
            )
        });
        let mut verdicts = [Verdict::Drop(nat::DropReason::Malformed); BURST];
        g.bench_function(format!("{n}/original+snat/burst32/process_burst"), |b| {
            b.iter_batched_ref(
                || {
                    (0..BURST)
                        .map(|_| pod_udp(rng.random_range(0..n), 64))
                        .collect::<Vec<_>>()
                },
                |burst| ct.process_burst(now, black_box(burst), Origin::Pod, &mut verdicts),
                BatchSize::SmallInput,
            )
        });
    }
}

fn new_flows(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack_new");
    g.throughput(Throughput::Elements(1));
    // Each timed packet is a flow the table has not seen; tables are rebuilt
    // (untimed) every 100k flows so the table never fills.
    g.bench_function("udp+snat-port-allocation", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let chunk = (iters - done).min(100_000) as u32;
                let cfg = ConntrackConfig {
                    max_entries: 200_000,
                    ..ConntrackConfig::default()
                };
                let mut ct = Conntrack::new(cfg, Some(snat()));
                let mut pkts: Vec<Vec<u8>> = (0..chunk).map(|i| pod_udp(i, 64)).collect();
                let now = Duration::from_secs(1);
                let t = Instant::now();
                for p in &mut pkts {
                    black_box(ct.process(now, p, Origin::Pod));
                }
                total += t.elapsed();
                done += u64::from(chunk);
            }
            total
        })
    });
}

fn expiry(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack_expiry");
    g.throughput(Throughput::Elements(1));
    // Time per expired entry removed by handle_timeout (budget-bounded calls).
    g.bench_function("per-entry", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let chunk = (iters - done).min(50_000) as u32;
                let cfg = ConntrackConfig {
                    max_entries: 60_000,
                    ..ConntrackConfig::default()
                };
                let mut ct = Conntrack::new(cfg, Some(snat()));
                for i in 0..chunk {
                    let mut p = pod_udp(i, 64);
                    ct.process(Duration::from_secs(1), &mut p, Origin::Pod);
                }
                let later = Duration::from_secs(1000);
                let t = Instant::now();
                while !ct.is_empty() {
                    black_box(ct.handle_timeout(later));
                }
                total += t.elapsed();
                done += u64::from(chunk);
            }
            total
        })
    });
}

/// Bytes per tracked flow at 1M entries, and allocations on the hit path.
fn report_memory() {
    let before = live_bytes();
    let (mut ct, original, _) = filled(big());
    let bytes = live_bytes() - before;
    println!(
        "memory: {} live entries, {:.1} MiB, {:.0} bytes per tracked flow (both directions and NAT state)",
        ct.len(),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / ct.len() as f64
    );
    let mut p = original.clone();
    let now = Duration::from_secs(2);
    let per = count(10_000, || {
        p.copy_from_slice(&original);
        let _ = black_box(ct.process(now, &mut p, Origin::Pod));
    });
    println!("heap allocations per packet, conntrack hit at 1M entries: {per}");
    drop(ct);
}

criterion::criterion_group!(benches, hits, mirrored_hits, random_hits, new_flows, expiry);

fn main() {
    report_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
