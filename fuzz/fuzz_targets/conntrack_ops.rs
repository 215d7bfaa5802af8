//! Fuzz target: see `nat::harness::conntrack_ops` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nat::harness::conntrack_ops(data);
});
