//! TUN pods with segmentation offload, against the real kernel: two
//! namespaces, each with a Sluice TUN port, joined by a forwarding loop in
//! the test. An 8 MB TCP stream crosses and arrives byte for byte; with
//! offload the pod's kernel hands the port super-packets (more segments
//! reach the worker than the kernel counted packets) and the receiving
//! side gets coalesced writes (fewer packets than segments were sent);
//! without it, one packet is one segment. Given big buffers (as a worker
//! hands the ports that take super-packets), a TCP burst crosses whole:
//! one read and one write per super-packet.

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::buf::Buf;
use dataplane::port::Port;
use dataplane::port::tun::TunPort;
use support::{Netns, require_root, tcp_transfer};

/// Counts allocations made by the current thread, so the forwarder can
/// tell what the ports' receive and send paths allocate.
struct Counting;

thread_local! {
    static ALLOCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.try_with(|c| c.get()).unwrap_or(0)
}

const X: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const Y: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// eth0's (rx packets, tx packets) in `ns`, from /proc/thread-self/net/dev
/// (sysfs and /proc/self belong to the test's own namespace).
fn eth0_packets(ns: &Netns) -> (u64, u64) {
    let text = ns
        .enter(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
        .expect("read /proc/net/dev");
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("eth0:"))
        .expect("eth0 in /proc/net/dev");
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets ...
    (f[1], f[9])
}

/// Segments moved each way by the forwarding loop, and what the ports'
/// receive and send calls allocated.
#[derive(Debug, Default)]
struct Moved {
    x_to_y: u64,
    y_to_x: u64,
    lost: u64,
    recv_allocs: u64,
    send_allocs: u64,
    /// Packets moved as super-packets (carried whole), both ways.
    whole: u64,
}

/// One burst from `from` to `to`: segments moved.
fn hop(from: &mut TunPort, to: &mut TunPort, bufs: &mut [Buf], m: &mut Moved) -> u64 {
    let a = allocs();
    let n = from.recv(bufs).unwrap_or(0);
    m.lost += from.take_rx_errors();
    m.whole += bufs[..n].iter().filter(|b| b.gso().is_some()).count() as u64;
    let b = allocs();
    m.recv_allocs += b - a;
    if n > 0 {
        let sent = to.send(&bufs[..n]).unwrap_or(0);
        m.lost += (n - sent) as u64;
        m.send_allocs += allocs() - b;
    }
    n as u64
}

