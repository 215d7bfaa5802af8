//! AF_XDP ports (xsk-rs): the uplink's sockets (and optionally veth pods').
//!
//! The steering program ([`super::steer`]) picks what reaches them.
//! Frames are copied between the UMEM and the worker's buffers (one copy
//! each way, copy mode on veth); zero-copy UMEM buffers are future work.

use std::io::{self, Write};
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::config::{BindFlags, LibxdpFlags, SocketConfig, UmemConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

pub use super::steer::{Frontend, SteerConfig, SteerProgram, detach};
use super::{Framing, Port};
use crate::buf::Buf;
/// Frames in a port's UMEM: half for receiving, half for sending.
const FRAMES: u32 = 4096;

/// How long a busy queue's bind is retried.
const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// An AF_XDP socket on one queue of an interface.
pub struct XdpPort {
    name: String,
    mac: Option<encap::MacAddr>,
    umem: Umem,
    fq: FillQueue,
    cq: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    /// Descriptors the RX ring filled (scratch).
    rx_descs: Vec<FrameDesc>,
    /// TX frames not in flight.
    tx_free: Vec<FrameDesc>,
    /// TX descriptors being produced (scratch).
    tx_batch: Vec<FrameDesc>,
    fd: RawFd,
    /// Why the socket is in copy mode (`None`: zero-copy).
    copy_why: Option<String>,
    _prog: Option<std::sync::Arc<SteerProgram>>,
}

impl std::fmt::Debug for XdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPort").field("name", &self.name).finish()
    }
}

// SAFETY: the UMEM and rings are owned by this port alone; xsk-rs's types
// are !Send only because they hold raw pointers to the mmap'd rings, which
// no other owner touches. The port moves to its worker thread once.
unsafe impl Send for XdpPort {}

impl XdpPort {
    /// Registers this socket (bound to `queue`) with `prog`, which it then
    /// keeps alive: a port opened without a program (at start-up, while
    /// the program loads) is steered to from here on.
    pub fn steer_with(
        &mut self,
        prog: &std::sync::Arc<SteerProgram>,
        queue: u32,
    ) -> io::Result<()> {
        prog.register(queue, self.fd)?;
        self._prog = Some(prog.clone());
        Ok(())
    }

    /// Why this socket copies frames (the driver's refusal of zero-copy),
    /// or `None` when it is bound in zero-copy mode.
    pub fn copy_mode(&self) -> Option<&str> {
        self.copy_why.as_deref()
    }

    /// Binds an AF_XDP socket to `ifname` queue `queue` (zero-copy where
    /// the driver has it, else copy mode; with need_wakeup) and registers it with `prog`, which the port keeps
    /// alive (the sockets of all an interface's queues share it).
    pub fn open(
        ifname: &str,
        queue: u32,
        prog: Option<std::sync::Arc<SteerProgram>>,
    ) -> io::Result<XdpPort> {
        let io_err =
            |what: &str, e: &dyn std::fmt::Display| io::Error::other(format!("{what}: {e}"));
        let frames = NonZeroU32::new(FRAMES).ok_or_else(|| io::Error::other("frames"))?;
        let cfg = |mode: BindFlags| {
            SocketConfig::builder()
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .xdp_flags(XdpFlags::XDP_FLAGS_DRV_MODE)
                .bind_flags(mode | BindFlags::XDP_USE_NEED_WAKEUP)
                .build()
        };
        // Zero-copy first, where the driver has it (i40e, ice, mlx5, ...);
        // asked for explicitly, because a plain bind falls back to copy
        // silently. A refusal (EOPNOTSUPP: veth, ENA, virtio before 6.13)
        // moves to copy mode, and says why.
        let mut mode = BindFlags::XDP_ZEROCOPY;
        let mut copy_why = None;
        let iface = ifname.parse().map_err(|e| io_err("interface name", &e))?;
        // A queue still bound by a process that is exiting (a restart right
        // after a kill) refuses the bind with EBUSY until the kernel has
        // released it: retried for a bounded time, every error with its
        // errno.
        let started = std::time::Instant::now();
        let deadline = started + BIND_RETRY;
        let mut tries = 0u32;
        let (umem, mut descs, tx, rx, fqcq) = loop {
            tries += 1;
            let (umem, descs) =
                Umem::new(UmemConfig::default(), frames, false).map_err(|e| io_err("UMEM", &e))?;
            tracing::debug!(
                "AF_XDP {ifname} queue {queue}: UMEM ready at +{} us",
                started.elapsed().as_micros()
            );
            // SAFETY: this UMEM is new and bound to no other socket; the
            // pair (interface, queue) gets one socket from this daemon.
            match unsafe { Socket::new(cfg(mode), &umem, &iface, queue) } {
                Ok((tx, rx, fqcq)) => break (umem, descs, tx, rx, fqcq),
                Err(e) => {
                    let errno = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<io::Error>())
                        .and_then(io::Error::raw_os_error);
                    if mode.contains(BindFlags::XDP_ZEROCOPY)
                        && matches!(errno, Some(libc::EOPNOTSUPP | libc::EINVAL))
                    {
                        let why = errno.map(io::Error::from_raw_os_error);
                        copy_why = Some(format!(
                            "{ifname} refused zero-copy: {}",
                            why.map_or(e.to_string(), |w| w.to_string())
                        ));
                        mode = BindFlags::XDP_COPY;
                        continue;
                    }
                    let retry = matches!(errno, Some(libc::EBUSY | libc::EAGAIN | libc::EEXIST));
                    if retry && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        continue;
                    }
                    let why = match errno {
                        Some(n) => format!("{e}: {}", io::Error::from_raw_os_error(n)),
                        None => e.to_string(),
                    };
                    return Err(io::Error::new(
                        errno.map_or(io::ErrorKind::Other, |n| {
                            io::Error::from_raw_os_error(n).kind()
                        }),
                        format!(
                            "AF_XDP socket on {ifname} queue {queue}: {why}{}",
                            if retry {
                                format!(
                                    " (still busy after {}s: is another process bound to it?)",
                                    BIND_RETRY.as_secs()
                                )
                            } else {
                                String::new()
                            }
                        ),
                    ));
                }
            }
        };
        tracing::debug!(
            "AF_XDP {ifname} queue {queue}: bound at +{} us ({tries} tries), {}",
            started.elapsed().as_micros(),
            copy_why.as_deref().unwrap_or("zero-copy")
        );
        let (mut fq, cq) = fqcq.ok_or_else(|| io::Error::other("no fill/completion queue"))?;
        let fd = rx.fd().as_raw_fd();
        if let Some(p) = &prog {
            p.register(queue, fd)?;
        }
        let half = descs.len() / 2;
        let tx_free = descs.split_off(half);
        // SAFETY: the RX half is handed to the kernel once; it comes back
        // through the RX ring before being reused.
        unsafe {
            fq.produce(&descs);
        }
        let burst = crate::worker::BURST;
        let mac = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
            .ok()
            .and_then(|m| m.trim().parse().ok());
        Ok(XdpPort {
            name: ifname.to_string(),
            mac,
            rx_descs: descs,
            tx_batch: Vec::with_capacity(tx_free.len()),
            tx_free,
            umem,
            fq,
            cq,
            rx,
            tx,
            fd,
            copy_why,
            _prog: prog,
        })
        .map(|mut p| {
            p.rx_descs.truncate(burst);
            p
        })
    }

    /// Takes back TX frames the kernel has finished with.
    fn reclaim(&mut self) {
        let room = self.tx_batch.capacity();
        let start = self.tx_free.len();
        if start >= room {
            return;
        }
        // Grow the free list into its spare capacity with placeholder
        // descriptors, let the completion ring overwrite them, then cut to
        // what it returned.
        let template = self
            .tx_free
            .first()
            .copied()
            .or(self.rx_descs.first().copied());
        let Some(t) = template else { return };
        self.tx_free.resize(room, t);
        // SAFETY: completed descriptors are frames this port sent; the
        // kernel has released them.
        let n = unsafe {
            self.cq
                .consume(self.tx_free.get_mut(start..).unwrap_or_default())
        };
        self.tx_free.truncate(start + n);
    }
}

