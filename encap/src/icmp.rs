//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages, including the IP packet an
//! error message quotes.
//!
//! NAT rewrites the quoted packet of an error for a translated flow, so the
//! quote is described by offsets into the message, not by copies.

use std::net::{IpAddr, Ipv6Addr};

use etherparse::LaxIpSlice;

use crate::bytes::{be16, set_be16, sub};
use crate::checksum::{self, internet_checksum, pseudo_header_v6};
use crate::ipv4::Ipv4Packet;
use crate::{Layer, WireError, ip_proto};

/// Length of the ICMP header (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;

/// ICMPv4 types Sluice handles.
pub mod v4_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (code 4: fragmentation needed and DF set).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated, RFC 6633), still an error that quotes.
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// ICMPv6 types Sluice handles.
pub mod v6_type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
}

/// Whether an ICMPv4 type is an error message that quotes the offending packet.
pub const fn is_v4_error(t: u8) -> bool {
    use v4_type::*;
    matches!(
        t,
        DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
    )
}

/// Whether an ICMPv6 type is an error message (RFC 4443 section 2.1: types below 128).
pub const fn is_v6_error(t: u8) -> bool {
    t < 128
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
}

/// What the quoted packet's transport header identifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotedL4 {
    /// TCP or UDP ports of the quoted packet, as the quoted packet has them.
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// The identifier of a quoted ICMP/ICMPv6 echo.
    EchoId(u16),
    /// A later fragment, another protocol, or too few bytes quoted.
    None,
}

/// The IP packet quoted in an ICMP error, located by offsets into the ICMP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    /// Offset of the quoted IP header in the ICMP message (always 8).
    pub ip_offset: usize,
    /// Offset of the quoted transport header in the ICMP message.
    pub l4_offset: usize,
    /// The quoted packet's protocol.
    pub protocol: u8,
    /// The quoted packet's source (the original sender: us, for our flows).
    pub src: IpAddr,
    /// The quoted packet's destination.
    pub dst: IpAddr,
    /// The quoted packet's transport identifiers.
    pub l4: QuotedL4,
}

/// A view of an ICMPv4 or ICMPv6 message (same header layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpPacket<T> {
    buf: T,
    layer: Layer,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// An ICMPv4 view without validation (for a buffer already checked).
    pub const fn new_unchecked_v4(buf: T) -> Self {
        IcmpPacket {
            buf,
            layer: Layer::Icmpv4,
        }
    }

    /// Validates an ICMPv4 message's header length.
    pub fn new_checked_v4(buf: T) -> Result<Self, WireError> {
        Self::new_checked(buf, Layer::Icmpv4)
    }

    /// Validates an ICMPv6 message's header length.
    pub fn new_checked_v6(buf: T) -> Result<Self, WireError> {
        Self::new_checked(buf, Layer::Icmpv6)
    }

    fn new_checked(buf: T, layer: Layer) -> Result<Self, WireError> {
        let have = buf.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::truncated(layer, 0, HEADER_LEN, have));
        }
        Ok(IcmpPacket { buf, layer })
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        crate::bytes::u8_at(self.buf.as_ref(), field::TYPE)
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        crate::bytes::u8_at(self.buf.as_ref(), field::CODE)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (meaningful for echo request/reply).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        be16(self.buf.as_ref(), field::SEQ)
    }

    /// Next-hop MTU of an ICMPv4 "fragmentation needed" (RFC 1191).
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buf.as_ref(), field::SEQ)
    }

    /// Whether this message is an echo request or reply.
    pub fn is_echo(&self) -> bool {
        match self.layer {
            Layer::Icmpv6 => matches!(self.msg_type(), v6_type::ECHO_REQUEST | v6_type::ECHO_REPLY),
            _ => matches!(self.msg_type(), v4_type::ECHO_REQUEST | v4_type::ECHO_REPLY),
        }
    }

    /// Whether this message is an error that quotes a packet.
    pub fn is_error(&self) -> bool {
        match self.layer {
            Layer::Icmpv6 => is_v6_error(self.msg_type()),
            _ => is_v4_error(self.msg_type()),
        }
    }

    /// Everything after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        sub(b, HEADER_LEN, b.len())
    }

    /// ICMPv4: whether the checksum (over the whole message) verifies.
    pub fn verify_checksum_v4(&self) -> bool {
        internet_checksum(self.buf.as_ref()) == 0
    }

    /// ICMPv6: whether the checksum (with the pseudo-header) verifies.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buf.as_ref();
        let mut c = pseudo_header_v6(src, dst, ip_proto::ICMPV6, b.len() as u32);
        c.add_bytes(b);
        c.sum() == 0xffff
    }

    /// The packet an error message quotes. Errors name [`Layer::Quoted`] (or
    /// the message's layer when it is not an error) and offsets in the message.
    pub fn quoted(&self) -> Result<Quoted, WireError> {
        if !self.is_error() {
            return Err(WireError::bad_field(
                self.layer,
                field::TYPE,
                "type (not an error)",
                u32::from(self.msg_type()),
            ));
        }
        match self.layer {
            Layer::Icmpv6 => quoted_v6(self.payload()),
            _ => quoted_v4(self.payload()),
        }
        .map_err(|e| e.at(HEADER_LEN))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Rewrites the echo identifier, updating the checksum (RFC 1624). For
    /// ICMPv6 the pseudo-header is untouched by an identifier change, so the
    /// same update is right.
    pub fn set_echo_ident(&mut self, id: u16) {
        let c = checksum::update_u16(self.checksum(), self.echo_ident(), id);
        set_be16(self.buf.as_mut(), field::IDENT, id);
        self.set_checksum(c);
    }

    /// Writes the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buf.as_mut(), field::CHECKSUM, c);
    }

    /// ICMPv4: recomputes the checksum over the whole message.
    pub fn fill_checksum_v4(&mut self) {
        self.set_checksum(0);
        let c = internet_checksum(self.buf.as_ref());
        self.set_checksum(c);
    }
}

