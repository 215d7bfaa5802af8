//! Fuzz target: see `encap::harness::encap_roundtrip` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encap::harness::encap_roundtrip(data));
