//! An AF_XDP socket and its UMEM, over the kernel's interface directly
//! (`linux/if_xdp.h` through libc), for one reason: a restart. The UMEM is
//! a memfd, so the socket and its frames can pass to the next daemon
//! (SCM_RIGHTS, [`crate::port::xdp::Handed`]) and be mapped back there
//! ([`Xsk::adopt`]) with nothing unbound: the queue keeps its socket, and
//! the next daemon carries on with the rings where this one left them.
//! xsk-rs (and libxdp under it) allocates its UMEM anonymously and has no
//! way to map a bound socket back, which is what a hand-over needs.
//!
//! Rings: the fill and TX rings are produced here and consumed by the
//! kernel; the RX and completion rings the other way. Each index is a
//! free-running u32 the producer stores with release ordering and the
//! consumer loads with acquire ordering, as in libxdp's `xsk.h`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes per UMEM frame (chunk).
pub const FRAME: usize = 2048;

/// Entries in each of the four rings.
pub const RING: u32 = 2048;

/// One RX or TX descriptor (`struct xdp_desc`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// Offset of the frame's data in the UMEM.
    pub addr: u64,
    /// Length of the data.
    pub len: u32,
    /// Flags (none used).
    pub options: u32,
}

/// An `mmap` of a socket ring or the UMEM, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(fd: RawFd, len: usize, offset: libc::off_t) -> io::Result<Map> {
        // SAFETY: a fresh shared mapping of `fd`; the kernel checks the
        // length against what `fd` can map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: mapped in `Map::new` with this length; nothing borrows
        // it past its owner.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// One of the four rings: its mapping and this side's cached indices.
struct Ring<T> {
    _map: Map,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    /// Next index this side produces at (producer rings).
    prod: u32,
    /// Next index this side consumes at (consumer rings).
    cons: u32,
}

