//! Test and fuzz support: two nodes, each one worker over fake ports,
//! joined by their uplinks (VXLAN between them), with pods on both and a
//! ClusterIP per pod; NetworkPolicy tables compiled per node from a
//! [`policy::Cluster`] and published as a daemon publishes them. A probe
//! sends a flow's first packet from one pod and, if it arrives, the reply,
//! through the real pipeline (egress on the client's node, VXLAN, ingress
//! on the server's, conntrack and DNAT for ClusterIPs). Hidden from the
//! API: the netpol pipeline tests, the `policy_verdict` fuzz target and
//! the policy benchmarks drive it.
#![allow(clippy::indexing_slicing, clippy::panic, clippy::needless_range_loop)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use encap::MacAddr;
use encap::vxlan::VxlanConfig;
use ipnet::Ipv4Net;
use nat::ConntrackConfig;

use crate::counters::Reason;
use crate::port::Framing;
use crate::port::fake::{FakeHandle, FakePort};
use crate::route::{Node, PeerSpec, Routes, Snapshot};
use crate::worker::{Role, Worker};

/// The two nodes' addresses and pod CIDRs.
pub const NODES: [Ipv4Addr; 2] = [
    Ipv4Addr::new(192, 168, 77, 1),
    Ipv4Addr::new(192, 168, 77, 2),
];

fn pod_cidr(n: usize) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 244, n as u8 + 1, 0), 24).unwrap_or_default()
}

/// The gateway address of node `n`'s pods.
pub fn gateway(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, n as u8 + 1, 1)
}

/// The node a pod address belongs to.
pub fn node_of(ip: Ipv4Addr) -> Option<usize> {
    (0..2).find(|&n| pod_cidr(n).contains(&ip))
}

/// The ClusterIP the rig gives pod number `i` (ports 80 and 81, TCP and
/// UDP, to the same ports on the pod).
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 1, i as u8 + 10)
}

const BUFFERS: usize = 128;

fn mac(n: usize, kind: u8) -> MacAddr {
    MacAddr([2, kind, 0, 0, 0, n as u8 + 1])
}

/// What a probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The first packet reached the server.
    pub there: bool,
    /// The server's reply reached the client.
    pub back: bool,
}

/// Two nodes and their pods.
#[allow(missing_debug_implementations)]
pub struct TwoNodes {
    workers: Vec<Worker>,
    routes: Vec<Routes>,
    ups: Vec<FakeHandle>,
    pods: Vec<(Ipv4Addr, usize, FakeHandle)>,
    services: Vec<Arc<lb::ServiceTable>>,
    generation: u32,
    /// The clock the workers are polled with.
    pub now: Duration,
}

fn facts(n: usize) -> lb::NodeFacts {
    lb::NodeFacts {
        name: format!("node-{n}"),
        zone: None,
        node_ips: vec![NODES[n]],
        cluster_cidrs: vec![Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default()],
        service_cidrs: vec![Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default()],
    }
}

fn snapshot(n: usize, generation: u64) -> Snapshot {
    let o = 1 - n;
    Snapshot::new(
        generation,
        Node {
            name: format!("node-{n}"),
            ip: NODES[n],
            uplink_mac: mac(n, 0),
            uplink_mtu: 1500,
            vtep_mac: mac(n, 0xee),
            pod_cidr: pod_cidr(n),
            gateway_ip: gateway(n),
            gateway_mac: Some(MacAddr([2, 0, 0, 0, 0, 0xfe])),
        },
        VxlanConfig::default(),
        vec![
            Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default(),
        ],
        [PeerSpec {
            name: format!("node-{o}"),
            ip: NODES[o],
            vtep_mac: mac(o, 0xee),
            pod_cidrs: vec![pod_cidr(o)],
        }],
        &move |_| Some(mac(o, 0)),
    )
}

/// A TCP SYN (`reply` false) or its SYN-ACK, or a UDP datagram.
pub fn packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    reply: bool,
) -> Vec<u8> {
    let flags = if reply { 0x12 } else { 0x02 };
    segment(src, dst, proto, sport, dport, flags)
}

