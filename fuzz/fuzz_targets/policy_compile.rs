//! Fuzz target: the NetworkPolicy compiler. See
//! `policy::harness::compile`: a cluster and policies built from the
//! bytes, every compiled verdict checked against an evaluation straight
//! from the objects.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    policy::harness::compile(data);
});
