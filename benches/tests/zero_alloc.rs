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
        // The success paths are what is measured: each call must succeed
        // (a refusal allocating nothing is tested below, apart).
        let clean = buf.clone();
        assert_eq!(
            count(N, || {
                buf.copy_from_slice(&clean);
                let r = black_box(vxlan::encapsulate(&mut buf, OVERHEAD..end, &tmpl));
                assert_eq!(r.map(|r| r.len()), Ok(end), "encap {size}");
            }),
            0.0,
            "encap {size}"
        );
        let sealed = outer.clone();
        assert_eq!(
            count(N, || {
                outer.copy_from_slice(&sealed);
                let d = black_box(vxlan::decapsulate(&mut outer, &cfg));
                assert_eq!(d.map(|d| d.inner.len()), Ok(f.len()), "decap {size}");
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

/// The same with the table mirrored to a state region (a daemon's: every
/// packet's change written through): new flows, hits in both directions
/// and removals allocate nothing either.
#[test]
fn a_mirrored_table_allocates_nothing_per_packet() {
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
    let spec = nat::state_spec(&cfg, Some(&snat), [1; 16]);
    let region = persist::Region::anonymous(&spec).unwrap();
    let now = Duration::from_secs(1);
    let (mut ct, _) = Conntrack::with_state(cfg, Some(snat), region, now);
    let mut pkts: Vec<Vec<u8>> = (0..2_000).map(|i| pod_udp(i, 64)).collect();
    let mut it = pkts.iter_mut();
    let per_new = count(2_000, || {
        let p = it.next().unwrap();
        assert!(matches!(
            ct.process(now, p, Origin::Pod),
            Verdict::Accept(_)
        ));
    });
    assert_eq!(per_new, 0.0, "new flow, written through");
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
    assert_eq!(per_hit, 0.0, "hit in both directions, written through");
    // Expiry removes (and clears records) without allocating.
    let per_expiry = count(100, || {
        ct.handle_timeout(Duration::from_secs(100_000));
    });
    assert_eq!(per_expiry, 0.0, "expiry, written through");
    assert_eq!(ct.state().unwrap().mark(), 3 * 2_000);
}

/// The hit path with the table at 1M live entries (the size
/// benches/README.md reports): both directions, on flows spread over the
/// table, allocate nothing. Filling it takes a few seconds in a debug
/// build.
#[test]
fn conntrack_hit_at_one_million_entries_does_not_allocate() {
    use nat::{Conntrack, ConntrackConfig, Origin, SnatConfig, Verdict};
    use sluice_benches::frames::{pod_udp, reply_to};
    use std::time::Duration;

    const FLOWS: u32 = 1_000_000;
    // The benchmark's settings (benches/nat.rs): the whole port range, so
    // each destination's ~3,900 flows find ports.
    let mut snat = SnatConfig::new(
        vec!["10.244.0.0/16".parse().unwrap()],
        vec![],
        std::net::Ipv4Addr::new(192, 0, 2, 10),
    );
    snat.ports = nat::PortRange {
        min: 1024,
        max: 65535,
    };
    let cfg = ConntrackConfig {
        max_entries: FLOWS as usize + 1024,
        ..ConntrackConfig::default()
    };
    let mut ct = Conntrack::new(cfg, Some(snat));
    let now = Duration::from_secs(1);
    // Every 500th flow is kept, with its reply, for the measurement.
    let mut sample: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..FLOWS {
        let original = pod_udp(i, 64);
        let mut out = original.clone();
        assert!(
            matches!(ct.process(now, &mut out, Origin::Pod), Verdict::Accept(_)),
            "flow {i} refused"
        );
        if i % 500 == 0 {
            sample.push((original, reply_to(&out)));
        }
    }
    assert_eq!(ct.len(), FLOWS as usize, "1M live entries");
    let mut bufs: Vec<(Vec<u8>, Vec<u8>)> = sample.clone();
    let mut k = 0;
    let per_hit = count(sample.len() as u64, || {
        let ((p, r), (p0, r0)) = (&mut bufs[k], &sample[k]);
        k += 1;
        p.copy_from_slice(p0);
        r.copy_from_slice(r0);
        assert!(matches!(
            ct.process(now, p, Origin::Pod),
            Verdict::Accept(_)
        ));
        assert!(matches!(
            ct.process(now, r, Origin::Uplink),
            Verdict::Accept(_)
        ));
    });
    assert_eq!(per_hit, 0.0, "hit in both directions at 1M entries");
    assert_eq!(ct.len(), FLOWS as usize, "hits opened nothing new");
}

/// The worker's whole per-packet path (poll, parse, route, encap / decap /
/// conntrack + SNAT, enqueue, flush) allocates nothing, over ports that
/// replay frames without allocating.
#[test]
fn worker_poll_does_not_allocate() {
    use dataplane::port::Framing;
    use dataplane::route::{Node, PeerSpec, Routes, Snapshot};
    use dataplane::worker::{Role, Worker};
    use encap::MacAddr;
    use nat::{ConntrackConfig, SnatConfig};
    use sluice_benches::replay::ReplayPort;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    let node = Node {
        name: "a".into(),
        ip: Ipv4Addr::new(192, 0, 2, 1),
        uplink_mac: MacAddr([2, 0x10, 0, 0, 0, 1]),
        uplink_mtu: 1500,
        vtep_mac: MacAddr([2, 0xee, 0, 0, 0, 1]),
        pod_cidr: "10.244.1.0/24".parse().unwrap(),
        gateway_ip: Ipv4Addr::new(10, 244, 1, 1),
        gateway_mac: Some(MacAddr([2, 0, 0, 0, 0, 0xfe])),
    };
    let snap = Snapshot::new(
        1,
        node.clone(),
        VxlanConfig::default(),
        vec!["10.244.0.0/16".parse().unwrap()],
        [PeerSpec {
            name: "b".into(),
            ip: Ipv4Addr::new(192, 0, 2, 2),
            vtep_mac: MacAddr([2, 0xee, 0, 0, 0, 2]),
            pod_cidrs: vec!["10.244.2.0/24".parse().unwrap()],
        }],
        &|_| Some(MacAddr([2, 0x10, 0, 0, 0, 2])),
    );
    let routes = Routes::new(snap);
    let snat = SnatConfig::new(
        vec![node.pod_cidr],
        vec!["10.244.0.0/16".parse().unwrap()],
        node.ip,
    );
    let mut w = Worker::new(routes, ConntrackConfig::default(), Some(snat), 1024);
    // Pod 10.244.1.2 sends to a remote pod (encap) and to the outside
    // (conntrack + SNAT); the uplink brings VXLAN for it (decap).
    let ip = |dst: [u8; 4]| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 244, 1, 2], dst, 64)
            .udp(40000, 53)
            .write(&mut v, &[0x5a; 36])
            .unwrap();
        v
    };
    let pod_frames = vec![ip([10, 244, 2, 3]), ip([198, 51, 100, 1])];
    let mut inner = vec![2, 0xee, 0, 0, 0, 1, 2, 0xee, 0, 0, 0, 2, 8, 0];
    let mut to_pod = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 244, 2, 3], [10, 244, 1, 2], 64)
        .udp(53, 40000)
        .write(&mut to_pod, &[0x5a; 36])
        .unwrap();
    inner.extend_from_slice(&to_pod);
    let tmpl = EncapTemplate::new(
        &VxlanConfig::default(),
        &vxlan::TunnelEndpoint {
            local_mac: MacAddr([2, 0x10, 0, 0, 0, 2]),
            next_hop_mac: node.uplink_mac,
            local_ip: Ipv4Addr::new(192, 0, 2, 2),
            remote_ip: node.ip,
        },
    );
    let mut b = with_headroom(&inner);
    let end = b.len();
    let r = vxlan::encapsulate(&mut b, OVERHEAD..end, &tmpl).unwrap();
    let vx = b[r].to_vec();
    w.add_port(
        Box::new(ReplayPort::new(vec![vx], Framing::Ethernet, 16)),
        Role::Uplink,
    );
    w.add_port(
        Box::new(ReplayPort::new(pod_frames, Framing::Ip, 32)),
        Role::Pod {
            ip: Ipv4Addr::new(10, 244, 1, 2),
            mac: None,
        },
    );
    let now = Duration::from_secs(1);
    w.poll(now); // the first SNAT packet creates its entry (no allocation either)
    let per_poll = count(N, || {
        assert_eq!(w.poll(now), 48);
    });
    assert_eq!(per_poll, 0.0, "allocations per poll of 48 frames");
    assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
    assert!(w.counters.encapsulated >= N * 16);
    assert!(w.counters.decapsulated >= N * 16);
    assert!(w.counters.nat >= N * 16);
}

