//! Criterion benchmarks for the wire layer: parse, VXLAN encap and decap,
//! checksums and the flow hash, on 64- and 1400-byte inner frames, in cache.
//!
//! Reports time per packet (criterion's "thrpt" in elements/s, and time per
//! iteration) and, before the timing runs, heap allocations per packet as
//! counted by the bench binary's global allocator.
//!
//! `cargo bench -p sluice-benches --bench encap` (add `-- --quick` for a
//! short run). Figures and the machine are recorded in `benches/README.md`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BatchSize, Criterion, Throughput};
use encap::checksum::{internet_checksum, update_ipv4_addr};
use encap::flow::FlowHasher;
use encap::parse::parse_frame;
use encap::vxlan::{self, EncapTemplate, InnerMeta, OVERHEAD, VxlanConfig};
use sluice_benches::alloc::{CountingAlloc, count};
use sluice_benches::frames::{endpoint, udp_frame, vxlan_frame, with_headroom};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SIZES: [usize; 2] = [64, 1400];
const BATCH: usize = 32;

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    for size in SIZES {
        let f = udp_frame(size);
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| parse_frame(black_box(&f)))
        });
    }
}

fn encap(c: &mut Criterion) {
    let tmpl = EncapTemplate::new(&VxlanConfig::default(), &endpoint());
    let mut g = c.benchmark_group("encap");
    g.throughput(Throughput::Elements(1));
    for size in SIZES {
        let mut buf = with_headroom(&udp_frame(size));
        let end = buf.len();
        // Re-encapsulating the same buffer rewrites the same 50 bytes: the
        // inner frame is never touched, so no per-iteration reset is needed.
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| vxlan::encapsulate(black_box(&mut buf), OVERHEAD..end, &tmpl))
        });
        let meta = InnerMeta::from_frame(&buf[OVERHEAD..], tmpl.hasher());
        g.bench_function(format!("{size}B/meta-supplied"), |b| {
            b.iter(|| {
                vxlan::encapsulate_with(black_box(&mut buf), OVERHEAD..end, &tmpl, black_box(meta))
            })
        });
    }
    // A burst of 32 distinct buffers, as a worker processes an RX batch.
    g.throughput(Throughput::Elements(BATCH as u64));
    for size in SIZES {
        let mut bufs: Vec<Vec<u8>> = (0..BATCH)
            .map(|_| with_headroom(&udp_frame(size)))
            .collect();
        let end = bufs[0].len();
        g.bench_function(format!("{size}B/batch{BATCH}"), |b| {
            b.iter(|| {
                for buf in &mut bufs {
                    let _ = black_box(vxlan::encapsulate(buf, OVERHEAD..end, &tmpl));
                }
            })
        });
    }
}

fn decap(c: &mut Criterion) {
    let cfg = VxlanConfig::default();
    let mut g = c.benchmark_group("decap");
    g.throughput(Throughput::Elements(1));
    for size in SIZES {
        // Outer ECN is Not-ECT, so decap never writes: the same buffer
        // decapsulates identically every iteration.
        let mut f = vxlan_frame(&udp_frame(size));
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| vxlan::decapsulate(black_box(&mut f), &cfg))
        });
    }
    g.throughput(Throughput::Elements(BATCH as u64));
    for size in SIZES {
        let mut frames: Vec<Vec<u8>> = (0..BATCH).map(|_| vxlan_frame(&udp_frame(size))).collect();
        g.bench_function(format!("{size}B/batch{BATCH}"), |b| {
            b.iter(|| {
                for f in &mut frames {
                    let _ = black_box(vxlan::decapsulate(f, &cfg));
                }
            })
        });
    }
}

fn checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for size in [20usize, 64, 1400, 1500] {
        let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("full/{size}B"), |b| {
            b.iter(|| internet_checksum(black_box(&data)))
        });
    }
    g.throughput(Throughput::Elements(1));
    let (old, new) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(192, 0, 2, 1));
    g.bench_function("incremental/ipv4-addr", |b| {
        b.iter(|| update_ipv4_addr(black_box(0x1234), black_box(old), black_box(new)))
    });
}

fn flow_hash(c: &mut Criterion) {
    let f = udp_frame(64);
    let key = parse_frame(&f).expect("parses").flow_key().expect("ip");
    let h = FlowHasher::symmetric(7);
    let mut g = c.benchmark_group("flow_hash");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ipv4-5tuple-symmetric", |b| {
        b.iter(|| h.hash(black_box(&key)))
    });
    g.bench_function("ipv4-5tuple-symmetric/fresh-key", |b| {
        b.iter_batched(|| key, |k| h.hash(black_box(&k)), BatchSize::SmallInput)
    });
}

/// Allocations per packet for each operation, measured (not assumed).
fn report_allocations() {
    let cfg = VxlanConfig::default();
    let tmpl = EncapTemplate::new(&cfg, &endpoint());
    const N: u64 = 10_000;
    println!("heap allocations per packet (counting allocator, {N} packets each):");
    for size in SIZES {
        let f = udp_frame(size);
        let mut buf = with_headroom(&f);
        let end = buf.len();
        let mut outer = vxlan_frame(&f);
        let rows = [
            (
                "parse",
                count(N, || {
                    let _ = black_box(parse_frame(black_box(&f)));
                }),
            ),
            (
                "encap",
                count(N, || {
                    let _ = black_box(vxlan::encapsulate(&mut buf, OVERHEAD..end, &tmpl));
                }),
            ),
            (
                "decap",
                count(N, || {
                    let _ = black_box(vxlan::decapsulate(&mut outer, &cfg));
                }),
            ),
            (
                "checksum",
                count(N, || {
                    let _ = black_box(internet_checksum(black_box(&f)));
                }),
            ),
        ];
        for (name, per) in rows {
            println!("  {name:>8} {size:>4}B: {per}");
        }
    }
}

criterion::criterion_group!(benches, parse, encap, decap, checksum, flow_hash);

fn main() {
    report_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
