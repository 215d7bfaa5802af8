//! UDP datagrams (RFC 768).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::bytes::{be16, set_be16, sub};
use crate::checksum::{self, pseudo_header_v4, pseudo_header_v6, udp_adjust};
use crate::{Layer, WireError, ip_proto};

/// Length of the header.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LEN: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// A view without validation (for a buffer already checked): accessors
    /// never panic, but read zeros past the end of a short buffer.
    pub const fn new_unchecked(buf: T) -> Self {
        UdpPacket { buf }
    }

    /// Validates the header and that the length field fits the buffer.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let p = Self::new_lax(buf)?;
        let len = usize::from(p.len());
        let have = p.buf.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::bad_field(
                Layer::Udp,
                field::LEN,
                "length",
                len as u32,
            ));
        }
        if len > have {
            return Err(WireError::truncated(Layer::Udp, 0, len, have));
        }
        Ok(p)
    }

    /// Validates that the ports are present (4 bytes), for quoted headers.
    pub fn new_lax(buf: T) -> Result<Self, WireError> {
        let have = buf.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::truncated(Layer::Udp, 0, HEADER_LEN, have));
        }
        Ok(UdpPacket { buf })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::DST_PORT)
    }

    /// Length field (header included).
    #[allow(clippy::len_without_is_empty, reason = "a wire field, not a container")]
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), field::LEN)
    }

    /// Checksum field (0: none computed, IPv4 only).
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    /// The datagram up to its length field.
    fn datagram(&self) -> &[u8] {
        let b = self.buf.as_ref();
        sub(b, 0, usize::from(self.len()).min(b.len()))
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        let d = self.datagram();
        sub(d, HEADER_LEN, d.len())
    }

    /// Verifies the checksum over the IPv4 pseudo-header; a zero checksum
    /// ("none computed") verifies.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let mut c = pseudo_header_v4(src, dst, ip_proto::UDP, self.len());
        c.add_bytes(self.datagram());
        c.sum() == 0xffff
    }

    /// Verifies the checksum over the IPv6 pseudo-header (mandatory in IPv6).
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let mut c = pseudo_header_v6(src, dst, ip_proto::UDP, u32::from(self.len()));
        c.add_bytes(self.datagram());
        self.checksum() != 0 && c.sum() == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Rewrites the source port, updating a present checksum (RFC 1624).
    pub fn set_src_port(&mut self, port: u16) {
        let old = self.src_port();
        self.adjust(|c| checksum::update_u16(c, old, port));
        set_be16(self.buf.as_mut(), field::SRC_PORT, port);
    }

    /// Rewrites the destination port, updating a present checksum.
    pub fn set_dst_port(&mut self, port: u16) {
        let old = self.dst_port();
        self.adjust(|c| checksum::update_u16(c, old, port));
        set_be16(self.buf.as_mut(), field::DST_PORT, port);
    }

    /// Updates a present checksum for an IPv4 pseudo-header address change
    /// (call with the old and new source or destination address after NAT).
    pub fn update_addr_v4(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        self.adjust(|c| checksum::update_ipv4_addr(c, old, new));
    }

    /// Updates the checksum for an IPv6 pseudo-header address change.
    pub fn update_addr_v6(&mut self, old: Ipv6Addr, new: Ipv6Addr) {
        self.adjust(|c| checksum::update_ipv6_addr(c, old, new));
    }

    /// Writes the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buf.as_mut(), field::CHECKSUM, c);
    }

    /// Computes and writes the checksum over the IPv4 pseudo-header.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let mut c = pseudo_header_v4(src, dst, ip_proto::UDP, self.len());
        c.add_bytes(self.datagram());
        self.set_checksum(match c.finish() {
            0 => 0xffff,
            v => v,
        });
    }

    fn adjust(&mut self, f: impl FnOnce(u16) -> u16) {
        let c = udp_adjust(self.checksum(), f);
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
    const DST: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);

    fn sample() -> Vec<u8> {
        let mut d = vec![
            0x9c, 0x40, 0x00, 0x35, 0x00, 0x0d, 0, 0, b'h', b'e', b'l', b'l', b'o',
        ];
        UdpPacket::new_checked(&mut d[..])
            .unwrap()
            .fill_checksum_v4(SRC, DST);
        d
    }

    #[test]
    fn fields_and_checksum() {
        let d = sample();
        let u = UdpPacket::new_checked(&d[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (40000, 53, 13));
        assert_eq!(u.payload(), b"hello");
        assert!(u.verify_checksum_v4(SRC, DST));
        assert!(!u.verify_checksum_v4(SRC, Ipv4Addr::new(1, 1, 1, 2)));
    }

    #[test]
    fn rewrites_keep_checksum_valid_and_zero_stays_zero() {
        let mut d = sample();
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        u.set_src_port(1024);
        u.update_addr_v4(SRC, Ipv4Addr::new(192, 0, 2, 1));
        assert!(u.verify_checksum_v4(Ipv4Addr::new(192, 0, 2, 1), DST));
        u.set_checksum(0);
        u.set_dst_port(5353);
        u.update_addr_v4(DST, SRC);
        assert_eq!(u.checksum(), 0);
    }

    #[test]
    fn length_field_is_checked() {
        let mut d = sample();
        d[5] = 7;
        let e = UdpPacket::new_checked(&d[..]).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (
                4,
                ErrorKind::BadField {
                    field: "length",
                    value: 7
                }
            )
        );
        d[5] = 14;
        let e = UdpPacket::new_checked(&d[..]).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Truncated {
                needed: 14,
                available: 13
            }
        );
    }
}
