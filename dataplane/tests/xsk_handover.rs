//! An AF_XDP socket handed over (a restart with the next daemon started
//! first): the port that takes it maps the socket and its UMEM back, still
//! bound, and goes on receiving and sending where the first left off,
//! through rings that have wrapped. Real sockets on a veth pair in two
//! namespaces the test creates (root; removed on drop).

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::buf::Buf;
use dataplane::port::Port;
use dataplane::port::xdp::{SteerConfig, SteerProgram, XdpPort};
use support::{Netns, require_root};

/// A frame to `dst` carrying `seq`.
fn frame(dst: [u8; 6], seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(64, 0xab);
    f
}

/// Sends frames `from..to` through `tx` and reads from `rx` until
/// `expect` test frames came: returns their sequence numbers, in order.
fn exchange(
    tx: &mut XdpPort,
    rx: &mut XdpPort,
    dst: [u8; 6],
    (from, to): (u32, u32),
    expect: usize,
) -> Vec<u32> {
    let mut got = Vec::new();
    let mut bufs: Vec<Buf> = (0..64).map(|_| Buf::new()).collect();
    let mut next = from;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < expect && Instant::now() < deadline {
        if next < to {
            let batch: Vec<Buf> = (next..to.min(next + 32))
                .map(|s| {
                    let mut b = Buf::new();
                    b.fill(&frame(dst, s));
                    b
                })
                .collect();
            next += tx.send(&batch).unwrap() as u32;
        }
        let n = rx.recv(&mut bufs).unwrap();
        for b in bufs.iter().take(n) {
            let d = b.data();
            if d.len() >= 18 && d[12..14] == [0x88, 0xb5] {
                got.push(u32::from_be_bytes([d[14], d[15], d[16], d[17]]));
            }
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    got
}

#[test]
fn a_handed_socket_carries_on_receiving_and_sending() {
    if !require_root("a_handed_socket_carries_on_receiving_and_sending") {
        return;
    }
    let a = Netns::new("xha");
    let b = Netns::new("xhb");
    a.ip(&[
        "link", "add", "xh-a", "type", "veth", "peer", "name", "xh-b", "netns", &b.name,
    ]);
    a.ip(&["link", "set", "xh-a", "up"]);
    b.ip(&["link", "set", "xh-b", "up"]);
    let path = |n: &Netns| PathBuf::from(format!("/var/run/netns/{}", n.name));
    let open = |n: &Netns, dev: &'static str| {
        dataplane::netns::run_in(&path(n), move || {
            let prog = Arc::new(SteerProgram::attach(dev, SteerConfig::all())?);
            let port = XdpPort::open(dev, 0, Some(prog.clone()))?;
            Ok((port, prog))
        })
        .unwrap()
    };
    let (mut pa, _prog_a) = open(&a, "xh-a");
    let (mut pb, prog_b) = open(&b, "xh-b");
    let (mac_a, mac_b) = (a.mac("xh-a"), b.mac("xh-b"));

    // More frames than a ring holds, both ways: the indices wrap and TX
    // frames come back through the completion ring before the hand-over.
    const N: u32 = 5000;
    let seqs = exchange(&mut pa, &mut pb, mac_b, (0, N), N as usize);
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "before the hand-over");
    let back = exchange(&mut pb, &mut pa, mac_a, (0, N), N as usize);
    assert_eq!(back.len(), N as usize);

    // Frames that arrive while nobody reads (between the old daemon's
    // last poll and the new one's first) wait in the RX ring.
    let waiting: Vec<Buf> = (N..N + 100)
        .map(|s| {
            let mut b = Buf::new();
            b.fill(&frame(mac_b, s));
            b
        })
        .collect();
    assert_eq!(pa.send(&waiting).unwrap(), 100);
    std::thread::sleep(Duration::from_millis(50));

    let handed = pb.hand_over().unwrap();
    assert_eq!(handed.queue, 0);
    // The first owner goes (as the old process exits): its mappings and
    // its descriptor close; the socket stays bound through the handed one.
    drop(pb);
    let prog = prog_b.clone();
    let mut pb2 = dataplane::netns::run_in(&path(&b), move || {
        XdpPort::adopt("xh-b", handed, Some(prog))
    })
    .unwrap();
    // The waiting frames come first, then the new ones.
    let seqs = exchange(&mut pa, &mut pb2, mac_b, (N + 100, 2 * N), N as usize);
    assert_eq!(
        seqs,
        (N..2 * N).collect::<Vec<_>>(),
        "after the hand-over: the waiting frames, then every new one, none twice"
    );
    let back = exchange(&mut pb2, &mut pa, mac_a, (N, 2 * N), N as usize);
    assert_eq!(
        back,
        (N..2 * N).collect::<Vec<_>>(),
        "the adopted socket sends, its TX frames reused"
    );
    assert_eq!(pb2.kernel_drops(), 0);
}

#[test]
fn a_handed_socket_for_another_interface_is_refused() {
    if !require_root("a_handed_socket_for_another_interface_is_refused") {
        return;
    }
    let a = Netns::new("xhc");
    a.ip(&[
        "link", "add", "xh-c", "type", "veth", "peer", "name", "xh-d",
    ]);
    a.ip(&["link", "set", "xh-c", "up"]);
    a.ip(&["link", "set", "xh-d", "up"]);
    let path = PathBuf::from(format!("/var/run/netns/{}", a.name));
    let err = dataplane::netns::run_in(&path, || {
        let mut p = XdpPort::open("xh-c", 0, None)?;
        let h = p.hand_over()?;
        match XdpPort::adopt("xh-d", h, None) {
            Ok(_) => Ok(String::new()),
            Err(e) => Ok(e.to_string()),
        }
    })
    .unwrap();
    assert!(err.contains("not xh-d"), "{err}");
}
