//! Scaling runs (issue 6): what one packet costs the worker as the
//! conntrack table grows (1k, 100k, 1M tracked flows) and as the route
//! table grows (10, 1,000, 10,000 peer nodes), with 1 and 2 workers.
//!
//! The worker runs alone over replaying ports (`crate::replay`), so the
//! figure is the pipeline's, not the I/O's: `Worker::poll` with bursts of
//! 32, copying each frame into a worker buffer as a real port does. With 2
//! workers, two threads on the two cores each run their own worker over
//! their own flows (as the daemon's workers own their own tables), and
//! the figure is the aggregate.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::port::Framing;
use dataplane::route::{Node, PeerSpec};
use dataplane::worker::{Role, Worker};
use encap::MacAddr;

use crate::netbench::{Spread, median};
use crate::replay::ReplayPort;

const POD: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 2);

fn node() -> Node {
    crate::replay::bench_node("10.255.255.0/24")
}

/// Peer `k`'s pod CIDR (10.(k / 256).(k % 256).0/24) and address.
fn peer(k: u32) -> PeerSpec {
    let [_, _, hi, lo] = k.to_be_bytes();
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + k);
    PeerSpec {
        name: format!("n{k}"),
        ip,
        vtep_mac: MacAddr([0x0a, 0x58, 172, 16, hi, lo]),
        pod_cidrs: vec![format!("10.{hi}.{lo}.0/24").parse().expect("cidr")],
    }
}

fn worker(peers: u32, table: usize, pod_frames: Vec<Vec<u8>>) -> Worker {
    crate::replay::replay_worker(
        node(),
        (0..peers).map(peer),
        "10.0.0.0/8",
        table,
        Vec::new(),
        POD,
        pod_frames,
    )
}

/// A 64-byte (on the wire) IPv4/UDP packet from the pod.
fn packet(dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(46);
    etherparse::PacketBuilder::ipv4(POD.octets(), dst.octets(), 64)
        .udp(sport, 53)
        .write(&mut v, &[0x5a; 18])
        .expect("packet");
    v
}

/// A fixed pseudo-random permutation (xorshift; no seeding needed).
fn shuffle<T>(v: &mut [T]) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Pod -> outside through conntrack + SNAT: `flows` distinct flows
/// (destinations 198.18.0.0/15, 16 source ports each), replayed in a
/// shuffled order; `active` of them (all if `None`) in the measured
/// traffic.
fn snat_frames(flows: u32, active: Option<u32>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let f = |k: u32| {
        packet(
            Ipv4Addr::from(base + (k % 65536)),
            10000 + (k / 65536) as u16,
        )
    };
    // Shuffle the flow keys, then build the frames in that order: the
    // frames sit in memory in the order they are replayed, as a real
    // port's ring hands them over. (Shuffling built frames would make
    // every replayed frame a cache miss of the benchmark's own.)
    let mut keys: Vec<u32> = (0..flows).collect();
    shuffle(&mut keys);
    let all: Vec<Vec<u8>> = keys.iter().map(|&k| f(k)).collect();
    let mut hot_keys: Vec<u32> = match active {
        Some(a) => (0..a.min(flows))
            .map(|k| k * (flows / a.max(1)).max(1))
            .collect(),
        None => keys,
    };
    shuffle(&mut hot_keys);
    let hot = hot_keys.iter().map(|&k| f(k)).collect();
    (all, hot)
}

/// Pod -> remote pods spread over all `peers`: 4,096 destinations.
fn encap_frames(peers: u32) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| {
            let k = (i.wrapping_mul(2_654_435_761)) % peers.max(1);
            let [_, _, hi, lo] = k.to_be_bytes();
            packet(Ipv4Addr::new(10, hi, lo, 2), 10000 + (i % 1000) as u16)
        })
        .collect();
    shuffle(&mut v);
    v
}

/// Runs `w` until `packets` went through; nanoseconds per packet. `prefill`
/// frames go through first, unmeasured.
fn time(w: &mut Worker, packets: u64) -> f64 {
    let now = Duration::from_secs(1);
    let start = Instant::now();
    let mut done = 0u64;
    while done < packets {
        done += w.poll(now) as u64;
    }
    start.elapsed().as_nanos() as f64 / done.max(1) as f64
}

