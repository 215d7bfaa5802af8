//! Connection tracking and SNAT/masquerade for Sluice.
//!
//! Not built yet: issue 3 builds this crate on top of [`encap`]'s views and
//! checksum helpers. It is a workspace member now so that the layout and the
//! dependency direction (`encap` <- `nat` <- `dataplane`) are fixed from the start.
#![forbid(unsafe_code)]