#[test]
fn policing_a_pods_rate_limits_does_not_allocate() {
    use dataplane::counters::Reason;
    use dataplane::route::PeerSpec;
    use dataplane::shaper::{PodLimits, Rate};
    use encap::MacAddr;
    use sluice_benches::replay::{bench_node, replay_worker};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    let pod = Ipv4Addr::new(10, 244, 1, 2);
    let ip = |dst: [u8; 4]| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4(pod.octets(), dst, 64)
            .udp(40000, 53)
            .write(&mut v, &[0x5a; 36])
            .unwrap();
        v
    };
    // To a remote pod (egress only) and to itself (egress, then ingress).
    let mut w = replay_worker(
        bench_node("10.244.1.0/24"),
        [PeerSpec {
            name: "b".into(),
            ip: Ipv4Addr::new(192, 0, 2, 2),
            vtep_mac: MacAddr([2, 0xee, 0, 0, 0, 2]),
            pod_cidrs: vec!["10.244.2.0/24".parse().unwrap()],
        }],
        "10.244.0.0/16",
        1024,
        Vec::new(),
        pod,
        vec![ip([10, 244, 2, 3]), ip(pod.octets())],
    );
    let limit = Rate {
        bits_per_sec: 100_000_000,
        burst_bits: 64 * 8 * 64,
    };
    assert!(w.limit_pod(
        pod,
        PodLimits {
            // Below what egress lets through towards the pod itself.
            ingress: Some(Rate {
                bits_per_sec: 10_000_000,
                ..limit
            }),
            egress: Some(limit),
        }
    ));
    let mut now = Duration::from_secs(1);
    w.poll(now);
    let per_poll = count(N, || {
        // 32 frames of 64 bytes per poll, 10 us apart: 1.6 Gbit/s offered
        // against 100 Mbit/s.
        now += Duration::from_micros(10);
        assert_eq!(w.poll(now), 32);
    });
    assert_eq!(per_poll, 0.0, "allocations per policed poll");
    let c = &w.counters;
    assert!(c.dropped(Reason::PodEgressRate) > N * 16, "{c:?}");
    assert!(c.dropped(Reason::PodIngressRate) > 0, "{c:?}");
    assert!(c.encapsulated > 0, "{c:?}");
}

