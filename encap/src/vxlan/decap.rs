//! Validating VXLAN decapsulation.

use core::fmt;
use core::ops::Range;
use std::net::Ipv4Addr;

use super::header::{self, VxlanHeader};
use super::{ReservedBits, Vni, VxlanConfig};
use crate::bytes::{sub, sub_mut};
use crate::ethernet::{self, EthernetFrame, ethertype};
use crate::ipv4::Ipv4Packet;
use crate::ipv6::Ipv6Packet;
use crate::udp::UdpPacket;
use crate::{Ecn, WireError, ip_proto};

/// A successfully decapsulated frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decapsulated {
    /// The VNI (equal to the configured one).
    pub vni: Vni,
    /// The sending VTEP: callers drop frames from VTEPs they do not know.
    pub outer_src: Ipv4Addr,
    /// The outer destination (this node).
    pub outer_dst: Ipv4Addr,
    /// The outer UDP source port (the sender's flow hash).
    pub outer_src_port: u16,
    /// Where the inner Ethernet frame lies in the buffer.
    pub inner: Range<usize>,
}

impl Decapsulated {
    /// The inner frame as a slice of the buffer that was decapsulated.
    pub fn inner_frame<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        sub(buf, self.inner.start, self.inner.end)
    }
}

/// Why a frame was not decapsulated. Each variant is a distinct drop reason
/// with its own counter ([`DecapError::drop_kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapError {
    /// An outer header is truncated or has an invalid field.
    Malformed(WireError),
    /// The outer EtherType is not IPv4.
    NotIpv4 {
        /// The EtherType found.
        ethertype: u16,
    },
    /// The outer IPv4 header checksum does not verify.
    BadIpChecksum {
        /// The checksum field.
        found: u16,
    },
    /// The outer packet is an IPv4 fragment (VXLAN underlays must not fragment).
    Fragment,
    /// The outer protocol is not UDP.
    NotUdp {
        /// The protocol found.
        protocol: u8,
    },
    /// The UDP destination port is not the VXLAN port.
    WrongPort {
        /// The port found.
        port: u16,
    },
    /// The UDP length disagrees with the IP payload length.
    UdpLength {
        /// The UDP length field.
        udp: u16,
        /// The IP payload length.
        ip_payload: usize,
    },
    /// A non-zero UDP checksum does not verify.
    BadUdpChecksum {
        /// The checksum field.
        found: u16,
    },
    /// The VXLAN I flag is clear.
    NoIFlag {
        /// The flags byte.
        flags: u8,
    },
    /// Reserved VXLAN bits are set and the policy is to drop.
    ReservedBits {
        /// The first VXLAN header word.
        word: u32,
    },
    /// The VNI is not the configured one.
    UnknownVni {
        /// The VNI found.
        vni: u32,
    },
    /// The inner frame is shorter than an Ethernet header.
    InnerTooShort {
        /// Its length.
        len: usize,
    },
    /// The outer header says CE and the inner packet is not ECN-capable:
    /// RFC 6040 section 4.2 requires a drop.
    CeOnNotEct,
}

/// The kind of a [`DecapError`], one per counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DecapDrop {
    /// [`DecapError::Malformed`].
    Malformed,
    /// [`DecapError::NotIpv4`].
    NotIpv4,
    /// [`DecapError::BadIpChecksum`].
    BadIpChecksum,
    /// [`DecapError::Fragment`].
    Fragment,
    /// [`DecapError::NotUdp`].
    NotUdp,
    /// [`DecapError::WrongPort`].
    WrongPort,
    /// [`DecapError::UdpLength`].
    UdpLength,
    /// [`DecapError::BadUdpChecksum`].
    BadUdpChecksum,
    /// [`DecapError::NoIFlag`].
    NoIFlag,
    /// [`DecapError::ReservedBits`].
    ReservedBits,
    /// [`DecapError::UnknownVni`].
    UnknownVni,
    /// [`DecapError::InnerTooShort`].
    InnerTooShort,
    /// [`DecapError::CeOnNotEct`].
    CeOnNotEct,
}

