//! IPv6 packets (RFC 8200): the fixed header, and enough of the extension
//! header chain to classify the upper layer.
//!
//! Extension headers are walked with etherparse's `Ipv6ExtensionsSlice`,
//! which already handles hop-by-hop placement, routing, destination options,
//! fragment and AH headers without allocating.

use std::net::Ipv6Addr;

use etherparse::err::ipv6_exts::{HeaderError as ExtError, HeaderSliceError};
use etherparse::{IpNumber, Ipv6ExtensionSlice, Ipv6ExtensionsSlice};

use crate::bytes::{array, be16, be32, set_be32, set_u8, sub, u8_at};
use crate::{Ecn, Layer, WireError};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

pub use crate::Fragment;

/// The upper layer of an IPv6 packet, after its extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// Upper-layer protocol number (the last Next Header).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Fragmentation state from a Fragment header, if any.
    pub fragment: Fragment,
}

/// A view of an IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Validates the version and that the payload length fits the buffer.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let p = Self::new_lax(buf)?;
        let need = HEADER_LEN + usize::from(p.payload_len());
        let have = p.buf.as_ref().len();
        if need > have {
            return Err(WireError::truncated(Layer::Ipv6, 0, need, have));
        }
        Ok(p)
    }

    /// Validates the version and the fixed header only (for quoted packets).
    pub fn new_lax(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::truncated(Layer::Ipv6, 0, HEADER_LEN, b.len()));
        }
        let v = u8_at(b, 0) >> 4;
        if v != 6 {
            return Err(WireError::bad_field(
                Layer::Ipv6,
                field::VER_TC_FLOW,
                "version",
                u32::from(v),
            ));
        }
        Ok(Ipv6Packet { buf })
    }

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (be32(self.buf.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }

    /// The ECN codepoint.
    pub fn ecn(&self) -> Ecn {
        Ecn::from_tos(self.traffic_class())
    }

    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        be32(self.buf.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::PAYLOAD_LEN)
    }

    /// The first Next Header.
    pub fn next_header(&self) -> u8 {
        u8_at(self.buf.as_ref(), field::NEXT_HEADER)
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        u8_at(self.buf.as_ref(), field::HOP_LIMIT)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buf.as_ref(), field::SRC))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buf.as_ref(), field::DST))
    }

    /// Everything after the fixed header, up to the payload length (or the
    /// end of the buffer for a lax view).
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        sub(
            b,
            HEADER_LEN,
            (HEADER_LEN + usize::from(self.payload_len())).min(b.len()),
        )
    }

    /// Skips the extension headers and returns the upper layer.
    ///
    /// Stops at the first Next Header that is not an extension etherparse
    /// knows (including ESP and No Next Header), which is then the upper layer.
    pub fn upper_layer(&self) -> Result<UpperLayer, WireError> {
        let payload = self.payload();
        let (exts, next, rest) =
            Ipv6ExtensionsSlice::from_slice(IpNumber(self.next_header()), payload)
                .map_err(ext_error)?;
        let mut fragment = Fragment::No;
        for e in exts {
            if let Ipv6ExtensionSlice::Fragment(f) = e {
                fragment = if f.fragment_offset().value() != 0 {
                    Fragment::Later
                } else if f.more_fragments() {
                    Fragment::First
                } else {
                    // An atomic fragment (RFC 6946): a whole packet.
                    fragment
                };
            }
        }
        Ok(UpperLayer {
            protocol: next.0,
            offset: HEADER_LEN + payload.len() - rest.len(),
            fragment,
        })
    }
}

fn ext_error(e: HeaderSliceError) -> WireError {
    match e {
        HeaderSliceError::Len(l) => WireError::truncated(
            Layer::Ipv6Ext,
            HEADER_LEN + l.layer_start_offset,
            l.required_len,
            l.len,
        ),
        HeaderSliceError::Content(ExtError::HopByHopNotAtStart) => {
            WireError::bad_field(Layer::Ipv6Ext, HEADER_LEN, "hop-by-hop position", 0)
        }
        HeaderSliceError::Content(ExtError::IpAuth(_)) => WireError::bad_field(
            Layer::Ipv6Ext,
            HEADER_LEN,
            "authentication header length",
            0,
        ),
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the ECN bits of the traffic class.
    pub fn set_ecn(&mut self, ecn: Ecn) {
        let w = be32(self.buf.as_ref(), field::VER_TC_FLOW);
        let w = (w & !(0b11 << 20)) | (u32::from(ecn as u8) << 20);
        set_be32(self.buf.as_mut(), field::VER_TC_FLOW, w);
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, h: u8) {
        set_u8(self.buf.as_mut(), field::HOP_LIMIT, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn header(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x6b, 0x81, 0x23, 0x45];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn fixed_header_fields() {
        let p = header(17, &[0; 8]);
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.traffic_class(), 0xb8);
        assert_eq!(v.flow_label(), 0x12345);
        assert_eq!(v.ecn(), Ecn::NotEct);
        assert_eq!(
            v.upper_layer().unwrap(),
            UpperLayer {
                protocol: 17,
                offset: 40,
                fragment: Fragment::No
            }
        );
    }

    #[test]
    fn extension_headers_are_skipped() {
        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> fragment (8, offset 0, M=1) -> TCP.
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[44, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[6, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]);
        ext.extend_from_slice(&[0; 20]);
        let p = header(0, &ext);
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            v.upper_layer().unwrap(),
            UpperLayer {
                protocol: 6,
                offset: 72,
                fragment: Fragment::First
            }
        );
        // Later fragment: offset 8 bytes (1 unit).
        let mut later = ext.clone();
        later[26] = 0x00;
        later[27] = 0x08;
        let p = header(0, &later);
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.upper_layer().unwrap().fragment, Fragment::Later);
    }

    #[test]
    fn truncated_extension_names_its_offset() {
        // A destination-options header claiming 16 bytes with 8 present.
        let p = header(60, &[17, 1, 0, 0, 0, 0, 0, 0]);
        let e = Ipv6Packet::new_checked(&p[..])
            .unwrap()
            .upper_layer()
            .unwrap_err();
        assert_eq!(e.layer, Layer::Ipv6Ext);
        assert_eq!(e.offset, 40);
        assert!(matches!(
            e.kind,
            ErrorKind::Truncated {
                needed: 16,
                available: 8
            }
        ));
        // Hop-by-hop after another extension is a content error.
        let p = header(60, &[0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0]);
        let e = Ipv6Packet::new_checked(&p[..])
            .unwrap()
            .upper_layer()
            .unwrap_err();
        assert!(matches!(
            e.kind,
            ErrorKind::BadField {
                field: "hop-by-hop position",
                ..
            }
        ));
    }

    #[test]
    fn version_and_length_checked() {
        let mut p = header(17, &[0; 8]);
        assert!(Ipv6Packet::new_checked(&p[..47]).is_err());
        p[0] = 0x4b;
        let e = Ipv6Packet::new_checked(&p[..]).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::BadField {
                field: "version",
                value: 4
            }
        );
    }

    #[test]
    fn set_ecn_keeps_dscp_and_flow() {
        let mut p = header(17, &[0; 8]);
        let mut v = Ipv6Packet::new_checked(&mut p[..]).unwrap();
        v.set_ecn(Ecn::Ce);
        assert_eq!(v.traffic_class(), 0xbb);
        assert_eq!(v.flow_label(), 0x12345);
    }
}
