//! Fuzz target: see `encap::harness::parse_chain` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encap::harness::parse_chain(data));
