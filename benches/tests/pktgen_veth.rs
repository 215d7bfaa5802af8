//! pktgen over real AF_XDP sockets on a veth pair in two namespaces the
//! test creates: every frame sent arrives, in order, stamped, and the sink
//! reports latency. (Root; the namespaces are removed on drop.)

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dataplane::buf::Buf;
use dataplane::port::Port;
use dataplane::port::xdp::{SteerConfig, SteerProgram, XdpPort};
use sluice_benches::pktgen::{Generator, Profile, Sink};
use support::{Netns, require_root};

#[test]
fn every_frame_arrives_in_order_with_a_latency() {
    if !require_root("every_frame_arrives_in_order_with_a_latency") {
        return;
    }
    let a = Netns::new("pga");
    let b = Netns::new("pgb");
    a.ip(&[
        "link", "add", "pg-a", "type", "veth", "peer", "name", "pg-b", "netns", &b.name,
    ]);
    a.ip(&["link", "set", "pg-a", "up"]);
    b.ip(&["link", "set", "pg-b", "up"]);
    a.exec(&["ethtool", "-K", "pg-a", "gro", "on"]);
    let path = |n: &Netns| PathBuf::from(format!("/var/run/netns/{}", n.name));
    let mut tx = dataplane::netns::run_in(&path(&a), || XdpPort::open("pg-a", 0, None)).unwrap();
    let mut rx = dataplane::netns::run_in(&path(&b), || {
        let prog = SteerProgram::attach("pg-b", SteerConfig::all())?;
        XdpPort::open("pg-b", 0, Some(std::sync::Arc::new(prog)))
    })
    .unwrap();
    let profile = Profile {
        frame_len: 60,
        flows: 16,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: b.mac("pg-b"),
        src_ip: Ipv4Addr::new(10, 99, 0, 1),
        dst_ip: Ipv4Addr::new(10, 99, 0, 2),
        base_port: 20000,
        dst_port: 9,
        dst_ports: 1,
        dst_ips: 1,
        vxlan: None,
    };
    let held_profile = profile.clone();
    let epoch = Instant::now();
    const N: u64 = 20_000;
    let sink = std::thread::spawn(move || {
        let mut s = Sink::new(16, epoch);
        let mut bufs: Vec<Buf> = (0..64).map(|_| Buf::new()).collect();
        s.run(&mut rx, &mut bufs, N, Duration::from_secs(5))
            .unwrap();
        (s.stats(), rx)
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut g = Generator::new(profile, epoch);
    let mut bufs: Vec<Buf> = (0..32).map(|_| Buf::new()).collect();
    // A modest rate: this checks pktgen's accounting, not the machine.
    g.run(&mut tx, &mut bufs, N, Some(50_000.0), None).unwrap();
    let (st, mut rx) = sink.join().unwrap();
    eprintln!("{st:?}");
    assert_eq!(st.received, N, "{st:?}");
    assert_eq!(st.lost, 0);
    assert_eq!(st.reordered, 0);
    let (p50, _, _) = st.latency.unwrap();

    // Against a known delay: frames stamped, then held 20 ms before they
    // are sent. The median must include the hold (the stamp is read back,
    // not made up) and the maximum stay near it; the run without a hold
    // above must have measured less.
    const HOLD: Duration = Duration::from_millis(20);
    const BATCHES: u64 = 10;
    let sink = std::thread::spawn(move || {
        let mut s = Sink::new(16, epoch);
        let mut bufs: Vec<Buf> = (0..64).map(|_| Buf::new()).collect();
        s.run(&mut rx, &mut bufs, BATCHES * 32, Duration::from_secs(5))
            .unwrap();
        s.stats()
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut g = Generator::new(held_profile, epoch);
    for _ in 0..BATCHES {
        for b in bufs.iter_mut() {
            g.fill(b);
        }
        std::thread::sleep(HOLD);
        let mut off = 0;
        while off < bufs.len() {
            off += tx.send(&bufs[off..]).unwrap();
        }
    }
    let held = sink.join().unwrap();
    eprintln!("held {HOLD:?}: {held:?}");
    assert_eq!((held.received, held.lost), (BATCHES * 32, 0), "{held:?}");
    let (h50, _, hmax) = held.latency.unwrap();
    assert!(h50 >= HOLD, "p50 {h50:?} below the {HOLD:?} hold");
    assert!(
        hmax < HOLD + Duration::from_secs(1),
        "max {hmax:?}: stamps are not the send time"
    );
    assert!(p50 < HOLD, "without a hold p50 was {p50:?}");
}
