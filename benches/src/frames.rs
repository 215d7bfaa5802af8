//! Sample frames and a tunnel endpoint for the benchmarks.

use encap::MacAddr;
use encap::vxlan::{self, EncapTemplate, OVERHEAD, TunnelEndpoint, VxlanConfig};
use etherparse::PacketBuilder;

/// An Ethernet/IPv4/UDP pod frame of exactly `len` bytes (at least 42).
pub fn udp_frame(len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len.saturating_sub(42)];
    let mut f = Vec::with_capacity(len);
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 244, 1, 2], [10, 244, 2, 3], 64)
        .udp(40000, 8080)
        .write(&mut f, &payload)
        .expect("frame builds");
    f
}

/// The endpoint the benchmarks encapsulate towards.
pub fn endpoint() -> TunnelEndpoint {
    TunnelEndpoint {
        local_mac: MacAddr([2, 0x10, 0, 0, 0, 1]),
        next_hop_mac: MacAddr([2, 0x10, 0, 0, 0, 2]),
        local_ip: [192, 0, 2, 1].into(),
        remote_ip: [192, 0, 2, 2].into(),
    }
}

/// A buffer holding `inner` behind exactly [`OVERHEAD`] bytes of headroom.
pub fn with_headroom(inner: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; OVERHEAD];
    b.extend_from_slice(inner);
    b
}

/// `inner` encapsulated with the default (Flannel) config.
pub fn vxlan_frame(inner: &[u8]) -> Vec<u8> {
    let mut b = with_headroom(inner);
    let end = b.len();
    let r = vxlan::encapsulate(
        &mut b,
        OVERHEAD..end,
        &EncapTemplate::new(&VxlanConfig::default(), &endpoint()),
    )
    .expect("encap");
    b[r].to_vec()
}

/// An IPv4/UDP packet (no Ethernet header) of `len` bytes from
/// `10.244.a.b:sport` to `198.51.c.d:53`, the shape the NAT benchmarks feed
/// conntrack: flow `i` of a large set gets distinct pod, port and
/// destination bits.
pub fn pod_udp(i: u32, len: usize) -> Vec<u8> {
    let [_, b1, b2, b3] = i.to_be_bytes();
    let payload = vec![0x42; len.saturating_sub(28)];
    let mut v = Vec::with_capacity(len);
    PacketBuilder::ipv4([10, 244, b1 & 0x0f, b2], [198, 51, b3, b1 >> 4], 64)
        .udp(1024 + (i % 60000) as u16, 53)
        .write(&mut v, &payload)
        .expect("packet builds");
    v
}

/// The reply a server sends to the translated packet `out`.
pub fn reply_to(out: &[u8]) -> Vec<u8> {
    let ip = etherparse::Ipv4HeaderSlice::from_slice(out).expect("ipv4");
    let udp = etherparse::UdpHeaderSlice::from_slice(&out[ip.slice().len()..]).expect("udp");
    let mut v = Vec::new();
    PacketBuilder::ipv4(ip.destination(), ip.source(), 64)
        .udp(udp.destination_port(), udp.source_port())
        .write(&mut v, &out[ip.slice().len() + 8..])
        .expect("packet builds");
    v
}
