//! Typed wire errors: which layer, at which byte offset, and what was wrong.

use core::fmt;

/// The protocol layer a [`WireError`] was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet II header.
    Ethernet,
    /// An 802.1Q / 802.1ad VLAN tag.
    Vlan,
    /// IPv4 header.
    Ipv4,
    /// IPv6 fixed header.
    Ipv6,
    /// IPv6 extension headers.
    Ipv6Ext,
    /// UDP header.
    Udp,
    /// TCP header.
    Tcp,
    /// ICMPv4 message.
    Icmpv4,
    /// ICMPv6 message.
    Icmpv6,
    /// The IP packet quoted inside an ICMP error.
    Quoted,
    /// VXLAN header.
    Vxlan,
}

impl Layer {
    /// A short lowercase name, for logs and counters.
    pub const fn name(self) -> &'static str {
        match self {
            Layer::Ethernet => "ethernet",
            Layer::Vlan => "vlan",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Ipv6Ext => "ipv6-ext",
            Layer::Udp => "udp",
            Layer::Tcp => "tcp",
            Layer::Icmpv4 => "icmpv4",
            Layer::Icmpv6 => "icmpv6",
            Layer::Quoted => "icmp-quoted-ip",
            Layer::Vxlan => "vxlan",
        }
    }
}

/// What was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The buffer ends before the header (or the length a header declares) does.
    Truncated {
        /// Bytes the layer needs from its start.
        needed: usize,
        /// Bytes there were from its start.
        available: usize,
    },
    /// A header field holds a value this layer does not accept.
    BadField {
        /// The field's name as the RFC spells it.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// A checksum did not verify.
    BadChecksum {
        /// The checksum field as received.
        found: u16,
    },
}

/// A malformed packet: the layer, the byte offset of the offending header or
/// field (from the start of the buffer given to the outermost call), and what
/// was wrong with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireError {
    /// Where the error was found.
    pub layer: Layer,
    /// Byte offset of the offending header or field.
    pub offset: usize,
    /// What was wrong.
    pub kind: ErrorKind,
}

impl WireError {
    pub(crate) const fn truncated(
        layer: Layer,
        offset: usize,
        needed: usize,
        available: usize,
    ) -> Self {
        WireError {
            layer,
            offset,
            kind: ErrorKind::Truncated { needed, available },
        }
    }

    pub(crate) const fn bad_field(
        layer: Layer,
        offset: usize,
        field: &'static str,
        value: u32,
    ) -> Self {
        WireError {
            layer,
            offset,
            kind: ErrorKind::BadField { field, value },
        }
    }

    pub(crate) const fn bad_checksum(layer: Layer, offset: usize, found: u16) -> Self {
        WireError {
            layer,
            offset,
            kind: ErrorKind::BadChecksum { found },
        }
    }

    /// The same error with its offset moved by `base` bytes: views report
    /// offsets from their own start; a caller that built the view at `base`
    /// reports them from the start of its buffer.
    #[must_use]
    pub const fn at(self, base: usize) -> Self {
        WireError {
            offset: self.offset.saturating_add(base),
            ..self
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}: ", self.layer.name(), self.offset)?;
        match self.kind {
            ErrorKind::Truncated { needed, available } => {
                write!(f, "truncated: needs {needed} bytes, has {available}")
            }
            ErrorKind::BadField { field, value } => {
                write!(f, "field `{field}` has invalid value {value} ({value:#x})")
            }
            ErrorKind::BadChecksum { found } => write!(f, "bad checksum {found:#06x}"),
        }
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_layer_offset_and_value() {
        let e = WireError::bad_field(Layer::Ipv4, 3, "ihl", 3).at(14);
        assert_eq!(e.offset, 17);
        assert_eq!(
            e.to_string(),
            "ipv4 at byte 17: field `ihl` has invalid value 3 (0x3)"
        );
        let t = WireError::truncated(Layer::Udp, 34, 8, 5);
        assert_eq!(
            t.to_string(),
            "udp at byte 34: truncated: needs 8 bytes, has 5"
        );
    }
}
