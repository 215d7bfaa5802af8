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