/// One measurement with `workers` threads (one per core), each building
/// its worker with `make` and, before timing, running `prefill` packets;
/// returns aggregate nanoseconds per packet (wall time / all packets).
fn run_workers(workers: usize, make: impl Fn() -> (Worker, u64) + Sync, packets: u64) -> f64 {
    let barrier = std::sync::Barrier::new(workers);
    let per: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers)
            .map(|i| {
                let (make, barrier) = (&make, &barrier);
                s.spawn(move || {
                    core_affinity::set_for_current(core_affinity::CoreId { id: i });
                    let (mut w, prefill) = make();
                    time(&mut w, prefill);
                    barrier.wait();
                    time(&mut w, packets)
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    // Each thread moved `packets` in ns_i * packets; together they moved
    // workers * packets in the longest of those times.
    let longest = per.iter().copied().fold(0.0, f64::max);
    longest / workers as f64
}

/// One table row: each cell's median (range) and its change from the
/// first row's cell in the same column (`base`, set by the first row).
fn row(out: &mut String, label: &str, cells: &[Spread], base: &mut Vec<f64>) {
    if base.is_empty() {
        base.extend(cells.iter().map(|c| c.0));
    }
    let _ = write!(out, "| {label} |");
    for (c, b) in cells.iter().zip(base.iter()) {
        let _ = write!(
            out,
            " {:.0} ({:.0}-{:.0}) ns, {:+.0}% |",
            c.0,
            c.1,
            c.2,
            (c.0 / b - 1.0) * 100.0
        );
    }
    let _ = writeln!(out);
}

/// The scaling tables as Markdown.
pub fn report(smoke: bool) -> String {
    let (flow_sizes, peer_sizes, runs, packets): (&[u32], &[u32], usize, u64) = if smoke {
        (&[1_000, 10_000], &[10, 100], 1, 50_000)
    } else {
        (
            &[1_000, 100_000, 1_000_000],
            &[10, 1_000, 10_000],
            3,
            4_000_000,
        )
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Worker alone over replaying ports, 64-byte packets, bursts of 32; ns per packet (aggregate with 2 workers), median of {runs} (range).\n"
    );
    let _ = writeln!(
        out,
        "| pod -> external (conntrack + SNAT) | 1 worker, traffic over all tracked flows | 2 workers, all flows | 1 worker, 1k active flows among those tracked | 2 workers, 1k active |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    let mut base = Vec::new();
    for &flows in flow_sizes {
        let mut cells = Vec::new();
        for (active, workers) in [(None, 1), (None, 2), (Some(1000), 1), (Some(1000), 2)] {
            let (all, hot) = snat_frames(flows, active);
            let make = || {
                let mut w = worker(10, (flows as usize * 2).max(1024), all.clone());
                let prefill = u64::from(flows);
                // Fill the table, then switch the port to the measured mix.
                time(&mut w, prefill);
                w.remove_pod(POD);
                w.add_port(
                    Box::new(ReplayPort::new(hot.clone(), Framing::Ip, 32)),
                    Role::Pod { ip: POD, mac: None },
                );
                (w, 0)
            };
            let v: Vec<f64> = (0..runs)
                .map(|_| run_workers(workers, make, packets))
                .collect();
            cells.push(median(v).unwrap_or((f64::NAN, f64::NAN, f64::NAN)));
        }
        row(
            &mut out,
            &format!("{flows} tracked flows"),
            &cells,
            &mut base,
        );
    }
    let _ = writeln!(
        out,
        "\n| pod -> remote pod (route + VXLAN encap), 4,096 destinations spread over all peers | 1 worker | 2 workers |"
    );
    let _ = writeln!(out, "|---|---|---|");
    let mut base = Vec::new();
    for &peers in peer_sizes {
        let frames = encap_frames(peers);
        let mut cells = Vec::new();
        for workers in [1, 2] {
            let make = || (worker(peers, 1024, frames.clone()), 4096);
            let v: Vec<f64> = (0..runs)
                .map(|_| run_workers(workers, make, packets))
                .collect();
            cells.push(median(v).unwrap_or((f64::NAN, f64::NAN, f64::NAN)));
        }
        row(&mut out, &format!("{peers} peer nodes"), &cells, &mut base);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames reach the paths they are meant to measure: every SNAT
    /// packet is translated (one conntrack entry per flow), every encap
    /// packet encapsulated, none dropped.
    #[test]
    fn scaling_traffic_takes_the_measured_paths() {
        // 200 bursts of 32.
        let (all, hot) = snat_frames(6400, Some(100));
        assert_eq!(hot.len(), 100);
        let mut w = worker(10, 10_000, all);
        time(&mut w, 6400);
        assert_eq!(w.conntrack().len(), 6400);
        assert_eq!(w.counters.nat, 6400);
        let mut w = worker(1000, 1024, encap_frames(1000));
        time(&mut w, 4096);
        assert_eq!(w.counters.encapsulated, 4096);
        assert_eq!(w.counters.drops.iter().sum::<u64>(), 0);
    }
}