/// Moves packets between the two ports until `stop` (or 60 s, so the loop
/// is bounded even if the test's other half hangs).
fn forward(
    mut x: TunPort,
    mut y: TunPort,
    stop: Arc<AtomicBool>,
    big: bool,
) -> (Moved, TunPort, TunPort) {
    let mut bufs: Vec<Buf> = (0..32)
        .map(|_| if big { Buf::big(0) } else { Buf::new() })
        .collect();
    let mut m = Moved::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let a = hop(&mut x, &mut y, &mut bufs, &mut m);
        let b = hop(&mut y, &mut x, &mut bufs, &mut m);
        m.x_to_y += a;
        m.y_to_x += b;
        let idle = a + b == 0;
        if idle {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    // Hand the ports back (the devices live as long as they do), so the
    // kernel's counters can be read once nothing moves any more.
    (m, x, y)
}

/// Sends 8 MB from x to y over TCP through the two ports; returns what the
/// forwarder moved and the kernel's counts: x's eth0 tx packets and y's
/// eth0 rx packets.
fn transfer(offload: bool, big: bool) -> (Moved, u64, u64, bool) {
    let nx = Netns::new("tox");
    let ny = Netns::new("toy");
    let path = |n: &Netns| PathBuf::from(format!("/var/run/netns/{}", n.name));
    let px = TunPort::create(&path(&nx), "eth0", X, 1450, offload).expect("TUN x");
    let py = TunPort::create(&path(&ny), "eth0", Y, 1450, offload).expect("TUN y");
    let offloading = px.offloading() && py.offloading();
    let stop = Arc::new(AtomicBool::new(false));
    let fwd = {
        let stop = stop.clone();
        std::thread::spawn(move || forward(px, py, stop, big))
    };
    let data: Vec<u8> = (0..8 << 20)
        .map(|i: usize| (i * 31 + i / 997) as u8)
        .collect();
    tcp_transfer(&nx, &ny, Y, &data);
    // Let the last ACKs and FINs cross, then stop the forwarder and read
    // the kernel's counters while the ports (and devices) still exist.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (moved, px, py) = fwd.join().expect("forwarder");
    let (x_tx, y_rx) = (eth0_packets(&nx).1, eth0_packets(&ny).0);
    drop((px, py));
    (moved, x_tx, y_rx, offloading)
}

#[test]
fn tcp_through_offloading_tun_ports_moves_super_packets() {
    if !require_root("tcp_through_offloading_tun_ports_moves_super_packets") {
        return;
    }
    let (m, x_tx, y_rx, offloading) = transfer(true, false);
    eprintln!("offload: {m:?}, x eth0 tx {x_tx}, y eth0 rx {y_rx}");
    assert!(offloading, "the kernel refused TUN offload");
    assert_eq!(m.lost, 0);
    // 8 MB in 1410-byte segments is ~6,000 segments.
    assert!(m.x_to_y >= 5_900, "{m:?}");
    // Super-packets from the pod: several segments per packet the kernel
    // wrote into the TUN device.
    assert!(
        m.x_to_y >= 3 * x_tx,
        "{} segments from {x_tx} packets",
        m.x_to_y
    );
    // Coalesced writes towards the other pod.
    assert!(
        m.x_to_y >= 3 * y_rx,
        "{} segments in {y_rx} writes",
        m.x_to_y
    );
    // Neither splitting nor coalescing allocates.
    assert_eq!(m.recv_allocs + m.send_allocs, 0, "{m:?}");
}

#[test]
fn tcp_through_plain_tun_ports_is_one_packet_per_segment() {
    if !require_root("tcp_through_plain_tun_ports_is_one_packet_per_segment") {
        return;
    }
    let (m, x_tx, y_rx, offloading) = transfer(false, false);
    eprintln!("plain: {m:?}, x eth0 tx {x_tx}, y eth0 rx {y_rx}");
    assert!(!offloading);
    assert_eq!(m.lost, 0);
    assert!(m.x_to_y >= 5_900, "{m:?}");
    assert_eq!(m.x_to_y, x_tx);
    assert_eq!(m.x_to_y, y_rx);
    assert_eq!(m.recv_allocs + m.send_allocs, 0, "{m:?}");
}

/// Issue 17: with big buffers the pod's TSO bursts cross whole: what the
/// sending pod's kernel wrote as one packet is read once and written once
/// (the receiving pod's kernel counts as many packets as the sender's
/// sent), byte-exact, and neither side allocates.
#[test]
fn tcp_through_offloading_tun_ports_moves_super_packets_whole() {
    if !require_root("tcp_through_offloading_tun_ports_moves_super_packets_whole") {
        return;
    }
    let (m, x_tx, y_rx, offloading) = transfer(true, true);
    eprintln!("whole: {m:?}, x eth0 tx {x_tx}, y eth0 rx {y_rx}");
    assert!(offloading, "the kernel refused TUN offload");
    assert_eq!(m.lost, 0);
    // One packet moved per packet the kernel wrote, and the same packets
    // reach the other pod.
    assert_eq!(m.x_to_y, x_tx, "{m:?}");
    assert_eq!(y_rx, x_tx, "{m:?}");
    // 8 MB crossed in far fewer packets than its ~6,000 segments, most of
    // them carried whole.
    assert!(m.x_to_y <= 2_000, "{m:?}");
    assert!(m.whole >= 40, "{m:?}");
    assert_eq!(m.recv_allocs + m.send_allocs, 0, "{m:?}");
}
