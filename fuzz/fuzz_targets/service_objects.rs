//! Fuzz target: see `ctrl::services_harness::service_objects` for the
//! invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ctrl::services_harness::service_objects(data);
});
