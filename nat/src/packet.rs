//! Reading a packet's tuple and rewriting it to another tuple, on `encap`'s
//! views, with incremental checksums only.

use encap::checksum::Delta;
use encap::icmp::{IcmpPacket, is_v4_error, v4_type};
use encap::ip_proto;
use encap::ipv4::Ipv4Packet;
use encap::tcp::TcpPacket;
use encap::udp::UdpPacket;

use crate::tcp::{Segment, wscale};
use crate::tuple::Tuple;
use crate::verdict::DropReason;

/// What kind of packet, for tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp(Segment),
    Udp,
    /// ICMP echo request (`true`) or reply.
    IcmpEcho(bool),
    /// ICMP error: the quoted packet's tuple, and where its IP header starts
    /// in the packet.
    IcmpError {
        quoted: Tuple,
        quote_at: usize,
    },
    Other,
}

/// A classified IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Classified {
    pub tuple: Tuple,
    pub kind: Kind,
    pub l4: usize,
}

impl Classified {
    /// The tuple the table is searched for: the packet's own, or for an
    /// ICMP error the reverse of the packet it quotes (the direction the
    /// error travels).
    pub(crate) fn key(&self) -> Tuple {
        match self.kind {
            Kind::IcmpError { quoted, .. } => quoted.reversed(),
            _ => self.tuple,
        }
    }
}

/// Reads the tuple and tracking fields of the IPv4 packet in `pkt`.
pub(crate) fn classify(pkt: &[u8]) -> Result<Classified, DropReason> {
    let ip = Ipv4Packet::new_checked(pkt).map_err(|_| DropReason::Malformed)?;
    if !ip.verify_checksum() {
        return Err(DropReason::Malformed);
    }
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let (src, dst, proto, l4) = (ip.src_addr(), ip.dst_addr(), ip.protocol(), ip.header_len());
    let body = ip.payload();
    let mut t = Tuple {
        src,
        dst,
        src_port: 0,
        dst_port: 0,
        proto,
    };
    let kind = match proto {
        ip_proto::TCP => {
            let p = TcpPacket::new_checked(body).map_err(|_| DropReason::Malformed)?;
            (t.src_port, t.dst_port) = (p.src_port(), p.dst_port());
            Kind::Tcp(Segment {
                flags: p.flags(),
                seq: p.seq(),
                ack: p.ack(),
                window: p.window(),
                len: p.payload().len() as u32,
                wscale: if p.flags().contains(encap::tcp::TcpFlags::SYN) {
                    wscale(p.options())
                } else {
                    None
                },
            })
        }
        ip_proto::UDP => {
            let p = UdpPacket::new_checked(body).map_err(|_| DropReason::Malformed)?;
            (t.src_port, t.dst_port) = (p.src_port(), p.dst_port());
            Kind::Udp
        }
        ip_proto::ICMP => {
            let p = IcmpPacket::new_checked_v4(body).map_err(|_| DropReason::Malformed)?;
            match p.msg_type() {
                v4_type::ECHO_REQUEST | v4_type::ECHO_REPLY => {
                    t.src_port = p.echo_ident();
                    Kind::IcmpEcho(p.msg_type() == v4_type::ECHO_REQUEST)
                }
                ty if is_v4_error(ty) => {
                    let q = p.quoted().map_err(|_| DropReason::Malformed)?;
                    let quote_at = l4 + q.ip_offset;
                    let quoted = quoted_tuple(pkt, quote_at).ok_or(DropReason::Malformed)?;
                    Kind::IcmpError { quoted, quote_at }
                }
                _ => Kind::Other,
            }
        }
        _ => Kind::Other,
    };
    Ok(Classified { tuple: t, kind, l4 })
}

/// The tuple of the packet quoted at `at` (its IP header and first 8 bytes).
fn quoted_tuple(pkt: &[u8], at: usize) -> Option<Tuple> {
    let q = pkt.get(at..)?;
    let ip = Ipv4Packet::new_lax(q).ok()?;
    let l4 = q.get(ip.header_len()..)?;
    let be = |i: usize| {
        l4.get(i..i + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_be_bytes)
    };
    let (src_port, dst_port) = match ip.protocol() {
        ip_proto::TCP | ip_proto::UDP => (be(0)?, be(2)?),
        ip_proto::ICMP => (be(4)?, 0),
        _ => (0, 0),
    };
    Some(Tuple {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        src_port,
        dst_port,
        proto: ip.protocol(),
    })
}

/// Rewrites the IPv4 packet `pkt`, whose tuple is `from`, to carry `to`:
/// addresses in the IP header, ports (or the ICMP echo identifier) in the
/// transport header, every checksum updated incrementally (RFC 1624).
///
/// `pkt` has passed [`classify`], which put a whole TCP or UDP header at
/// `l4`. For TCP and UDP the address and port changes are summed once
/// ([`Delta`]) and applied to both checksums; UDP keeps a zero ("none")
/// checksum and sends a computed zero as 0xFFFF.
pub(crate) fn rewrite(pkt: &mut [u8], l4: usize, from: &Tuple, to: &Tuple) {
    if from == to {
        return;
    }
    let addrs = Delta::new()
        .ipv4_addr(from.src, to.src)
        .ipv4_addr(from.dst, to.dst);
    put(pkt, 12, to.src.octets());
    put(pkt, 16, to.dst.octets());
    put(pkt, 10, addrs.apply(be16(pkt, 10)).to_be_bytes());
    let csum_at = match from.proto {
        ip_proto::TCP => l4 + 16,
        ip_proto::UDP => l4 + 6,
        ip_proto::ICMP if from.src_port != to.src_port => {
            if let Some(body) = pkt.get_mut(l4..) {
                IcmpPacket::new_unchecked_v4(body).set_echo_ident(to.src_port);
            }
            return;
        }
        _ => return,
    };
    let check = be16(pkt, csum_at);
    let new = addrs
        .u16(from.src_port, to.src_port)
        .u16(from.dst_port, to.dst_port)
        .apply(check);
    let new = match from.proto {
        ip_proto::UDP if check == 0 => 0,
        ip_proto::UDP if new == 0 => 0xffff,
        _ => new,
    };
    put(pkt, l4, to.src_port.to_be_bytes());
    put(pkt, l4 + 2, to.dst_port.to_be_bytes());
    put(pkt, csum_at, new.to_be_bytes());
}

