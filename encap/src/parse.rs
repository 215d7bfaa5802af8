//! One pass from an Ethernet frame to what the dataplane classifies on.
//!
//! [`parse_frame`] validates every header it reads (lengths, versions, the
//! IPv4 header checksum, TCP data offset, UDP length) and returns a `Copy`
//! summary of offsets and fields; it allocates nothing. Views for rewriting
//! are then made at the returned offsets.

use std::net::IpAddr;

use crate::bytes::sub;
use crate::ethernet::{self, ethertype};
use crate::flow::FlowKey;
use crate::icmp::IcmpPacket;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::Ipv6Packet;
use crate::tcp::{TcpFlags, TcpPacket};
use crate::udp::UdpPacket;
use crate::{Fragment, Layer, WireError, ip_proto};

/// A parsed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the L3 header (Ethernet header and VLAN tags skipped).
    pub l3_offset: usize,
    /// EtherType of the L3 payload.
    pub ethertype: u16,
    /// VLAN ID of the outermost tag, if any.
    pub vlan: Option<u16>,
    /// The IP layer, for IPv4 and IPv6 frames.
    pub ip: Option<IpInfo>,
}

/// The IP layer of a parsed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Offset of the upper-layer header in the frame.
    pub l4_offset: usize,
    /// End of the IP packet in the frame (Ethernet padding excluded).
    pub end: usize,
    /// TTL / hop limit.
    pub ttl: u8,
    /// TOS / traffic class (DSCP and ECN).
    pub tos: u8,
    /// Fragmentation state.
    pub fragment: Fragment,
    /// What the transport header says.
    pub l4: L4,
}

/// The transport layer of a parsed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Control bits.
        flags: TcpFlags,
    },
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP or ICMPv6 (the IP protocol tells which).
    Icmp {
        /// Message type.
        msg_type: u8,
        /// Message code.
        code: u8,
        /// The identifier, for echo request/reply.
        echo_id: Option<u16>,
    },
    /// A later fragment or another protocol: no transport header read.
    None,
}

impl Parsed {
    /// The flow key (see [`FlowKey`] for ICMP and port-less protocols).
    pub fn flow_key(&self) -> Option<FlowKey> {
        let ip = self.ip?;
        let (src_port, dst_port) = match ip.l4 {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp { src_port, dst_port } => (src_port, dst_port),
            L4::Icmp {
                echo_id: Some(id), ..
            } => (id, id),
            L4::Icmp { echo_id: None, .. } | L4::None => (0, 0),
        };
        Some(FlowKey {
            src: ip.src,
            dst: ip.dst,
            protocol: ip.protocol,
            src_port,
            dst_port,
        })
    }
}

/// Parses an Ethernet frame down to the transport header.
///
/// Non-IP frames (ARP, ...) parse with `ip: None`. Errors carry the layer and
/// the offset in `frame`.
pub fn parse_frame(frame: &[u8]) -> Result<Parsed, WireError> {
    let l3 = ethernet::header_len(frame)?;
    let eth = ethernet::EthernetFrame::new_checked(frame)?;
    let (ethertype, vlan) = (eth.ethertype(), eth.vlan_id());
    let rest = sub(frame, l3, frame.len());
    let ip = match ethertype {
        ethertype::IPV4 => Some(parse_ipv4(rest).map_err(|e| e.at(l3))?),
        ethertype::IPV6 => Some(parse_ipv6(rest).map_err(|e| e.at(l3))?),
        _ => None,
    }
    .map(|ip| IpInfo {
        l4_offset: ip.l4_offset + l3,
        end: ip.end + l3,
        ..ip
    });
    Ok(Parsed {
        l3_offset: l3,
        ethertype,
        vlan,
        ip,
    })
}

/// Parses an IPv4 packet (offsets relative to its start).
pub fn parse_ipv4(b: &[u8]) -> Result<IpInfo, WireError> {
    let p = Ipv4Packet::new_checked(b)?;
    if !p.verify_checksum() {
        return Err(WireError::bad_checksum(
            Layer::Ipv4,
            crate::ipv4::field::CHECKSUM,
            p.checksum(),
        ));
    }
    let fragment = if p.frag_offset() != 0 {
        Fragment::Later
    } else if p.more_frags() {
        Fragment::First
    } else {
        Fragment::No
    };
    let (hl, end) = (p.header_len(), usize::from(p.total_len()));
    let l4 = parse_l4(p.protocol(), sub(b, hl, end), fragment, false).map_err(|e| e.at(hl))?;
    Ok(IpInfo {
        src: p.src_addr().into(),
        dst: p.dst_addr().into(),
        protocol: p.protocol(),
        l4_offset: hl,
        end,
        ttl: p.ttl(),
        tos: p.tos(),
        fragment,
        l4,
    })
}

/// Parses an IPv6 packet (offsets relative to its start).
pub fn parse_ipv6(b: &[u8]) -> Result<IpInfo, WireError> {
    let p = Ipv6Packet::new_checked(b)?;
    let up = p.upper_layer()?;
    let end = crate::ipv6::HEADER_LEN + usize::from(p.payload_len());
    let l4 = parse_l4(up.protocol, sub(b, up.offset, end), up.fragment, true)
        .map_err(|e| e.at(up.offset))?;
    Ok(IpInfo {
        src: p.src_addr().into(),
        dst: p.dst_addr().into(),
        protocol: up.protocol,
        l4_offset: up.offset,
        end,
        ttl: p.hop_limit(),
        tos: p.traffic_class(),
        fragment: up.fragment,
        l4,
    })
}

fn parse_l4(protocol: u8, b: &[u8], fragment: Fragment, v6: bool) -> Result<L4, WireError> {
    if fragment == Fragment::Later {
        return Ok(L4::None);
    }
    Ok(match protocol {
        ip_proto::TCP => {
            let t = TcpPacket::new_checked(b)?;
            L4::Tcp {
                src_port: t.src_port(),
                dst_port: t.dst_port(),
                flags: t.flags(),
            }
        }
        ip_proto::UDP => {
            // A first fragment carries only part of the datagram its length
            // field describes.
            let u = if fragment == Fragment::First {
                UdpPacket::new_lax(b)?
            } else {
                UdpPacket::new_checked(b)?
            };
            L4::Udp {
                src_port: u.src_port(),
                dst_port: u.dst_port(),
            }
        }
        ip_proto::ICMP if !v6 => icmp(IcmpPacket::new_checked_v4(b)?),
        ip_proto::ICMPV6 if v6 => icmp(IcmpPacket::new_checked_v6(b)?),
        _ => L4::None,
    })
}

fn icmp(p: IcmpPacket<&[u8]>) -> L4 {
    L4::Icmp {
        msg_type: p.msg_type(),
        code: p.code(),
        echo_id: p.is_echo().then(|| p.echo_ident()),
    }
}

#[cfg(test)]
mod tests;