/// Parses a quoted IPv4 packet: the whole IP header (options included) must
/// be there; the transport identifiers only if enough bytes were quoted
/// (RFC 792 promises 8; RFC 1812 routers quote more).
fn quoted_v4(q: &[u8]) -> Result<Quoted, WireError> {
    let ip = Ipv4Packet::new_lax(q).map_err(|e| WireError {
        layer: Layer::Quoted,
        ..e
    })?;
    let hl = ip.header_len();
    let protocol = ip.protocol();
    let l4 = if ip.frag_offset() != 0 {
        QuotedL4::None
    } else {
        transport_ids(protocol, sub(q, hl, q.len()), false)
    };
    Ok(Quoted {
        ip_offset: HEADER_LEN,
        l4_offset: HEADER_LEN + hl,
        protocol,
        src: ip.src_addr().into(),
        dst: ip.dst_addr().into(),
        l4,
    })
}

/// Parses a quoted IPv6 packet with etherparse's lax slicing, which walks
/// as much of the extension chain as was quoted.
fn quoted_v6(q: &[u8]) -> Result<Quoted, WireError> {
    let (ip, _ext_err) = LaxIpSlice::from_slice(q).map_err(|_| {
        let v = u32::from(q.first().copied().unwrap_or(0) >> 4);
        if q.len() < crate::ipv6::HEADER_LEN {
            WireError::truncated(Layer::Quoted, 0, crate::ipv6::HEADER_LEN, q.len())
        } else {
            WireError::bad_field(Layer::Quoted, 0, "version", v)
        }
    })?;
    let LaxIpSlice::Ipv6(v6) = &ip else {
        return Err(WireError::bad_field(Layer::Quoted, 0, "version", 4));
    };
    let payload = ip.payload();
    // Offset of the upper layer: where etherparse's payload slice starts.
    let l4_at = (payload.payload.as_ptr() as usize).saturating_sub(q.as_ptr() as usize);
    let l4 = if payload.fragmented && payload.incomplete {
        QuotedL4::None
    } else {
        transport_ids(payload.ip_number.0, payload.payload, true)
    };
    let h = v6.header();
    Ok(Quoted {
        ip_offset: HEADER_LEN,
        l4_offset: HEADER_LEN + l4_at,
        protocol: payload.ip_number.0,
        src: h.source_addr().into(),
        dst: h.destination_addr().into(),
        l4,
    })
}

