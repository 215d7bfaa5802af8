//! Shared pieces of Sluice's benchmarks: a counting global allocator (to
//! report heap allocations per packet as a measurement, after OPTE's
//! `bench/src/alloc.rs`) and the sample frames every suite uses.

pub mod alloc;
pub mod frames;
pub mod netbench;
pub mod pktgen;
pub mod policy;
pub mod replay;
pub mod report;
pub mod scaling;