/// A bare TCP segment with these flags (an ACK: 0x10), or a UDP
/// datagram of four bytes.
pub fn segment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let reply = flags & 0x10 != 0;
    let l4 = if proto == 6 { 20 } else { 12 };
    let total = 20 + l4;
    let mut v = Vec::with_capacity(total);
    let [t0, t1] = (total as u16).to_be_bytes();
    v.extend_from_slice(&[0x45, 0, t0, t1, 0, 0, 0x40, 0, 64, proto, 0, 0]);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    let c = encap::checksum::internet_checksum(&v);
    v[10..12].copy_from_slice(&c.to_be_bytes());
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        let (seq, ack) = if reply { (5000u32, 1001u32) } else { (1000, 0) };
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ack.to_be_bytes());
        v.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        v.extend_from_slice(&[0, 12, 0, 0]);
        v.extend_from_slice(b"ping");
    }
    // Transport checksum over the pseudo-header.
    let mut pseudo = Vec::with_capacity(12 + v.len() - 20);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&((v.len() - 20) as u16).to_be_bytes());
    pseudo.extend_from_slice(&v[20..]);
    let c = encap::checksum::internet_checksum(&pseudo);
    let at = if proto == 6 { 36 } else { 26 };
    v[at..at + 2].copy_from_slice(&c.to_be_bytes());
    v
}

/// (src, sport, dst, dport) of an IPv4 packet.
fn ends(p: &[u8]) -> Option<(Ipv4Addr, u16, Ipv4Addr, u16)> {
    let ip = encap::ipv4::Ipv4Packet::new_checked(p).ok()?;
    let l4 = ip.payload();
    let port = |i: usize| l4.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    Some((ip.src_addr(), port(0)?, ip.dst_addr(), port(2)?))
}

impl TwoNodes {
    /// Pods at `pods` (each in node 0's 10.244.1.0/24 or node 1's
    /// 10.244.2.0/24; others are left out), each with a ClusterIP
    /// ([`cluster_ip`], by position); no policy yet.
    pub fn new(pods: &[Ipv4Addr]) -> TwoNodes {
        let mut workers = Vec::new();
        let mut ups = Vec::new();
        let mut routes = Vec::new();
        let mut handles = Vec::new();
        let services: Vec<lb::ServicePort> = pods
            .iter()
            .enumerate()
            .flat_map(|(i, &ip)| {
                [
                    (80u16, lb::Proto::Tcp),
                    (81, lb::Proto::Tcp),
                    (80, lb::Proto::Udp),
                    (81, lb::Proto::Udp),
                ]
                .into_iter()
                .map(move |(port, proto)| {
                    let mut p = lb::ServicePort::cluster_ip(
                        lb::PortName {
                            namespace: "rig".into(),
                            service: format!("pod-{i}"),
                            port: format!("{}-{port}", proto.name()),
                            proto,
                        },
                        cluster_ip(i),
                        port,
                    );
                    p.endpoints = vec![lb::Endpoint::ready(ip, port, false)];
                    p
                })
            })
            .collect();
        let mut tables = Vec::new();
        for n in 0..2 {
            let local: Vec<(Ipv4Addr, u8)> = pods
                .iter()
                .filter(|&&ip| node_of(ip) == Some(n))
                .map(|&ip| (ip, 0))
                .collect();
            let svc: Vec<lb::ServicePort> = services
                .iter()
                .cloned()
                .map(|mut p| {
                    for e in &mut p.endpoints {
                        e.local = node_of(e.ip) == Some(n);
                    }
                    p
                })
                .collect();
            let table = Arc::new(lb::ServiceTable::new(facts(n), svc));
            tables.push(table.clone());
            let r = Routes::new(
                snapshot(n, 1)
                    .with_pod_workers(local.iter().copied())
                    .with_services(table),
            );
            let mut w = Worker::new(r.clone(), ConntrackConfig::default(), None, BUFFERS);
            let (p, up) = FakePort::new("eth0", Framing::Ethernet);
            w.add_port(Box::new(p), Role::Uplink);
            for &(ip, _) in &local {
                let (p, h) = FakePort::new("pod", Framing::Ip);
                w.add_port(Box::new(p), Role::Pod { ip, mac: None });
                handles.push((ip, n, h));
            }
            workers.push(w);
            ups.push(up);
            routes.push(r);
        }
        TwoNodes {
            workers,
            routes,
            ups,
            pods: handles,
            services: tables,
            generation: 0,
            now: Duration::from_secs(10),
        }
    }

