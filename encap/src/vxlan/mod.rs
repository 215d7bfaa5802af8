//! VXLAN (RFC 7348): in-place encapsulation into headroom and validating
//! decapsulation, wire-compatible with the Linux vxlan driver (and so with
//! Flannel's `flannel.1`).
//!
//! ```text
//! outer Ethernet (14) | outer IPv4 (20) | UDP (8) | VXLAN (8) | inner Ethernet frame ...
//! <----------------------- OVERHEAD = 50 bytes --------------->
//! ```
//!
//! Decisions where the RFC leaves room, and why:
//! - Reserved bits: RFC 7348 section 5 says they "MUST be ignored on
//!   receipt"; Linux drops a frame with any flag it does not understand
//!   (`vxlan_rcv`: "unprocessed flags remaining ... malformed packet"), and
//!   VPP drops too. The default, [`ReservedBits::Drop`], matches the Linux
//!   peers Sluice interoperates with; [`ReservedBits::Ignore`] is the RFC's
//!   reading for mixed fabrics.
//! - Outer UDP checksum: sent as zero (RFC 7348 section 5: "SHOULD be
//!   transmitted as zero"; Linux's default `noudpcsum`); verified on receipt
//!   when non-zero, as Linux does.
//! - Outer DF: set, so the underlay never fragments (an oversize inner packet
//!   gets ICMP "fragmentation needed" from the dataplane instead); IPv4
//!   identification is then zero (RFC 6864 section 4.1 allows any value for
//!   atomic datagrams).
//! - ECN: RFC 6040 normal mode in both directions ([`encap_ecn`], [`decap_ecn`]).

#[doc(hidden)]
pub mod decap;
mod encap;
pub mod header;

use core::fmt;
use std::net::Ipv4Addr;

pub use decap::{DecapDrop, DecapError, Decapsulated, decap_ecn, decapsulate};
pub use encap::{EncapError, EncapTemplate, InnerMeta, encap_ecn, encapsulate, encapsulate_with};

use crate::ethernet::MacAddr;
use crate::flow::{FlowHasher, PortRange};

/// Bytes VXLAN adds in front of the inner frame over IPv4.
pub const OVERHEAD: usize = crate::ethernet::HEADER_LEN
    + crate::ipv4::MIN_HEADER_LEN
    + crate::udp::HEADER_LEN
    + header::HEADER_LEN;

/// UDP port of the Linux vxlan driver's default and of Flannel and Cilium.
pub const FLANNEL_PORT: u16 = 8472;
/// IANA-assigned VXLAN port (RFC 7348 section 5), used by Calico.
pub const IANA_PORT: u16 = 4789;

/// A 24-bit VXLAN Network Identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

impl Vni {
    /// Largest VNI.
    pub const MAX: u32 = 0x00ff_ffff;

    /// A VNI, or `None` above 2^24 - 1.
    pub const fn new(v: u32) -> Option<Vni> {
        if v > Self::MAX { None } else { Some(Vni(v)) }
    }

    /// The value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What decapsulation does with reserved bits set in the VXLAN header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReservedBits {
    /// Drop the frame (Linux and VPP behaviour).
    #[default]
    Drop,
    /// Ignore them (RFC 7348 section 5).
    Ignore,
}

/// Settings shared by both directions of one VXLAN overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The overlay's VNI (Flannel: 1; Calico: 4096). Decapsulation drops others.
    pub vni: Vni,
    /// UDP destination port (8472 Linux/Flannel, 4789 IANA/Calico).
    pub dst_port: u16,
    /// Outer TTL (Linux: 64 for unicast).
    pub ttl: u8,
    /// Outer UDP source ports: the inner flow's hash picks one.
    pub src_ports: PortRange,
    /// The hash that picks the source port.
    pub hasher: FlowHasher,
    /// Handling of reserved VXLAN bits on receipt.
    pub reserved_bits: ReservedBits,
}

impl Default for VxlanConfig {
    /// Flannel's overlay: VNI 1, port 8472, TTL 64, Linux's port range.
    fn default() -> Self {
        VxlanConfig {
            vni: Vni(1),
            dst_port: FLANNEL_PORT,
            ttl: 64,
            src_ports: PortRange::LINUX_EPHEMERAL,
            hasher: FlowHasher::default(),
            reserved_bits: ReservedBits::Drop,
        }
    }
}

/// The two ends of a tunnel as the outer headers name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelEndpoint {
    /// This node's uplink MAC (outer source).
    pub local_mac: MacAddr,
    /// Next hop towards the remote VTEP: the peer itself on a shared L2, else
    /// the gateway (outer destination).
    pub next_hop_mac: MacAddr,
    /// This node's VTEP address (outer source IP).
    pub local_ip: Ipv4Addr,
    /// The peer's VTEP address (outer destination IP).
    pub remote_ip: Ipv4Addr,
}
