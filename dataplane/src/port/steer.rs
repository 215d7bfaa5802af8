//! The program that steers what Sluice owns on the uplink (bpf/steer.c).
//!
//! [`SteerProgram`] redirects only what Sluice owns: VXLAN to the node IP
//! on the overlay port, replies to masqueraded flows (destination port or
//! ICMP identifier in the SNAT range), ICMP errors about them, and service
//! frontends. Everything else passes to the kernel, so the node's SSH,
//! kubelet and ARP keep working. It runs at one of two hooks ([`Hook`]):
//! XDP, to the AF_XDP socket of the receiving queue; or the uplink's TCX
//! ingress, to the offload uplink's TAP, where a peer's GSO super-packet
//! arrives whole (an XDP program on a veth makes its peer segment
//! everything, and AF_XDP has no room for a 64 KiB packet).
//!
//! Either way the program is attached without a link, so it outlives the
//! daemon: a restarting daemon's predecessor keeps steering (and, with no
//! reader, dropping) until the new one replaces it atomically.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};

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
    /// The offload uplink's TAP (its ifindex) that `sluice_to_tap`
    /// redirects to; 0: none.
    pub tap: u32,
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
            tap: 0,
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
    pad: u16,
    tap_ifindex: u32,
}

fn os_err(what: &str, rc: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(rc.unsigned_abs() as i32);
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Where the steering program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP in driver mode (`sluice_steer`): to the AF_XDP socket of the
    /// receiving queue.
    Xdp,
    /// The uplink's TCX ingress (`sluice_to_tap`): to the offload
    /// uplink's TAP ([`SteerConfig::tap`]), packets whole.
    Tcx,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::Xdp => "sluice_steer",
            Hook::Tcx => "sluice_to_tap",
        }
    }
}

/// The steering program attached to an interface; detached on drop.
#[derive(Debug)]
pub struct SteerProgram {
    obj: *mut libbpf_sys::bpf_object,
    ifindex: u32,
    hook: Hook,
    /// The program's descriptor (owned by `obj`).
    prog_fd: i32,
    /// The `config` map's descriptor (owned by `obj`).
    config_fd: i32,
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
        let id = attached_prog(ifindex, ifname)?;
        if id == 0 {
            return Ok(None);
        }
        let (name, p) = Predecessor::open(id, ifname, "XDP")?;
        if name != "sluice_steer" {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{ifname} has XDP program {id} ({name:?}) attached, which is not Sluice's; \
                     Sluice will not replace it: detach it (ip link set dev {ifname} xdp off) \
                     or give Sluice another uplink"
                ),
            ));
        }
        Ok(Some(p))
    }

    /// Program `id` (at `ifname`'s `what` hook): its name, descriptor and
    /// `frontends` map.
    fn open(id: u32, ifname: &str, what: &str) -> io::Result<(String, Predecessor)> {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: no pointers; a negative return is an error code.
        let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
        if fd < 0 {
            return Err(os_err(
                &format!("taking over {ifname}'s {what} program {id}"),
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
            return Err(os_err(
                &format!("reading {ifname}'s {what} program {id}"),
                rc,
            ));
        }
        let name = cname(&info.name);
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
        Ok((
            name,
            Predecessor {
                id,
                prog,
                frontends,
            },
        ))
    }
}

/// The ids of the programs at `ifindex`'s TCX ingress.
fn tcx_ids(ifindex: u32, what: &str) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut opts = libbpf_sys::bpf_prog_query_opts {
        sz: size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
        prog_ids: ids.as_mut_ptr(),
        ..Default::default()
    };
    opts.__bindgen_anon_1.count = ids.len() as u32;
    // SAFETY: `opts` is live; `prog_ids` points at `ids`, whose length
    // `count` gives.
    let rc = unsafe {
        libbpf_sys::bpf_prog_query_opts(ifindex as i32, libbpf_sys::BPF_TCX_INGRESS, &mut opts)
    };
    if rc != 0 {
        return Err(os_err(
            &format!("querying {what}'s TCX ingress programs"),
            rc,
        ));
    }
    // SAFETY: the kernel wrote the count it filled.
    let n = unsafe { opts.__bindgen_anon_1.count } as usize;
    Ok(ids.iter().take(n.min(ids.len())).copied().collect())
}

