//! Fuzz target: see `encap::harness::icmp_quoted` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encap::harness::icmp_quoted(data));
