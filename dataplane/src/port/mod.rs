//! Ports: where frames enter and leave a worker, behind one batch trait.
//!
//! Three backends: AF_XDP ([`xdp`], the uplink and optionally veth pods),
//! TUN ([`tun`], one device per pod) and an in-memory [`fake`] for tests
//! and benchmarks. The pipeline does not know which one it talks to.

use std::io;
use std::os::fd::RawFd;

use crate::buf::Buf;

pub mod fake;
pub mod gro;
pub mod gso;
#[cfg(feature = "io")]
pub mod steer;
#[cfg(feature = "io")]
pub mod tap;
pub mod tso;
#[cfg(feature = "io")]
pub mod tun;
#[cfg(feature = "io")]
pub mod xdp;
#[cfg(feature = "io")]
pub mod xsk;

/// What a port's frames start with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet header (AF_XDP, veth).
    Ethernet,
    /// The IP header (TUN without packet information).
    Ip,
}

/// A batch I/O port with caller-owned buffers.
pub trait Port: Send {
    /// A name for counters and logs (the interface name).
    fn name(&self) -> &str;

    /// What frames start with.
    fn framing(&self) -> Framing;

    /// Receives up to `bufs.len()` frames into `bufs[..n]` without
    /// blocking; returns `n` (0 when nothing is waiting).
    fn recv(&mut self, bufs: &mut [Buf]) -> io::Result<usize>;

    /// Transmits `bufs` in order without blocking; returns how many were
    /// taken. The caller counts the rest as dropped (queue full).
    fn send(&mut self, bufs: &[Buf]) -> io::Result<usize>;

    /// A file descriptor that becomes readable when frames wait, for the
    /// idle policy's sleep (none for the fake).
    fn poll_fd(&self) -> Option<RawFd>;

    /// Prepares to sleep on [`Port::poll_fd`]: AF_XDP sets need_wakeup
    /// here. Default: nothing.
    fn before_sleep(&mut self) {}

    /// The port's own MAC (Ethernet ports): the source of frames Sluice
    /// sends out of it, and its answer to a pod's ARP for the gateway.
    fn mac(&self) -> Option<encap::MacAddr> {
        None
    }

    /// Whether frames left unread wait in a queue that pushes back on
    /// their sender (TUN: the pod's qdisc and its TCP), rather than being
    /// lost (AF_XDP's RX ring). A pod's egress limit then shapes by not
    /// reading, instead of dropping. Default: false.
    fn holds_unread(&self) -> bool {
        false
    }

    /// Frames the kernel dropped before this port read them (AF_XDP: RX
    /// ring full or no fill-ring frame), so a loss under overload shows up
    /// in a counter. Read when counters are published, not per packet
    /// (one system call). Default: 0 (no such count).
    fn kernel_drops(&self) -> u64 {
        0
    }

    /// Whether the port moves super-packets whole ([`crate::buf::Gso`]):
    /// it reads them into the worker's big buffers when it is given some,
    /// and writes a [`tso::finish`]ed one as one packet. The worker cuts a
    /// super-packet into segments for a port that does not. Default: false.
    fn takes_gso(&self) -> bool {
        false
    }

    /// Frames this port received but could not hand to the worker (TUN: a
    /// super-packet whose offload header did not let it be split), since
    /// the last call; the worker counts them as [`Reason::RxError`] drops.
    /// Called once per poll. Default: 0.
    ///
    /// [`Reason::RxError`]: crate::counters::Reason::RxError
    fn take_rx_errors(&mut self) -> u64 {
        0
    }

    /// An AF_XDP uplink socket's state for the next daemon (a restart's
    /// hand-over), or `None` for a port that has none to hand. The port
    /// is not polled afterwards.
    #[cfg(feature = "io")]
    fn hand_over(&mut self) -> Option<io::Result<xdp::Handed>> {
        None
    }
}
