//! Running setup code inside another network namespace.
//!
//! A network namespace is per thread on Linux: `setns` on a short-lived
//! thread moves only that thread, so the caller never changes namespace.
//! File descriptors opened there (a TUN device, a socket) keep working
//! from any thread afterwards.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Runs `f` on a fresh thread that has joined the network namespace at
/// `netns` (`/var/run/netns/NAME` or `/proc/PID/ns/net`).
pub fn run_in<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = File::open(netns)
        .map_err(|e| io::Error::new(e.kind(), format!("netns {}: {e}", netns.display())))?;
    std::thread::spawn(move || {
        // SAFETY: setns takes a valid open fd (kept alive by `ns` for the
        // call) and a namespace type; it affects only the calling thread,
        // which this closure owns and which ends after `f`.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(crate::context("setns", io::Error::last_os_error()));
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("netns setup thread panicked"))?
}
