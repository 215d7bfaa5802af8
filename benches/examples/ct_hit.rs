//! Replays one conntrack hit `N` times, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/ct_hit`
//! (per-packet instructions = total / N, minus the fill's share).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use nat::{Conntrack, ConntrackConfig, Origin, PortRange, SnatConfig};
use sluice_benches::frames::pod_udp;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut s = SnatConfig::new(
        vec!["10.244.0.0/16".parse().expect("cidr")],
        vec!["10.96.0.0/12".parse().expect("cidr")],
        Ipv4Addr::new(192, 0, 2, 10),
    );
    s.ports = PortRange {
        min: 1024,
        max: 65535,
    };
    let mut ct = Conntrack::new(ConntrackConfig::default(), Some(s));
    let original = pod_udp(0, 64);
    let mut p = original.clone();
    ct.process(Duration::from_secs(1), &mut p, Origin::Pod);
    let now = Duration::from_secs(2);
    for _ in 0..n {
        p.copy_from_slice(&original);
        black_box(ct.process(now, black_box(&mut p), Origin::Pod));
    }
}
