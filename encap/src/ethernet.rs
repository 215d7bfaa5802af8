//! Ethernet II frames, with 802.1Q / 802.1ad tag skipping.
//!
//! ```text
//!  0                   6                  12        14 (+4 per VLAN tag)
//! +-------------------+-------------------+---------+-----------
//! | destination MAC   | source MAC        | type    | payload
//! +-------------------+-------------------+---------+-----------
//! ```

use core::fmt;
use core::str::FromStr;

use crate::bytes::{array, be16, set_array, sub, sub_mut};
use crate::{Layer, WireError};

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Tags skipped at most (802.1ad QinQ: an S-tag then a C-tag).
pub const MAX_VLAN_TAGS: usize = 2;

/// EtherType values (IEEE 802 Numbers).
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1ad service VLAN tag (QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ tag some switches still send.
    pub const QINQ_OLD: u16 = 0x9100;

    /// Whether `t` introduces a VLAN tag.
    pub const fn is_vlan(t: u16) -> bool {
        matches!(t, VLAN | QINQ | QINQ_OLD)
    }
}

/// A 48-bit MAC address.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Whether the group (multicast) bit is set; broadcast is multicast.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a MAC address from text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacParseError(pub String);

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a MAC address (expected six hex octets such as 02:42:ac:11:00:02)",
            self.0
        )
    }
}

impl std::error::Error for MacParseError {}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in &mut out {
            let p = parts.next().ok_or_else(|| MacParseError(s.to_owned()))?;
            if p.len() != 2 {
                return Err(MacParseError(s.to_owned()));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| MacParseError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_owned()));
        }
        Ok(MacAddr(out))
    }
}

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const TYPE: usize = 12;
}

/// A view of an Ethernet II frame; VLAN tags between the source MAC and the
/// payload's EtherType are skipped (at most [`MAX_VLAN_TAGS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetFrame<T> {
    buf: T,
    header_len: usize,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Validates the header (and any VLAN tags) and returns a view.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let header_len = header_len(buf.as_ref())?;
        Ok(EthernetFrame { buf, header_len })
    }

    /// Destination MAC.
    pub fn dst(&self) -> MacAddr {
        MacAddr(array(self.buf.as_ref(), field::DST))
    }

    /// Source MAC.
    pub fn src(&self) -> MacAddr {
        MacAddr(array(self.buf.as_ref(), field::SRC))
    }

    /// The payload's EtherType (after any VLAN tags).
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), self.header_len - 2)
    }

    /// The VLAN ID of the outermost tag, if tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        let b = self.buf.as_ref();
        ethertype::is_vlan(be16(b, field::TYPE)).then(|| be16(b, field::TYPE + 2) & 0x0fff)
    }

    /// Header length including VLAN tags: the offset of the payload.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        sub(b, self.header_len, b.len())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    pub fn set_dst(&mut self, mac: MacAddr) {
        set_array(self.buf.as_mut(), field::DST, mac.0);
    }

    /// Sets the source MAC.
    pub fn set_src(&mut self, mac: MacAddr) {
        set_array(self.buf.as_mut(), field::SRC, mac.0);
    }

    /// Everything after the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let b = self.buf.as_mut();
        let len = b.len();
        sub_mut(b, self.header_len, len)
    }
}

/// The header length of the frame in `b` (14 plus 4 per VLAN tag), validated.
pub(crate) fn header_len(b: &[u8]) -> Result<usize, WireError> {
    if b.len() < HEADER_LEN {
        return Err(WireError::truncated(
            Layer::Ethernet,
            0,
            HEADER_LEN,
            b.len(),
        ));
    }
    let mut len = HEADER_LEN;
    let mut tags = 0;
    while ethertype::is_vlan(be16(b, len - 2)) {
        // The tag starts at the TPID just read; it and the EtherType after it
        // must both be present.
        let tag_start = len - 2;
        if tags == MAX_VLAN_TAGS {
            return Err(WireError::bad_field(
                Layer::Vlan,
                tag_start,
                "vlan depth",
                tags as u32 + 1,
            ));
        }
        tags += 1;
        len += VLAN_TAG_LEN;
        if b.len() < len {
            return Err(WireError::truncated(
                Layer::Vlan,
                tag_start,
                VLAN_TAG_LEN + 2,
                b.len() - tag_start,
            ));
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn frame(tags: &[u16], inner_type: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for t in tags {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x2a]); // VID 42
        }
        f.extend_from_slice(&inner_type.to_be_bytes());
        f.extend_from_slice(&[0xaa; 4]);
        f
    }

    #[test]
    fn untagged() {
        let f = frame(&[], ethertype::IPV4);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.header_len(), 14);
        assert_eq!(e.ethertype(), ethertype::IPV4);
        assert_eq!(e.vlan_id(), None);
        assert_eq!(e.dst().to_string(), "02:00:00:00:00:01");
        assert_eq!(e.payload(), &[0xaa; 4]);
    }

    #[test]
    fn single_and_double_tags_are_skipped() {
        let f = frame(&[ethertype::VLAN], ethertype::IPV6);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            (e.header_len(), e.ethertype(), e.vlan_id()),
            (18, ethertype::IPV6, Some(42))
        );
        let f = frame(&[ethertype::QINQ, ethertype::VLAN], ethertype::IPV4);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!((e.header_len(), e.ethertype()), (22, ethertype::IPV4));
    }

    #[test]
    fn too_many_tags_is_an_error_naming_the_depth() {
        let f = frame(
            &[ethertype::QINQ, ethertype::VLAN, ethertype::VLAN],
            ethertype::IPV4,
        );
        let err = EthernetFrame::new_checked(&f[..]).unwrap_err();
        assert_eq!(err.layer, Layer::Vlan);
        assert_eq!(err.offset, 20);
        assert_eq!(
            err.kind,
            ErrorKind::BadField {
                field: "vlan depth",
                value: 3
            }
        );
    }

    #[test]
    fn truncated_header_and_tag() {
        let err = EthernetFrame::new_checked(&[0u8; 13][..]).unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Truncated {
                needed: 14,
                available: 13
            }
        );
        let f = frame(&[ethertype::VLAN], ethertype::IPV4);
        let err = EthernetFrame::new_checked(&f[..16]).unwrap_err();
        assert_eq!(err.layer, Layer::Vlan);
        assert_eq!(err.offset, 12);
        assert_eq!(
            err.kind,
            ErrorKind::Truncated {
                needed: 6,
                available: 4
            }
        );
    }

    #[test]
    fn setters_and_mac_text() {
        let mut f = frame(&[], ethertype::ARP);
        let mut e = EthernetFrame::new_checked(&mut f[..]).unwrap();
        let m: MacAddr = "0a:1b:2c:3d:4e:5f".parse().unwrap();
        e.set_dst(m);
        e.set_src(MacAddr::BROADCAST);
        assert_eq!(e.dst(), m);
        assert!(e.src().is_multicast());
        assert!("0a:1b:2c:3d:4e".parse::<MacAddr>().is_err());
        assert!("0a:1b:2c:3d:4e:5f:00".parse::<MacAddr>().is_err());
        assert!("0a:1b:2c:3d:4e:zz".parse::<MacAddr>().is_err());
    }
}
