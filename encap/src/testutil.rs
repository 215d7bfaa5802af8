//! Frame builders for unit tests. Frames are written by etherparse's
//! `PacketBuilder`, an implementation independent of ours, so its checksums
//! and lengths are an oracle for our views.

use etherparse::{PacketBuilder, VlanId};
use rand::{Rng, RngExt, rngs::StdRng};

use crate::MacAddr;
use crate::vxlan::TunnelEndpoint;

pub(crate) const POD_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
pub(crate) const GW_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 2];

pub(crate) fn endpoint() -> TunnelEndpoint {
    TunnelEndpoint {
        local_mac: MacAddr([0x02, 0x10, 0, 0, 0, 1]),
        next_hop_mac: MacAddr([0x02, 0x10, 0, 0, 0, 2]),
        local_ip: [192, 0, 2, 1].into(),
        remote_ip: [192, 0, 2, 2].into(),
    }
}

/// An Ethernet + IPv4 + UDP frame.
pub(crate) fn udp4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_MAC, GW_MAC)
        .ipv4(src, dst, 64)
        .udp(sp, dp)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// A random valid frame: IPv4 or IPv6; TCP, UDP or ICMP echo; optionally VLAN
/// tagged; payload of 0..=max_payload bytes.
pub(crate) fn random_frame(rng: &mut StdRng, max_payload: usize) -> Vec<u8> {
    let mut payload = vec![0u8; rng.random_range(0..=max_payload)];
    rng.fill_bytes(&mut payload);
    let eth = PacketBuilder::ethernet2(POD_MAC, GW_MAC);
    let vlan = rng.random_bool(0.2);
    let (v4, l4) = (rng.random_bool(0.6), rng.random_range(0..3u8));
    let (sp, dp, id): (u16, u16, u16) = (rng.random(), rng.random(), rng.random());
    let (seq, win): (u32, u16) = (rng.random(), rng.random());
    let (a4, b4): ([u8; 4], [u8; 4]) = (rng.random(), rng.random());
    let (a6, b6): ([u8; 16], [u8; 16]) = (rng.random(), rng.random());
    let mut out = Vec::new();
    macro_rules! finish {
        ($ip:expr, $icmp:ident) => {
            match l4 {
                0 => $ip.tcp(sp, dp, seq, win).write(&mut out, &payload),
                1 => $ip.udp(sp, dp).write(&mut out, &payload),
                _ => $ip.$icmp(id, 1).write(&mut out, &payload),
            }
        };
    }
    let r = match (vlan, v4) {
        (false, true) => finish!(eth.ipv4(a4, b4, 64), icmpv4_echo_request),
        (false, false) => finish!(eth.ipv6(a6, b6, 64), icmpv6_echo_request),
        (true, true) => {
            finish!(
                eth.single_vlan(VlanId::try_new(rng.random_range(1..4095)).unwrap())
                    .ipv4(a4, b4, 64),
                icmpv4_echo_request
            )
        }
        (true, false) => {
            finish!(
                eth.single_vlan(VlanId::try_new(rng.random_range(1..4095)).unwrap())
                    .ipv6(a6, b6, 64),
                icmpv6_echo_request
            )
        }
    };
    r.unwrap();
    out
}
