//! AF_XDP ports: the uplink's sockets (and optionally veth pods').
//!
//! The steering program ([`super::steer`]) picks what reaches them.
//! Frames are copied between the UMEM and the worker's buffers (one copy
//! each way, copy mode on veth); zero-copy UMEM buffers are future work.
//! The socket itself is [`super::xsk`]: a restart hands it to the next
//! daemon ([`Handed`]) instead of unbinding it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub use super::steer::{Frontend, SteerConfig, SteerProgram, detach};
use super::xsk::{Desc, FRAME, Xsk};
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
    xsk: Xsk,
    ifindex: u32,
    queue: u32,
    /// Descriptors the RX ring filled (scratch).
    rx_descs: Vec<Desc>,
    /// Their frames, going back to the fill ring (scratch).
    rx_addrs: Vec<u64>,
    /// TX frames not in flight (UMEM offsets).
    tx_free: Vec<u64>,
    /// TX descriptors being produced (scratch).
    tx_batch: Vec<Desc>,
    /// Why the socket is in copy mode (`None`: zero-copy).
    copy_why: Option<String>,
    _prog: Option<std::sync::Arc<SteerProgram>>,
}

/// A bound uplink socket on its way to the next daemon: the socket, its
/// UMEM, and which of its TX frames are free (the RX half is in the fill
/// and RX rings, where the next daemon finds it).
#[derive(Debug)]
pub struct Handed {
    /// The interface the socket is bound to.
    pub ifindex: u32,
    /// Its queue.
    pub queue: u32,
    /// The AF_XDP socket.
    pub fd: OwnedFd,
    /// The UMEM (a memfd).
    pub memfd: OwnedFd,
    /// Frames in the UMEM.
    pub frames: u32,
    /// TX frames in no ring.
    pub tx_free: Vec<u64>,
    /// Why the socket copies frames, as the first daemon found.
    pub copy_why: Option<String>,
}

impl std::fmt::Debug for XdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPort").field("name", &self.name).finish()
    }
}

impl XdpPort {
    /// Registers this socket (bound to `queue`) with `prog`, which it then
    /// keeps alive: a port opened without a program (at start-up, while
    /// the program loads) is steered to from here on.
    pub fn steer_with(
        &mut self,
        prog: &std::sync::Arc<SteerProgram>,
        queue: u32,
    ) -> io::Result<()> {
        prog.register(queue, self.xsk.fd().as_raw_fd())?;
        self._prog = Some(prog.clone());
        Ok(())
    }

    /// Why this socket copies frames (the driver's refusal of zero-copy),
    /// or `None` when it is bound in zero-copy mode.
    pub fn copy_mode(&self) -> Option<&str> {
        self.copy_why.as_deref()
    }

