//! AF_XDP ports (xsk-rs) and the XDP program that steers frames to them.
//!
//! On the uplink, [`SteerProgram`] (bpf/steer.c) redirects to the socket
//! of the receiving queue only what Sluice owns: VXLAN to the node IP on
//! the overlay port, replies to masqueraded flows (destination port or ICMP
//! identifier in the SNAT range) and ICMP errors about them. Everything
//! else gets `XDP_PASS`, so the node's SSH, kubelet and ARP keep working.
//!
//! Frames are copied between the UMEM and the worker's buffers (one copy
//! each way, copy mode on veth); zero-copy UMEM buffers are future work.

use std::ffi::CString;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::config::{BindFlags, LibxdpFlags, SocketConfig, UmemConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{Framing, Port};
use crate::buf::Buf;

static STEER_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.o"));

/// What the steering program redirects (mirrors `struct steer_config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SteerConfig {
    /// The node IP.
    pub node_ip: Ipv4Addr,
    /// The VXLAN UDP port.
    pub vxlan_port: u16,
    /// SNAT TCP/UDP ports.
    pub ports: (u16, u16),
    /// SNAT ICMP identifiers.
    pub idents: (u16, u16),
    /// Redirect every frame (a pod's veth), ignoring the fields above.
    pub all: bool,
}

impl SteerConfig {
    /// Everything to Sluice: the host end of a pod's veth.
    pub fn all() -> SteerConfig {
        SteerConfig {
            node_ip: Ipv4Addr::UNSPECIFIED,
            vxlan_port: 0,
            ports: (0, 0),
            idents: (0, 0),
            all: true,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawSteerConfig {
    node_ip: u32,
    vxlan_port: u16,
    port_min: u16,
    port_max: u16,
    ident_min: u16,
    ident_max: u16,
    all: u16,
}

fn os_err(what: &str, rc: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(rc.unsigned_abs() as i32);
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The steering program attached to an interface; detached on drop.
#[derive(Debug)]
pub struct SteerProgram {
    obj: *mut libbpf_sys::bpf_object,
    ifindex: u32,
    xdp_flags: u32,
    xsks_fd: i32,
    frontends_fd: i32,
    /// The kernel's id of the attached program (0 until attached).
    prog_id: u32,
    /// Left attached when dropped ([`SteerProgram::leave_attached`]).
    keep: std::sync::atomic::AtomicBool,
}

// SAFETY: the bpf_object is only touched at creation and in Drop; libbpf
// objects are not tied to the thread that created them.
unsafe impl Send for SteerProgram {}
// SAFETY: the only method taking &self, `register`, writes a map through
// its file descriptor with the bpf() system call, which the kernel
// serialises; nothing in the object is mutated through a shared reference.
unsafe impl Sync for SteerProgram {}

/// The id of the program attached to `ifindex` in driver mode (0: none);
/// errors name `what` (the interface).
fn attached_prog(ifindex: u32, what: &str) -> io::Result<u32> {
    let mut id = 0u32;
    // SAFETY: `id` is a live u32 the call writes.
    let rc = unsafe {
        libbpf_sys::bpf_xdp_query_id(
            ifindex as i32,
            libbpf_sys::XDP_FLAGS_DRV_MODE as i32,
            &mut id,
        )
    };
    if rc != 0 {
        return Err(os_err(&format!("querying {what}'s XDP program"), rc));
    }
    Ok(id)
}

/// The program a previous daemon left on an interface (it handed over, or
/// died), found through the kernel: its descriptor, for an atomic replace,
/// and its `frontends` map, which the new program takes over so the
/// service frontends it steers stay steered across the restart (no bpffs
/// mount needed: the attached program holds its maps).
struct Predecessor {
    id: u32,
    prog: std::os::fd::OwnedFd,
    frontends: Option<std::os::fd::OwnedFd>,
}

fn cname(raw: &[std::os::raw::c_char]) -> String {
    raw.iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect()
}

impl Predecessor {
    /// The program attached to `ifindex` in driver mode, if any. Refuses a
    /// program that is not Sluice's: replacing it would take the interface
    /// from whoever put it there.
    fn find(ifindex: u32, ifname: &str) -> io::Result<Option<Predecessor>> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let id = attached_prog(ifindex, ifname)?;
        if id == 0 {
            return Ok(None);
        }
        // SAFETY: no pointers; a negative return is an error code.
        let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
        if fd < 0 {
            return Err(os_err(
                &format!("taking over {ifname}'s XDP program {id}"),
                fd,
            ));
        }
        // SAFETY: `fd` is a new descriptor the call returned; we own it.
        let prog = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut maps = [0u32; 8];
        let mut info = libbpf_sys::bpf_prog_info {
            nr_map_ids: maps.len() as u32,
            map_ids: maps.as_mut_ptr() as u64,
            ..Default::default()
        };
        let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
        // SAFETY: `info` and `len` are live; `map_ids` points at `maps`,
        // whose length `nr_map_ids` gives.
        let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
        if rc != 0 {
            return Err(os_err(&format!("reading {ifname}'s XDP program {id}"), rc));
        }
        let name = cname(&info.name);
        if name != "sluice_steer" {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{ifname} has XDP program {id} ({name:?}) attached, which is not Sluice's;                      Sluice will not replace it: detach it (ip link set dev {ifname} xdp off)                      or give Sluice another uplink"
                ),
            ));
        }
        let mut frontends = None;
        for mid in maps.iter().take(info.nr_map_ids as usize) {
            // SAFETY: no pointers; a negative return is an error code.
            let mfd = unsafe { libbpf_sys::bpf_map_get_fd_by_id(*mid) };
            if mfd < 0 {
                continue;
            }
            // SAFETY: `mfd` is a new descriptor the call returned.
            let owned = unsafe { OwnedFd::from_raw_fd(mfd) };
            let mut mi = libbpf_sys::bpf_map_info::default();
            let mut mlen = size_of::<libbpf_sys::bpf_map_info>() as u32;
            // SAFETY: `mi` and `mlen` are live.
            if unsafe { libbpf_sys::bpf_map_get_info_by_fd(mfd, &mut mi, &mut mlen) } == 0
                && cname(&mi.name) == "frontends"
            {
                frontends = Some(owned);
            }
        }
        Ok(Some(Predecessor {
            id,
            prog,
            frontends,
        }))
    }
}

