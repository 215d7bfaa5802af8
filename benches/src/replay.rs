//! A port that replays a fixed set of frames and discards what it is sent,
//! without allocating: for measuring the worker's per-packet path (time
//! and allocations) with nothing else in the way.

use std::io;
use std::os::fd::RawFd;

use dataplane::buf::Buf;
use dataplane::port::{Framing, Port};

/// Replays `frames` round-robin, `per_recv` frames per `recv`; counts what
/// it is sent.
#[derive(Debug)]
pub struct ReplayPort {
    frames: Vec<Vec<u8>>,
    next: usize,
    framing: Framing,
    /// Frames per receive call (0: the port is idle).
    pub per_recv: usize,
    /// Frames sent to it.
    pub sent: u64,
}

impl ReplayPort {
    /// A port replaying `frames`.
    pub fn new(frames: Vec<Vec<u8>>, framing: Framing, per_recv: usize) -> ReplayPort {
        ReplayPort {
            frames,
            next: 0,
            framing,
            per_recv,
            sent: 0,
        }
    }
}

impl Port for ReplayPort {
    fn name(&self) -> &str {
        "replay"
    }

    fn framing(&self) -> Framing {
        self.framing
    }

    fn recv(&mut self, bufs: &mut [Buf]) -> io::Result<usize> {
        let mut n = 0;
        if self.frames.is_empty() {
            return Ok(0);
        }
        for b in bufs.iter_mut().take(self.per_recv) {
            let f = &self.frames[self.next % self.frames.len()];
            self.next += 1;
            b.fill(f);
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, bufs: &[Buf]) -> io::Result<usize> {
        self.sent += bufs.len() as u64;
        Ok(bufs.len())
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
}
