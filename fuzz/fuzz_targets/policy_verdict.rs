//! Fuzz target: NetworkPolicy verdicts through the real worker pipeline
//! on two nodes. See `dataplane::policy_rig::fuzz_verdict`: a cluster,
//! policies and a sequence of flows, packets of live flows and policy or
//! label changes from the bytes; every packet's fate checked against an
//! evaluation straight from the objects.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dataplane::policy_rig::fuzz_verdict(data);
});
