//! An in-memory port for tests and benchmarks: frames pushed through the
//! [`FakeHandle`] come out of `recv`; frames sent are collected there.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use super::{Framing, Port};
use crate::buf::Buf;

#[derive(Debug, Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    tx_room: Option<usize>,
    loses_unread: bool,
}

/// The fake port (owned by a worker).
#[derive(Debug)]
pub struct FakePort {
    name: String,
    framing: Framing,
    q: Arc<Mutex<Queues>>,
}

/// The test's side of a fake port. (A mutex: tests only, never a worker's
/// real port.)
#[derive(Clone, Debug)]
pub struct FakeHandle(Arc<Mutex<Queues>>);

impl FakePort {
    /// A fake port and the handle that feeds and drains it.
    pub fn new(name: &str, framing: Framing) -> (FakePort, FakeHandle) {
        let q = Arc::new(Mutex::new(Queues::default()));
        (
            FakePort {
                name: name.to_string(),
                framing,
                q: q.clone(),
            },
            FakeHandle(q),
        )
    }
}

impl FakeHandle {
    fn with<R>(&self, f: impl FnOnce(&mut Queues) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Queues a frame to be received.
    pub fn inject(&self, frame: Vec<u8>) {
        self.with(|q| q.rx.push_back(frame));
    }

    /// Takes every frame transmitted so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.with(|q| std::mem::take(&mut q.tx))
    }

    /// Limits how many frames one `send` accepts (a full ring).
    pub fn set_tx_room(&self, n: Option<usize>) {
        self.with(|q| q.tx_room = n);
    }

    /// Makes the port say that frames it is not asked for are lost (as
    /// AF_XDP's RX ring does) rather than kept.
    pub fn set_loses_unread(&self) {
        self.with(|q| q.loses_unread = true);
    }
}

impl Port for FakePort {
    fn name(&self) -> &str {
        &self.name
    }

    fn framing(&self) -> Framing {
        self.framing
    }

    fn recv(&mut self, bufs: &mut [Buf]) -> io::Result<usize> {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for b in bufs.iter_mut() {
            let Some(f) = q.rx.pop_front() else { break };
            b.fill(&f);
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, bufs: &[Buf]) -> io::Result<usize> {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        let n = bufs.len().min(q.tx_room.unwrap_or(usize::MAX));
        q.tx.extend(bufs.iter().take(n).map(|b| b.data().to_vec()));
        Ok(n)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    /// Injected frames wait until read, as a TUN device's do (unless
    /// [`FakeHandle::set_loses_unread`]).
    fn holds_unread(&self) -> bool {
        !self.q.lock().is_ok_and(|q| q.loses_unread)
    }
}