/// The transport identifiers in the first bytes of an L4 header: TCP/UDP
/// ports, or an ICMP/ICMPv6 echo identifier (`v6` picks the family).
pub(crate) fn transport_ids(protocol: u8, l4: &[u8], v6: bool) -> QuotedL4 {
    let echo = |t: u8| {
        if v6 {
            matches!(t, v6_type::ECHO_REQUEST | v6_type::ECHO_REPLY)
        } else {
            matches!(t, v4_type::ECHO_REQUEST | v4_type::ECHO_REPLY)
        }
    };
    match protocol {
        ip_proto::TCP | ip_proto::UDP if l4.len() >= 4 => QuotedL4::Ports {
            src: be16(l4, 0),
            dst: be16(l4, 2),
        },
        ip_proto::ICMP if !v6 && l4.len() >= 6 && echo(crate::bytes::u8_at(l4, 0)) => {
            QuotedL4::EchoId(be16(l4, 4))
        }
        ip_proto::ICMPV6 if v6 && l4.len() >= 6 && echo(crate::bytes::u8_at(l4, 0)) => {
            QuotedL4::EchoId(be16(l4, 4))
        }
        _ => QuotedL4::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each family's echo types, each guard at its edge: ports need 4
    /// bytes, an echo identifier 6; ICMP is read only under IPv4 and
    /// ICMPv6 only under IPv6.
    #[test]
    fn transport_ids_by_family_and_length() {
        let echo4 = [8u8, 0, 0, 0, 0x12, 0x34];
        let echo6 = [128u8, 0, 0, 0, 0x12, 0x34];
        assert_eq!(
            transport_ids(ip_proto::ICMP, &echo4, false),
            QuotedL4::EchoId(0x1234)
        );
        assert_eq!(
            transport_ids(ip_proto::ICMP, &echo4[..5], false),
            QuotedL4::None
        );
        assert_eq!(transport_ids(ip_proto::ICMP, &echo4, true), QuotedL4::None);
        assert_eq!(transport_ids(ip_proto::ICMP, &echo6, false), QuotedL4::None);
        assert_eq!(
            transport_ids(ip_proto::ICMPV6, &echo6, true),
            QuotedL4::EchoId(0x1234)
        );
        assert_eq!(
            transport_ids(ip_proto::ICMPV6, &echo6[..5], true),
            QuotedL4::None
        );
        assert_eq!(
            transport_ids(ip_proto::ICMPV6, &echo6, false),
            QuotedL4::None
        );
        assert_eq!(
            transport_ids(ip_proto::ICMPV6, &echo4, true),
            QuotedL4::None
        );
        let ports = [0x9c, 0x40, 0, 53];
        for p in [ip_proto::TCP, ip_proto::UDP] {
            assert_eq!(
                transport_ids(p, &ports, false),
                QuotedL4::Ports {
                    src: 40000,
                    dst: 53
                }
            );
            assert_eq!(transport_ids(p, &ports[..3], true), QuotedL4::None);
        }
    }
    use crate::ErrorKind;
    use std::net::Ipv4Addr;

    /// An ICMPv4 "fragmentation needed" quoting a UDP packet from 10.244.1.2:5000 to 1.1.1.1:53.
    fn frag_needed(quote_len: usize) -> Vec<u8> {
        let mut m = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
        let mut ip = vec![
            0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 244, 1, 2, 1, 1, 1, 1,
        ];
        ip.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0x05, 0xc8, 0, 0]);
        ip.extend_from_slice(&[0xab; 64]);
        m.extend_from_slice(&ip[..quote_len]);
        IcmpPacket::new_checked_v4(&mut m[..])
            .unwrap()
            .fill_checksum_v4();
        m
    }

    #[test]
    fn quoted_udp_in_frag_needed() {
        let m = frag_needed(28);
        let p = IcmpPacket::new_checked_v4(&m[..]).unwrap();
        assert!(p.verify_checksum_v4() && p.is_error() && !p.is_echo());
        assert_eq!(p.next_hop_mtu(), 1400);
        let q = p.quoted().unwrap();
        assert_eq!(q.l4, QuotedL4::Ports { src: 5000, dst: 53 });
        assert_eq!((q.ip_offset, q.l4_offset, q.protocol), (8, 28, 17));
        assert_eq!(q.src, IpAddr::V4(Ipv4Addr::new(10, 244, 1, 2)));
    }

    #[test]
    fn short_quotes() {
        // Header only: ports unknown, still a quote.
        let m = frag_needed(20);
        let q = IcmpPacket::new_checked_v4(&m[..])
            .unwrap()
            .quoted()
            .unwrap();
        assert_eq!(q.l4, QuotedL4::None);
        // Less than an IP header: an error at the quote's offset.
        let m = frag_needed(12);
        let e = IcmpPacket::new_checked_v4(&m[..])
            .unwrap()
            .quoted()
            .unwrap_err();
        assert_eq!((e.layer, e.offset), (Layer::Quoted, 8));
        assert_eq!(
            e.kind,
            ErrorKind::Truncated {
                needed: 20,
                available: 12
            }
        );
    }

    #[test]
    fn echo_is_not_an_error_and_ident_rewrites_keep_checksum() {
        let mut m = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
        let mut p = IcmpPacket::new_checked_v4(&mut m[..]).unwrap();
        p.fill_checksum_v4();
        assert!(p.is_echo());
        assert_eq!(
            p.quoted().unwrap_err().kind,
            ErrorKind::BadField {
                field: "type (not an error)",
                value: 8
            }
        );
        p.set_echo_ident(0xbeef);
        assert_eq!(p.echo_ident(), 0xbeef);
        assert!(p.verify_checksum_v4());
    }

    #[test]
    fn quoted_v6_echo_in_time_exceeded() {
        let src: Ipv6Addr = "fd00::a".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut inner = vec![0x60, 0, 0, 0, 0, 16, 58, 1];
        inner.extend_from_slice(&src.octets());
        inner.extend_from_slice(&dst.octets());
        inner.extend_from_slice(&[128, 0, 0, 0, 0x0a, 0x0b, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut m = vec![3, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&inner);
        let p = IcmpPacket::new_checked_v6(&m[..]).unwrap();
        let q = p.quoted().unwrap();
        assert_eq!(q.l4, QuotedL4::EchoId(0x0a0b));
        assert_eq!((q.protocol, q.l4_offset), (58, 48));
        assert_eq!(q.src, IpAddr::V6(src));
    }
}
