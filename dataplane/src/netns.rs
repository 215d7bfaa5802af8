//! Running setup code inside another network namespace.
//!
//! A network namespace is per thread on Linux: `setns` on a short-lived
//! thread moves only that thread, so the worker threads never change
//! namespace. File descriptors opened there (a TUN device, a socket) keep
//! working from any thread afterwards.

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
            return Err(io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("netns setup thread panicked"))?
}

/// Runs a command (such as `ip route ...`) and fails with its stderr.
pub fn cmd(args: &[&str]) -> io::Result<()> {
    let (prog, rest) = args
        .split_first()
        .ok_or_else(|| io::Error::other("empty command"))?;
    let out = std::process::Command::new(prog).args(rest).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
