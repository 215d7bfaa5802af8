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
//! - [`flows`]: per-flow verdicts, so a flow is decided at its first
//!   packet and its replies pass; [`verdict`]: the check a worker runs for
//!   a packet of one of its pods, re-deciding flows decided under an older
//!   policy generation.
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
pub mod flows;
#[doc(hidden)]
pub mod harness;
pub mod model;
pub mod verdict;

pub use compile::{Decision, PodTables, RuleId, Side, Tables};
pub use flows::{Dir, FlowTable, Key};
pub use model::{
    Cluster, Labels, NamedPort, Namespace, Peer, Pod, Policy, PolicyPort, Port, Proto, Requirement,
    Rule, Selector,
};
pub use verdict::Outcome;
