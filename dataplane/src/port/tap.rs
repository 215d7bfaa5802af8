//! The uplink's transmit side in offload mode (`uplink_mode: offload`): a
//! TAP device with UDP-tunnel GSO (Linux 6.17) whose every frame a TCX
//! program redirects to the uplink's egress (bpf/to_uplink.c).
//!
//! Copy-mode AF_XDP sends one 1.4 KB frame per skb, and over veth the
//! receiving node's stack runs once per frame in the sender's softirq;
//! the kernel's vxlan path sends one 64 KB GSO packet the device (or the
//! stack, last) segments. Here the worker's VXLAN frames of one TCP flow
//! in a transmit batch are merged ([`Coalescer`] with [`Layout::VXLAN`])
//! into one write of up to 64 KB behind a `virtio_net_hdr_v1_hash_tunnel`
//! (`GSO_TCPV4 | UDP_TUNNEL_IPV4`): the kernel makes it the same
//! `SKB_GSO_UDP_TUNNEL` packet its own vxlan device would, and a Linux
//! vxlan peer (Flannel) receives it as such. Runs of other frames (SNAT-
//! bound traffic) are merged the same way into TSO packets
//! ([`Layout::ETHERNET`]) the uplink segments. Everything else is written
//! alone, in order. Receiving stays on the AF_XDP socket.
//!
//! Measured before this module was written (a Python writer, this VM):
//! 105,340 writes of 61.5 KB in 3 s (17 Gbit/s) reached a Flannel-style
//! kernel vxlan peer across veth as 105,356 packets, decapsulated and
//! taken by its TCP whole (no checksum errors).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::gro::{Coalescer, Layout, TUNNEL_HDR_LEN};
use super::gso;
use crate::buf::Buf;

static REDIRECT_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/to_uplink.o"));

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;
const TUN_F_UDP_TUNNEL_GSO: libc::c_ulong = 0x80;
const TUN_F_UDP_TUNNEL_GSO_CSUM: libc::c_ulong = 0x100;

/// `struct ifreq` as TUNSETIFF reads it.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn last(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Opens a queue of TAP `name` (creating the device with the first) with
/// the tunnel virtio-net header and UDP-tunnel GSO. An `EINVAL` from the
/// offload request means a kernel without UDP-tunnel GSO on TUN/TAP
/// (before 6.17): the error says so.
fn open_queue(name: &str) -> io::Result<OwnedFd> {
    let path = CString::new("/dev/net/tun").map_err(|_| io::Error::other("path"))?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last("/dev/net/tun"));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE,
        _pad: [0; 22],
    };
    let n = name.len().min(15);
    if let (Some(d), Some(s)) = (req.name.get_mut(..n), name.as_bytes().get(..n)) {
        d.copy_from_slice(s);
    }
    // SAFETY: TUNSETIFF reads a live ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(last(&format!("TAP {name}")));
    }
    let size = TUNNEL_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads a live int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &size) } < 0 {
        return Err(last(&format!("TAP {name}: virtio-net header size")));
    }
    // What the TAP takes whole from the uplink (redirected by the steering
    // program) as well as from the worker: TCP and UDP GSO, inside UDP
    // tunnels too, with or without an outer UDP checksum (Linux's vxlan
    // sets one by default: without `_CSUM` here, a kernel peer's VXLAN
    // super-packets would be segmented on their way into the TAP).
    let offload = TUN_F_CSUM
        | TUN_F_TSO4
        | TUN_F_TSO6
        | TUN_F_USO4
        | TUN_F_USO6
        | TUN_F_UDP_TUNNEL_GSO
        | TUN_F_UDP_TUNNEL_GSO_CSUM;
    // SAFETY: TUNSETOFFLOAD takes the flags by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, offload) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "TAP {name}: UDP-tunnel GSO refused ({e}): this kernel has none on TUN/TAP \
                 (Linux 6.17 added it); use uplink_mode: afxdp"
            ),
        ));
    }
    // SAFETY: F_SETFL on our descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(last(&format!("TAP {name}: non-blocking")));
    }
    Ok(fd)
}

