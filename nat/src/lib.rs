//! Connection tracking and SNAT/masquerade for Sluice: a sans-IO state
//! machine that `dataplane` workers call per packet, built on `encap`'s
//! views and incremental checksums. No I/O, no threads, no clock reads:
//! time is a parameter of [`Conntrack::process`] and
//! [`Conntrack::handle_timeout`].
//!
//! Semantics follow Linux's nf_conntrack and MASQUERADE (state table,
//! in-window checks, timeouts, port allocation, early drop), so a node
//! moving from iptables to Sluice sees the same behaviour.
//!
//! Multi-worker design: each worker owns one `Conntrack` and a contiguous
//! slice of the SNAT port (and ICMP identifier) range
//! ([`SnatConfig::worker`]). A reply's destination port therefore names the
//! worker that owns its flow ([`SnatConfig::owner_of`]); a reply that RSS
//! delivered to another worker is handed to the owner over a lock-free
//! queue by the dataplane, as VPP's NAT44 does. No state is shared, so the
//! per-packet path takes no lock. The original source port is kept only when
//! it lies in the worker's own slice.
// One `unsafe` block in the crate: the cache prefetch hint in `index.rs`.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod alloc;
mod config;
mod conntrack;
#[doc(hidden)]
pub mod harness;
mod index;
mod packet;
mod persist;
mod service;
pub mod tcp;
mod tuple;
mod verdict;

pub use config::{ConntrackConfig, PortRange, SnatConfig, Timeouts};
pub use conntrack::{BURST, Conntrack, Counters, Entry, Origin, ProtoState};
pub use persist::{RECORD as STATE_RECORD, Restored, VERSION as STATE_VERSION, spec as state_spec};
pub use service::{Nat, NoServices, Services};
pub use tuple::{Direction, Tuple};
pub use verdict::{Accepted, CtState, DropReason, Verdict};

#[cfg(test)]
mod tests;
