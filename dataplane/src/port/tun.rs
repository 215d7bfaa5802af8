//! TUN ports (tun-rs): one device per pod, created inside the pod's network
//! namespace, carrying IP packets without packet information.
//!
//! The pod sees an interface with its address (/32), the overlay MTU and a
//! default route through it, as Calico's pods see theirs (a point-to-point
//! link: no ARP). TUN has no batch read, so receiving costs one `read` per
//! packet; the worker stops at the first `EWOULDBLOCK`.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use tun_rs::{DeviceBuilder, SyncDevice};

use super::{Framing, Port};
use crate::buf::Buf;
use crate::netns;

/// A pod's TUN device.
pub struct TunPort {
    dev: SyncDevice,
    name: String,
}

impl std::fmt::Debug for TunPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunPort").field("name", &self.name).finish()
    }
}

impl TunPort {
    /// Creates TUN device `name` in the network namespace at `netns`, with
    /// `addr/32`, `mtu`, up, and the default route through it.
    pub fn create(netns: &Path, name: &str, addr: Ipv4Addr, mtu: u16) -> io::Result<TunPort> {
        let n = name.to_string();
        let dev = netns::run_in(netns, move || {
            let dev = DeviceBuilder::new()
                .name(&n)
                .ipv4(addr, 32u8, None)
                .mtu(mtu)
                .packet_information(false)
                .build_sync()?;
            dev.set_nonblocking(true)?;
            netns::cmd(&["ip", "link", "set", "lo", "up"])?;
            netns::cmd(&["ip", "route", "replace", "default", "dev", &n])?;
            Ok(dev)
        })?;
        Ok(TunPort {
            dev,
            name: name.to_string(),
        })
    }
}

impl Port for TunPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn framing(&self) -> Framing {
        Framing::Ip
    }

    fn recv(&mut self, bufs: &mut [Buf]) -> io::Result<usize> {
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

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.dev.as_raw_fd())
    }
}