impl<T: Copy> Ring<T> {
    /// Maps ring `pgoff` of socket `fd`, placed as `off` says. A ring
    /// mapped back from a bound socket (a hand-over) goes on from the
    /// indices in it.
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, pgoff: u64) -> io::Result<Ring<T>> {
        let len = off.desc as usize + RING as usize * size_of::<T>();
        let map = Map::new(fd, len, pgoff as libc::off_t)?;
        let at = |o: u64| -> io::Result<*mut u8> {
            if (o as usize) + 4 > len || !o.is_multiple_of(4) {
                return Err(io::Error::other(format!(
                    "AF_XDP ring offset {o} outside its {len}-byte mapping"
                )));
            }
            // SAFETY: within the mapping (checked above).
            Ok(unsafe { map.ptr.add(o as usize) })
        };
        let producer = at(off.producer)?.cast::<AtomicU32>();
        let consumer = at(off.consumer)?.cast::<AtomicU32>();
        let flags = at(off.flags)?.cast::<AtomicU32>();
        let descs = at(off.desc)?.cast::<T>();
        // SAFETY: aligned u32s inside the mapping, shared with the kernel
        // (atomics are how both sides touch them).
        let (prod, cons) = unsafe {
            (
                (*producer).load(Ordering::Acquire),
                (*consumer).load(Ordering::Acquire),
            )
        };
        Ok(Ring {
            _map: map,
            producer,
            consumer,
            flags,
            descs,
            prod,
            cons,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: inside the mapping, which lives as long as `self`.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as `producer`.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as `producer`.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Produces as many of `items` as there is room for; returns how many.
    fn produce(&mut self, items: &[T]) -> usize {
        if items.is_empty() {
            return 0;
        }
        // (Saturating: a consumer index ahead of ours is not the kernel's.)
        let free = RING.saturating_sub(
            self.prod
                .wrapping_sub(self.consumer().load(Ordering::Acquire)),
        );
        let n = items.len().min(free as usize);
        for (i, item) in items.iter().take(n).enumerate() {
            let slot = (self.prod.wrapping_add(i as u32) & (RING - 1)) as usize;
            // SAFETY: `slot` < RING, inside the mapping; the kernel does not
            // read it until the producer index passes it (below).
            unsafe { self.descs.add(slot).write_volatile(*item) };
        }
        self.prod = self.prod.wrapping_add(n as u32);
        self.producer().store(self.prod, Ordering::Release);
        n
    }

    /// Consumes up to `out.len()` entries into `out`; returns how many.
    fn consume(&mut self, out: &mut [T]) -> usize {
        let ready = self
            .producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.cons);
        // A producer index more than a ring ahead is not the kernel's:
        // take none rather than read garbage.
        let ready = if ready > RING { 0 } else { ready };
        let n = out.len().min(ready as usize);
        for (i, o) in out.iter_mut().take(n).enumerate() {
            let slot = (self.cons.wrapping_add(i as u32) & (RING - 1)) as usize;
            // SAFETY: as in `produce`; the kernel wrote the slot before
            // publishing the producer index loaded above.
            *o = unsafe { self.descs.add(slot).read_volatile() };
        }
        self.cons = self.cons.wrapping_add(n as u32);
        self.consumer().store(self.cons, Ordering::Release);
        n
    }
}

/// An AF_XDP socket bound to one queue, with its memfd UMEM of
/// `frames` × [`FRAME`] bytes and its four rings.
pub struct Xsk {
    fd: OwnedFd,
    memfd: OwnedFd,
    umem: Map,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<Desc>,
    tx: Ring<Desc>,
}

fn sockopt<T>(fd: RawFd, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockopt` of a plain C value (integers only: all-zero is valid).
fn getsockopt<T: Copy>(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    // SAFETY: the callers' types are C integers and structs of them.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` has room for `len` bytes.
    let r = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut T).cast(), &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn offsets(fd: RawFd) -> io::Result<libc::xdp_mmap_offsets> {
    getsockopt(fd, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS)
}

/// A UMEM of `frames` frames: a memfd, sized and mapped.
fn new_umem(frames: u32) -> io::Result<(OwnedFd, Map)> {
    // SAFETY: a NUL-terminated name; the flags are valid.
    let fd = unsafe { libc::memfd_create(c"sluice-umem".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us, owned from here.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = frames as usize * FRAME;
    // SAFETY: plain ftruncate on our memfd.
    if unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let map = Map::new(memfd.as_raw_fd(), len, 0)?;
    Ok((memfd, map))
}

impl Xsk {
    /// A new socket with a new UMEM of `frames` frames, bound to queue
    /// `queue` of interface `ifindex` with bind flags `flags`
    /// (`XDP_ZEROCOPY` or `XDP_COPY`, with `XDP_USE_NEED_WAKEUP`). The
    /// error is the failing call's errno, with its name.
    pub fn bind(ifindex: u32, queue: u32, frames: u32, flags: u16) -> io::Result<Xsk> {
        let at = |what: &'static str| {
            move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
        };
        let (memfd, umem) = new_umem(frames).map_err(at("UMEM memfd"))?;
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(at("socket(AF_XDP)")(io::Error::last_os_error()));
        }
        // SAFETY: just returned to us.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: FRAME as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sockopt(raw, libc::XDP_UMEM_REG, &reg).map_err(at("XDP_UMEM_REG"))?;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            sockopt(raw, opt, &RING).map_err(at("ring size"))?;
        }
        let x = Xsk::map(fd, memfd, umem)?;
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `addr` is a valid sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                x.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(x)
    }

    /// Maps back a socket another process bound, and its UMEM (the
    /// hand-over): the rings go on from the indices in them. Refused if
    /// `fd` is not an AF_XDP socket, if the UMEM is not `frames` frames,
    /// or if this kernel does not map a bound socket's rings (EBUSY:
    /// before Linux 6.9 only the process that bound it could).
    pub fn adopt(fd: OwnedFd, memfd: OwnedFd, frames: u32) -> io::Result<Xsk> {
        let domain: libc::c_int = getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN)?;
        if domain != libc::AF_XDP {
            return Err(io::Error::other(format!(
                "handed a socket of family {domain}, not AF_XDP"
            )));
        }
        // SAFETY: a zeroed stat (plain integers).
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat into `st`.
        if unsafe { libc::fstat(memfd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = frames as usize * FRAME;
        if st.st_size as usize != len {
            return Err(io::Error::other(format!(
                "handed a UMEM of {} bytes, not {len}",
                st.st_size
            )));
        }
        let umem = Map::new(memfd.as_raw_fd(), len, 0)
            .map_err(|e| io::Error::new(e.kind(), format!("mapping the handed UMEM: {e}")))?;
        Xsk::map(fd, memfd, umem).map_err(|e| {
            io::Error::new(e.kind(), format!("mapping the handed socket's rings: {e}"))
        })
    }

    fn map(fd: OwnedFd, memfd: OwnedFd, umem: Map) -> io::Result<Xsk> {
        let raw = fd.as_raw_fd();
        let off = offsets(raw)?;
        Ok(Xsk {
            fill: Ring::map(raw, &off.fr, libc::XDP_UMEM_PGOFF_FILL_RING)?,
            comp: Ring::map(raw, &off.cr, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?,
            rx: Ring::map(raw, &off.rx, libc::XDP_PGOFF_RX_RING as u64)?,
            tx: Ring::map(raw, &off.tx, libc::XDP_PGOFF_TX_RING as u32 as u64)?,
            fd,
            memfd,
            umem,
        })
    }

    /// The socket.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The UMEM's memfd.
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// Frames in the UMEM.
    pub fn frames(&self) -> u32 {
        (self.umem.len / FRAME) as u32
    }

    /// Whether the socket is bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        getsockopt::<libc::xdp_options>(self.fd.as_raw_fd(), libc::SOL_XDP, libc::XDP_OPTIONS)
            .is_ok_and(|o| o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// Hands frames (UMEM offsets) to the kernel to receive into, and
    /// wakes it if it asks; returns how many the ring took.
    pub fn fill(&mut self, addrs: &[u64]) -> usize {
        let n = self.fill.produce(addrs);
        if n > 0 && self.fill.needs_wakeup() {
            // SAFETY: a zero-length, non-blocking recvfrom on our socket:
            // the wake-up libxdp uses.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
        }
        n
    }

    /// Takes received descriptors.
    pub fn receive(&mut self, out: &mut [Desc]) -> usize {
        self.rx.consume(out)
    }

    /// Queues descriptors to send and kicks the kernel; returns how many
    /// the ring took. A kick refused for want of room (EAGAIN, ENOBUFS,
    /// EBUSY) is not an error: the frames stay queued for the next one.
    pub fn transmit(&mut self, descs: &[Desc]) -> io::Result<usize> {
        let n = self.tx.produce(descs);
        if n > 0 && self.tx.needs_wakeup() {
            // SAFETY: a zero-length, non-blocking sendto on our socket.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::ENOBUFS | libc::EBUSY | libc::ENETDOWN)
                ) {
                    return Err(e);
                }
            }
        }
        Ok(n)
    }

    /// Takes back frames the kernel has sent.
    pub fn completed(&mut self, out: &mut [u64]) -> usize {
        self.comp.consume(out)
    }

    /// The frame holding `d`'s data, if `d` lies inside the UMEM (the
    /// kernel's descriptors are checked, never trusted).
    pub fn data(&self, d: &Desc) -> Option<&[u8]> {
        let start = usize::try_from(d.addr).ok()?;
        let end = start.checked_add(d.len as usize)?;
        if end > self.umem.len {
            return None;
        }
        // SAFETY: inside the UMEM mapping (checked); the frame is ours
        // until it goes back to the fill ring.
        Some(unsafe { std::slice::from_raw_parts(self.umem.ptr.add(start), d.len as usize) })
    }

    /// Frame `addr` (a frame's start), to write a packet into.
    pub fn frame_mut(&mut self, addr: u64) -> Option<&mut [u8]> {
        let start = usize::try_from(addr).ok()?;
        if start % FRAME != 0 || start + FRAME > self.umem.len {
            return None;
        }
        // SAFETY: one whole frame inside the UMEM; a free TX frame is in
        // no ring, so the kernel does not touch it.
        Some(unsafe { std::slice::from_raw_parts_mut(self.umem.ptr.add(start), FRAME) })
    }

    /// Frames the kernel dropped: RX ring full or no fill frame.
    pub fn kernel_drops(&self) -> u64 {
        getsockopt::<libc::xdp_statistics>(self.fd.as_raw_fd(), libc::SOL_XDP, libc::XDP_STATISTICS)
            .map_or(0, |s| s.rx_dropped + s.rx_ring_full)
    }
}

// SAFETY: the rings and UMEM are mappings this value owns alone; raw
// pointers make it !Send, but it moves to its worker thread once and is
// used there only.
unsafe impl Send for Xsk {}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("fd", &self.fd)
            .field("frames", &self.frames())
            .finish()
    }
}
