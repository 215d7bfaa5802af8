//! A port that replays a fixed set of frames and discards what it is sent,
//! without allocating: for measuring the worker's per-packet path (time
//! and allocations) with nothing else in the way.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use dataplane::buf::Buf;
use dataplane::port::{Framing, Port};
use dataplane::route::{Node, PeerSpec, Routes, Snapshot};
use dataplane::worker::{Role, Worker};
use encap::MacAddr;
use encap::vxlan::VxlanConfig;
use nat::{ConntrackConfig, SnatConfig};

/// The node the in-memory benchmarks run as: 192.0.2.1, pod CIDR
/// `pod_cidr` (its first address the pods' gateway), every neighbour
/// resolved.
pub fn bench_node(pod_cidr: &str) -> Node {
    let pod_cidr: ipnet::Ipv4Net = pod_cidr.parse().expect("pod CIDR");
    Node {
        name: "a".into(),
        ip: Ipv4Addr::new(192, 0, 2, 1),
        uplink_mac: MacAddr([2, 0x10, 0, 0, 0, 1]),
        uplink_mtu: 1500,
        vtep_mac: MacAddr([2, 0xee, 0, 0, 0, 1]),
        pod_cidr,
        gateway_ip: Ipv4Addr::from(u32::from(pod_cidr.network()) + 1),
        gateway_mac: Some(MacAddr([2, 0, 0, 0, 0, 0xfe])),
    }
}

/// A worker for `node` with `peers` (all resolved), SNAT of its pod CIDR
/// except towards `cluster`, a conntrack table of `table` entries, and two
/// replaying ports: the uplink with `uplink` frames and pod `pod_ip` with
/// `pod` frames, each 32 per poll (none if it has no frames).
pub fn replay_worker(
    node: Node,
    peers: impl IntoIterator<Item = PeerSpec>,
    cluster: &str,
    table: usize,
    uplink: Vec<Vec<u8>>,
    pod_ip: Ipv4Addr,
    pod: Vec<Vec<u8>>,
) -> Worker {
    let cluster: ipnet::Ipv4Net = cluster.parse().expect("cluster CIDR");
    let snat = SnatConfig::new(vec![node.pod_cidr], vec![cluster], node.ip);
    let snap = Snapshot::new(
        1,
        node,
        VxlanConfig::default(),
        vec![cluster],
        peers,
        &|_| Some(MacAddr([2, 0x10, 0, 0, 0, 2])),
    );
    let mut w = Worker::new(
        Routes::new(snap),
        ConntrackConfig {
            max_entries: table,
            ..ConntrackConfig::default()
        },
        Some(snat),
        1024,
    );
    let burst = |f: &Vec<Vec<u8>>| if f.is_empty() { 0 } else { 32 };
    let (up_n, pod_n) = (burst(&uplink), burst(&pod));
    w.add_port(
        Box::new(ReplayPort::new(uplink, Framing::Ethernet, up_n)),
        Role::Uplink,
    );
    w.add_port(
        Box::new(ReplayPort::new(pod, Framing::Ip, pod_n)),
        Role::Pod {
            ip: pod_ip,
            mac: None,
        },
    );
    w
}

/// Replays `frames` round-robin, `per_recv` frames per `recv`; counts what
/// it is sent.
#[derive(Debug)]
pub struct ReplayPort {
    frames: Vec<Vec<u8>>,
    next: usize,
    framing: Framing,
    /// Frames per receive call (0: the port is idle).
    pub per_recv: usize,
    /// Frames sent to it.
    pub sent: u64,
}

impl ReplayPort {
    /// A port replaying `frames`.
    pub fn new(frames: Vec<Vec<u8>>, framing: Framing, per_recv: usize) -> ReplayPort {
        ReplayPort {
            frames,
            next: 0,
            framing,
            per_recv,
            sent: 0,
        }
    }
}

impl Port for ReplayPort {
    fn name(&self) -> &str {
        "replay"
    }

    fn framing(&self) -> Framing {
        self.framing
    }

    fn recv(&mut self, bufs: &mut [Buf]) -> io::Result<usize> {
        let mut n = 0;
        if self.frames.is_empty() {
            return Ok(0);
        }
        for b in bufs.iter_mut().take(self.per_recv) {
            let f = &self.frames[self.next % self.frames.len()];
            self.next += 1;
            b.fill(f);
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, bufs: &[Buf]) -> io::Result<usize> {
        self.sent += bufs.len() as u64;
        Ok(bufs.len())
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
}