/// The Sluice program at `ifindex`'s TCX ingress, if any (programs of
/// others there are left alone: TCX runs several in turn).
fn tcx_sluice_programs(ifindex: u32, ifname: &str) -> io::Result<Option<Predecessor>> {
    for id in tcx_ids(ifindex, ifname)? {
        let (name, p) = Predecessor::open(id, ifname, "TCX")?;
        if name == Hook::Tcx.program() {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Removes `o`, a Sluice XDP program, from `ifindex` (only that program).
fn detach_xdp(ifindex: u32, ifname: &str, o: &Predecessor) -> io::Result<()> {
    let opts = libbpf_sys::bpf_xdp_attach_opts {
        sz: size_of::<libbpf_sys::bpf_xdp_attach_opts>() as _,
        old_prog_fd: o.prog.as_raw_fd(),
        ..Default::default()
    };
    // SAFETY: `opts` is live and sized.
    let rc = unsafe {
        libbpf_sys::bpf_xdp_detach(
            ifindex as i32,
            libbpf_sys::XDP_FLAGS_DRV_MODE | libbpf_sys::XDP_FLAGS_REPLACE,
            &opts,
        )
    };
    if rc != 0 {
        return Err(os_err(
            &format!("removing {ifname}'s XDP program {}", o.id),
            rc,
        ));
    }
    Ok(())
}

/// Removes `o`, a Sluice program, from `ifindex`'s TCX ingress.
fn detach_tcx(ifindex: u32, ifname: &str, o: &Predecessor) -> io::Result<()> {
    let opts = libbpf_sys::bpf_prog_detach_opts {
        sz: size_of::<libbpf_sys::bpf_prog_detach_opts>() as _,
        ..Default::default()
    };
    // SAFETY: `opts` is live and sized; the descriptor is ours.
    let rc = unsafe {
        libbpf_sys::bpf_prog_detach_opts(
            o.prog.as_raw_fd(),
            ifindex as i32,
            libbpf_sys::BPF_TCX_INGRESS,
            &opts,
        )
    };
    if rc != 0 {
        return Err(os_err(
            &format!("removing {ifname}'s TCX program {}", o.id),
            rc,
        ));
    }
    Ok(())
}

/// The kernel's id of the program `fd`.
fn prog_id(fd: RawFd) -> Option<u32> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` and `len` are live.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    (rc == 0).then_some(info.id)
}

impl SteerProgram {
    /// Loads the program, writes its configuration and attaches it to
    /// `ifname` in native (driver) mode, which veth supports. A Sluice
    /// program already there (a daemon that handed over, or died) is
    /// replaced atomically (`XDP_FLAGS_REPLACE`: the interface never goes
    /// without one, and only that program is replaced), and its service
    /// frontends map is taken over; a foreign program is refused.
    pub fn attach(ifname: &str, cfg: SteerConfig) -> io::Result<SteerProgram> {
        SteerProgram::attach_at(ifname, cfg, Hook::Xdp)
    }

    /// As [`SteerProgram::attach`], at `hook`. At [`Hook::Tcx`] a Sluice
    /// program at TCX ingress is replaced atomically (`BPF_F_REPLACE`), and
    /// a Sluice XDP program a daemon in the other mode left is removed once
    /// this one is in place (XDP runs first: until then it steers); at
    /// [`Hook::Xdp`], a Sluice TCX program is removed likewise. The
    /// service frontends map is taken over from either.
    pub fn attach_at(ifname: &str, cfg: SteerConfig, hook: Hook) -> io::Result<SteerProgram> {
        let ifindex = netcfg::if_index(ifname)?;
        let xdp_old = Predecessor::find(ifindex, ifname)?;
        // A kernel before 6.6 has no TCX: nothing there to take over, and
        // XDP mode must not fail for it.
        let tcx_old = match hook {
            Hook::Tcx => tcx_sluice_programs(ifindex, ifname)?,
            Hook::Xdp => tcx_sluice_programs(ifindex, ifname).unwrap_or(None),
        };
        let (old, other) = match hook {
            Hook::Xdp => (xdp_old, tcx_old),
            Hook::Tcx => (tcx_old, xdp_old),
        };
        let name = CString::new(hook.program()).map_err(|_| io::Error::other("name"))?;
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
                hook,
                prog_fd: -1,
                config_fd: -1,
                xdp_flags: 0,
                xsks_fd: -1,
                frontends_fd: -1,
                prog_id: 0,
                keep: std::sync::atomic::AtomicBool::new(false),
            };
            // The predecessor's frontends, steered on from the first frame.
            let frontends = old
                .as_ref()
                .and_then(|o| o.frontends.as_ref())
                .or_else(|| other.as_ref().and_then(|o| o.frontends.as_ref()));
            if let Some(fd) = frontends {
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
                return Err(io::Error::other(format!(
                    "program {} not in object",
                    hook.program()
                )));
            }
            let prog_fd = libbpf_sys::bpf_program__fd(prog);
            p.prog_fd = prog_fd;
            let map_fd = |n: &str| -> io::Result<i32> {
                let c = CString::new(n).map_err(|_| io::Error::other("name"))?;
                let fd = libbpf_sys::bpf_object__find_map_fd_by_name(obj, c.as_ptr());
                if fd < 0 { Err(os_err(n, fd)) } else { Ok(fd) }
            };
            p.xsks_fd = map_fd("xsks")?;
            p.frontends_fd = map_fd("frontends")?;
            p.config_fd = map_fd("config")?;
            p.configure(cfg)?;
            if hook == Hook::Tcx {
                p.attach_tcx(ifname, old.as_ref())?;
                if let Some(o) = &other {
                    detach_xdp(ifindex, ifname, o)?;
                }
                return Ok(p);
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
            if let Some(o) = &other {
                detach_tcx(ifindex, ifname, o)?;
            }
            Ok(p)
        }
    }

    /// Attaches the loaded program at the uplink's TCX ingress, replacing
    /// `old` (a Sluice program there) atomically, without a link: it stays
    /// when the daemon is gone, as an XDP program does.
    fn attach_tcx(&mut self, ifname: &str, old: Option<&Predecessor>) -> io::Result<()> {
        let mut opts = libbpf_sys::bpf_prog_attach_opts {
            sz: size_of::<libbpf_sys::bpf_prog_attach_opts>() as _,
            ..Default::default()
        };
        if let Some(o) = old {
            opts.flags = libbpf_sys::BPF_F_REPLACE;
            opts.__bindgen_anon_1.replace_prog_fd = o.prog.as_raw_fd();
        }
        // SAFETY: `opts` is live and sized; the descriptors are ours.
        let rc = unsafe {
            libbpf_sys::bpf_prog_attach_opts(
                self.prog_fd,
                self.ifindex as i32,
                libbpf_sys::BPF_TCX_INGRESS,
                &opts,
            )
        };
        if rc != 0 {
            let what = match old {
                Some(o) => format!(
                    "replacing {ifname}'s TCX program {} (it changed meanwhile: \
                     is another daemon starting?)",
                    o.id
                ),
                None => format!("attaching {ifname}'s TCX ingress program (Linux 6.6+)"),
            };
            return Err(os_err(&what, rc));
        }
        self.prog_id = prog_id(self.prog_fd).unwrap_or(0);
        Ok(())
    }

    /// The id of the program attached to the interface in driver mode now
    /// (0: none).
    fn attached_id(&self) -> io::Result<u32> {
        attached_prog(self.ifindex, "the uplink")
    }

    /// Where the program runs.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// Writes the program's configuration (the offload uplink's TAP,
    /// known once it is open, is set this way).
    pub fn configure(&self, cfg: SteerConfig) -> io::Result<()> {
        let raw = RawSteerConfig {
            node_ip: u32::from_ne_bytes(cfg.node_ip.octets()),
            vxlan_port: cfg.vxlan_port.to_be(),
            port_min: cfg.ports.0,
            port_max: cfg.ports.1,
            ident_min: cfg.idents.0,
            ident_max: cfg.idents.1,
            all: u16::from(cfg.all),
            pad: 0,
            tap_ifindex: cfg.tap,
        };
        let key = 0u32;
        // SAFETY: key and value point at live values of the map's sizes.
        let rc = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.config_fd,
                std::ptr::from_ref(&key).cast(),
                std::ptr::from_ref(&raw).cast(),
                0,
            )
        };
        if rc != 0 {
            return Err(os_err("writing the steering config", rc));
        }
        Ok(())
    }

    /// Whether this program is still the one on the interface (someone may
    /// have detached or replaced it: then nothing reaches the workers).
    pub fn still_attached(&self) -> io::Result<bool> {
        if self.prog_id == 0 {
            return Ok(false);
        }
        match self.hook {
            Hook::Xdp => Ok(self.attached_id()? == self.prog_id),
            Hook::Tcx => Ok(tcx_ids(self.ifindex, "the uplink")?.contains(&self.prog_id)),
        }
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
    // Before Linux 6.6 there is no TCX to look at.
    let tcx = tcx_sluice_programs(ifindex, ifname).unwrap_or(None);
    if let Some(o) = &tcx {
        detach_tcx(ifindex, ifname, o)?;
    }
    let id = attached_prog(ifindex, ifname)?;
    if id == 0 {
        return Ok(tcx.is_some());
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
            let keep = self.keep.load(std::sync::atomic::Ordering::Relaxed);
            if self.xdp_flags != 0 && !keep {
                libbpf_sys::bpf_xdp_detach(self.ifindex as i32, self.xdp_flags, std::ptr::null());
            }
            if self.hook == Hook::Tcx && self.prog_id != 0 && !keep {
                let opts = libbpf_sys::bpf_prog_detach_opts {
                    sz: size_of::<libbpf_sys::bpf_prog_detach_opts>() as _,
                    ..Default::default()
                };
                libbpf_sys::bpf_prog_detach_opts(
                    self.prog_fd,
                    self.ifindex as i32,
                    libbpf_sys::BPF_TCX_INGRESS,
                    &opts,
                );
            }
            libbpf_sys::bpf_object__close(self.obj);
        }
    }
}
