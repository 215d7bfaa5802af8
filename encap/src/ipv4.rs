//! IPv4 packets (RFC 791), options included.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |  DSCP     |ECN|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options                    |    Padding    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use crate::bytes::{array, be16, set_array, set_be16, set_u8, sub, sub_mut, u8_at};
use crate::checksum::{self, internet_checksum};
use crate::{Ecn, Layer, WireError};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

pub(crate) mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view without validation: accessors still never panic, but read zeros
    /// past the end of a short buffer.
    pub const fn new_unchecked(buf: T) -> Self {
        Ipv4Packet { buf }
    }

    /// Validates version, header length and total length against the buffer.
    /// Bytes past the total length (Ethernet padding) are allowed and ignored.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let p = Self::new_lax(buf)?;
        let b = p.buf.as_ref();
        let total = usize::from(p.total_len());
        if total < p.header_len() {
            return Err(WireError::bad_field(
                Layer::Ipv4,
                field::LEN,
                "total length",
                total as u32,
            ));
        }
        if total > b.len() {
            return Err(WireError::truncated(Layer::Ipv4, 0, total, b.len()));
        }
        Ok(p)
    }

    /// Validates version and header length only: for the truncated packet an
    /// ICMP error quotes, whose total length exceeds what was quoted.
    pub fn new_lax(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::truncated(
                Layer::Ipv4,
                0,
                MIN_HEADER_LEN,
                b.len(),
            ));
        }
        let p = Ipv4Packet { buf };
        if p.version() != 4 {
            return Err(WireError::bad_field(
                Layer::Ipv4,
                field::VER_IHL,
                "version",
                u32::from(p.version()),
            ));
        }
        let hl = p.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(WireError::bad_field(
                Layer::Ipv4,
                field::VER_IHL,
                "ihl",
                (hl / 4) as u32,
            ));
        }
        if hl > p.buf.as_ref().len() {
            return Err(WireError::truncated(
                Layer::Ipv4,
                0,
                hl,
                p.buf.as_ref().len(),
            ));
        }
        Ok(p)
    }

    /// The version field (4).
    pub fn version(&self) -> u8 {
        u8_at(self.buf.as_ref(), field::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.buf.as_ref(), field::VER_IHL) & 0x0f) * 4
    }

    /// The whole TOS byte: DSCP in the high six bits, ECN in the low two.
    pub fn tos(&self) -> u8 {
        u8_at(self.buf.as_ref(), field::TOS)
    }

    /// The ECN codepoint.
    pub fn ecn(&self) -> Ecn {
        Ecn::from_tos(self.tos())
    }

    /// Total length of the packet, header included.
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::LEN)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }

    /// Don't Fragment.
    pub fn dont_frag(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More Fragments.
    pub fn more_frags(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buf.as_ref(), field::FLAGS_FRAG) & FRAG_OFFSET_MASK) << 3
    }

    /// Whether this packet is a fragment (first or later).
    pub fn is_fragment(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        u8_at(self.buf.as_ref(), field::TTL)
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        u8_at(self.buf.as_ref(), field::PROTOCOL)
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buf.as_ref(), field::SRC))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buf.as_ref(), field::DST))
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        sub(self.buf.as_ref(), 0, self.header_len())
    }

    /// The options (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        sub(self.buf.as_ref(), MIN_HEADER_LEN, self.header_len())
    }

    /// The payload up to the total length (or, for a lax view of a quoted
    /// packet, up to the end of the buffer).
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        sub(
            b,
            self.header_len(),
            usize::from(self.total_len()).min(b.len()),
        )
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        internet_checksum(self.header()) == 0
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Rewrites the source address and updates the header checksum
    /// incrementally (RFC 1624). TCP/UDP checksums are the caller's: see
    /// [`crate::udp::UdpPacket::update_addr_v4`].
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        let c = checksum::update_ipv4_addr(self.checksum(), self.src_addr(), addr);
        set_array(self.buf.as_mut(), field::SRC, addr.octets());
        self.set_checksum(c);
    }

    /// Rewrites the destination address, updating the header checksum.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        let c = checksum::update_ipv4_addr(self.checksum(), self.dst_addr(), addr);
        set_array(self.buf.as_mut(), field::DST, addr.octets());
        self.set_checksum(c);
    }

    /// Sets the TTL, updating the header checksum.
    pub fn set_ttl(&mut self, ttl: u8) {
        let old = be16(self.buf.as_ref(), field::TTL);
        let new = (u16::from(ttl) << 8) | (old & 0xff);
        let c = checksum::update_u16(self.checksum(), old, new);
        set_u8(self.buf.as_mut(), field::TTL, ttl);
        self.set_checksum(c);
    }

    /// Sets the whole TOS byte, updating the header checksum.
    pub fn set_tos(&mut self, tos: u8) {
        let old = be16(self.buf.as_ref(), field::VER_IHL);
        let new = (old & 0xff00) | u16::from(tos);
        let c = checksum::update_u16(self.checksum(), old, new);
        set_u8(self.buf.as_mut(), field::TOS, tos);
        self.set_checksum(c);
    }

    /// Sets the ECN codepoint, keeping DSCP, updating the header checksum.
    pub fn set_ecn(&mut self, ecn: Ecn) {
        self.set_tos((self.tos() & !0b11) | ecn as u8);
    }

    /// Writes the header checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buf.as_mut(), field::CHECKSUM, c);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = internet_checksum(self.header());
        self.set_checksum(c);
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        let b = self.buf.as_mut();
        let end = total.min(b.len());
        sub_mut(b, hl, end)
    }
}