    /// Binds an AF_XDP socket to `ifname` queue `queue` (zero-copy where
    /// the driver has it, else copy mode; with need_wakeup) and registers
    /// it with `prog`, which the port keeps alive (the sockets of all an
    /// interface's queues share it).
    pub fn open(
        ifname: &str,
        queue: u32,
        prog: Option<std::sync::Arc<SteerProgram>>,
    ) -> io::Result<XdpPort> {
        let ifindex = netcfg::if_index(ifname)?;
        // Zero-copy first, where the driver has it (i40e, ice, mlx5, ...);
        // asked for explicitly, because a plain bind falls back to copy
        // silently. A refusal (EOPNOTSUPP: veth, ENA, virtio before 6.13)
        // moves to copy mode, and says why.
        let mut mode = libc::XDP_ZEROCOPY;
        let mut copy_why = None;
        // A queue still bound by a process that is exiting (a restart right
        // after a kill) refuses the bind with EBUSY until the kernel has
        // released it: retried for a bounded time, every error with its
        // errno.
        let started = std::time::Instant::now();
        let deadline = started + BIND_RETRY;
        let mut tries = 0u32;
        let xsk = loop {
            tries += 1;
            match Xsk::bind(ifindex, queue, FRAMES, mode | libc::XDP_USE_NEED_WAKEUP) {
                Ok(x) => break x,
                Err(e) => {
                    let errno = e.raw_os_error();
                    if mode == libc::XDP_ZEROCOPY
                        && matches!(errno, Some(libc::EOPNOTSUPP | libc::EINVAL))
                    {
                        copy_why = Some(format!("{ifname} refused zero-copy: {e}"));
                        mode = libc::XDP_COPY;
                        continue;
                    }
                    let retry = matches!(errno, Some(libc::EBUSY | libc::EAGAIN | libc::EEXIST));
                    if retry && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        continue;
                    }
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "AF_XDP socket on {ifname} queue {queue}: bind: {e}{}",
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
        // The first half of the frames receives, the second sends.
        let half = u64::from(FRAMES / 2);
        let rx: Vec<u64> = (0..half).map(|i| i * FRAME as u64).collect();
        let tx_free = (half..u64::from(FRAMES))
            .map(|i| i * FRAME as u64)
            .collect();
        let mut port = XdpPort::with(ifname, ifindex, queue, xsk, tx_free, copy_why, prog)?;
        // Handed to the kernel once; each comes back through the RX ring
        // before it is reused.
        if port.xsk.fill(&rx) != rx.len() {
            return Err(io::Error::other(format!(
                "AF_XDP {ifname} queue {queue}: the fill ring took fewer than {half} frames"
            )));
        }
        Ok(port)
    }

    /// Takes over a socket the daemon before this one bound ([`Handed`]),
    /// without unbinding it: the queue never goes without a socket.
    pub fn adopt(
        ifname: &str,
        h: Handed,
        prog: Option<std::sync::Arc<SteerProgram>>,
    ) -> io::Result<XdpPort> {
        let ifindex = netcfg::if_index(ifname)?;
        if h.ifindex != ifindex {
            return Err(io::Error::other(format!(
                "handed a socket on interface index {}, not {ifname} ({ifindex})",
                h.ifindex
            )));
        }
        let frames = h.frames;
        let half = u64::from(frames / 2) * FRAME as u64;
        let end = u64::from(frames) * FRAME as u64;
        if frames != FRAMES
            || h.tx_free.len() > (frames / 2) as usize
            || h.tx_free
                .iter()
                .any(|&a| a < half || a >= end || a % FRAME as u64 != 0)
        {
            return Err(io::Error::other(format!(
                "handed socket on queue {}: {frames} frames and {} free TX frames do not fit this daemon's layout ({FRAMES} frames)",
                h.queue,
                h.tx_free.len()
            )));
        }
        let xsk = Xsk::adopt(h.fd, h.memfd, frames)?;
        XdpPort::with(ifname, ifindex, h.queue, xsk, h.tx_free, h.copy_why, prog)
    }

    fn with(
        ifname: &str,
        ifindex: u32,
        queue: u32,
        xsk: Xsk,
        tx_free: Vec<u64>,
        copy_why: Option<String>,
        prog: Option<std::sync::Arc<SteerProgram>>,
    ) -> io::Result<XdpPort> {
        if let Some(p) = &prog {
            p.register(queue, xsk.fd().as_raw_fd())?;
        }
        let mac = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
            .ok()
            .and_then(|m| m.trim().parse().ok());
        let burst = crate::worker::BURST;
        // Room for every TX frame: reclaiming never allocates.
        let mut tx_free = tx_free;
        tx_free.reserve((FRAMES / 2) as usize - tx_free.len().min((FRAMES / 2) as usize));
        Ok(XdpPort {
            name: ifname.to_string(),
            mac,
            xsk,
            ifindex,
            queue,
            rx_descs: vec![Desc::default(); burst],
            rx_addrs: Vec::with_capacity(burst),
            tx_batch: Vec::with_capacity((FRAMES / 2) as usize),
            tx_free,
            copy_why,
            _prog: prog,
        })
    }

    /// What the next daemon needs to carry this socket on ([`Handed`]).
    /// This port must not be polled again: its rings are the next
    /// daemon's from here.
    pub fn hand_over(&mut self) -> io::Result<Handed> {
        Ok(Handed {
            ifindex: self.ifindex,
            queue: self.queue,
            fd: self.xsk.fd().try_clone_to_owned()?,
            memfd: self.xsk.memfd().try_clone_to_owned()?,
            frames: self.xsk.frames(),
            tx_free: self.tx_free.clone(),
            copy_why: self.copy_why.clone(),
        })
    }

    /// Takes back TX frames the kernel has finished with.
    fn reclaim(&mut self) {
        let start = self.tx_free.len();
        let room = (FRAMES / 2) as usize;
        if start >= room {
            return;
        }
        // Grow the free list into its spare capacity, let the completion
        // ring overwrite the new slots, then cut to what it returned.
        self.tx_free.resize(room, 0);
        let n = self
            .xsk
            .completed(self.tx_free.get_mut(start..).unwrap_or_default());
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
        let n = self.xsk.receive(descs);
        self.rx_addrs.clear();
        let mut got = 0;
        for d in descs.iter().take(n) {
            // A descriptor outside the UMEM is skipped (its frame is not
            // ours to reuse either).
            let Some(data) = self.xsk.data(d) else {
                continue;
            };
            if let Some(b) = bufs.get_mut(got) {
                b.fill(data);
                got += 1;
            }
            self.rx_addrs.push(d.addr - d.addr % FRAME as u64);
        }
        // The frames just read go straight back to the kernel (the fill
        // ring holds every RX frame, so it always takes them).
        self.xsk.fill(&self.rx_addrs);
        Ok(got)
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
        Some(self.xsk.fd().as_raw_fd())
    }

    fn mac(&self) -> Option<encap::MacAddr> {
        self.mac
    }

    fn kernel_drops(&self) -> u64 {
        self.xsk.kernel_drops()
    }

    fn hand_over(&mut self) -> Option<io::Result<Handed>> {
        Some(XdpPort::hand_over(self))
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
            let data = b.data();
            let Some(addr) = self.tx_free.pop() else {
                break;
            };
            match self
                .xsk
                .frame_mut(addr)
                .and_then(|f| f.get_mut(..data.len()))
            {
                Some(frame) => frame.copy_from_slice(data),
                None => {
                    self.tx_free.push(addr);
                    break;
                }
            }
            self.tx_batch.push(Desc {
                addr,
                len: data.len() as u32,
                options: 0,
            });
        }
        // Each descriptor holds a frame written above and goes to the
        // kernel once; it returns through the completion ring.
        let n = self.xsk.transmit(&self.tx_batch)?;
        // Descriptors the ring did not take go back to the free list.
        for d in self.tx_batch.drain(n..) {
            self.tx_free.push(d.addr);
        }
        Ok(n)
    }
}
