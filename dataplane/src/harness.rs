//! Fuzz harness body for the `pipeline` target in `fuzz/`, also replayed by
//! `cargo test` from the committed corpus.
//!
//! The input is a sequence of frames, each a port selector byte, a length
//! and bytes, fed to a worker with one uplink and three pods (TUN, TUN,
//! Ethernet) through fake ports. Frames can be arbitrary or built from a
//! valid template and then mutated (VXLAN from a peer, pod traffic to a
//! peer, to the outside, to a local pod, to a ClusterIP, a LoadBalancer IP
//! reached from the uplink), so the fuzzer reaches deep paths quickly. Invariants after every poll: no panic, no buffer leaked;
//! every frame received is accounted for exactly once (forwarded, answered
//! (ARP), or counted as dropped, an ICMP error sent for it being a frame of
//! its own); every frame sent is sound: VXLAN on the uplink decapsulates
//! (valid outer and inner IPv4 headers), a plain IPv4 frame on the uplink
//! and every IPv4 frame to a pod has a valid header checksum.
//!
//! With bit 5 of the selector set, the template is a TCP super-packet
//! (a TSO burst, inside VXLAN from the uplink) received whole on the
//! ports that take them (the uplink and the first pod) and cut short on
//! the others; a super-packet cut for a port makes several frames, so
//! then the accounting only bounds what was sent from below.

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::MacAddr;
use encap::vxlan::{self, EncapTemplate, OVERHEAD, TunnelEndpoint, VxlanConfig};
use nat::{ConntrackConfig, SnatConfig};

use crate::buf::Gso;
use crate::port::Framing;
use crate::port::fake::{FakeHandle, FakePort};
use crate::route::{Node, PeerSpec, Routes, Snapshot};
use crate::worker::{Role, Worker};

const BUFFERS: usize = 64;
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);

/// A service on ClusterIP 10.96.0.10:53/UDP and LB IP LB_IP:53, with a
/// local and a remote backend; and one with no endpoints.
fn services() -> std::sync::Arc<lb::ServiceTable> {
    let facts = lb::NodeFacts {
        name: "fuzz".into(),
        zone: None,
        node_ips: vec![NODE],
        cluster_cidrs: vec![
            ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
        ],
        service_cidrs: vec![
            ipnet::Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default(),
        ],
    };
    let name = |service: &str| lb::PortName {
        namespace: "fuzz".into(),
        service: service.into(),
        port: String::new(),
        proto: lb::Proto::Udp,
    };
    let mut dns = lb::ServicePort::cluster_ip(name("dns"), VIP, 53);
    dns.load_balancer_ips = vec![LB_IP];
    dns.endpoints = vec![
        lb::Endpoint::ready(Ipv4Addr::new(10, 244, 1, 3), 5353, true),
        lb::Endpoint::ready(Ipv4Addr::new(10, 244, 2, 7), 5353, false),
    ];
    let empty = lb::ServicePort::cluster_ip(name("empty"), Ipv4Addr::new(10, 96, 0, 11), 53);
    std::sync::Arc::new(lb::ServiceTable::new(facts, [dns, empty]))
}

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 200);

fn snapshot() -> Snapshot {
    Snapshot::new(
        1,
        Node {
            name: "fuzz".into(),
            ip: NODE,
            uplink_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            uplink_mtu: 1500,
            vtep_mac: MacAddr([2, 0xee, 0, 0, 0, 1]),
            pod_cidr: ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap_or_default(),
            gateway_ip: Ipv4Addr::new(10, 244, 1, 1),
            gateway_mac: Some(MacAddr([2, 0, 0, 0, 0, 0xfe])),
        },
        VxlanConfig::default(),
        vec![ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default()],
        [PeerSpec {
            name: "peer".into(),
            ip: PEER,
            vtep_mac: MacAddr([2, 0xee, 0, 0, 0, 2]),
            pod_cidrs: vec![
                ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap_or_default(),
            ],
        }],
        &|_| Some(MacAddr([2, 0, 0, 0, 0, 2])),
    )
    .with_services(services())
}

