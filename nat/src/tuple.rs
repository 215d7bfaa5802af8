//! Connection tuples.

use std::net::Ipv4Addr;

/// One direction of a connection: addresses, protocol and ports. For ICMP
/// echo, `src_port` holds the identifier and `dst_port` is zero in both
/// directions (the identifier names the flow both ways). Other protocols
/// have zero ports: they are tracked by address pair.
///
/// Generic over the address so the same table serves IPv6 later; IPv4 is
/// the default (14 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple<A = Ipv4Addr> {
    /// Source address.
    pub src: A,
    /// Destination address.
    pub dst: A,
    /// Source port, or ICMP echo identifier.
    pub src_port: u16,
    /// Destination port (zero for ICMP and port-less protocols).
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
}

impl<A: Copy> Tuple<A> {
    /// The tuple a reply to this direction carries.
    #[must_use]
    pub fn reversed(&self) -> Self {
        if self.proto == encap::ip_proto::ICMP {
            // Echo replies carry the same identifier.
            return Tuple {
                src: self.dst,
                dst: self.src,
                ..*self
            };
        }
        Tuple {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }
}

/// Which way a packet travels relative to the connection's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Same direction as the packet that created the entry.
    Original,
    /// The reply direction.
    Reply,
}

impl Direction {
    /// 0 for original, 1 for reply.
    pub const fn index(self) -> usize {
        match self {
            Direction::Original => 0,
            Direction::Reply => 1,
        }
    }
}