impl DecapDrop {
    /// Every kind, in counter-index order (`kind as usize`).
    pub const ALL: [DecapDrop; 13] = [
        DecapDrop::Malformed,
        DecapDrop::NotIpv4,
        DecapDrop::BadIpChecksum,
        DecapDrop::Fragment,
        DecapDrop::NotUdp,
        DecapDrop::WrongPort,
        DecapDrop::UdpLength,
        DecapDrop::BadUdpChecksum,
        DecapDrop::NoIFlag,
        DecapDrop::ReservedBits,
        DecapDrop::UnknownVni,
        DecapDrop::InnerTooShort,
        DecapDrop::CeOnNotEct,
    ];

    /// Counter name.
    pub const fn name(self) -> &'static str {
        match self {
            DecapDrop::Malformed => "vxlan_malformed",
            DecapDrop::NotIpv4 => "vxlan_not_ipv4",
            DecapDrop::BadIpChecksum => "vxlan_bad_ip_checksum",
            DecapDrop::Fragment => "vxlan_outer_fragment",
            DecapDrop::NotUdp => "vxlan_not_udp",
            DecapDrop::WrongPort => "vxlan_wrong_port",
            DecapDrop::UdpLength => "vxlan_udp_length",
            DecapDrop::BadUdpChecksum => "vxlan_bad_udp_checksum",
            DecapDrop::NoIFlag => "vxlan_no_i_flag",
            DecapDrop::ReservedBits => "vxlan_reserved_bits",
            DecapDrop::UnknownVni => "vxlan_unknown_vni",
            DecapDrop::InnerTooShort => "vxlan_inner_too_short",
            DecapDrop::CeOnNotEct => "vxlan_ce_on_not_ect",
        }
    }
}

impl DecapError {
    /// The counter this error increments.
    pub const fn drop_kind(&self) -> DecapDrop {
        match self {
            DecapError::Malformed(_) => DecapDrop::Malformed,
            DecapError::NotIpv4 { .. } => DecapDrop::NotIpv4,
            DecapError::BadIpChecksum { .. } => DecapDrop::BadIpChecksum,
            DecapError::Fragment => DecapDrop::Fragment,
            DecapError::NotUdp { .. } => DecapDrop::NotUdp,
            DecapError::WrongPort { .. } => DecapDrop::WrongPort,
            DecapError::UdpLength { .. } => DecapDrop::UdpLength,
            DecapError::BadUdpChecksum { .. } => DecapDrop::BadUdpChecksum,
            DecapError::NoIFlag { .. } => DecapDrop::NoIFlag,
            DecapError::ReservedBits { .. } => DecapDrop::ReservedBits,
            DecapError::UnknownVni { .. } => DecapDrop::UnknownVni,
            DecapError::InnerTooShort { .. } => DecapDrop::InnerTooShort,
            DecapError::CeOnNotEct => DecapDrop::CeOnNotEct,
        }
    }
}

impl From<WireError> for DecapError {
    fn from(e: WireError) -> Self {
        DecapError::Malformed(e)
    }
}

impl fmt::Display for DecapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecapError::Malformed(e) => write!(f, "vxlan decap: {e}"),
            DecapError::NotIpv4 { ethertype } => write!(
                f,
                "vxlan decap: outer ethertype {ethertype:#06x} is not IPv4"
            ),
            DecapError::BadIpChecksum { found } => {
                write!(f, "vxlan decap: bad outer IPv4 checksum {found:#06x}")
            }
            DecapError::Fragment => write!(f, "vxlan decap: outer IPv4 packet is a fragment"),
            DecapError::NotUdp { protocol } => {
                write!(f, "vxlan decap: outer protocol {protocol} is not UDP")
            }
            DecapError::WrongPort { port } => {
                write!(f, "vxlan decap: UDP port {port} is not the VXLAN port")
            }
            DecapError::UdpLength { udp, ip_payload } => {
                write!(
                    f,
                    "vxlan decap: UDP length {udp} but IP payload {ip_payload}"
                )
            }
            DecapError::BadUdpChecksum { found } => {
                write!(f, "vxlan decap: bad outer UDP checksum {found:#06x}")
            }
            DecapError::NoIFlag { flags } => {
                write!(f, "vxlan decap: I flag clear (flags {flags:#04x})")
            }
            DecapError::ReservedBits { word } => {
                write!(f, "vxlan decap: reserved bits set ({word:#010x})")
            }
            DecapError::UnknownVni { vni } => write!(f, "vxlan decap: unknown VNI {vni}"),
            DecapError::InnerTooShort { len } => {
                write!(f, "vxlan decap: inner frame of {len} bytes")
            }
            DecapError::CeOnNotEct => write!(
                f,
                "vxlan decap: outer CE on a not-ECT inner packet (RFC 6040)"
            ),
        }
    }
}