/// Whether this kernel takes UDP-tunnel GSO on a TAP: opens a throw-away
/// device (gone when the descriptor closes) and asks.
pub fn probe_tunnel_gso() -> io::Result<()> {
    // The kernel names it (tapN) when the name holds a format.
    open_queue("sluiceprobe%d").map(drop)
}

/// The redirect from the TAP's ingress to the uplink's egress: a TCX link,
/// removed on drop (with the daemon, or the device).
#[derive(Debug)]
pub struct Redirect {
    obj: *mut libbpf_sys::bpf_object,
    link: *mut libbpf_sys::bpf_link,
}

// SAFETY: the object and link are touched only at creation and in Drop;
// libbpf objects are not tied to a thread.
unsafe impl Send for Redirect {}
// SAFETY: no method takes &self.
unsafe impl Sync for Redirect {}

impl Redirect {
    /// Loads bpf/to_uplink.c, points it at `uplink` and attaches it to
    /// `tap`'s ingress.
    pub fn attach(tap: &str, uplink: &str) -> io::Result<Redirect> {
        let tap_index = netcfg::if_index(tap)?;
        let up_index = netcfg::if_index(uplink)?;
        let os = |what: &str, rc: i32| {
            let e = io::Error::from_raw_os_error(rc.unsigned_abs() as i32);
            io::Error::new(e.kind(), format!("{tap} -> {uplink}: {what}: {e}"))
        };
        // SAFETY: the ELF outlives the call (libbpf copies it); every
        // pointer returned is checked; the object (and link) are released
        // on every error path through Drop.
        unsafe {
            let obj = libbpf_sys::bpf_object__open_mem(
                REDIRECT_OBJ.as_ptr().cast(),
                REDIRECT_OBJ.len() as _,
                std::ptr::null(),
            );
            if obj.is_null() {
                return Err(io::Error::other("bpf_object__open_mem failed"));
            }
            let mut r = Redirect {
                obj,
                link: std::ptr::null_mut(),
            };
            let rc = libbpf_sys::bpf_object__load(obj);
            if rc != 0 {
                return Err(os("loading the redirect program", rc));
            }
            let map = CString::new("target").map_err(|_| io::Error::other("name"))?;
            let fd = libbpf_sys::bpf_object__find_map_fd_by_name(obj, map.as_ptr());
            if fd < 0 {
                return Err(os("map target", fd));
            }
            let key = 0u32;
            let rc = libbpf_sys::bpf_map_update_elem(
                fd,
                std::ptr::from_ref(&key).cast(),
                std::ptr::from_ref(&up_index).cast(),
                0,
            );
            if rc != 0 {
                return Err(os("writing the uplink's index", rc));
            }
            let name = CString::new("sluice_to_uplink").map_err(|_| io::Error::other("name"))?;
            let prog = libbpf_sys::bpf_object__find_program_by_name(obj, name.as_ptr());
            if prog.is_null() {
                return Err(io::Error::other("program sluice_to_uplink not in object"));
            }
            let link =
                libbpf_sys::bpf_program__attach_tcx(prog, tap_index as i32, std::ptr::null());
            let err = libbpf_sys::libbpf_get_error(link.cast());
            if link.is_null() || err != 0 {
                return Err(os("TCX attach (Linux 6.6+)", err as i32));
            }
            r.link = link;
            Ok(r)
        }
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        // SAFETY: both were created by libbpf in `attach` and are
        // released once, here.
        unsafe {
            if !self.link.is_null() {
                libbpf_sys::bpf_link__destroy(self.link);
            }
            libbpf_sys::bpf_object__close(self.obj);
        }
    }
}

/// One queue of the uplink TAP: what a worker writes its uplink frames to,
/// and (with the steering program's `sluice_to_tap` at the uplink's
/// ingress) where it reads what the uplink received for Sluice.
pub struct UplinkTap {
    fd: OwnedFd,
    /// VXLAN frames to other nodes.
    gro: Coalescer,
    /// Everything else (SNAT-bound traffic, replies to NodePort clients).
    plain: Coalescer,
    /// Write calls made (a merged run counts once).
    pub writes: u64,
    rx: RxState,
    /// Read calls that returned a packet.
    pub reads: u64,
}