impl Port for XdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn framing(&self) -> Framing {
        Framing::Ethernet
    }

    fn recv(&mut self, bufs: &mut [Buf]) -> io::Result<usize> {
        let want = bufs.len().min(self.rx_descs.len());
        let descs = self.rx_descs.get_mut(..want).unwrap_or_default();
        // SAFETY: descriptors come from this port's UMEM.
        let n = unsafe { self.rx.consume(descs) };
        for (d, b) in descs.iter().take(n).zip(bufs.iter_mut()) {
            // SAFETY: the kernel wrote this frame and handed it back through
            // the RX ring; it is not in the fill ring until produced below.
            let data = unsafe { self.umem.data(d) };
            b.fill(data.contents());
        }
        if n > 0 {
            // SAFETY: the frames just consumed are handed back to the kernel;
            // nothing reads them afterwards.
            unsafe {
                self.fq.produce_and_wakeup(
                    descs.get(..n).unwrap_or_default(),
                    self.rx.fd_mut(),
                    0,
                )?;
            }
        }
        Ok(n)
    }

    /// Sends in chunks of [`KICK`] frames, one wake-up each: in copy mode
    /// the kernel transmits at most 32 descriptors per wake-up
    /// (`TX_BATCH_SIZE`), so a larger batch would leave the rest in the
    /// ring until the next send. Under load they only grow; when the
    /// traffic stops, nothing kicks them out and a TCP flow stalls on its
    /// last segments until retransmissions push them through, 32 per
    /// retransmission timeout.
    fn send(&mut self, bufs: &[Buf]) -> io::Result<usize> {
        let mut taken = 0;
        for chunk in bufs.chunks(KICK) {
            match self.send_chunk(chunk) {
                Ok(n) => {
                    taken += n;
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if taken == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(taken)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd)
    }

    fn mac(&self) -> Option<encap::MacAddr> {
        self.mac
    }

    fn kernel_drops(&self) -> u64 {
        self.rx
            .fd()
            .xdp_statistics()
            .map_or(0, |s| s.rx_dropped() + s.rx_ring_full())
    }
}

/// Frames handed to the kernel per TX wake-up (copy mode's
/// `TX_BATCH_SIZE`).
const KICK: usize = 32;

impl XdpPort {
    fn send_chunk(&mut self, bufs: &[Buf]) -> io::Result<usize> {
        self.reclaim();
        self.tx_batch.clear();
        for b in bufs {
            let Some(mut d) = self.tx_free.pop() else {
                break;
            };
            // SAFETY: a free TX frame belongs to this port and is not in any
            // ring.
            let mut data = unsafe { self.umem.data_mut(&mut d) };
            let mut c = data.cursor();
            c.set_pos(0);
            if c.write_all(b.data()).is_err() {
                self.tx_free.push(d);
                break;
            }
            self.tx_batch.push(d);
        }
        // SAFETY: each descriptor holds a frame written above and is handed
        // to the kernel once; it returns through the completion ring.
        let n = unsafe { self.tx.produce_and_wakeup(&self.tx_batch) }?;
        // Descriptors the ring did not take go back to the free list.
        for d in self.tx_batch.drain(n..) {
            self.tx_free.push(d);
        }
        Ok(n)
    }
}
