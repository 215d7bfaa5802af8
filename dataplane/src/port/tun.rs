//! TUN ports (tun-rs): one device per pod, created inside the pod's network
//! namespace, carrying IP packets without packet information.
//!
//! The pod sees an interface with its address (/32), the overlay MTU and a
//! default route through it, as Calico's pods see theirs (a point-to-point
//! link: no ARP).
//!
//! By default the device is opened with segmentation offload
//! (`IFF_VNET_HDR`, TSO/USO announced to the pod's kernel), the way
//! wireguard-go and tun-rs use TUN: the pod's TCP stack hands over one
//! super-packet of up to 64 KiB per `read`. A TCP one goes to the worker
//! whole ([`super::tso`]) when it has a big buffer for it; anything else
//! is split into MTU-sized segments with their checksums filled in
//! ([`super::gso::Plan`]). On the way back a super-packet is written whole,
//! and segments of one flow in a transmit batch are coalesced into one TSO
//! `write` ([`super::gro`]). Without offload (`offload: false`, or a
//! kernel that refuses it), TCP pays one system call per 1.4 KB segment in
//! each direction:
//! receiving costs one `read` per packet and the worker stops at the first
//! `EWOULDBLOCK`.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use tun_rs::{DeviceBuilder, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};

use super::gro::Coalescer;
use super::{Framing, Port};
use crate::buf::Buf;
use crate::netns;

/// A pod's TUN device.
pub struct TunPort {
    dev: SyncDevice,
    name: String,
    offload: Option<Box<Offload>>,
}

/// State of an offloading TUN port: all of it allocated when the port is
/// created and reused, so the fast path does not allocate (the transmit
/// staging vectors grow to the largest coalesced write once, then keep
/// their capacity).
struct Offload {
    /// One `read`: the virtio-net header and a packet of up to 64 KiB (a
    /// big buffer, exchanged with the worker's when the packet goes whole).
    raw: Buf,
    /// Segments split from the last read, `staged[next..count]` not yet
    /// handed to the worker (a 64 KiB read is ~46 segments, more than a
    /// burst).
    staged: Vec<Buf>,
    next: usize,
    count: usize,
    /// Packets the port read but could not split (a malformed offload
    /// header from the pod), until the worker takes the count.
    rx_errors: u64,
    /// Transmit: segments of a flow coalesced into one write.
    gro: Coalescer,
}

impl Offload {
    fn new() -> Box<Offload> {
        Box::new(Offload {
            raw: Buf::big(0),
            staged: (0..IDEAL_BATCH_SIZE).map(|_| Buf::new()).collect(),
            next: 0,
            count: 0,
            rx_errors: 0,
            gro: Coalescer::new(),
        })
    }
}

impl std::fmt::Debug for TunPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunPort").field("name", &self.name).finish()
    }
}

impl TunPort {
    /// Creates TUN device `name` in the network namespace at `netns`, with
    /// `addr/32`, `mtu`, up, and the default route through it; with
    /// segmentation offload when `offload` is set and the kernel accepts
    /// it (falls back to plain TUN otherwise). The device is persistent
    /// (TUNSETPERSIST): it outlives this process, so a pod keeps its
    /// interface, address and routes while the daemon restarts, and the
    /// next daemon attaches to it by name. [`TunPort::remove`] deletes it.
    pub fn create(
        netns: &Path,
        name: &str,
        addr: Ipv4Addr,
        mtu: u16,
        offload: bool,
    ) -> io::Result<TunPort> {
        let n = name.to_string();
        netns::run_in(netns, move || {
            let port = TunPort::create_here(&n, addr, mtu, offload)?;
            port.dev
                .persist()
                .map_err(|e| io::Error::new(e.kind(), format!("{n}: TUNSETPERSIST: {e}")))?;
            let mut nl = netcfg::Rtnl::new()?;
            nl.link_up("lo")?;
            nl.route_replace(ipnet::Ipv4Net::default(), &n, None, false)?;
            Ok(port)
        })
    }

