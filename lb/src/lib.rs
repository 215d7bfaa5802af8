//! Service load balancing for Sluice: what kube-proxy does for a node,
//! as data the workers read without locks.
//!
//! - [`model`]: a Service port as the proxy sees it (frontends, traffic
//!   policies, affinity, endpoints with their conditions), built by `ctrl`
//!   from Services and EndpointSlices.
//! - [`categorize`]: kube-proxy's `CategorizeEndpoints`
//!   (pkg/proxy/topology.go): which endpoints serve cluster traffic and
//!   which serve node-local traffic, with the serving-terminating fallback
//!   and topology hints.
//! - [`maglev`]: the backend of a new flow, by Maglev consistent hashing
//!   (the same choice on every worker and node; minimal disruption when
//!   backends change).
//! - [`table`]: the immutable service table: (IP, protocol, port) and
//!   NodePort frontends to compiled ports, and the verdict for a new flow
//!   with kube-proxy's nftables semantics (masquerade, reject, drop).
//! - [`affinity`]: sessionAffinity ClientIP, per worker, fixed capacity.
//!
//! Nothing here touches packets: `nat` rewrites them, `dataplane` decides
//! when to ask.
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

pub mod affinity;
pub mod categorize;
#[doc(hidden)]
pub mod harness;
pub mod maglev;
pub mod model;
pub mod table;

pub use affinity::AffinityTable;
pub use model::{Endpoint, NodeFacts, PortName, Proto, ServicePort};
pub use table::{Backend, Choice, Flow, LbDrop, LbReject, Lookup, PortId, ServiceTable, Verdict};
