//! A global allocator that counts allocations per thread.
//!
//! Install it in a bench or test binary with
//! `#[global_allocator] static A: CountingAlloc = CountingAlloc;`, then wrap
//! the code under measurement in [`count`]. The counter is per thread, so
//! the test harness's other threads do not disturb a measurement.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

/// The system allocator, counting `alloc`, `alloc_zeroed` and `realloc` calls.
#[derive(Debug)]
pub struct CountingAlloc;

fn bump(bytes: i64) {
    // try_with: the thread-local may already be gone while a thread exits.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + bytes));
}

fn freed(bytes: i64) {
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() - bytes));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; counting touches only a const-initialised thread-local Cell,
// which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(layout.size() as i64);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(layout.size() as i64);
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        freed(layout.size() as i64);
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations this thread made so far.
pub fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Heap bytes this thread has allocated and not freed.
pub fn live_bytes() -> i64 {
    LIVE_BYTES.with(Cell::get)
}

/// Runs `f` `iterations` times and returns the allocations per iteration
/// (requires [`CountingAlloc`] as the global allocator; otherwise 0).
pub fn count(iterations: u64, mut f: impl FnMut()) -> f64 {
    let before = allocations();
    for _ in 0..iterations {
        f();
    }
    (allocations() - before) as f64 / iterations as f64
}
