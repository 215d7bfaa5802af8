//! NetworkPolicy for Sluice: what Calico or Cilium enforce for a node, as
//! data the workers read without locks.
//!
//! - [`model`]: NetworkPolicies and the Namespaces and Pods they select,
//!   with the API's defaults applied (built by `ctrl`).
//! - [`compile`]: the policies selecting this node's pods compiled into
//!   per-pod ingress and egress tables (pod addresses, `ipBlock` ranges,
//!   port ranges, named ports resolved per destination pod), and the
//!   verdict for a flow with the rule that allowed it.
//!
//! Nothing here touches packets or the API server.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![forbid(unsafe_code)]

pub mod compile;
#[doc(hidden)]
pub mod harness;
pub mod model;

pub use compile::{Decision, PodTables, RuleId, Side, Tables};
pub use model::{
    Cluster, Labels, NamedPort, Namespace, Peer, Pod, Policy, PolicyPort, Port, Proto, Requirement,
    Rule, Selector,
};
