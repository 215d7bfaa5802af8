//! How the admin and metrics threads wait for a connection without
//! polling: `poll(2)` on the listener and on an eventfd that a stop raises.
//! (They used to try `accept` every 5 ms: 400 wake-ups a second between
//! them, a third of an idle daemon's CPU.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Raised once, when the daemon stops; stays raised.
pub(super) struct StopSignal {
    fd: OwnedFd,
}

impl StopSignal {
    pub(super) fn new() -> io::Result<StopSignal> {
        // SAFETY: eventfd has no memory preconditions; the result is
        // checked before it is owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(StopSignal { fd })
    }

    /// Wakes every [`StopSignal::wait`], now and later.
    pub(super) fn raise(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd.
        unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Waits until `fd` is readable, the signal is raised or `timeout`
    /// passes (interrupted: returns early; callers loop).
    pub(super) fn wait(&self, fd: RawFd, timeout: Duration) {
        self.wait_any(&[fd], timeout);
    }

    /// [`StopSignal::wait`] on any of `fds`.
    pub(super) fn wait_any(&self, fds: &[RawFd], timeout: Duration) {
        let mut polled: Vec<libc::pollfd> = fds
            .iter()
            .chain([self.fd.as_raw_fd()].iter())
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `polled` is a live array of that many pollfd.
        unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_raised_signal_ends_the_wait_at_once_and_stays_raised() {
        let s = StopSignal::new().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        s.wait(l.as_raw_fd(), Duration::from_millis(50));
        assert!(
            t0.elapsed() >= Duration::from_millis(50),
            "nothing raised: timed out"
        );
        let s = std::sync::Arc::new(s);
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.raise();
        });
        let t0 = Instant::now();
        s.wait(l.as_raw_fd(), Duration::from_secs(30));
        assert!(t0.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
        let t0 = Instant::now();
        s.wait(l.as_raw_fd(), Duration::from_secs(30));
        assert!(t0.elapsed() < Duration::from_secs(10), "still raised");
    }

    #[test]
    fn a_connection_ends_the_wait() {
        let s = StopSignal::new().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let t0 = Instant::now();
        s.wait(l.as_raw_fd(), Duration::from_secs(30));
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
}