/// Writes `v` at `at` (nothing if it does not fit).
#[inline(always)]
fn put<const N: usize>(pkt: &mut [u8], at: usize, v: [u8; N]) {
    if let Some(b) = pkt.get_mut(at..at + N) {
        b.copy_from_slice(&v);
    }
}

/// Rewrites an ICMP error whose quoted packet (at `quote_at`) has tuple
/// `from` so the quote carries `to`, and the outer header's address
/// `outer` (source or destination) becomes `outer_to`. The quoted IP header
/// checksum, the quoted TCP/UDP checksum (when quoted in full) and the ICMP
/// checksum are all updated incrementally.
pub(crate) fn rewrite_icmp_error(
    pkt: &mut [u8],
    l4: usize,
    quote_at: usize,
    from: &Tuple,
    to: &Tuple,
    outer: OuterAddr,
) {
    // Outer header.
    let mut ip = Ipv4Packet::new_unchecked(&mut *pkt);
    if let Some(a) = outer.src {
        ip.set_src_addr(a);
    }
    if let Some(a) = outer.dst {
        ip.set_dst_addr(a);
    }
    let mut icmp_csum = be16(pkt, l4 + 2);
    let mut put16 = |pkt: &mut [u8], at: usize, new: u16| {
        let old = be16(pkt, at);
        if old != new
            && let Some(b) = pkt.get_mut(at..at + 2)
        {
            b.copy_from_slice(&new.to_be_bytes());
            icmp_csum = encap::checksum::update_u16(icmp_csum, old, new);
        }
    };
    let qhl = usize::from(pkt.get(quote_at).copied().unwrap_or(0x45) & 0x0f) * 4;
    let q_l4 = quote_at + qhl;
    // Quoted IP addresses and header checksum.
    let mut qcsum = be16(pkt, quote_at + 10);
    for (at, old, new) in [
        (quote_at + 12, from.src, to.src),
        (quote_at + 16, from.dst, to.dst),
    ] {
        if old != new {
            qcsum = encap::checksum::update_ipv4_addr(qcsum, old, new);
            let n = new.to_bits();
            put16(pkt, at, (n >> 16) as u16);
            put16(pkt, at + 2, n as u16);
        }
    }
    put16(pkt, quote_at + 10, qcsum);
    // Quoted transport identifiers and, when present in full, its checksum.
    let quoted_len = pkt.len().saturating_sub(q_l4);
    match from.proto {
        ip_proto::TCP | ip_proto::UDP => {
            let csum_at = if from.proto == ip_proto::TCP {
                q_l4 + 16
            } else {
                q_l4 + 6
            };
            let full = if from.proto == ip_proto::TCP {
                quoted_len >= 18
            } else {
                quoted_len >= 8
            };
            let mut l4c = be16(pkt, csum_at);
            let present = full && !(from.proto == ip_proto::UDP && l4c == 0);
            if present {
                l4c = encap::checksum::update_ipv4_addr(l4c, from.src, to.src);
                l4c = encap::checksum::update_ipv4_addr(l4c, from.dst, to.dst);
                l4c = encap::checksum::update_u16(l4c, from.src_port, to.src_port);
                l4c = encap::checksum::update_u16(l4c, from.dst_port, to.dst_port);
                if from.proto == ip_proto::UDP && l4c == 0 {
                    l4c = 0xffff;
                }
            }
            put16(pkt, q_l4, to.src_port);
            put16(pkt, q_l4 + 2, to.dst_port);
            if present {
                put16(pkt, csum_at, l4c);
            }
        }
        ip_proto::ICMP => {
            // A quoted echo: its identifier, and its own checksum if quoted.
            let old = be16(pkt, q_l4 + 4);
            if old != to.src_port && quoted_len >= 8 {
                let c = encap::checksum::update_u16(be16(pkt, q_l4 + 2), old, to.src_port);
                put16(pkt, q_l4 + 4, to.src_port);
                put16(pkt, q_l4 + 2, c);
            }
        }
        _ => {}
    }
    if let Some(b) = pkt.get_mut(l4 + 2..l4 + 4) {
        b.copy_from_slice(&icmp_csum.to_be_bytes());
    }
}

/// The outer addresses of an ICMP error to rewrite (as Linux's
/// `nf_nat_icmp_reply_translation`: the source where the flow was DNATed,
/// the destination where it was SNATed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OuterAddr {
    pub src: Option<std::net::Ipv4Addr>,
    pub dst: Option<std::net::Ipv4Addr>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|x| <[u8; 2]>::try_from(x).ok())
        .map_or(0, u16::from_be_bytes)
}
