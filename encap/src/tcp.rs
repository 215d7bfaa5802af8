//! TCP segments (RFC 9293): the header fields conntrack and NAT need.

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::bytes::{be16, be32, set_be16, sub};
use crate::checksum::{self, pseudo_header_v4, pseudo_header_v6};
use crate::{Layer, WireError, ip_proto};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF_FLAGS: usize = 12;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// TCP control bits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x001);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x002);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x004);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x008);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x010);
    /// Urgent pointer is significant.
    pub const URG: TcpFlags = TcpFlags(0x020);
    /// ECN-Echo.
    pub const ECE: TcpFlags = TcpFlags(0x040);
    /// Congestion Window Reduced.
    pub const CWR: TcpFlags = TcpFlags(0x080);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(TcpFlags, &str); 8] = [
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// A view of a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// A view without validation (for a buffer already checked): accessors
    /// never panic, but read zeros past the end of a short buffer.
    pub const fn new_unchecked(buf: T) -> Self {
        TcpPacket { buf }
    }

    /// Validates the data offset against the buffer; the segment is the
    /// whole buffer (the IP layer has already cut it to its length).
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let have = buf.as_ref().len();
        if have < MIN_HEADER_LEN {
            return Err(WireError::truncated(Layer::Tcp, 0, MIN_HEADER_LEN, have));
        }
        let p = TcpPacket { buf };
        let hl = p.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(WireError::bad_field(
                Layer::Tcp,
                field::OFF_FLAGS,
                "data offset",
                (hl / 4) as u32,
            ));
        }
        if hl > have {
            return Err(WireError::truncated(Layer::Tcp, 0, hl, have));
        }
        Ok(p)
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    pub fn ack(&self) -> u32 {
        be32(self.buf.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), field::OFF_FLAGS) >> 12) * 4
    }

    /// Control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(be16(self.buf.as_ref(), field::OFF_FLAGS) & 0x01ff)
    }

    /// Window.
    pub fn window(&self) -> u16 {
        be16(self.buf.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.buf.as_ref(), field::URGENT)
    }

    /// Options.
    pub fn options(&self) -> &[u8] {
        sub(self.buf.as_ref(), MIN_HEADER_LEN, self.header_len())
    }

    /// Payload.
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        sub(b, self.header_len(), b.len())
    }

    /// Verifies the checksum over the IPv4 pseudo-header.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buf.as_ref();
        let Ok(len) = u16::try_from(b.len()) else {
            return false;
        };
        let mut c = pseudo_header_v4(src, dst, ip_proto::TCP, len);
        c.add_bytes(b);
        c.sum() == 0xffff
    }

    /// Verifies the checksum over the IPv6 pseudo-header.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buf.as_ref();
        let mut c = pseudo_header_v6(src, dst, ip_proto::TCP, b.len() as u32);
        c.add_bytes(b);
        c.sum() == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Rewrites the source port, updating the checksum (RFC 1624).
    pub fn set_src_port(&mut self, port: u16) {
        let c = checksum::update_u16(self.checksum(), self.src_port(), port);
        set_be16(self.buf.as_mut(), field::SRC_PORT, port);
        self.set_checksum(c);
    }

    /// Rewrites the destination port, updating the checksum.
    pub fn set_dst_port(&mut self, port: u16) {
        let c = checksum::update_u16(self.checksum(), self.dst_port(), port);
        set_be16(self.buf.as_mut(), field::DST_PORT, port);
        self.set_checksum(c);
    }

    /// Updates the checksum for an IPv4 pseudo-header address change.
    pub fn update_addr_v4(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let c = checksum::update_ipv4_addr(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Updates the checksum for an IPv6 pseudo-header address change.
    pub fn update_addr_v6(&mut self, old: Ipv6Addr, new: Ipv6Addr) {
        let c = checksum::update_ipv6_addr(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Writes the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buf.as_mut(), field::CHECKSUM, c);
    }

    /// Computes and writes the checksum over the IPv4 pseudo-header.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buf.as_ref();
        let mut c = pseudo_header_v4(src, dst, ip_proto::TCP, b.len() as u16);
        c.add_bytes(b);
        let v = c.finish();
        self.set_checksum(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn fields_flags_and_checksum() {
        let src = Ipv4Addr::new(10, 244, 0, 3);
        let dst = Ipv4Addr::new(203, 0, 113, 9);
        let mut s = vec![
            0xc3, 0x50, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x12, 0xfa, 0xf0, 0, 0, 0, 0, 2,
            4, 5, 0xb4,
        ];
        s.extend_from_slice(b"data");
        let mut t = TcpPacket::new_checked(&mut s[..]).unwrap();
        t.fill_checksum_v4(src, dst);
        assert_eq!(
            (t.src_port(), t.dst_port(), t.seq(), t.header_len()),
            (50000, 443, 1, 24)
        );
        assert_eq!(t.flags(), TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(format!("{:?}", t.flags()), "SYN|ACK");
        assert_eq!(t.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(t.payload(), b"data");
        assert!(t.verify_checksum_v4(src, dst));
        let new = Ipv4Addr::new(192, 0, 2, 10);
        t.set_src_port(61000);
        t.update_addr_v4(src, new);
        assert!(t.verify_checksum_v4(new, dst));
    }

    #[test]
    fn data_offset_checked() {
        let mut s = [0u8; 20];
        s[12] = 0x40;
        let e = TcpPacket::new_checked(&s[..]).unwrap_err();
        assert_eq!((e.layer, e.offset), (Layer::Tcp, 12));
        assert_eq!(
            e.kind,
            ErrorKind::BadField {
                field: "data offset",
                value: 4
            }
        );
        s[12] = 0x60;
        let e = TcpPacket::new_checked(&s[..]).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Truncated {
                needed: 24,
                available: 20
            }
        );
    }
}
