//! The per-packet paths allocate nothing: parse, encap, decap (success and
//! every kind of refusal), checksums and the flow hash, counted by a global
//! allocator over thousands of packets.

use std::hint::black_box;

use encap::checksum::{internet_checksum, update_ipv4_addr};
use encap::flow::FlowHasher;
use encap::parse::parse_frame;
use encap::vxlan::{self, EncapTemplate, OVERHEAD, VxlanConfig};
use sluice_benches::alloc::{CountingAlloc, allocations, count};
use sluice_benches::frames::{endpoint, udp_frame, vxlan_frame, with_headroom};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const N: u64 = 2_000;

#[test]
fn the_counter_sees_allocations() {
    // The measurement itself can fail: a Vec per iteration is counted.
    let per = count(100, || {
        let _ = black_box(vec![0u8; 64]);
    });
    assert_eq!(per, 1.0);
    assert!(allocations() >= 100);
}

#[test]
fn per_packet_paths_do_not_allocate() {
    let cfg = VxlanConfig::default();
    let tmpl = EncapTemplate::new(&cfg, &endpoint());
    for size in [64, 1400] {
        let f = udp_frame(size);
        let mut buf = with_headroom(&f);
        let end = buf.len();
        let mut outer = vxlan_frame(&f);
        let key = parse_frame(&f).unwrap().flow_key().unwrap();
        let h = FlowHasher::symmetric(1);
        assert_eq!(
            count(N, || {
                let _ = black_box(parse_frame(black_box(&f)));
            }),
            0.0,
            "parse {size}"
        );
        assert_eq!(
            count(N, || {
                let _ = black_box(vxlan::encapsulate(&mut buf, OVERHEAD..end, &tmpl));
            }),
            0.0,
            "encap {size}"
        );
        assert_eq!(
            count(N, || {
                let _ = black_box(vxlan::decapsulate(&mut outer, &cfg));
            }),
            0.0,
            "decap {size}"
        );
        assert_eq!(
            count(N, || {
                let _ = black_box(internet_checksum(&f));
            }),
            0.0,
            "checksum {size}"
        );
        assert_eq!(
            count(N, || {
                let _ = black_box(h.hash(black_box(&key)));
            }),
            0.0,
            "flow hash"
        );
        let (a, b) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        assert_eq!(
            count(N, || {
                let _ = black_box(update_ipv4_addr(1, a, b));
            }),
            0.0,
            "incremental"
        );
    }
}

#[test]
fn refusals_do_not_allocate() {
    let cfg = VxlanConfig::default();
    let f = udp_frame(64);
    let good = vxlan_frame(&f);
    let mut bad_port = good.clone();
    bad_port[36] ^= 0xff;
    let mut no_flag = good.clone();
    no_flag[42] = 0;
    let mut short = good.clone();
    short.truncate(30);
    for (name, mut frame) in [
        ("wrong port", bad_port),
        ("no I flag", no_flag),
        ("truncated", short),
    ] {
        assert!(vxlan::decapsulate(&mut frame, &cfg).is_err());
        assert_eq!(
            count(N, || {
                let _ = black_box(vxlan::decapsulate(&mut frame, &cfg));
            }),
            0.0,
            "{name}"
        );
    }
    let mut garbage = vec![0xffu8; 60];
    assert_eq!(
        count(N, || {
            let _ = black_box(parse_frame(black_box(&garbage)));
        }),
        0.0
    );
    garbage[12] = 0x08;
    garbage[13] = 0x00;
    assert_eq!(
        count(N, || {
            let _ = black_box(parse_frame(black_box(&garbage)));
        }),
        0.0
    );
}
