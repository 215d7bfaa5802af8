//! Fuzz target: see `lb::harness::table_ops` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lb::harness::table_ops(data);
});
