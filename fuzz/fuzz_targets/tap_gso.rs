//! Fuzz target: see `dataplane::port::gso::fuzzing::harness` for the
//! invariants it checks (super-packets read from the offload uplink's TAP,
//! cut into frames).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dataplane::port::gso::fuzzing::harness(data));