/// The service path allocates nothing per packet: established flows to
/// ClusterIPs (conntrack hit, DNAT, VXLAN to the backend), their replies
/// coming back (decap, reverse translation at delivery), and new flows
/// (the table's decision, Maglev, affinity, conntrack insert) once every
/// service port has been seen (the per-port hit counter grows when a port
/// index first appears, not per packet).
#[test]
fn service_flows_do_not_allocate() {
    use lb::{Endpoint, NodeFacts, PortName, Proto, ServicePort, ServiceTable};
    use sluice_benches::replay::{bench_node, replay_worker};
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::Duration;

    let vip = |i: u8| Ipv4Addr::new(10, 96, 0, 10 + i);
    let ports: Vec<ServicePort> = (0..4u8)
        .map(|i| {
            let mut p = ServicePort::cluster_ip(
                PortName {
                    namespace: "z".into(),
                    service: format!("s{i}"),
                    port: String::new(),
                    proto: Proto::Udp,
                },
                vip(i),
                53,
            );
            p.endpoints = (0..3)
                .map(|k| Endpoint::ready(Ipv4Addr::new(10, 244, 2, 2 + k), 5353, false))
                .collect();
            p.affinity = (i == 0).then_some(Duration::from_secs(60));
            p
        })
        .collect();
    let table = Arc::new(ServiceTable::new(
        NodeFacts {
            name: "a".into(),
            zone: None,
            node_ips: vec![Ipv4Addr::new(192, 0, 2, 1)],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        },
        ports,
    ));
    let udp = |dst: Ipv4Addr, sport: u16| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 244, 1, 2], dst.octets(), 64)
            .udp(sport, 53)
            .write(&mut v, &[0x5a; 36])
            .unwrap();
        v
    };
    let established: Vec<Vec<u8>> = (0..32u16)
        .map(|k| udp(vip((k % 4) as u8), 40000 + k))
        .collect();
    let mut w = replay_worker(
        bench_node("10.244.1.0/24"),
        [dataplane::route::PeerSpec {
            name: "b".into(),
            ip: Ipv4Addr::new(192, 0, 2, 2),
            vtep_mac: encap::MacAddr([2, 0xee, 0, 0, 0, 2]),
            pod_cidrs: vec!["10.244.2.0/24".parse().unwrap()],
        }],
        "10.244.0.0/16",
        4096,
        vec![],
        Ipv4Addr::new(10, 244, 1, 2),
        established,
    );
    w.routes()
        .store(w.routes().load_full().as_ref().clone().with_services(table));
    let now = Duration::from_secs(1);
    w.poll(now); // the 32 flows start; every port index appears once
    let per_poll = count(N, || {
        assert_eq!(w.poll(now), 32);
    });
    assert_eq!(
        per_poll, 0.0,
        "allocations per poll of 32 established service packets"
    );
    assert_eq!(w.counters.svc_flows, 32, "{:?}", w.counters);
    assert_eq!(w.counters.total_dropped(), 0, "{:?}", w.counters);
    assert!(w.counters.svc_translated >= N * 32);
    // New flows: the table's decision with affinity, and conntrack
    // creating each DNAT entry through the service hook, one flow per
    // packet (the packets are built before counting).
    let table = w.routes().load_full().services.clone();
    let mut aff = lb::AffinityTable::new(1024);
    let mut k = 0u16;
    let per_decide = count(N, || {
        k = k.wrapping_add(1);
        black_box(table.decide_with_affinity(
            &mut aff,
            now,
            &lb::Flow {
                src: Ipv4Addr::new(10, 244, 1, 2),
                dst: vip((k % 4) as u8),
                proto: 17,
                sport: k,
                dport: 53,
            },
        ));
    });
    assert_eq!(per_decide, 0.0, "allocations per first-packet decision");
    struct Hook<'a>(&'a ServiceTable);
    impl nat::Services for Hook<'_> {
        fn generation(&self) -> u32 {
            1
        }
        fn new_flow(&mut self, _: Duration, t: &nat::Tuple) -> Option<nat::Nat> {
            match self.0.decide(&lb::Flow {
                src: t.src,
                dst: t.dst,
                proto: t.proto,
                sport: t.src_port,
                dport: t.dst_port,
            }) {
                lb::Verdict::Dnat { port, backend, .. } => Some(nat::Nat {
                    dnat: Some((backend.ip, backend.port)),
                    masquerade: None,
                    service: port + 1,
                }),
                _ => None,
            }
        }
        fn still_serves(&mut self, _: u32, _: (Ipv4Addr, u16)) -> bool {
            true
        }
    }
    let mut ct = nat::Conntrack::new(
        nat::ConntrackConfig {
            max_entries: 8192,
            ..nat::ConntrackConfig::default()
        },
        None,
    );
    let mut packets: Vec<Vec<u8>> = (0..N as u16)
        .map(|k| udp(vip((k % 4) as u8), 1000 + k))
        .collect();
    let mut hook = Hook(&table);
    let mut i = 0;
    let per_new = count(N, || {
        let v = ct.process_with(now, &mut packets[i], nat::Origin::Pod, &mut hook);
        assert!(
            matches!(v, nat::Verdict::Accept(a) if a.translated),
            "{v:?}"
        );
        i += 1;
    });
    assert_eq!(per_new, 0.0, "allocations per new service flow");
    assert_eq!(ct.len(), N as usize);
}

