//! Shared helpers for benchmarks: packet builders and the counting allocator.