/// The fields of a header Sluice writes (the VXLAN outer header, ICMP errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Payload length (total length minus 20).
    pub payload_len: u16,
    /// TOS byte (DSCP and ECN).
    pub tos: u8,
    /// Time to live.
    pub ttl: u8,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// Identification.
    pub ident: u16,
}

impl Ipv4Repr {
    /// Writes a 20-byte header with a correct checksum into `out`.
    pub fn emit(&self, out: &mut [u8; MIN_HEADER_LEN]) {
        let total = self.payload_len.saturating_add(MIN_HEADER_LEN as u16);
        let flags: u16 = if self.dont_frag { FLAG_DF } else { 0 };
        let [t0, t1] = total.to_be_bytes();
        let [i0, i1] = self.ident.to_be_bytes();
        let [f0, f1] = flags.to_be_bytes();
        let [s0, s1, s2, s3] = self.src.octets();
        let [d0, d1, d2, d3] = self.dst.octets();
        *out = [
            0x45,
            self.tos,
            t0,
            t1,
            i0,
            i1,
            f0,
            f1,
            self.ttl,
            self.protocol,
            0,
            0,
            s0,
            s1,
            s2,
            s3,
            d0,
            d1,
            d2,
            d3,
        ];
        let [c0, c1] = internet_checksum(out).to_be_bytes();
        out[field::CHECKSUM] = c0;
        out[field::CHECKSUM + 1] = c1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// A 28-byte packet with one 4-byte option (NOP NOP NOP EOL) and 4 payload bytes.
    fn sample() -> Vec<u8> {
        let mut p = vec![
            0x46, 0xb9, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 244, 1, 2,
            93, 184, 216, 34, 0x01, 0x01, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ];
        let c = internet_checksum(&p[..24]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn fields_and_options() {
        let b = sample();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(p.ecn(), Ecn::Ect1);
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 244, 1, 2));
        assert!(p.verify_checksum());
    }

    #[test]
    fn padding_after_total_length_is_ignored() {
        let mut b = sample();
        b.extend_from_slice(&[0; 18]);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
    }

    #[test]
    fn errors_name_field_and_value() {
        let mut b = sample();
        b[0] = 0x44;
        let e = Ipv4Packet::new_checked(&b[..]).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::BadField {
                field: "ihl",
                value: 4
            }
        );
        b[0] = 0x66;
        let e = Ipv4Packet::new_checked(&b[..]).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::BadField {
                field: "version",
                value: 6
            }
        );
        let b = sample();
        let e = Ipv4Packet::new_checked(&b[..27]).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Truncated {
                needed: 28,
                available: 27
            }
        );
        let mut b = sample();
        b[3] = 20; // total length below header length
        let e = Ipv4Packet::new_checked(&b[..]).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (
                2,
                ErrorKind::BadField {
                    field: "total length",
                    value: 20
                }
            )
        );
        // The lax view accepts a quoted header whose total length is cut off.
        let b = sample();
        assert!(Ipv4Packet::new_lax(&b[..24]).is_ok());
        assert!(Ipv4Packet::new_lax(&b[..23]).is_err());
    }

    #[test]
    fn setters_keep_checksum_valid() {
        let mut b = sample();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr(Ipv4Addr::new(192, 0, 2, 7));
        assert!(p.verify_checksum());
        p.set_dst_addr(Ipv4Addr::new(198, 51, 100, 1));
        p.set_ttl(1);
        p.set_ecn(Ecn::Ce);
        assert!(p.verify_checksum());
        assert_eq!((p.ttl(), p.ecn(), p.tos() >> 2), (1, Ecn::Ce, 0xb9 >> 2));
    }

    #[test]
    fn repr_emits_a_valid_header() {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            protocol: 17,
            payload_len: 100,
            tos: 0xb8,
            ttl: 64,
            dont_frag: true,
            ident: 0,
        };
        let mut h = [0u8; 20];
        r.emit(&mut h);
        let mut b = h.to_vec();
        b.resize(120, 0);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.total_len(), p.dont_frag(), p.ttl(), p.tos()),
            (120, true, 64, 0xb8)
        );
    }
}
