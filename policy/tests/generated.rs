//! Generated cases in cyclonus's categories (peers, port/protocol,
//! conflicts between stacked policies, actions: label flips on pods and
//! namespaces, policy updates), each checked on every pod pair over TCP
//! and UDP ports 80 and 81 against the independent evaluation in `common`
//! (not the compiler's tables). A fixed seed: the same 300 cases every run.
//! The same cases run through the real worker pipeline in
//! dataplane/tests/netpol_pipeline.rs (cases/generated.rs, included by
//! both).

mod common;

use common::*;

include!("cases/generated.rs");
