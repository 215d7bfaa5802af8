//! The Sluice control plane: it compiles what the cluster says (Kubernetes
//! Node objects, or a static YAML file) into the peer set the dataplane
//! builds its routing snapshots from, and (issue 7) ships the CNI plugin.
//!
//! The Kubernetes sync runs on its own thread and Tokio runtime, never on a
//! worker core ([`kube_sync`]). It keeps the last good view through every
//! API-server failure and hands each new view to a callback.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(feature = "client")]
pub mod cluster_file;
#[cfg(feature = "client")]
pub mod cni;
#[cfg(feature = "fake-apiserver")]
pub mod fakeapi;
#[cfg(feature = "client")]
pub mod kube_sync;
pub mod netpol;
pub mod node;
#[cfg(feature = "client")]
pub mod policy_sync;
#[cfg(feature = "client")]
pub mod service_sync;
pub mod services;
#[doc(hidden)]
pub mod services_harness;
pub mod static_file;
pub mod view;
#[cfg(feature = "client")]
pub mod watch_thread;