/// A valid IPv4/UDP packet.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut v = Vec::with_capacity(total);
    let [s0, s1, s2, s3] = src.octets();
    let [d0, d1, d2, d3] = dst.octets();
    let [t0, t1] = (total as u16).to_be_bytes();
    v.extend_from_slice(&[0x45, 0, t0, t1, 0, 0, 0x40, 0, ttl, 17, 0, 0]);
    v.extend_from_slice(&[s0, s1, s2, s3, d0, d1, d2, d3]);
    let c = encap::checksum::internet_checksum(&v);
    if let Some(x) = v.get_mut(10..12) {
        x.copy_from_slice(&c.to_be_bytes());
    }
    let [l0, l1] = ((8 + payload.len()) as u16).to_be_bytes();
    v.extend_from_slice(&[0x9c, 0x40, 0, 53, l0, l1, 0, 0]);
    v.extend_from_slice(payload);
    v
}

/// A TCP burst as a sender's TSO hands it over (lengths of the whole,
/// checksum field holding the pseudo-header's sum), its payload `seed`
/// repeated to `len` bytes.
fn ipv4_tcp_burst(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, seed: &[u8], len: usize) -> Vec<u8> {
    let total = 40 + len;
    let mut v = ipv4_udp(src, dst, ttl, &[]);
    v.truncate(20);
    if let Some(h) = v.get_mut(2..4) {
        h.copy_from_slice(&(total as u16).to_be_bytes());
    }
    if let Some(h) = v.get_mut(9..12) {
        h.copy_from_slice(&[6, 0, 0]);
    }
    let c = encap::checksum::internet_checksum(&v);
    if let Some(x) = v.get_mut(10..12) {
        x.copy_from_slice(&c.to_be_bytes());
    }
    let partial = encap::checksum::pseudo_header_v4(src, dst, 6, (total - 20) as u16).sum();
    let [c0, c1] = partial.to_be_bytes();
    v.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 1, 0, 0, 0, 0, 1]);
    v.extend_from_slice(&[0x50, 0x10, 2, 0, c0, c1, 0, 0]);
    v.extend((0..len).map(|i| seed.get(i % seed.len().max(1)).copied().unwrap_or(0)));
    v
}

