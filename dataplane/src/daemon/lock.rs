//! One daemon per node: an exclusive `flock` on `STATE_DIR/sluice.lock`,
//! held for the daemon's life and released by the kernel when it exits,
//! however it exits. A second daemon (a rolling update with surge, a stale
//! process, a second start by hand) waits up to `admin.lock_wait_secs` for
//! the first to go, then refuses, naming it: it never touches what the
//! first one uses (the XDP program, the admin socket, the pods, the
//! reserved ports), so nothing is left half torn down.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The held lock (released on drop or exit).
#[derive(Debug)]
pub(super) struct NodeLock {
    _file: File,
    path: PathBuf,
}

impl NodeLock {
    /// Takes the lock in `dir`, waiting up to `wait` for a holder to exit.
    pub(super) fn acquire(dir: &Path, wait: Duration) -> io::Result<NodeLock> {
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(e.kind(), format!("admin.state_dir {}: {e}", dir.display()))
        })?;
        let path = dir.join("sluice.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let deadline = Instant::now() + wait;
        let mut waiting = false;
        loop {
            // SAFETY: flock on a descriptor `file` keeps open.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("locking {}: {e}", path.display()),
                ));
            }
            let mut holder = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().to_string();
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "another sluice daemon (pid {holder}) holds {} and serves this node; \
                         stop it first, or let this one wait longer for it (admin.lock_wait_secs, \
                         now {})",
                        path.display(),
                        wait.as_secs()
                    ),
                ));
            }
            if !waiting {
                tracing::info!(
                    "waiting up to {}s for sluice pid {holder} to release {}",
                    wait.as_secs(),
                    path.display()
                );
                waiting = true;
            }
            // Short: a rolling update's new daemon starts forwarding as soon as
            // the old one exits.
            std::thread::sleep(Duration::from_millis(2));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(NodeLock { _file: file, path })
    }

    /// Where it is.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}
