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

#[test]
fn conntrack_hit_and_new_flow_do_not_allocate() {
    use nat::{Conntrack, ConntrackConfig, Origin, SnatConfig, Verdict};
    use sluice_benches::frames::{pod_udp, reply_to};
    use std::time::Duration;

    let snat = SnatConfig::new(
        vec!["10.244.0.0/16".parse().unwrap()],
        vec![],
        std::net::Ipv4Addr::new(192, 0, 2, 10),
    );
    let cfg = ConntrackConfig {
        max_entries: 10_000,
        ..ConntrackConfig::default()
    };
    // The table is sized up front, so even new flows allocate nothing.
    let mut ct = Conntrack::new(cfg, Some(snat));
    let now = Duration::from_secs(1);
    let mut pkts: Vec<Vec<u8>> = (0..2_000).map(|i| pod_udp(i, 64)).collect();
    let mut it = pkts.iter_mut();
    let per_new = count(2_000, || {
        let p = it.next().unwrap();
        assert!(matches!(
            ct.process(now, p, Origin::Pod),
            Verdict::Accept(_)
        ));
    });
    assert_eq!(per_new, 0.0, "new flow with SNAT");
    let original = pod_udp(0, 64);
    let mut out = original.clone();
    ct.process(now, &mut out, Origin::Pod);
    let reply = reply_to(&out);
    let (mut p, mut r) = (original.clone(), reply.clone());
    let per_hit = count(N, || {
        p.copy_from_slice(&original);
        r.copy_from_slice(&reply);
        assert!(matches!(
            ct.process(now, &mut p, Origin::Pod),
            Verdict::Accept(_)
        ));
        assert!(matches!(
            ct.process(now, &mut r, Origin::Uplink),
            Verdict::Accept(_)
        ));
    });
    assert_eq!(per_hit, 0.0, "hit in both directions");
    // A burst of 32 hits through process_burst: its staging is on the stack.
    let burst_src: Vec<Vec<u8>> = (0..nat::BURST as u32).map(|i| pod_udp(i, 64)).collect();
    let mut burst = burst_src.clone();
    let mut verdicts = [Verdict::Drop(nat::DropReason::Malformed); nat::BURST];
    let per_burst = count(N / 32, || {
        for (b, s) in burst.iter_mut().zip(&burst_src) {
            b.copy_from_slice(s);
        }
        assert_eq!(
            ct.process_burst(now, &mut burst, Origin::Pod, &mut verdicts),
            nat::BURST
        );
        assert!(verdicts.iter().all(|v| matches!(v, Verdict::Accept(_))));
    });
    assert_eq!(per_burst, 0.0, "process_burst of 32 hits");
}
