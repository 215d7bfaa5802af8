//! The Sluice forwarder: ports (AF_XDP, TUN, fake), pinned poll-mode
//! workers, the per-packet pipeline, and the pieces of the `sluice` binary.
//!
//! Data flow: a [`port::Port`] fills caller-owned [`buf::Buf`]s in bursts;
//! the [`worker::Worker`] runs each frame through [`pipeline`] against the
//! current [`route::Snapshot`] and queues it on the output port, or counts
//! it under one [`counters::Reason`].
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod buf;
#[cfg(feature = "io")]
pub mod config;
pub mod counters;
#[cfg(feature = "io")]
pub mod daemon;
#[cfg(feature = "io")]
pub mod demo;
pub mod enforce;
#[doc(hidden)]
pub mod harness;
pub mod icmp;
pub mod neigh;
#[cfg(feature = "io")]
pub mod netns;
pub mod pipeline;
#[doc(hidden)]
pub mod policy_rig;
pub mod port;
#[cfg(feature = "io")]
pub mod reserved_ports;
pub mod route;
pub mod services;
pub mod shaper;
pub mod uplink_mode;
pub mod worker;

#[cfg(test)]
mod tests;
