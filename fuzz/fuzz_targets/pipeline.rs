//! Fuzz target: see `dataplane::harness::pipeline` for the invariants it
//! checks (no panic, no leaked buffer, every received frame sent or
//! counted).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = dataplane::harness::pipeline(data);
});
