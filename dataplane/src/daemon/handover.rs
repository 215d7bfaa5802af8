//! The uplink's AF_XDP sockets, passed from a daemon to the one that takes
//! over (a restart with the next daemon started first, as an upgrade by
//! hand or a supervisor does): nothing is unbound, so the queues never go
//! without a socket and the next daemon goes on with the rings where this
//! one left them. Unbinding costs the kernel two RCU grace periods per
//! socket, one after the other as a process exits (tens of milliseconds
//! each here), and the next daemon's bind waits for them.
//!
//! Each daemon listens on `RUN_DIR/handover.sock` (SOCK_SEQPACKET). One
//! that starts while the node lock is held connects there first (it is
//! the successor), then waits for the lock. On SIGTERM the holder stops
//! its workers and, if a successor is connected, sends it one message per
//! uplink socket (the socket and its UMEM as SCM_RIGHTS, the free TX
//! frames as data) before it releases the lock. The successor reads them
//! once it holds the lock. Without a successor (a kill, or a start after
//! the exit) nothing is sent and the next daemon binds afresh, retrying
//! while the old sockets close.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, accept4, bind, connect, listen, recvmsg, sendmsg, socket,
};

use crate::port::xdp::Handed;

/// The listening socket's name in `admin.run_dir`.
pub(super) const SOCKET: &str = "handover.sock";

const MAGIC: &[u8; 8] = b"SLUICEHO";
const VERSION: u32 = 1;
/// A socket message's fixed part: magic, version, ifindex, queue,
/// frames, free TX frames, length of the copy-mode reason.
const FIXED: usize = 8 + 6 * 4;
/// The largest message: every TX frame free, and a reason.
const MAX: usize = FIXED + 8 * 4096 + 1024;

fn errno(what: &str, e: nix::Error) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("hand-over {what}: {e}"))
}

/// What a successor started with `admin.take_over` sends as soon as it
/// connects: hand over now, without waiting for SIGTERM.
const TAKE: &[u8; 8] = b"SLUICETK";

/// The holder's side: listening for a successor.
pub(super) struct Offer {
    fd: OwnedFd,
    path: PathBuf,
    /// Successors connected, and whether each asked to take over now.
    waiting: Vec<(OwnedFd, bool)>,
}

impl Offer {
    /// Listens on `run_dir/handover.sock` (replacing a stale one).
    pub(super) fn listen(run_dir: &Path) -> io::Result<Offer> {
        std::fs::create_dir_all(run_dir)?;
        let path = run_dir.join(SOCKET);
        let _ = std::fs::remove_file(&path);
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| errno("socket", e))?;
        let addr = UnixAddr::new(&path).map_err(|e| errno("address", e))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| errno(&format!("bind {}", path.display()), e))?;
        listen(&fd, Backlog::new(4).map_err(|e| errno("backlog", e))?)
            .map_err(|e| errno("listen", e))?;
        Ok(Offer {
            fd,
            path,
            waiting: Vec::new(),
        })
    }

    /// What to wait on for successors: the listener and the connections
    /// that have not asked for anything yet.
    pub(super) fn fds(&self) -> Vec<RawFd> {
        std::iter::once(self.fd.as_raw_fd())
            .chain(self.waiting.iter().map(|(c, _)| c.as_raw_fd()))
            .collect()
    }

    /// Takes in successors that connected and what they sent; returns
    /// whether one asks to take over now (`admin.take_over`). One that
    /// went away is forgotten.
    pub(super) fn poll(&mut self) -> bool {
        while let Ok(raw) = accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 just returned this descriptor to us.
            self.waiting
                .push((unsafe { OwnedFd::from_raw_fd(raw) }, false));
        }
        self.waiting.retain_mut(|(c, take)| {
            let mut b = [0u8; 16];
            // SAFETY: a non-blocking read into a live buffer.
            let n = unsafe {
                libc::recv(
                    c.as_raw_fd(),
                    b.as_mut_ptr().cast(),
                    b.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                // Gone (it gave up waiting, or was stopped).
                0 => false,
                n if n > 0 => {
                    *take |= b.get(..8) == Some(TAKE);
                    true
                }
                _ => io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock,
            }
        });
        self.waiting.iter().any(|(_, take)| *take)
    }

    /// Sends `sockets` to a connected successor (the one that asked to
    /// take over first, else the first that connected; one that gave up
    /// waiting is skipped). Returns how many went, or `None` when no
    /// successor is waiting (they are then closed here).
    pub(super) fn give(&mut self, sockets: Vec<Handed>) -> Option<usize> {
        self.poll();
        // Those that asked first, each in the order they came.
        self.waiting.sort_by_key(|(_, take)| !*take);
        for (conn, _) in self.waiting.drain(..) {
            // Only to a process of our own user (the run directory is
            // root's; this holds even if it is not).
            let peer =
                nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials);
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if !peer.is_ok_and(|c| c.uid() == me) {
                tracing::warn!("hand-over: a successor of another user (or unknown) refused");
                continue;
            }
            match send(&conn, &sockets) {
                Ok(()) => return Some(sockets.len()),
                Err(e) => tracing::info!("hand-over: a successor went away ({e}); next"),
            }
        }
        None
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        // Dropped while the node lock is held: the next daemon's socket is
        // bound only after it takes the lock.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn send(conn: &OwnedFd, sockets: &[Handed]) -> io::Result<()> {
    let mut head = Vec::with_capacity(16);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(sockets.len() as u32).to_le_bytes());
    sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&head)],
        &[],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| errno("send", e))?;
    for h in sockets {
        let msg = encode(h);
        let fds = [h.fd.as_raw_fd(), h.memfd.as_raw_fd()];
        sendmsg::<()>(
            conn.as_raw_fd(),
            &[IoSlice::new(&msg)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| errno("send", e))?;
    }
    Ok(())
}