    /// Compiles `c` for each node (its pods: those in its pod CIDR; its
    /// own addresses: node IP and gateway) and publishes it, as the daemon
    /// does, with a new generation.
    pub fn set_policy(&mut self, c: &policy::Cluster) {
        self.generation += 1;
        for n in 0..2 {
            let cidr = pod_cidr(n);
            let t = policy::Tables::build(
                c,
                |p| p.ip.is_some_and(|ip| cidr.contains(&ip)),
                &[NODES[n], gateway(n)],
            )
            .with_generation(self.generation);
            let cur = self.routes[n].load();
            let local: Vec<(Ipv4Addr, u8)> = self
                .pods
                .iter()
                .filter(|p| p.1 == n)
                .map(|p| (p.0, 0))
                .collect();
            let s = snapshot(n, cur.generation + 1)
                .with_pod_workers(local)
                .with_services(self.services[n].clone())
                .with_policy(Arc::new(t));
            self.routes[n].store(s);
        }
    }

    /// The worker of node `n`.
    pub fn worker(&self, n: usize) -> &Worker {
        &self.workers[n]
    }

    /// Drops counted under `r` on both nodes.
    pub fn dropped(&self, r: Reason) -> u64 {
        self.workers.iter().map(|w| w.counters.dropped(r)).sum()
    }

    /// Polls both nodes, carrying uplink frames across, until quiet.
    fn run(&mut self) {
        for _ in 0..4 {
            self.now += Duration::from_millis(1);
            for n in 0..2 {
                self.workers[n].poll(self.now);
                for f in self.ups[n].take_sent() {
                    self.ups[1 - n].inject(f);
                }
            }
        }
    }

    fn handle(&self, ip: Ipv4Addr) -> Option<&FakeHandle> {
        self.pods.iter().find(|p| p.0 == ip).map(|p| &p.2)
    }

    /// Sends `pkt` from pod `from`; returns the frames pod `to` received.
    pub fn send(&mut self, from: Ipv4Addr, to: Ipv4Addr, pkt: Vec<u8>) -> Vec<Vec<u8>> {
        for (_, _, h) in &self.pods {
            h.take_sent();
        }
        if let Some(h) = self.handle(from) {
            h.inject(pkt);
        }
        self.run();
        self.handle(to)
            .map(FakeHandle::take_sent)
            .unwrap_or_default()
    }

    /// A flow from pod `from` (source port `sport`) to `dst:port` (a pod
    /// or a ClusterIP whose backend is pod `to`) over `proto` (6 or 17):
    /// its first packet, and the reply if the first arrived.
    #[allow(clippy::too_many_arguments)]
    pub fn probe(
        &mut self,
        from: Ipv4Addr,
        to: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        sport: u16,
        port: u16,
    ) -> Probe {
        let got = self.send(from, to, packet(from, dst, proto, sport, port, false));
        // What the server sees: the client (not masqueraded) to itself.
        let there = got.iter().any(|f| ends(f) == Some((from, sport, to, port)));
        if !there {
            return Probe { there, back: false };
        }
        let back = self.send(to, from, packet(to, from, proto, port, sport, true));
        let back = back
            .iter()
            .any(|f| ends(f) == Some((dst, port, from, sport)));
        Probe { there, back }
    }

