//! The VXLAN header (RFC 7348 section 5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::bytes::{be32, u8_at};
use crate::{Layer, WireError};

/// Length of the header.
pub const HEADER_LEN: usize = 8;
/// The I flag: "MUST be set to 1 for a valid VXLAN Network ID (VNI)".
pub const FLAG_I: u8 = 0x08;

/// A view of a VXLAN header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanHeader<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// Validates the length.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let have = buf.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::truncated(Layer::Vxlan, 0, HEADER_LEN, have));
        }
        Ok(VxlanHeader { buf })
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        u8_at(self.buf.as_ref(), 0)
    }

    /// Whether the I flag is set.
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        be32(self.buf.as_ref(), 4) >> 8
    }

    /// Whether any reserved bit is set (flags other than I, the 24 bits after
    /// the flags, the last byte).
    pub fn reserved_bits_set(&self) -> bool {
        let b = self.buf.as_ref();
        (be32(b, 0) & !(u32::from(FLAG_I) << 24)) != 0 || u8_at(b, 7) != 0
    }
}

/// The 8 header bytes for `vni` with only the I flag set.
pub const fn emit(vni: super::Vni) -> [u8; HEADER_LEN] {
    let [_, a, b, c] = vni.get().to_be_bytes();
    [FLAG_I, 0, 0, 0, a, b, c, 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vxlan::Vni;

    #[test]
    fn emit_and_read_back() {
        let h = emit(Vni::new(0xabcdef).unwrap());
        let v = VxlanHeader::new_checked(&h[..]).unwrap();
        assert!(v.has_vni() && !v.reserved_bits_set());
        assert_eq!(v.vni(), 0xabcdef);
    }

    #[test]
    fn reserved_bits_anywhere_are_seen() {
        for (i, bit) in [(0usize, 0x80u8), (0, 0x01), (1, 0x01), (3, 0x80), (7, 0x01)] {
            let mut h = emit(Vni::new(1).unwrap());
            h[i] |= bit;
            assert!(
                VxlanHeader::new_checked(&h[..])
                    .unwrap()
                    .reserved_bits_set(),
                "byte {i} bit {bit:#x}"
            );
        }
        assert!(VxlanHeader::new_checked(&[8u8; 7][..]).is_err());
    }
}