impl SteerProgram {
    /// Loads the program, writes its configuration and attaches it to
    /// `ifname` in native (driver) mode, which veth supports. A Sluice
    /// program already there (a daemon that handed over, or died) is
    /// replaced atomically (`XDP_FLAGS_REPLACE`: the interface never goes
    /// without one, and only that program is replaced), and its service
    /// frontends map is taken over; a foreign program is refused.
    pub fn attach(ifname: &str, cfg: SteerConfig) -> io::Result<SteerProgram> {
        let ifindex = netcfg::if_index(ifname)?;
        let old = Predecessor::find(ifindex, ifname)?;
        let name = CString::new("sluice_steer").map_err(|_| io::Error::other("name"))?;
        // SAFETY: the buffer outlives the call (libbpf copies the ELF), the
        // opts pointer may be null, and every returned pointer is checked
        // before use. The object is closed on every error path and in Drop.
        unsafe {
            let obj = libbpf_sys::bpf_object__open_mem(
                STEER_OBJ.as_ptr().cast(),
                STEER_OBJ.len() as _,
                std::ptr::null(),
            );
            if obj.is_null() {
                return Err(io::Error::other("bpf_object__open_mem failed"));
            }
            let mut p = SteerProgram {
                obj,
                ifindex,
                xdp_flags: 0,
                xsks_fd: -1,
                frontends_fd: -1,
                prog_id: 0,
                keep: std::sync::atomic::AtomicBool::new(false),
            };
            // The predecessor's frontends, steered on from the first frame.
            if let Some(fd) = old.as_ref().and_then(|o| o.frontends.as_ref()) {
                let c = CString::new("frontends").map_err(|_| io::Error::other("name"))?;
                let m = libbpf_sys::bpf_object__find_map_by_name(obj, c.as_ptr());
                if m.is_null() || libbpf_sys::bpf_map__reuse_fd(m, fd.as_raw_fd()) != 0 {
                    tracing::warn!(
                        "{ifname}: the previous program's service frontends map could not be \
                         taken over (a new layout?); NodePorts are steered again once services sync"
                    );
                }
            }
            let rc = libbpf_sys::bpf_object__load(obj);
            if rc != 0 {
                return Err(os_err("loading the XDP program", rc));
            }
            let prog = libbpf_sys::bpf_object__find_program_by_name(obj, name.as_ptr());
            if prog.is_null() {
                return Err(io::Error::other("program sluice_steer not in object"));
            }
            let prog_fd = libbpf_sys::bpf_program__fd(prog);
            let map_fd = |n: &str| -> io::Result<i32> {
                let c = CString::new(n).map_err(|_| io::Error::other("name"))?;
                let fd = libbpf_sys::bpf_object__find_map_fd_by_name(obj, c.as_ptr());
                if fd < 0 { Err(os_err(n, fd)) } else { Ok(fd) }
            };
            p.xsks_fd = map_fd("xsks")?;
            p.frontends_fd = map_fd("frontends")?;
            let config_fd = map_fd("config")?;
            let raw = RawSteerConfig {
                node_ip: u32::from_ne_bytes(cfg.node_ip.octets()),
                vxlan_port: cfg.vxlan_port.to_be(),
                port_min: cfg.ports.0,
                port_max: cfg.ports.1,
                ident_min: cfg.idents.0,
                ident_max: cfg.idents.1,
                all: u16::from(cfg.all),
            };
            let key = 0u32;
            let rc = libbpf_sys::bpf_map_update_elem(
                config_fd,
                std::ptr::from_ref(&key).cast(),
                std::ptr::from_ref(&raw).cast(),
                0,
            );
            if rc != 0 {
                return Err(os_err("writing the steering config", rc));
            }
            let flags = libbpf_sys::XDP_FLAGS_DRV_MODE;
            let rc = match &old {
                Some(o) => {
                    let opts = libbpf_sys::bpf_xdp_attach_opts {
                        sz: size_of::<libbpf_sys::bpf_xdp_attach_opts>() as _,
                        old_prog_fd: o.prog.as_raw_fd(),
                        ..Default::default()
                    };
                    libbpf_sys::bpf_xdp_attach(
                        ifindex as i32,
                        prog_fd,
                        flags | libbpf_sys::XDP_FLAGS_REPLACE,
                        &opts,
                    )
                }
                None => libbpf_sys::bpf_xdp_attach(
                    ifindex as i32,
                    prog_fd,
                    flags | libbpf_sys::XDP_FLAGS_UPDATE_IF_NOEXIST,
                    std::ptr::null(),
                ),
            };
            if rc != 0 {
                let what = match &old {
                    Some(o) => format!(
                        "replacing {ifname}'s XDP program {} (it changed meanwhile: \
                         is another daemon starting?)",
                        o.id
                    ),
                    None => format!("attaching XDP to {ifname}"),
                };
                return Err(os_err(&what, rc));
            }
            p.xdp_flags = flags;
            p.prog_id = p.attached_id().unwrap_or(0);
            Ok(p)
        }
    }