impl std::error::Error for DecapError {}

/// RFC 6040 section 4.2 (Figure 4): the inner ECN field after decapsulation,
/// or `None` where the combination must be dropped (outer CE, inner Not-ECT).
pub const fn decap_ecn(inner: Ecn, outer: Ecn) -> Option<Ecn> {
    match (inner, outer) {
        (Ecn::NotEct, Ecn::Ce) => None,
        (Ecn::NotEct, _) => Some(Ecn::NotEct),
        (Ecn::Ce, _) | (_, Ecn::Ce) => Some(Ecn::Ce),
        (Ecn::Ect0, Ecn::Ect1) => Some(Ecn::Ect1),
        (inner, _) => Some(inner),
    }
}

/// Validates the outer headers of `frame` (Ethernet with optional VLAN tags,
/// IPv4 with options, UDP, VXLAN), applies RFC 6040 ECN decapsulation to the
/// inner packet in place, and returns where the inner frame is.
///
/// Checks, in order, each with its own [`DecapError`]: header lengths,
/// EtherType, IPv4 header checksum, fragmentation, protocol, destination
/// port, UDP length, UDP checksum (when non-zero), I flag, reserved bits (per
/// [`VxlanConfig::reserved_bits`]), VNI, inner length, ECN.
#[inline]
pub fn decapsulate(frame: &mut [u8], cfg: &VxlanConfig) -> Result<Decapsulated, DecapError> {
    match decapsulate_fast(frame, cfg) {
        Some(d) => Ok(d),
        None => decapsulate_general(frame, cfg),
    }
}

/// The common case, read from one fixed 50-byte copy with constant offsets:
/// untagged Ethernet, option-less IPv4, zero UDP checksum, outer Not-ECT.
/// Returns `Some` only for a frame the general path accepts with the same
/// result (the `vxlan_decap` fuzz target checks this), `None` for anything
/// else, which the general path then validates and, if wrong, names.
#[inline(always)]
fn decapsulate_fast(frame: &[u8], cfg: &VxlanConfig) -> Option<Decapsulated> {
    use crate::bytes::{be16, be32, u8_at};
    let h: &[u8; super::OVERHEAD] = frame.get(..super::OVERHEAD)?.try_into().ok()?;
    let h = &h[..];
    let total_len = usize::from(be16(h, 16));
    let ip_end = 14 + total_len;
    let (flags_word, vni_word) = (be32(h, 42), be32(h, 46));
    let reserved_ok = match cfg.reserved_bits {
        ReservedBits::Drop => flags_word == u32::from(header::FLAG_I) << 24 && vni_word & 0xff == 0,
        ReservedBits::Ignore => u8_at(h, 42) & header::FLAG_I != 0,
    };
    // Non-short-circuiting `&`: one branch instead of a dozen.
    let ok = (be16(h, 12) == ethertype::IPV4)
        & (be16(h, 14) & 0xff03 == 0x4500)
        & (be16(h, 20) & 0x3fff == 0)
        & (u8_at(h, 23) == ip_proto::UDP)
        & (ip_end <= frame.len())
        & (total_len >= super::OVERHEAD - 14 + ethernet::HEADER_LEN)
        & (be16(h, 36) == cfg.dst_port)
        & (usize::from(be16(h, 38)) + 20 == total_len)
        & (be16(h, 40) == 0)
        & reserved_ok
        & (vni_word >> 8 == cfg.vni.get())
        & (crate::checksum::ipv4_header_checksum_at(h, 14) == 0);
    ok.then(|| Decapsulated {
        vni: cfg.vni,
        outer_src: Ipv4Addr::from_bits(be32(h, 26)),
        outer_dst: Ipv4Addr::from_bits(be32(h, 30)),
        outer_src_port: be16(h, 34),
        inner: super::OVERHEAD..ip_end,
    })
}

