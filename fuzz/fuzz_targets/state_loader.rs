//! Fuzz target: the state file loader. See `nat::harness::state_loader`
//! for the invariants it checks (arbitrary bytes are rejected, never
//! trusted; an unchanged file restores exactly the table).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nat::harness::state_loader(data);
});
