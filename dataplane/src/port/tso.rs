//! Super-packets carried whole: a pod's TSO burst read from its TUN device,
//! or a peer's burst read from the uplink TAP (its UDP-tunnel GSO or the
//! uplink's GRO), crosses the worker as one [`Buf`] described by [`Gso`],
//! and is written to the next TUN device or TAP as one packet behind a
//! virtio-net header, for the kernel to segment late (or not at all: a
//! pod's TCP receives it whole). Its headers are parsed, routed, checked
//! and rewritten once; its payload is copied in by one `read` and out by
//! one `write`, and never checksummed by Sluice.
//!
//! Only TCP over IPv4 is carried whole (`GSO_TCPV4`, alone or inside VXLAN
//! over IPv4); everything else a port reads is cut into frames as before
//! ([`super::gso::Plan`]). A port that takes no super-packets (AF_XDP) gets
//! the segments, cut by the worker with the same code.
//!
//! A super-packet's TCP checksum field holds only the pseudo-header's sum
//! (`NEEDS_CSUM`): whoever segments it finishes each segment's. Rewriting
//! addresses or ports in the pipeline updates the field incrementally as if
//! it were complete, so [`finish`] sets it again from the final headers
//! before the packet leaves; a checksum depending only on the pseudo-header
//! is always right after any rewrite.

use std::net::Ipv4Addr;

use encap::checksum::pseudo_header_v4;
use encap::vxlan::OVERHEAD;

use super::gro::VXLAN_OUTER;
use super::gso::VnetHdr;
use crate::buf::{Buf, Gso};

const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
/// Largest IPv4 packet.
const MAX_IP: usize = 65_535;

/// Where a super-packet's headers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    /// The (inner) IPv4 header's offset and length.
    ip: usize,
    ihl: usize,
    /// End of the TCP header.
    hend: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*b.get(at..)?.first_chunk::<2>()?))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(d) = b.get_mut(at..at + 2) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

/// Parses `frame` (an IP packet, or an Ethernet frame when `eth`) as the
/// super-packet `g` describes: IPv4 (inside VXLAN over option-less IPv4
/// for a tunnel), unfragmented, TCP, its length the frame's.
fn shape(frame: &[u8], eth: bool, g: Gso) -> Option<Shape> {
    let ipv4_at = |o: usize| u16_at(frame, o) == Some(0x0800);
    let ip = if g.tunnel {
        let vxlan = eth
            && ipv4_at(12)
            && frame.get(14) == Some(&0x45)
            && u16_at(frame, 20).is_some_and(|f| f & 0x3fff == 0)
            && frame.get(23) == Some(&17)
            && ipv4_at(VXLAN_OUTER - 2);
        vxlan.then_some(VXLAN_OUTER)?
    } else if eth {
        ipv4_at(12).then_some(14)?
    } else {
        0
    };
    let vihl = *frame.get(ip)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    let unfragmented = u16_at(frame, ip + 6)? & 0x3fff == 0;
    let whole = usize::from(u16_at(frame, ip + 2)?) == frame.len() - ip;
    if vihl >> 4 != 4 || ihl < 20 || frame.get(ip + 9) != Some(&6) || !unfragmented || !whole {
        return None;
    }
    let l4 = ip + ihl;
    let thl = usize::from(frame.get(l4 + 12)? >> 4) * 4;
    let hend = l4 + thl;
    (thl >= 20 && hend <= frame.len() && g.size > 0).then_some(Shape { ip, ihl, hend })
}

/// The segments an IP packet makes: 1 without [`Gso`] (or headers that
/// do not parse), else its payload over the segment size. Counters count
/// a super-packet's frames with it, as they would count them cut.
pub fn segments(ip_packet: &[u8], gso: Option<Gso>) -> u64 {
    let Some(g) = gso else {
        return 1;
    };
    shape(ip_packet, false, g).map_or(1, |s| {
        (ip_packet.len() - s.hend)
            .div_ceil(usize::from(g.size))
            .max(1) as u64
    })
}

/// The largest segment's IP packet length: what the MTU must carry.
pub fn segment_ip_len(frame: &[u8], eth: bool, g: Gso) -> Option<usize> {
    let s = shape(frame, eth, g)?;
    Some((s.hend + usize::from(g.size)).min(frame.len()) - s.ip)
}

