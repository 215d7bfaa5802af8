//! Fuzz target: see `encap::harness::vxlan_decap` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encap::harness::vxlan_decap(data));