/// Every frame shape, every check in order, each failure named. This is
/// the reference [`decapsulate`] must agree with.
#[doc(hidden)]
pub fn decapsulate_general(
    frame: &mut [u8],
    cfg: &VxlanConfig,
) -> Result<Decapsulated, DecapError> {
    let eth = EthernetFrame::new_checked(&*frame)?;
    let l3 = eth.header_len();
    if eth.ethertype() != ethertype::IPV4 {
        return Err(DecapError::NotIpv4 {
            ethertype: eth.ethertype(),
        });
    }
    let ip = Ipv4Packet::new_checked(sub(frame, l3, frame.len())).map_err(|e| e.at(l3))?;
    if !ip.verify_checksum() {
        return Err(DecapError::BadIpChecksum {
            found: ip.checksum(),
        });
    }
    if ip.is_fragment() {
        return Err(DecapError::Fragment);
    }
    if ip.protocol() != ip_proto::UDP {
        return Err(DecapError::NotUdp {
            protocol: ip.protocol(),
        });
    }
    let (outer_src, outer_dst, outer_ecn) = (ip.src_addr(), ip.dst_addr(), ip.ecn());
    let l4 = l3 + ip.header_len();
    let ip_end = l3 + usize::from(ip.total_len());
    let ip_payload = ip.payload().len();

    let udp = UdpPacket::new_lax(sub(frame, l4, ip_end)).map_err(|e| e.at(l4))?;
    if udp.dst_port() != cfg.dst_port {
        return Err(DecapError::WrongPort {
            port: udp.dst_port(),
        });
    }
    if usize::from(udp.len()) != ip_payload {
        return Err(DecapError::UdpLength {
            udp: udp.len(),
            ip_payload,
        });
    }
    if !udp.verify_checksum_v4(outer_src, outer_dst) {
        return Err(DecapError::BadUdpChecksum {
            found: udp.checksum(),
        });
    }
    let outer_src_port = udp.src_port();

    let vx_at = l4 + crate::udp::HEADER_LEN;
    let vx = VxlanHeader::new_checked(sub(frame, vx_at, ip_end)).map_err(|e| e.at(vx_at))?;
    if !vx.has_vni() {
        return Err(DecapError::NoIFlag { flags: vx.flags() });
    }
    if cfg.reserved_bits == ReservedBits::Drop && vx.reserved_bits_set() {
        return Err(DecapError::ReservedBits {
            word: crate::bytes::be32(frame, vx_at),
        });
    }
    if vx.vni() != cfg.vni.get() {
        return Err(DecapError::UnknownVni { vni: vx.vni() });
    }
    let inner = vx_at + header::HEADER_LEN..ip_end;
    if inner.len() < ethernet::HEADER_LEN {
        return Err(DecapError::InnerTooShort { len: inner.len() });
    }
    if outer_ecn != Ecn::NotEct {
        apply_decap_ecn(sub_mut(frame, inner.start, inner.end), outer_ecn)?;
    }
    Ok(Decapsulated {
        vni: cfg.vni,
        outer_src,
        outer_dst,
        outer_src_port,
        inner,
    })
}

/// Rewrites the inner packet's ECN field per RFC 6040. A non-IP inner frame,
/// or one whose IP header cannot be read, is left alone (it carries no ECN
/// field to honour; the dataplane's own parse drops a damaged packet).
fn apply_decap_ecn(inner: &mut [u8], outer: Ecn) -> Result<(), DecapError> {
    let Ok(l3) = ethernet::header_len(inner) else {
        return Ok(());
    };
    let et = crate::bytes::be16(inner, l3 - 2);
    let len = inner.len();
    let ip = sub_mut(inner, l3, len);
    match et {
        ethertype::IPV4 => {
            if let Ok(mut p) = Ipv4Packet::new_lax(ip) {
                let new = decap_ecn(p.ecn(), outer).ok_or(DecapError::CeOnNotEct)?;
                if new != p.ecn() {
                    p.set_ecn(new);
                }
            }
        }
        ethertype::IPV6 => {
            if let Ok(mut p) = Ipv6Packet::new_lax(ip) {
                let new = decap_ecn(p.ecn(), outer).ok_or(DecapError::CeOnNotEct)?;
                if new != p.ecn() {
                    p.set_ecn(new);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