    /// The id of the program attached to the interface in driver mode now
    /// (0: none).
    fn attached_id(&self) -> io::Result<u32> {
        attached_prog(self.ifindex, "the uplink")
    }

    /// Whether this program is still the one on the interface (someone may
    /// have detached or replaced it: then nothing reaches the workers).
    pub fn still_attached(&self) -> io::Result<bool> {
        Ok(self.prog_id != 0 && self.attached_id()? == self.prog_id)
    }

    /// Leaves the program on the interface when this is dropped: a daemon
    /// handing over to the next one keeps steering (and, with no socket
    /// bound, dropping) what Sluice owns until the next program replaces
    /// this one, so the kernel never sees, and resets, Sluice's flows.
    pub fn leave_attached(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The service frontends the program steers now (taken over from a
    /// predecessor, or set by [`SteerProgram::sync_frontends`]), sorted.
    pub fn frontends(&self) -> Vec<Frontend> {
        let mut out = Vec::new();
        let mut key = RawFrontend::new((Ipv4Addr::UNSPECIFIED, 0, 0));
        let mut first = true;
        // Bounded by the map's size, whatever happens to it meanwhile.
        for _ in 0..65_536 {
            let mut next = key;
            let prev = if first {
                std::ptr::null()
            } else {
                std::ptr::from_ref(&key).cast()
            };
            // SAFETY: `prev` is null or points at a live key, `next` at
            // a live key-sized value the call writes.
            let rc = unsafe {
                libbpf_sys::bpf_map_get_next_key(
                    self.frontends_fd,
                    prev,
                    std::ptr::from_mut(&mut next).cast(),
                )
            };
            if rc != 0 {
                break;
            }
            out.push((
                Ipv4Addr::from(next.addr.to_ne_bytes()),
                next.proto,
                u16::from_be(next.port),
            ));
            key = next;
            first = false;
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Directs queue `queue`'s steered frames to the AF_XDP socket `fd`.
    pub fn register(&self, queue: u32, fd: RawFd) -> io::Result<()> {
        let v = fd as u32;
        // SAFETY: key and value point at live u32s of the map's sizes.
        let rc = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.xsks_fd,
                std::ptr::from_ref(&queue).cast(),
                std::ptr::from_ref(&v).cast(),
                0,
            )
        };
        if rc != 0 {
            Err(os_err("registering the AF_XDP socket", rc))
        } else {
            Ok(())
        }
    }
}

/// Detaches whatever XDP program is attached to `ifname` in driver mode
/// (`sluice cleanup`: the program a handing-over daemon left). Returns
/// whether there was one.
pub fn detach(ifname: &str) -> io::Result<bool> {
    let ifindex = netcfg::if_index(ifname)?;
    let id = attached_prog(ifindex, ifname)?;
    if id == 0 {
        return Ok(false);
    }
    // SAFETY: no pointers; null opts are allowed.
    let rc = unsafe {
        libbpf_sys::bpf_xdp_detach(
            ifindex as i32,
            libbpf_sys::XDP_FLAGS_DRV_MODE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(os_err(&format!("detaching {ifname}'s XDP program"), rc));
    }
    Ok(true)
}

/// `struct frontend_key`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawFrontend {
    addr: u32,
    port: u16,
    proto: u8,
    pad: u8,
}

impl RawFrontend {
    fn new((addr, proto, port): Frontend) -> RawFrontend {
        RawFrontend {
            addr: u32::from_ne_bytes(addr.octets()),
            port: port.to_be(),
            proto,
            pad: 0,
        }
    }
}

/// A service frontend the program steers: address, IP protocol, port.
pub type Frontend = (Ipv4Addr, u8, u16);

impl SteerProgram {
    /// Steers exactly `new` (sorted) to the workers, given that `old`
    /// (sorted) is what the map holds: removes what left, adds what came.
    /// Idempotent: after an error (the map holds part of the change) the
    /// same call finishes it.
    pub fn sync_frontends(&self, old: &[Frontend], new: &[Frontend]) -> io::Result<()> {
        let value = 1u8;
        for f in old.iter().filter(|f| new.binary_search(f).is_err()) {
            let k = RawFrontend::new(*f);
            // SAFETY: the key points at a live value of the map's key size.
            let rc = unsafe {
                libbpf_sys::bpf_map_delete_elem(self.frontends_fd, std::ptr::from_ref(&k).cast())
            };
            if rc != 0 && rc != -libc::ENOENT {
                return Err(os_err("removing a steered service frontend", rc));
            }
        }
        for f in new.iter().filter(|f| old.binary_search(f).is_err()) {
            let k = RawFrontend::new(*f);
            // SAFETY: key and value point at live values of the map's sizes.
            let rc = unsafe {
                libbpf_sys::bpf_map_update_elem(
                    self.frontends_fd,
                    std::ptr::from_ref(&k).cast(),
                    std::ptr::from_ref(&value).cast(),
                    0,
                )
            };
            if rc != 0 {
                return Err(os_err(
                    &format!(
                        "steering service frontend {}:{}/{} (the map holds 65536; \
                         fewer NodePorts, externalIPs or LoadBalancer IPs are needed)",
                        f.0, f.2, f.1
                    ),
                    rc,
                ));
            }
        }
        Ok(())
    }
}

impl Drop for SteerProgram {
    fn drop(&mut self) {
        // SAFETY: obj came from bpf_object__open_mem and is closed once;
        // detaching with the flags used to attach is harmless if already
        // detached.
        unsafe {
            if self.xdp_flags != 0 && !self.keep.load(std::sync::atomic::Ordering::Relaxed) {
                libbpf_sys::bpf_xdp_detach(self.ifindex as i32, self.xdp_flags, std::ptr::null());
            }
            libbpf_sys::bpf_object__close(self.obj);
        }
    }
}

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

    fn send(&mut self, bufs: &[Buf]) -> io::Result<usize> {
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