    /// Every buffer is home on both nodes.
    pub fn no_leak(&self) -> bool {
        self.workers.iter().all(|w| w.free_buffers() == BUFFERS)
    }
}

/// The nine pods' addresses of a fuzzed cluster: namespace `ns`, pod `p`
/// (a and c on node 0, b on node 1).
pub fn fuzz_ip(ns: usize, p: usize) -> Ipv4Addr {
    let node = if p == 1 { 2 } else { 1 };
    Ipv4Addr::new(10, 244, node, 10 * (ns as u8 + 1) + p as u8)
}

/// The `policy_verdict` fuzz target's body: a cluster and policies from
/// the bytes ([`policy::harness::cluster`]) on two nodes, then up to 64
/// operations: a new flow between two pods (through the pod IP or its
/// ClusterIP, TCP or UDP, one of a few ports), a packet of a flow opened
/// earlier, a policy replaced or a label flipped. A new flow must reach
/// its server and its reply the client exactly when
/// [`policy::harness::allows`] says so; a client's next packet on a live
/// flow exactly when the current policies allow the flow. No buffer may
/// leak. Panics otherwise.
pub fn fuzz_verdict(data: &[u8]) {
    use policy::harness::{Bytes, allows, cluster, policies};
    let mut d = Bytes(data);
    let mut c = cluster(&mut d, fuzz_ip, false);
    let ips: Vec<Ipv4Addr> = c.pods.iter().filter_map(|p| p.ip).collect();
    let mut rig = TwoNodes::new(&ips);
    rig.set_policy(&c);
    let proto_of = |b: u8| {
        if b & 1 == 0 {
            policy::Proto::Tcp
        } else {
            policy::Proto::Udp
        }
    };
    let mut live: Vec<(usize, usize, policy::Proto, u16, u16)> = Vec::new();
    let mut sport = 30000u16;
    for _ in 0..64 {
        if d.0.is_empty() {
            break;
        }
        match d.byte() % 5 {
            0 | 1 => {
                let (f, t) = (usize::from(d.byte()) % 9, usize::from(d.byte()) % 9);
                if f == t {
                    continue;
                }
                let b = d.byte();
                let proto = proto_of(b);
                let via_service = b & 2 != 0;
                let port = if via_service {
                    80 + u16::from(b >> 2 & 1)
                } else {
                    [80, 81, 78, 85][usize::from(b >> 2 & 3)]
                };
                let dst = if via_service { cluster_ip(t) } else { ips[t] };
                sport = sport.wrapping_add(1).max(30000);
                let want = allows(&c, &c.pods[f], &c.pods[t], proto, port);
                let p = rig.probe(ips[f], ips[t], dst, proto.number(), sport, port);
                assert!(
                    p.there == want && p.back == want,
                    "{f} -> {t} {proto:?}/{port} via {dst}: {p:?}, model {want}: {c:?}"
                );
                if want && !via_service {
                    live.push((f, t, proto, sport, port));
                }
            }
            2 => {
                let Some(&(f, t, proto, sp, port)) =
                    live.get(usize::from(d.byte()) % live.len().max(1))
                else {
                    continue;
                };
                let want = allows(&c, &c.pods[f], &c.pods[t], proto, port);
                let got = rig.send(
                    ips[f],
                    ips[t],
                    segment(ips[f], ips[t], proto.number(), sp, port, 0x10),
                );
                assert_eq!(
                    !got.is_empty(),
                    want,
                    "live {f} -> {t} {proto:?}/{port} after a change: {c:?}"
                );
            }
            3 => {
                c.policies = policies(&mut d);
                rig.set_policy(&c);
            }
            _ => {
                let i = usize::from(d.byte()) % c.pods.len();
                let p = &mut c.pods[i];
                if p.labels.remove("team").is_none() {
                    p.labels.insert("team".into(), "red".into());
                }
                rig.set_policy(&c);
            }
        }
    }
    assert!(rig.no_leak(), "a buffer leaked");
}