fn encode(h: &Handed) -> Vec<u8> {
    let why = h.copy_why.as_deref().unwrap_or("").as_bytes();
    let why = why.get(..why.len().min(1024)).unwrap_or_default();
    let mut m = Vec::with_capacity(FIXED + 8 * h.tx_free.len() + why.len());
    m.extend_from_slice(MAGIC);
    for v in [
        VERSION,
        h.ifindex,
        h.queue,
        h.frames,
        h.tx_free.len() as u32,
        why.len() as u32,
    ] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    for a in &h.tx_free {
        m.extend_from_slice(&a.to_le_bytes());
    }
    m.extend_from_slice(why);
    m
}

/// Reads a socket message's data (its descriptors are already owned):
/// anything malformed is refused, never trusted.
fn decode(m: &[u8], fd: OwnedFd, memfd: OwnedFd) -> io::Result<Handed> {
    let bad = |what: &str| io::Error::other(format!("hand-over message: {what}"));
    if m.len() < FIXED || m.get(..8) != Some(MAGIC) {
        return Err(bad("not a socket message"));
    }
    let word = |i: usize| {
        m.get(8 + 4 * i..12 + 4 * i)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    if word(0) != VERSION {
        return Err(bad(&format!(
            "version {}, this daemon reads {VERSION}",
            word(0)
        )));
    }
    let (free, why_len) = (word(4) as usize, word(5) as usize);
    let body = m.get(FIXED..).unwrap_or_default();
    if body.len() != free * 8 + why_len {
        return Err(bad("length does not match its counts"));
    }
    let (addrs, why) = body.split_at(free * 8);
    Ok(Handed {
        ifindex: word(1),
        queue: word(2),
        frames: word(3),
        fd,
        memfd,
        tx_free: addrs
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
            .collect(),
        copy_why: (!why.is_empty()).then(|| String::from_utf8_lossy(why).into_owned()),
    })
}

/// The successor's side: connected to the holder while it waits for the
/// lock.
pub(super) struct Successor {
    fd: OwnedFd,
}

impl Successor {
    /// Connects to the holder's socket in `run_dir`, if one listens; with
    /// `take_over`, asks it to hand over now rather than at its SIGTERM.
    pub(super) fn announce(run_dir: &Path, take_over: bool) -> Option<Successor> {
        let path = run_dir.join(SOCKET);
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .ok()?;
        let addr = UnixAddr::new(&path).ok()?;
        connect(fd.as_raw_fd(), &addr).ok()?;
        if take_over {
            sendmsg::<()>(
                fd.as_raw_fd(),
                &[IoSlice::new(TAKE)],
                &[],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .ok()?;
        }
        tracing::info!(
            "a daemon serves this node: {} ({})",
            if take_over {
                "asked it to hand over now (admin.take_over)"
            } else {
                "its uplink sockets come over when it stops"
            },
            path.display()
        );
        Some(Successor { fd })
    }

    /// What the holder sent, read once this daemon holds the lock (so the
    /// holder has sent all it will, or is gone): empty if it sent nothing.
    pub(super) fn receive(self) -> Vec<Handed> {
        match self.read() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("{e}; binding the uplink sockets afresh");
                Vec::new()
            }
        }
    }

    fn read(&self) -> io::Result<Vec<Handed>> {
        // Sent before the lock was released: already here, or never.
        let t = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: a timeval of the size passed.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&t as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let mut buf = vec![0u8; MAX];
        let (head, fds) = self.message(&mut buf)?;
        drop(fds);
        if head.len() != 16 || head.get(..8) != Some(MAGIC) {
            return Ok(Vec::new());
        }
        let word = |i: usize| {
            head.get(8 + 4 * i..12 + 4 * i)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        if word(0) != VERSION {
            return Err(io::Error::other(format!(
                "hand-over: the previous daemon speaks version {}, this one {VERSION}",
                word(0)
            )));
        }
        let mut out = Vec::new();
        for _ in 0..word(1).min(256) {
            let (m, mut fds) = self.message(&mut buf)?;
            if fds.len() != 2 {
                return Err(io::Error::other(format!(
                    "hand-over: a socket message with {} descriptors, not 2",
                    fds.len()
                )));
            }
            let memfd = fds.pop().ok_or_else(|| io::Error::other("no memfd"))?;
            let fd = fds.pop().ok_or_else(|| io::Error::other("no socket"))?;
            out.push(decode(&m, fd, memfd)?);
        }
        Ok(out)
    }

    /// One message and the descriptors it carried (owned at once, so they
    /// close whatever happens next). Empty at the end of the stream.
    fn message(&self, buf: &mut [u8]) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            self.fd.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| errno("receive", e))?;
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: descriptors the kernel just installed for us.
                    fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                }
            }
        }
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        let n = msg.bytes;
        if truncated {
            return Err(io::Error::other("hand-over: a message was truncated"));
        }
        let data = iov
            .first()
            .and_then(|b| b.get(..n))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Ok((data, fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd() -> OwnedFd {
        // SAFETY: memfd_create with a valid name; owned at once.
        unsafe { OwnedFd::from_raw_fd(libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC)) }
    }

    fn handed(queue: u32) -> Handed {
        Handed {
            ifindex: 7,
            queue,
            fd: memfd(),
            memfd: memfd(),
            frames: 4096,
            tx_free: (2048..4096).map(|i| i * 2048).collect(),
            copy_why: Some("veth refused zero-copy".into()),
        }
    }

    #[test]
    fn sockets_reach_the_successor_with_their_descriptors_and_free_frames() {
        let dir = std::env::temp_dir().join(format!("sluice-ho-{}", std::process::id()));
        let mut offer = Offer::listen(&dir).unwrap();
        // Nobody waiting: nothing is sent.
        assert_eq!(offer.give(vec![handed(0)]), None);
        let s = Successor::announce(&dir, false).unwrap();
        assert!(!offer.poll(), "waiting, not asking");
        assert_eq!(offer.give(vec![handed(0), handed(1)]), Some(2));
        drop(offer);
        let got = s.receive();
        assert_eq!(got.len(), 2);
        for (i, h) in got.iter().enumerate() {
            assert_eq!((h.ifindex, h.queue, h.frames), (7, i as u32, 4096));
            assert_eq!(h.tx_free.len(), 2048);
            assert_eq!(h.tx_free.first(), Some(&(2048 * 2048)));
            assert_eq!(h.copy_why.as_deref(), Some("veth refused zero-copy"));
            assert_ne!(h.fd.as_raw_fd(), h.memfd.as_raw_fd());
        }
        assert!(!dir.join(SOCKET).exists(), "the holder removes its socket");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_holder_that_goes_without_sending_leaves_the_successor_empty_handed() {
        let dir = std::env::temp_dir().join(format!("sluice-ho2-{}", std::process::id()));
        let offer = Offer::listen(&dir).unwrap();
        let s = Successor::announce(&dir, false).unwrap();
        drop(offer);
        assert!(s.receive().is_empty());
        // No holder at all: no successor.
        assert!(Successor::announce(&dir, true).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_successor_asking_to_take_over_is_served_first_and_one_gone_is_skipped() {
        let dir = std::env::temp_dir().join(format!("sluice-ho3-{}", std::process::id()));
        let mut offer = Offer::listen(&dir).unwrap();
        let gone = Successor::announce(&dir, false).unwrap();
        let patient = Successor::announce(&dir, false).unwrap();
        assert!(!offer.poll());
        drop(gone);
        let eager = Successor::announce(&dir, true).unwrap();
        assert!(offer.poll(), "the take-over request is seen");
        assert_eq!(offer.fds().len(), 3, "the listener and two successors");
        assert_eq!(offer.give(vec![handed(0)]), Some(1));
        drop(offer);
        assert_eq!(eager.receive().len(), 1);
        assert!(patient.receive().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let h = handed(3);
        let m = encode(&h);
        assert_eq!(decode(&m, memfd(), memfd()).unwrap().tx_free, h.tx_free);
        for cut in [0, 7, FIXED - 1, FIXED, m.len() - 1] {
            let part = m.get(..cut).unwrap();
            assert!(decode(part, memfd(), memfd()).is_err(), "cut at {cut}");
        }
        let mut v = m.clone();
        v[8] = 9;
        assert!(decode(&v, memfd(), memfd()).is_err(), "another version");
        let mut extra = m.clone();
        extra.push(0);
        assert!(decode(&extra, memfd(), memfd()).is_err());
    }

    #[test]
    fn random_bytes_never_panic_and_counts_are_checked() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        let good = encode(&handed(1));
        for _ in 0..2000 {
            let mut m = if rng.random_bool(0.5) {
                good.clone()
            } else {
                let n = rng.random_range(0..64);
                (0..n).map(|_| rng.random()).collect()
            };
            // Damage a few bytes (the counts, mostly).
            for _ in 0..rng.random_range(1..4) {
                if let Some(i) = (!m.is_empty()).then(|| rng.random_range(0..m.len().min(40))) {
                    m[i] = rng.random();
                }
            }
            if let Ok(h) = decode(&m, memfd(), memfd()) {
                // Only what its counts say: the free frames fit the message.
                assert!(FIXED + 8 * h.tx_free.len() <= m.len());
                assert!(h.tx_free.len() <= m.len() / 8);
            }
        }
    }
}