/// The last packet read from the TAP and how much of it has been handed
/// out ([`gso::Plan`]).
struct RxState {
    /// The packet, up to 64 KiB and an Ethernet header, read behind its
    /// virtio-net header (a big buffer, exchanged with the worker's when
    /// the packet goes whole).
    buf: Buf,
    plan: Option<gso::Plan>,
    next: usize,
    /// Packets that could not be handed on (refused headers, a segment
    /// larger than a buffer), since the last [`super::Port::take_rx_errors`].
    errors: u64,
}

impl RxState {
    fn new() -> RxState {
        RxState {
            buf: Buf::big(0),
            plan: None,
            next: 0,
            errors: 0,
        }
    }
}

impl std::fmt::Debug for UplinkTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkTap")
            .field("fd", &self.fd)
            .field("writes", &self.writes)
            .finish()
    }
}

impl UplinkTap {
    /// Opens a queue of TAP `name` (the device is created with the first
    /// queue and brought up by [`UplinkTap::prepare`]).
    pub fn open(name: &str) -> io::Result<UplinkTap> {
        Ok(UplinkTap {
            fd: open_queue(name)?,
            gro: Coalescer::with_layout(Layout::VXLAN),
            plain: Coalescer::with_layout(Layout::ETHERNET),
            writes: 0,
            rx: RxState::new(),
            reads: 0,
        })
    }

