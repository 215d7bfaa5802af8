//! Test hosts in network namespaces, and raw AF_PACKET sockets inside them.
//!
//! Every namespace is created by the test that uses it, named with the test
//! process's PID, and deleted on drop (also when the test panics); deleting a
//! namespace deletes the veth, bridge and vxlan links inside it.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Fails the test with a clear message unless running as root; with
/// `SLUICE_SKIP_NETNS=1` it reports the skip instead (for unprivileged
/// developer runs; CI runs as root and never sets it).
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var_os("SLUICE_SKIP_NETNS").is_some() {
        eprintln!("SKIPPED {test}: needs root for network namespaces (SLUICE_SKIP_NETNS set)");
        return false;
    }
    panic!(
        "{test} needs root (network namespaces, veth, vxlan); run as root or set SLUICE_SKIP_NETNS=1 to skip"
    );
}

/// Runs a command and fails with its stderr if it fails.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace owned by the test.
pub struct Netns {
    pub name: String,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl Netns {
    /// Creates `slx<pid>-<n>-<tag>` with IPv6 disabled (so no router
    /// solicitations or MLD reports cross the links under test) and `lo` up.
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "slx{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        ]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v);
    }

    /// `ip netns exec NAME ARGS...`
    pub fn exec(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run(&v);
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it
    /// creates stay in the namespace).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path)?;
                // SAFETY: setns on an open netns fd affects only this thread,
                // which ends when the closure returns.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                f()
            })
            .join()
            .expect("netns thread panicked")
        })
    }

    /// A raw AF_PACKET socket bound to `ifname` in this namespace.
    pub fn packet_socket(&self, ifname: &str) -> PacketSocket {
        let ifname = ifname.to_owned();
        self.enter(move || PacketSocket::bind(&ifname))
            .unwrap_or_else(|e| panic!("packet socket on {}: {e}", self.name))
    }

    /// The MAC address of `ifname` in this namespace.
    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-br", "link", "show", "dev", ifname])
            .output()
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout);
        let mac = text
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no MAC in `{text}`"));
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(mac.split(':')) {
            *o = u8::from_str_radix(p, 16).expect("hex MAC");
        }
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A raw packet socket on one interface.
pub struct PacketSocket {
    fd: OwnedFd,
}

const ETH_P_ALL: u16 = 0x0003;
const PACKET_OUTGOING: u8 = 4;

impl PacketSocket {
    fn bind(ifname: &str) -> io::Result<PacketSocket> {
        let proto = i32::from(ETH_P_ALL.to_be());
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = CString::new(ifname).map_err(|_| io::Error::other("NUL in ifname"))?;
        // SAFETY: name is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: tv is a valid timeval and the length matches it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast::<libc::c_void>(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends one frame out of the bound interface.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: the pointer and length describe `frame`, valid for reads.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            io::Error::last_os_error()
        );
    }

    /// Receives one incoming (not locally sent) frame, or `None` after the
    /// 50 ms receive timeout.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: as in bind; all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf is valid for writes of its length; sll/len describe
            // a sockaddr_ll the kernel may fill.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut sll).cast::<libc::sockaddr>(),
                    &mut len,
                )
            };
            if n < 0 {
                return None;
            }
            if sll.sll_pkttype != PACKET_OUTGOING {
                buf.truncate(n as usize);
                return Some(buf);
            }
        }
    }

    /// Repeats `send` (bounded: at most `tries` times) until `matches`
    /// accepts a frame received on `rx`, waiting up to `per_try` after each
    /// send. Returns the accepted frame.
    pub fn send_until(
        &self,
        frame: &[u8],
        rx: &PacketSocket,
        tries: usize,
        per_try: Duration,
        mut matches: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        for _ in 0..tries {
            self.send(frame);
            let deadline = Instant::now() + per_try;
            while Instant::now() < deadline {
                if let Some(f) = rx.recv()
                    && matches(&f)
                {
                    return Some(f);
                }
            }
        }
        None
    }
}

/// Sends `data` over TCP from `client` to a server in `server` at
/// `addr`:5201 and checks the server received exactly those bytes.
pub fn tcp_transfer(client: &Netns, server: &Netns, addr: std::net::Ipv4Addr, data: &[u8]) {
    let listener = server
        .enter(move || std::net::TcpListener::bind((addr, 5201)))
        .expect("listen");
    let want = data.to_vec();
    let srv = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    let payload = data.to_vec();
    client
        .enter(move || {
            let mut s =
                std::net::TcpStream::connect_timeout(&(addr, 5201).into(), Duration::from_secs(5))?;
            s.set_write_timeout(Some(Duration::from_secs(20)))?;
            s.write_all(&payload)?;
            s.shutdown(std::net::Shutdown::Write)
        })
        .expect("client");
    let got = srv.join().expect("server");
    assert_eq!(got.len(), want.len(), "bytes received");
    assert!(got == want, "TCP stream differs from what was sent");
}