    /// Deletes the (persistent) pod device `name` in `netns`; a namespace
    /// or device already gone is no error.
    pub fn remove(netns: &Path, name: &str) -> io::Result<()> {
        if !netns.exists() {
            return Ok(());
        }
        let n = name.to_string();
        netns::run_in(netns, move || netcfg::Rtnl::new()?.link_del(&n).map(|_| ()))
    }

    /// Creates TUN device `name` in the current network namespace with
    /// `addr/32` and `mtu`, up, and no routes (the node's host device; the
    /// caller routes what it should carry).
    pub fn create_here(name: &str, addr: Ipv4Addr, mtu: u16, offload: bool) -> io::Result<TunPort> {
        // The address and state over rtnetlink after: the same whether the
        // device is new or a persistent one a previous daemon left.
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(name)
                .mtu(mtu)
                .packet_information(false)
                .offload(offload)
                .build_sync()
        };
        let build_or_wait = |offload: bool| {
            // A persistent device still held by the daemon handing over (it
            // closes its descriptors right after releasing the node) is
            // busy for a moment: retried, for at most two seconds.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                match build(offload) {
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    r => return r,
                }
            }
        };
        let dev = match build_or_wait(offload) {
            Ok(d) => d,
            Err(_) if offload => build_or_wait(false)?,
            Err(e) => return Err(e),
        };
        dev.set_nonblocking(true)?;
        let mut nl = netcfg::Rtnl::new()?;
        nl.addr_add(name, ipnet::Ipv4Net::from(addr))?;
        nl.link_up(name)?;
        let offload = dev.tcp_gso().then(Offload::new);
        Ok(TunPort {
            dev,
            name: name.to_string(),
            offload,
        })
    }

    /// Whether the device runs with segmentation offload.
    pub fn offloading(&self) -> bool {
        self.offload.is_some()
    }
}

/// Receives with offload: hands out staged segments, reading one more
/// packet whenever they run out; at most `bufs.len()` reads. A TCP
/// super-packet goes whole into the next buffer if that one is big;
/// everything else is split into the staged segments.
fn recv_offload(dev: &SyncDevice, off: &mut Offload, bufs: &mut [Buf]) -> io::Result<usize> {
    let mut n = 0;
    let mut reads = 0;
    loop {
        while off.next < off.count {
            let (Some(dst), Some(src)) = (bufs.get_mut(n), off.staged.get_mut(off.next)) else {
                return Ok(n);
            };
            if dst.is_big() {
                // Segments of a burst not carried whole (UDP GSO), into a
                // big buffer: copied, so big buffers stay with the worker.
                dst.fill(src.data());
            } else {
                dst.swap_frame(src);
            }
            off.next += 1;
            n += 1;
        }
        if n == bufs.len() || reads == bufs.len() {
            return Ok(n);
        }
        reads += 1;
        let room = off.raw.rx_room();
        // SAFETY: reads into `room`, a live buffer of `room.len()` bytes.
        let r = unsafe { libc::read(dev.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(n),
                io::ErrorKind::Interrupted => continue,
                // The read itself failed: the device, not a packet.
                _ => return if n == 0 { Err(e) } else { Ok(n) },
            }
        }
        off.raw.set_len(r as usize);
        let Some(h) = super::gso::VnetHdr::parse(off.raw.data()) else {
            off.rx_errors += 1;
            continue;
        };
        off.raw.pull_front(VIRTIO_NET_HDR_LEN);
        if let Some(dst) = bufs.get_mut(n).filter(|b| b.is_big()) {
            // A TCP burst whole; a packet without GSO as it is (its
            // checksum finished in place): either way no copy.
            if let Some(g) = super::tso::accept(&h, off.raw.data_mut(), false) {
                off.raw.set_gso(Some(g));
                dst.swap_frame(&mut off.raw);
                n += 1;
                continue;
            }
            if h.gso_type == 0 {
                if super::tso::finish_plain(&h, off.raw.data_mut()) {
                    dst.swap_frame(&mut off.raw);
                    n += 1;
                } else {
                    off.rx_errors += 1;
                }
                continue;
            }
        }
        split(off, &h);
    }
}

