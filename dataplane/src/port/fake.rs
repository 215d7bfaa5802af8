//! An in-memory port for tests and benchmarks: frames pushed through the
//! [`FakeHandle`] come out of `recv`; frames sent are collected there.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use super::{Framing, Port};
use crate::buf::{Buf, Gso};

#[derive(Debug, Default)]
struct Queues {
    rx: VecDeque<(Vec<u8>, Option<Gso>)>,
    tx: Vec<Vec<u8>>,
    tx_gso: Vec<Option<Gso>>,
    tx_room: Option<usize>,
    loses_unread: bool,
    takes_gso: bool,
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
        self.with(|q| q.rx.push_back((frame, None)));
    }

    /// Queues a super-packet to be received whole (into a big buffer; cut
    /// short in an ordinary one, as no real port would).
    pub fn inject_super(&self, frame: Vec<u8>, gso: Gso) {
        self.with(|q| q.rx.push_back((frame, Some(gso))));
    }

    /// Takes every frame transmitted so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.with(|q| {
            q.tx_gso.clear();
            std::mem::take(&mut q.tx)
        })
    }

    /// Takes every frame transmitted so far, each with its [`Gso`] (a
    /// super-packet written whole) or `None`.
    pub fn take_sent_with_gso(&self) -> Vec<(Vec<u8>, Option<Gso>)> {
        self.with(|q| {
            let g = std::mem::take(&mut q.tx_gso);
            std::mem::take(&mut q.tx).into_iter().zip(g).collect()
        })
    }

    /// Makes the port move super-packets whole ([`Port::takes_gso`]), as an
    /// offloading TUN device or the offload uplink does. Set before the
    /// port is attached.
    pub fn set_takes_gso(&self) {
        self.with(|q| q.takes_gso = true);
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
            let Some((f, gso)) = q.rx.pop_front() else {
                break;
            };
            b.fill(&f);
            b.set_gso(gso);
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, bufs: &[Buf]) -> io::Result<usize> {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        let n = bufs.len().min(q.tx_room.unwrap_or(usize::MAX));
        q.tx.extend(bufs.iter().take(n).map(|b| b.data().to_vec()));
        q.tx_gso.extend(bufs.iter().take(n).map(Buf::gso));
        Ok(n)
    }

    fn takes_gso(&self) -> bool {
        self.q.lock().is_ok_and(|q| q.takes_gso)
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
