//! `encap`: everything Sluice knows about bytes on the wire.
//!
//! The crate is sans-IO and allocation-free on every per-packet path:
//!
//! - [`ethernet`], [`ipv4`], [`ipv6`], [`udp`], [`tcp`], [`icmp`] and
//!   [`vxlan::header`]: views over caller-owned buffers in the style of
//!   smoltcp's `wire` module. `new_checked` validates once; after that no
//!   accessor can panic, and setters on `AsMut` buffers keep checksums right
//!   with RFC 1624 incremental updates.
//! - [`parse`]: one pass from an Ethernet frame to a [`parse::Parsed`] summary
//!   (offsets, addresses, ports) that the dataplane classifies on.
//! - [`checksum`]: RFC 1071 sum (word-at-a-time) and RFC 1624 updates.
//! - [`vxlan`]: in-place RFC 7348 encapsulation into headroom in front of the
//!   inner frame, and validating decapsulation with RFC 6040 ECN handling.
//! - [`flow`]: 5-tuple keys and a seeded (optionally symmetric) flow hash for
//!   worker selection and the VXLAN UDP source port.
//!
//! Errors are typed: a [`WireError`] names the layer, the byte offset and the
//! value that was wrong; VXLAN decapsulation failures are a
//! [`vxlan::DecapError`] whose [`vxlan::DecapDrop`] kind indexes a counter.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod bytes;
pub mod checksum;
mod error;
pub mod ethernet;
pub mod flow;
#[doc(hidden)]
pub mod harness;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod tcp;
pub mod udp;
pub mod vxlan;

#[cfg(test)]
mod testutil;

pub use error::{ErrorKind, Layer, WireError};
pub use ethernet::MacAddr;

/// IP protocol numbers used by Sluice (IANA "Assigned Internet Protocol Numbers").
pub mod ip_proto {
    /// Internet Control Message Protocol (RFC 792).
    pub const ICMP: u8 = 1;
    /// Transmission Control Protocol (RFC 9293).
    pub const TCP: u8 = 6;
    /// User Datagram Protocol (RFC 768).
    pub const UDP: u8 = 17;
    /// ICMP for IPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
}

/// Where an IPv4 or IPv6 packet stands in fragmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not a fragment.
    No,
    /// The first fragment: it carries the upper-layer header.
    First,
    /// A later fragment: no upper-layer header.
    Later,
}

/// Explicit Congestion Notification codepoints (RFC 3168 section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Ecn {
    /// Not ECN-Capable Transport.
    NotEct = 0b00,
    /// ECN-Capable Transport, ECT(1).
    Ect1 = 0b01,
    /// ECN-Capable Transport, ECT(0).
    Ect0 = 0b10,
    /// Congestion Experienced.
    Ce = 0b11,
}

impl Ecn {
    /// The codepoint in the two low bits of `tos` (IPv4 TOS / IPv6 traffic class).
    pub const fn from_tos(tos: u8) -> Self {
        match tos & 0b11 {
            0b00 => Ecn::NotEct,
            0b01 => Ecn::Ect1,
            0b10 => Ecn::Ect0,
            _ => Ecn::Ce,
        }
    }
}