/// Splits the packet in `off.raw` (read with header `h`) into the staged
/// segments; one that cannot be split is lost, and counted.
fn split(off: &mut Offload, h: &super::gso::VnetHdr) {
    off.next = 0;
    off.count = 0;
    let Ok(plan) = super::gso::Plan::for_ip(h, off.raw.data()) else {
        off.rx_errors += 1;
        return;
    };
    if plan.count() > off.staged.len() {
        off.rx_errors += 1;
        return;
    }
    for (i, seg) in off.staged.iter_mut().take(plan.count()).enumerate() {
        match plan.segment(off.raw.data(), i, seg.rx_room()) {
            Some(len) => seg.set_len(len),
            None => {
                off.rx_errors += 1;
                return;
            }
        }
    }
    off.count = plan.count();
}

/// Transmits with segmentation offload: super-packets written whole,
/// segments of one flow coalesced into TSO writes ([`Coalescer`]),
/// everything else written alone, in order; returns how many packets were
/// written (an error only if none was).
fn send_offload(dev: &SyncDevice, off: &mut Offload, bufs: &[Buf]) -> io::Result<usize> {
    let mut failed = 0;
    let mut last = None;
    let mut rest = bufs;
    while !rest.is_empty() {
        let k = rest
            .iter()
            .position(|b| b.gso().is_some())
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(k);
        if !run.is_empty() {
            let (w, err) = off
                .gro
                .write_batch(run.iter().map(Buf::data), |b| dev.send(b));
            failed += w.failed;
            last = err.or(last);
        }
        if let Some((whole, tail)) = tail.split_first() {
            if let Err(e) = write_whole(dev.as_raw_fd(), whole, VIRTIO_NET_HDR_LEN, false) {
                failed += 1;
                last = Some(e);
            }
            rest = tail;
        } else {
            rest = tail;
        }
    }
    match last {
        Some(e) if failed >= bufs.len() => Err(e),
        _ => Ok(bufs.len().saturating_sub(failed)),
    }
}

/// Writes super-packet `buf` (an Ethernet frame if `eth`, else an IP
/// packet) to `fd` behind the first `vnet` bytes of its virtio-net header
/// ([`super::tso::header`]), in one `writev`.
pub(crate) fn write_whole(fd: RawFd, buf: &Buf, vnet: usize, eth: bool) -> io::Result<()> {
    let hdr = buf
        .gso()
        .and_then(|g| super::tso::header(buf.data(), eth, g))
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let hdr = hdr.get(..vnet).unwrap_or_default();
    let data = buf.data();
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        },
    ];
    // SAFETY: both iovecs point into live slices of the given lengths,
    // which writev only reads.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Port for TunPort {
    fn name(&self) -> &str {
        &self.name
    }

    /// Unread, the pod's packets wait in its qdisc, which pushes back on
    /// its sockets.
    fn holds_unread(&self) -> bool {
        true
    }

    fn framing(&self) -> Framing {
        Framing::Ip
    }

    fn recv(&mut self, bufs: &mut [Buf]) -> io::Result<usize> {
        if let Some(off) = self.offload.as_deref_mut() {
            return recv_offload(&self.dev, off, bufs);
        }
        let mut n = 0;
        for b in bufs.iter_mut() {
            match self.dev.recv(b.rx_room()) {
                Ok(len) => {
                    b.set_len(len);
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    fn send(&mut self, bufs: &[Buf]) -> io::Result<usize> {
        if let Some(off) = self.offload.as_deref_mut() {
            return send_offload(&self.dev, off, bufs);
        }
        let mut n = 0;
        for b in bufs {
            match self.dev.send(b.data()) {
                Ok(_) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    fn takes_gso(&self) -> bool {
        self.offload.is_some()
    }

    fn take_rx_errors(&mut self) -> u64 {
        self.offload
            .as_deref_mut()
            .map_or(0, |o| std::mem::take(&mut o.rx_errors))
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.dev.as_raw_fd())
    }
}
