//! Fuzz target: see `dataplane::port::gro::fuzzing::harness` for the
//! invariants it checks (TCP coalescing for TUN pods).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dataplane::port::gro::fuzzing::harness(data));