/// Issue 17: the offload uplink's transmit path (VXLAN frames of a TCP
/// flow merged into UDP-tunnel GSO writes, in a buffer allocated once)
/// allocates nothing per batch.
#[test]
fn uplink_coalescing_does_not_allocate() {
    use dataplane::port::gro::fuzzing::tcp_segment;
    use dataplane::port::gro::{Coalescer, Layout};
    let frames: Vec<Vec<u8>> = (0..32u32)
        .map(|i| {
            let mut inner = vec![0x0a, 0x58, 0, 0, 0, 2, 0x0a, 0x58, 0, 0, 0, 1, 0x08, 0x00];
            inner.extend_from_slice(&tcp_segment(1 + i * 1400, &[7; 1400], 0x10, &[]));
            vxlan_frame(&inner)
        })
        .collect();
    let mut c = Coalescer::with_layout(Layout::VXLAN);
    let mut writes = 0usize;
    // The measurement can fail: the batch must really be merged.
    let (w, _) = c.write_batch(frames.iter().map(Vec::as_slice), |b| Ok(b.len()));
    assert_eq!(w.writes, 1, "32 segments of one flow, one write");
    assert_eq!(
        count(N, || {
            let (w, e) = c.write_batch(frames.iter().map(Vec::as_slice), |b| {
                writes += 1;
                Ok(black_box(b).len())
            });
            assert!(e.is_none() && w.failed == 0);
        }),
        0.0,
        "VXLAN coalescing"
    );
    assert_eq!(writes as u64, N);
}

/// NetworkPolicy in the worker: established packets (the verdict found in
/// the flow table) and first packets (decided and inserted, evicting once
/// the table is full) allocate nothing once the table exists and the
/// rule's counters have been seen.
#[test]
fn policy_checks_do_not_allocate() {
    use sluice_benches::policy::{frames, policy_worker};
    use std::time::Duration;
    let now = Duration::from_secs(1);
    for n in [100u32, 10_000] {
        let k = n - 1;
        let mut w = policy_worker(n, false, frames(&[k], 40000..40001));
        w.poll(now);
        assert_eq!(
            count(200, || {
                w.poll(now);
            }),
            0.0,
            "established, {n} rules"
        );
        assert_eq!(w.policy.decided, 1);
        let mut w = policy_worker(n, false, frames(&[k, k - 1], 0..4096));
        w.poll(now);
        assert_eq!(
            count(200, || {
                w.poll(now);
            }),
            0.0,
            "first packets, {n} rules"
        );
        assert!(w.policy.decided > 200 * 32, "{}", w.policy.decided);
        assert_eq!(w.counters.total_dropped(), 0);
    }
}