fn with_eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn vxlan_from_peer(inner_ip: &[u8]) -> Vec<u8> {
    let inner = with_eth(
        [2, 0xee, 0, 0, 0, 1],
        [2, 0xee, 0, 0, 0, 2],
        0x0800,
        inner_ip,
    );
    let t = EncapTemplate::new(
        &VxlanConfig::default(),
        &TunnelEndpoint {
            local_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            next_hop_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            local_ip: PEER,
            remote_ip: NODE,
        },
    );
    let mut b = vec![0; OVERHEAD];
    b.extend_from_slice(&inner);
    let end = b.len();
    match vxlan::encapsulate(&mut b, OVERHEAD..end, &t) {
        Ok(r) => b.get(r).map(<[u8]>::to_vec).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Runs one input; returns the worker's counters.
pub fn pipeline(data: &[u8]) -> crate::counters::Counters {
    let routes = Routes::new(snapshot());
    let snat = SnatConfig::new(
        vec![ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap_or_default()],
        vec![ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default()],
        NODE,
    );
    let cfg = ConntrackConfig {
        max_entries: 64,
        ..ConntrackConfig::default()
    };
    let mut w = Worker::new(routes, cfg, Some(snat), BUFFERS);
    let pods = [
        (Ipv4Addr::new(10, 244, 1, 2), Framing::Ip),
        (Ipv4Addr::new(10, 244, 1, 3), Framing::Ip),
        (Ipv4Addr::new(10, 244, 1, 4), Framing::Ethernet),
    ];
    let mut handles: Vec<(FakeHandle, Framing, Ipv4Addr)> = Vec::new();
    let (p, up) = FakePort::new("uplink", Framing::Ethernet);
    up.set_takes_gso();
    w.add_port(Box::new(p), Role::Uplink);
    handles.push((up, Framing::Ethernet, NODE));
    for (i, (ip, framing)) in pods.into_iter().enumerate() {
        let (p, h) = FakePort::new("pod", framing);
        if i == 0 {
            h.set_takes_gso();
        }
        let mac = (framing == Framing::Ethernet).then_some(MacAddr([2, 0xaa, 0, 0, 0, 4]));
        w.add_port(Box::new(p), Role::Pod { ip, mac });
        handles.push((h, framing, ip));
    }
    let mut now = Duration::from_secs(1);
    let mut rest = data;
    let mut received = 0u64;
    let mut sent = 0u64;
    let mut supers = false;
    while let Some((&op, tail)) = rest.split_first() {
        let Some((&len, tail)) = tail.split_first() else {
            break;
        };
        let n = usize::from(len).min(tail.len());
        let (bytes, tail) = tail.split_at(n);
        rest = tail;
        let Some((h, framing, ip)) = handles.get(usize::from(op & 3)) else {
            continue;
        };
        // Template selector in the high bits: raw bytes, or a valid packet
        // whose leading bytes are overwritten by the input.
        let frame = match (op >> 2) & 7 {
            0 => bytes.to_vec(),
            k => {
                let dst = match k {
                    1 => Ipv4Addr::new(10, 244, 2, 7),
                    2 => Ipv4Addr::new(198, 51, 100, 1),
                    3 => Ipv4Addr::new(10, 244, 1, 3),
                    4 => NODE,
                    5 => VIP,
                    6 => LB_IP,
                    _ => Ipv4Addr::new(10, 244, 1, 2),
                };
                let src = if *framing == Framing::Ethernet && op & 3 == 0 {
                    Ipv4Addr::new(10, 244, 2, 7)
                } else {
                    *ip
                };
                let ttl = if op & 0x80 != 0 { 1 } else { 64 };
                let sup = op & 0x20 != 0;
                let pkt = if sup {
                    ipv4_tcp_burst(src, dst, ttl, bytes, 1000 + 40 * bytes.len())
                } else {
                    ipv4_udp(src, dst, ttl, bytes)
                };
                let mut f = match (op & 3, framing) {
                    // To the node IP: a plain frame (a reply, or a stray);
                    // to the LB IP: a client outside.
                    (0, _) if k == 4 || k == 6 => {
                        with_eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xfe], 0x0800, &pkt)
                    }
                    (0, _) => vxlan_from_peer(&pkt),
                    (_, Framing::Ethernet) => {
                        with_eth([2, 0, 0, 0, 0, 9], [2, 0xaa, 0, 0, 0, 4], 0x0800, &pkt)
                    }
                    (_, Framing::Ip) => pkt,
                };
                // Mutate a byte chosen by the input.
                if let (Some(&at), Some(&x)) = (bytes.first(), bytes.get(1))
                    && let Some(b) = f.get_mut(usize::from(at) % 80)
                {
                    *b ^= x;
                }
                f
            }
        };
        if op & 0x20 != 0 && (op >> 2) & 7 != 0 {
            let size = 200 + 5 * u16::from(bytes.first().copied().unwrap_or(0));
            let tunnel = op & 3 == 0 && frame.get(23) == Some(&17);
            h.inject_super(frame, Gso { size, tunnel });
            supers = true;
        } else {
            h.inject(frame);
        }
        received += 1;
        if op & 0x40 != 0 {
            now += Duration::from_secs(u64::from(len));
        }
        w.poll(now);
        check(&w, received, &handles, &mut sent, supers);
    }
    for _ in 0..4 {
        w.poll(now);
    }
    check(&w, received, &handles, &mut sent, supers);
    w.counters.clone()
}

/// Checks the invariants after a poll; takes what the ports sent and
/// checks each frame (`sent` counts them across calls).
fn check(
    w: &Worker,
    injected: u64,
    handles: &[(FakeHandle, Framing, Ipv4Addr)],
    sent: &mut u64,
    supers: bool,
) {
    assert_eq!(w.free_buffers(), BUFFERS, "a buffer leaked");
    let big = crate::worker::SUPER_BUFFERS;
    assert_eq!(w.free_big_buffers(), big, "a big buffer leaked");
    for (i, (h, framing, _)) in handles.iter().enumerate() {
        for f in h.take_sent() {
            *sent += 1;
            if i == 0 {
                check_uplink_frame(&f);
            } else {
                check_pod_frame(&f, *framing);
            }
        }
    }
    let rx: u64 = w.ports().map(|p| p.counters.rx).sum();
    let tx: u64 = w.ports().map(|p| p.counters.tx).sum();
    let c = &w.counters;
    let dropped = c.total_dropped();
    assert!(rx <= injected);
    assert_eq!(tx, *sent, "the ports' tx counters are what they sent");
    // Exactly once: a frame is forwarded (or answered, for ARP), or counted
    // as dropped. An ICMP error is a new frame sent for a dropped one.
    assert!(tx >= c.icmp_sent, "tx {tx} icmp_sent {}", c.icmp_sent);
    if supers {
        // A super-packet cut for a port is several frames (and several
        // drops if buffers run out).
        assert!(rx <= tx - c.icmp_sent + dropped, "rx {rx}, tx {tx}: {c:?}");
        return;
    }
    assert_eq!(
        rx,
        tx - c.icmp_sent + dropped,
        "rx {rx} = tx {tx} - icmp {} + dropped {dropped}: {c:?}",
        c.icmp_sent
    );
}

