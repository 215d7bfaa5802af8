//! The Sluice forwarder: ports (AF_XDP, TUN, fake), pinned poll-mode workers,
//! the per-packet pipeline and the `sluice` binary.
//!
//! Not built yet: issue 4 builds it on [`encap`] and [`nat`].
