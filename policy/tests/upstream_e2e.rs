//! The 48 cases of kubernetes test/e2e/network/netpol/network_policy.go
//! (TCP, and the UDP and SCTP contexts' three each, prefixed udp_ and
//! sctp_), named
//! after the upstream case, with its truth table, on the compiled tables.
//! The same cases run through the real worker pipeline on two nodes in
//! dataplane/tests/netpol_pipeline.rs (one file, cases/upstream.rs,
//! included by both). Upstream creates only the pods a case needs; here
//! every case runs on all nine pods, which its expectations cover as
//! written. Each table is also checked against the independent evaluation
//! in `common`.

mod common;

use common::*;

include!("cases/upstream.rs");
