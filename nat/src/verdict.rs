//! What `process` decides, and why packets are dropped.

use crate::tuple::Direction;

/// Linux's `ctinfo`: how the packet relates to tracked state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtState {
    /// The packet created the entry.
    New,
    /// The packet belongs to an existing entry.
    Established,
    /// An ICMP error about an existing entry.
    Related,
}

/// An accepted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Its relation to the table.
    pub state: CtState,
    /// Its direction within the connection.
    pub dir: Direction,
    /// Whether its addresses or ports were rewritten.
    pub translated: bool,
    /// The service port its entry belongs to ([`crate::Nat::service`];
    /// 0: none).
    pub service: u32,
}

/// The verdict on one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the (possibly rewritten) packet.
    Accept(Accepted),
    /// Drop it, counting the reason.
    Drop(DropReason),
    /// The service hook ([`crate::Services::new_flow`]) refused the new
    /// flow; the hook counts why (reject or drop). Not counted here.
    Refused,
}

/// Why conntrack/NAT dropped a packet; each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// The IP or transport header is malformed or truncated.
    Malformed,
    /// An IPv4 fragment (Sluice does not reassemble; pods use PMTUD).
    Fragment,
    /// A packet from the uplink that matches no entry.
    NoEntry,
    /// A TCP packet that cannot start a connection (not a SYN, loose pickup off).
    TcpNotSyn,
    /// A TCP packet the state table calls invalid in the entry's state.
    TcpInvalidState,
    /// A TCP segment outside the window (e.g. a blind RST).
    TcpOutOfWindow,
    /// An ICMP error quoting no tracked flow.
    IcmpErrorNoEntry,
    /// The table is full and holds no evictable (unreplied) entry.
    TableFull,
    /// No free translated port or identifier within the probe budget.
    PortExhausted,
}

impl DropReason {
    /// Every reason, in counter-index order.
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::NoEntry,
        DropReason::TcpNotSyn,
        DropReason::TcpInvalidState,
        DropReason::TcpOutOfWindow,
        DropReason::IcmpErrorNoEntry,
        DropReason::TableFull,
        DropReason::PortExhausted,
    ];

    /// Counter name.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "ct_malformed",
            DropReason::Fragment => "ct_fragment",
            DropReason::NoEntry => "ct_no_entry",
            DropReason::TcpNotSyn => "ct_tcp_not_syn",
            DropReason::TcpInvalidState => "ct_tcp_invalid_state",
            DropReason::TcpOutOfWindow => "ct_tcp_out_of_window",
            DropReason::IcmpErrorNoEntry => "ct_icmp_error_no_entry",
            DropReason::TableFull => "ct_table_full",
            DropReason::PortExhausted => "nat_port_exhausted",
        }
    }
}