/// A frame the uplink sent: VXLAN to a peer decapsulates with a valid
/// inner IPv4 header; anything else IPv4 (SNAT to the outside) has a valid
/// header checksum.
fn check_uplink_frame(f: &[u8]) {
    assert_eq!(
        f.get(12..14),
        Some(&[0x08, 0x00][..]),
        "uplink: not IPv4: {f:02x?}"
    );
    let ip = f.get(14..).unwrap_or_default();
    assert_ipv4_sound("uplink", ip);
    let is_vxlan = ip.get(9) == Some(&17)
        && ip.get(22..24) == Some(&VxlanConfig::default().dst_port.to_be_bytes()[..]);
    if is_vxlan {
        let mut b = f.to_vec();
        let d = vxlan::decapsulate(&mut b, &VxlanConfig::default());
        assert!(
            d.is_ok(),
            "sent VXLAN does not decapsulate: {d:?}: {f:02x?}"
        );
        let Ok(d) = d else { return };
        assert_eq!((d.outer_src, d.outer_dst), (NODE, PEER));
        let inner = d.inner_frame(&b);
        assert_eq!(inner.get(12..14), Some(&[0x08, 0x00][..]), "inner not IPv4");
        assert_ipv4_sound("inner", inner.get(14..).unwrap_or_default());
    }
}

/// A frame sent to a pod: IPv4 with a valid header (TUN pods get bare
/// packets), or an ARP reply to an Ethernet pod.
fn check_pod_frame(f: &[u8], framing: Framing) {
    let ip = match framing {
        Framing::Ip => f,
        Framing::Ethernet => {
            if f.get(12..14) == Some(&[0x08, 0x06][..]) {
                assert_eq!(f.len(), 14 + 28, "ARP reply length");
                return;
            }
            assert_eq!(f.get(12..14), Some(&[0x08, 0x00][..]), "pod: not IPv4");
            f.get(14..).unwrap_or_default()
        }
    };
    assert_ipv4_sound("pod", ip);
}

fn assert_ipv4_sound(what: &str, ip: &[u8]) {
    // new_checked: version, header and total lengths within the frame.
    let p = encap::ipv4::Ipv4Packet::new_checked(ip);
    assert!(p.is_ok(), "{what}: not an IPv4 packet ({p:?}): {ip:02x?}");
    assert!(
        p.is_ok_and(|p| p.verify_checksum()),
        "{what}: bad IPv4 header checksum: {ip:02x?}"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn valid_templates_reach_every_path() {
        // VXLAN from the peer to a local pod, pod -> peer, pod -> outside,
        // pod -> local pod, Ethernet pod -> peer, TTL 1, a stray packet to
        // the node IP.
        let mut input = Vec::new();
        // Then a pod to the ClusterIP, and a client outside to the LB IP.
        for op in [0x0cu8, 0x05, 0x09, 0x0d, 0x07, 0x85, 0x10, 0x15, 0x18] {
            input.extend_from_slice(&[op, 4, 200, 0, 1, 2]);
        }
        let c = super::pipeline(&input);
        assert_eq!(c.svc_flows, 2, "{c:?}");
        assert_eq!(c.decapsulated, 1, "{c:?}");
        assert!(c.encapsulated >= 2, "{c:?}");
        assert_eq!(c.nat, 1, "{c:?}");
        assert_eq!(c.icmp_sent, 1, "{c:?}");
        assert_eq!(
            c.dropped(crate::counters::Reason::Conntrack(nat::DropReason::NoEntry)),
            1
        );
    }

    #[test]
    fn super_packet_templates_cross_whole_or_cut() {
        // A pod's burst to the peer (whole: the uplink takes them), the
        // peer's burst to the first pod (whole) and to the second (cut),
        // in 200-byte segments.
        let mut input = Vec::new();
        for op in [0x25u8, 0x3c, 0x2c] {
            input.extend_from_slice(&[op, 4, 0, 0, 1, 2]);
        }
        let c = super::pipeline(&input);
        assert_eq!((c.super_whole, c.super_cut), (2, 1), "{c:?}");
        assert_eq!(c.encapsulated, 6, "{c:?}");
        assert_eq!(c.decapsulated, 12, "{c:?}");
        assert_eq!(c.total_dropped(), 0, "{c:?}");
    }
}