/// Whether a packet read with header `h` is carried whole, and how: TCP
/// over IPv4 with its checksum left partial at the TCP header, more than
/// one segment long, and (not inside VXLAN yet) small enough to be
/// encapsulated. A tunnel packet's outer UDP checksum is cleared (VXLAN's
/// is optional, and the frame is decapsulated here). `None`: cut it.
pub fn accept(h: &VnetHdr, frame: &mut [u8], eth: bool) -> Option<Gso> {
    if h.flags & F_NEEDS_CSUM == 0 {
        return None;
    }
    let tunnel = match h.gso_type {
        GSO_TCPV4 => false,
        t if t == GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4 => true,
        _ => return None,
    };
    let g = Gso {
        size: h.gso_size,
        tunnel,
    };
    let s = shape(frame, eth, g)?;
    let fits = tunnel || frame.len() - s.ip + OVERHEAD <= MAX_IP;
    let segments = frame.len() - s.hend > usize::from(g.size);
    let partial_here = usize::from(h.csum_start) == s.ip + s.ihl && h.csum_offset == 16;
    if !(fits && segments && partial_here) {
        return None;
    }
    if tunnel {
        put16(frame, 40, 0);
    }
    Some(g)
}

/// Finishes, in place, the checksum of a packet read without GSO whose
/// header says it is partial (`NEEDS_CSUM`: the field holds the
/// pseudo-header's sum), as `skb_checksum_help` would; true when the
/// packet is whole now, false if the header's offsets are outside it or
/// it is a GSO packet.
pub fn finish_plain(h: &VnetHdr, frame: &mut [u8]) -> bool {
    if h.gso_type != 0 {
        return false;
    }
    if h.flags & F_NEEDS_CSUM == 0 {
        return true;
    }
    let start = usize::from(h.csum_start);
    let field = start + usize::from(h.csum_offset);
    if field + 2 > frame.len() {
        return false;
    }
    let mut c = encap::checksum::Checksum::new();
    c.add_bytes(frame.get(start..).unwrap_or_default());
    let v = match c.finish() {
        0 => 0xffff,
        v => v,
    };
    put16(frame, field, v);
    true
}

/// Makes `buf`'s super-packet ready to be written whole (the frame as it
/// leaves: an IP packet, or an Ethernet frame when `eth`): its TCP checksum
/// field set to the pseudo-header's sum from the final headers, a VXLAN
/// frame's outer UDP checksum zero. One that turned out to be a single
/// segment becomes an ordinary packet, its checksum complete. False if its
/// headers are not those of a TCP/IPv4 super-packet (the caller cuts it,
/// or drops it if that fails too). A buffer without [`Gso`] is left alone.
pub fn finish(buf: &mut Buf, eth: bool) -> bool {
    let Some(g) = buf.gso() else {
        return true;
    };
    let Some(s) = shape(buf.data(), eth, g) else {
        return false;
    };
    let frame = buf.data_mut();
    let l4 = s.ip + s.ihl;
    let Ok(l4_len) = u16::try_from(frame.len() - l4) else {
        return false;
    };
    let Some(&[a, b, c, d, e, f, gg, h]) = frame.get(s.ip + 12..).and_then(|x| x.first_chunk())
    else {
        return false;
    };
    let mut sum = pseudo_header_v4(
        Ipv4Addr::new(a, b, c, d),
        Ipv4Addr::new(e, f, gg, h),
        6,
        l4_len,
    );
    if g.tunnel {
        put16(frame, 40, 0);
    }
    if frame.len() - s.hend > usize::from(g.size) {
        put16(frame, l4 + 16, sum.sum());
        return true;
    }
    put16(frame, l4 + 16, 0);
    sum.add_bytes(frame.get(l4..).unwrap_or_default());
    put16(frame, l4 + 16, sum.finish());
    buf.set_gso(None);
    true
}

/// The virtio-net header (`struct virtio_net_hdr_v1_hash_tunnel`; a TUN
/// device reads its first 10 bytes) a [`finish`]ed super-packet is written
/// with: TSO, through the tunnel for VXLAN, checksum partial at the
/// (inner) TCP header. Host byte order, as a TUN device without
/// TUNSETVNETBE/LE takes it on a little-endian host.
pub fn header(frame: &[u8], eth: bool, g: Gso) -> Option<[u8; 24]> {
    let s = shape(frame, eth, g)?;
    let mut h = [0u8; 24];
    let mut put = |at: usize, x: usize| {
        let x = u16::try_from(x).unwrap_or(u16::MAX).to_ne_bytes();
        if let Some(d) = h.get_mut(at..at + 2) {
            d.copy_from_slice(&x);
        }
    };
    put(2, s.hend);
    put(4, usize::from(g.size));
    put(6, s.ip + s.ihl);
    put(8, 16);
    if g.tunnel {
        // Outer transport header, inner network header.
        put(20, 34);
        put(22, VXLAN_OUTER);
    }
    h[0] = F_NEEDS_CSUM;
    h[1] = if g.tunnel {
        GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4
    } else {
        GSO_TCPV4
    };
    Some(h)
}

/// The header [`super::gso::Plan`] cuts a [`finish`]ed super-packet by,
/// for a port that takes no super-packets.
pub fn vnet(frame: &[u8], eth: bool, g: Gso) -> Option<VnetHdr> {
    VnetHdr::parse(&header(frame, eth, g)?)
}

#[cfg(test)]
#[path = "tso_tests.rs"]
mod tests;