    /// Receives up to `bufs.len()` frames without blocking: the segments
    /// of the packet read last that are not handed out yet, then more
    /// packets, each read whole (one system call for a peer's 64 KiB
    /// burst): a TCP super-packet into the next buffer whole if that one
    /// is big ([`super::tso`]), anything else cut into frames
    /// ([`gso::Plan`]).
    pub fn recv(&mut self, bufs: &mut [Buf]) -> io::Result<usize> {
        let rx = &mut self.rx;
        let mut n = 0;
        while let Some(b) = bufs.get_mut(n) {
            if let Some(plan) = rx.plan
                && rx.next < plan.count()
            {
                match plan.segment(rx.buf.data(), rx.next, b.rx_room()) {
                    Some(len) => {
                        b.set_len(len);
                        n += 1;
                        rx.next += 1;
                    }
                    None => {
                        rx.errors += 1;
                        rx.plan = None;
                    }
                }
                continue;
            }
            let room = rx.buf.rx_room();
            // SAFETY: reads into our buffer, within its length.
            let r =
                unsafe { libc::read(self.fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || n > 0 {
                    break;
                }
                return Err(e);
            }
            self.reads += 1;
            rx.buf.set_len(r as usize);
            rx.plan = None;
            rx.next = 0;
            let h = gso::VnetHdr::parse(rx.buf.data()).filter(|_| rx.buf.len() > TUNNEL_HDR_LEN);
            let Some(h) = h else {
                rx.errors += 1;
                continue;
            };
            rx.buf.pull_front(TUNNEL_HDR_LEN);
            if b.is_big()
                && let Some(g) = super::tso::accept(&h, rx.buf.data_mut(), true)
            {
                rx.buf.set_gso(Some(g));
                b.swap_frame(&mut rx.buf);
                n += 1;
                continue;
            }
            match gso::Plan::new(&h, rx.buf.data()) {
                Ok(p) => rx.plan = Some(p),
                Err(_) => rx.errors += 1,
            }
        }
        Ok(n)
    }

    /// Packets read but not handed on since the last call.
    pub fn take_rx_errors(&mut self) -> u64 {
        std::mem::take(&mut self.rx.errors)
    }

    /// The queue's descriptor (readable when a packet waits).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Brings TAP `name` up (a TAP drops writes while down) without IPv6
    /// (nothing of the host's is meant to go out through it).
    pub fn prepare(name: &str) -> io::Result<()> {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        netcfg::Rtnl::new()?.link_up(name)
    }
}

/// Writes `bufs` in order: each run of consecutive VXLAN frames through
/// `vxlan` (TCP flows merged into UDP-tunnel GSO packets), each run of
/// other frames through `plain` (TCP flows merged into TSO packets).
pub fn write_mixed<W>(
    vxlan: &mut Coalescer,
    plain: &mut Coalescer,
    bufs: &[Buf],
    mut write: W,
) -> (super::gro::Written, Option<io::Error>)
where
    W: FnMut(&[u8]) -> io::Result<usize>,
{
    let mut total = super::gro::Written::default();
    let mut last = None;
    let mut rest = bufs;
    while let Some(first) = rest.first() {
        let tunnel = Layout::VXLAN.matches(first.data());
        let n = rest
            .iter()
            .position(|b| Layout::VXLAN.matches(b.data()) != tunnel)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(n);
        let c = if tunnel { &mut *vxlan } else { &mut *plain };
        let (w, e) = c.write_batch(run.iter().map(Buf::data), &mut write);
        total.writes += w.writes;
        total.failed += w.failed;
        if e.is_some() {
            last = e;
        }
        rest = tail;
    }
    (total, last)
}

/// The segments a write carries: 1 for a frame written alone (no GSO in
/// its virtio-net header), else its payload over the segment size.
fn segments(out: &[u8]) -> usize {
    let h = |i: usize| {
        out.get(i..)
            .and_then(|b| b.first_chunk::<2>())
            .map_or(0, |b| usize::from(u16::from_ne_bytes(*b)))
    };
    if out.get(1).is_none_or(|t| *t == 0) {
        return 1;
    }
    let (hdr_len, gso) = (h(2), h(4).max(1));
    out.len()
        .saturating_sub(TUNNEL_HDR_LEN + hdr_len)
        .div_ceil(gso)
        .max(1)
}

/// Sends `bufs` in order: runs of a TCP flow's segments merged into
/// super-packets through `tap_write`, every frame that stays alone
/// through `direct` (the AF_XDP socket, which sends a batch with one
/// system call where the TAP takes one per frame), a contiguous batch at a
/// time, each batch before the merged write that follows it. Returns the
/// frames taken (sent either way), and the last error.
pub fn split_send(
    vxlan: &mut Coalescer,
    plain: &mut Coalescer,
    bufs: &[Buf],
    mut direct: impl FnMut(&[Buf]) -> io::Result<usize>,
    mut tap_write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> (usize, Option<io::Error>) {
    // Frames consumed so far; where the unsent lone frames start.
    let (mut next, mut lone_from, mut taken) = (0usize, 0usize, 0usize);
    let mut last = None;
    let mut flush = |from: usize, to: usize, taken: &mut usize, last: &mut Option<io::Error>| {
        if from < to {
            match direct(bufs.get(from..to).unwrap_or_default()) {
                Ok(n) => *taken += n,
                Err(e) => *last = Some(e),
            }
        }
    };
    let (_, err) = write_mixed(vxlan, plain, bufs, |out| {
        let segs = segments(out);
        if segs <= 1 {
            next += 1;
            return Ok(out.len());
        }
        flush(lone_from, next, &mut taken, &mut last);
        next += segs;
        lone_from = next;
        let r = tap_write(out);
        if r.is_ok() {
            taken += segs;
        }
        r
    });
    flush(lone_from, next, &mut taken, &mut last);
    (taken, err.or(last))
}

/// The uplink in offload mode: frames received through the TAP (the
/// steering program at the uplink's TCX ingress redirects what is
/// Sluice's there, super-packets whole) or, with `tap_rx` off, on the
/// AF_XDP socket (the program at XDP); a TCP flow's runs of segments sent
/// through the TAP as super-packets, the frames that stay alone through
/// the AF_XDP socket, in order.
#[derive(Debug)]
pub struct OffloadUplink {
    rx: super::xdp::XdpPort,
    tx: UplinkTap,
    tap_rx: bool,
    /// Keeps the TAP's redirect attached while any queue uses it.
    _redirect: std::sync::Arc<Redirect>,
}

impl OffloadUplink {
    /// `rx` for receiving, `tx` (a queue of the TAP `redirect` sends out
    /// of the uplink) for sending.
    pub fn new(
        rx: super::xdp::XdpPort,
        tx: UplinkTap,
        redirect: std::sync::Arc<Redirect>,
        tap_rx: bool,
    ) -> OffloadUplink {
        OffloadUplink {
            rx,
            tx,
            tap_rx,
            _redirect: redirect,
        }
    }

    /// Write calls made to the TAP (a merged run counts once).
    pub fn writes(&self) -> u64 {
        self.tx.writes
    }

    /// Packets read from the TAP (a super-packet counts once).
    pub fn reads(&self) -> u64 {
        self.tx.reads
    }

    /// Frames without [`crate::buf::Gso`]: merged runs through the TAP,
    /// lone frames through the AF_XDP socket ([`split_send`]).
    fn send_frames(&mut self, bufs: &[Buf]) -> io::Result<usize> {
        let (rx, tx) = (&mut self.rx, &mut self.tx);
        let fd = tx.fd.as_raw_fd();
        let mut writes = 0u64;
        let (n, err) = split_send(
            &mut tx.gro,
            &mut tx.plain,
            bufs,
            |b| super::Port::send(rx, b),
            |out| {
                writes += 1;
                // SAFETY: writes `out`, a live slice, to our descriptor.
                let n = unsafe { libc::write(fd, out.as_ptr().cast(), out.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            },
        );
        tx.writes += writes;
        match err {
            Some(e) if n == 0 && !bufs.is_empty() => Err(e),
            _ => Ok(n),
        }
    }
}

impl super::Port for OffloadUplink {
    fn name(&self) -> &str {
        self.rx.name()
    }

    fn framing(&self) -> super::Framing {
        super::Framing::Ethernet
    }

    fn recv(&mut self, bufs: &mut [Buf]) -> io::Result<usize> {
        if self.tap_rx {
            self.tx.recv(bufs)
        } else {
            self.rx.recv(bufs)
        }
    }

    /// Super-packets whole and merged runs through the TAP, lone frames
    /// through the AF_XDP socket ([`split_send`]), in order.
    fn send(&mut self, bufs: &[Buf]) -> io::Result<usize> {
        let mut taken = 0;
        let mut rest = bufs;
        while !rest.is_empty() {
            let k = rest
                .iter()
                .position(|b| b.gso().is_some())
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(k);
            if !run.is_empty() {
                // What is not taken is dropped by the caller, from the end:
                // nothing after it may go.
                match self.send_frames(run) {
                    Ok(n) if n == run.len() => taken += n,
                    Ok(n) => return Ok(taken + n),
                    Err(e) if taken == 0 => return Err(e),
                    Err(_) => return Ok(taken),
                }
            }
            let Some((whole, tail)) = tail.split_first() else {
                break;
            };
            self.tx.writes += 1;
            match super::tun::write_whole(self.tx.fd(), whole, TUNNEL_HDR_LEN, true) {
                Ok(()) => taken += 1,
                Err(e) if taken == 0 => return Err(e),
                Err(_) => return Ok(taken),
            }
            rest = tail;
        }
        Ok(taken)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        if self.tap_rx {
            Some(self.tx.fd())
        } else {
            self.rx.poll_fd()
        }
    }

    fn takes_gso(&self) -> bool {
        true
    }

    fn before_sleep(&mut self) {
        self.rx.before_sleep();
    }

    fn mac(&self) -> Option<encap::MacAddr> {
        self.rx.mac()
    }

    fn kernel_drops(&self) -> u64 {
        self.rx.kernel_drops()
    }

    fn hand_over(&mut self) -> Option<io::Result<super::xdp::Handed>> {
        Some(self.rx.hand_over())
    }

    fn take_rx_errors(&mut self) -> u64 {
        self.tx.take_rx_errors()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::gro::VXLAN_OUTER;
    use crate::port::gro::fuzzing::{tcp_segment, vxlan_wrap};

    fn buf(frame: &[u8]) -> Buf {
        let mut b = Buf::new();
        b.rx_room()[..frame.len()].copy_from_slice(frame);
        b.set_len(frame.len());
        b
    }

    #[test]
    fn vxlan_and_snat_runs_merge_apart_and_keep_their_order() {
        let seg = |i: u32| tcp_segment(1 + i * 1000, &[i as u8; 1000], 0x10, &[]);
        let vx: Vec<Vec<u8>> = (0..3).map(|i| vxlan_wrap(&seg(i))).collect();
        // The same segments as SNAT-bound Ethernet frames.
        let eth: Vec<Vec<u8>> = vx.iter().map(|f| f[VXLAN_OUTER - 14..].to_vec()).collect();
        let arp = vec![0xffu8; 42];
        let frames: Vec<&Vec<u8>> = vec![
            &vx[0], &vx[1], &vx[2], &eth[0], &eth[1], &eth[2], &arp, &vx[0],
        ];
        let bufs: Vec<Buf> = frames.iter().map(|f| buf(f)).collect();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let (mut a, mut b) = (
            Coalescer::with_layout(Layout::VXLAN),
            Coalescer::with_layout(Layout::ETHERNET),
        );
        let (w, e) = write_mixed(&mut a, &mut b, &bufs, |x| {
            out.push(x.to_vec());
            Ok(x.len())
        });
        assert!(e.is_none());
        assert_eq!(
            w.writes, 4,
            "VXLAN run, Ethernet run, ARP alone, VXLAN alone"
        );
        assert_eq!(out.len(), 4);
        // A UDP-tunnel GSO packet, then a TSO packet, each of 3 segments.
        assert_eq!(out[0][1], 0x21);
        assert_eq!(out[0].len(), TUNNEL_HDR_LEN + VXLAN_OUTER + 40 + 3000);
        assert_eq!(out[1][1], 0x01);
        assert_eq!(out[1].len(), TUNNEL_HDR_LEN + 14 + 40 + 3000);
        assert_eq!(u16::from_ne_bytes([out[1][6], out[1][7]]), 34, "csum_start");
        assert_eq!(out[1][20..24], [0; 4], "no tunnel offsets");
        // Then the lone frames, as they came.
        assert_eq!(out[2][TUNNEL_HDR_LEN..], arp[..]);
        assert_eq!(out[3][TUNNEL_HDR_LEN..], vx[0][..]);
    }

    #[test]
    fn merged_runs_go_to_the_tap_lone_frames_to_af_xdp_in_order() {
        let seg = |i: u32| tcp_segment(1 + i * 1000, &[i as u8; 1000], 0x10, &[]);
        let vx: Vec<Vec<u8>> = (0..3).map(|i| vxlan_wrap(&seg(i))).collect();
        let eth: Vec<Vec<u8>> = vx.iter().map(|f| f[VXLAN_OUTER - 14..].to_vec()).collect();
        let arp = vec![0xffu8; 42];
        let frames = [
            &arp, &vx[0], &vx[1], &vx[2], &arp, &arp, &eth[0], &eth[1], &vx[0],
        ];
        let bufs: Vec<Buf> = frames.iter().map(|f| buf(f)).collect();
        // What went where, in order: ("xdp", frames) or ("tap", segments).
        let log = std::cell::RefCell::new(Vec::new());
        let (mut a, mut b) = (
            Coalescer::with_layout(Layout::VXLAN),
            Coalescer::with_layout(Layout::ETHERNET),
        );
        let (n, e) = split_send(
            &mut a,
            &mut b,
            &bufs,
            |d| {
                log.borrow_mut().push(("xdp", d.len(), d[0].data().len()));
                Ok(d.len())
            },
            |out| {
                log.borrow_mut().push(("tap", segments(out), out.len()));
                Ok(out.len())
            },
        );
        assert!(e.is_none());
        assert_eq!(n, frames.len(), "every frame taken");
        let log = log.into_inner();
        let kinds: Vec<(&str, usize)> = log.iter().map(|(k, n, _)| (*k, *n)).collect();
        assert_eq!(
            kinds,
            [("xdp", 1), ("tap", 3), ("xdp", 2), ("tap", 2), ("xdp", 1)],
            "{log:?}"
        );
    }

    #[test]
    fn frames_the_af_xdp_ring_refuses_are_not_counted() {
        let arp = vec![0xffu8; 42];
        let bufs: Vec<Buf> = (0..4).map(|_| buf(&arp)).collect();
        let (mut a, mut b) = (
            Coalescer::with_layout(Layout::VXLAN),
            Coalescer::with_layout(Layout::ETHERNET),
        );
        let (n, _) = split_send(&mut a, &mut b, &bufs, |d| Ok(d.len() - 1), |o| Ok(o.len()));
        assert_eq!(n, 3);
    }
}
