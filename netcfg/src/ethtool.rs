//! Offload switches through the `SIOCETHTOOL` ioctl (what `ethtool -K`
//! does with the legacy commands): transmit checksum offload and GRO.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_SGRO: u32 = 0x2c;
const ETHTOOL_GGRO: u32 = 0x2b;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IF_NAMESIZE],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

fn ioctl(dev: &str, cmd: u32, data: u32) -> io::Result<u32> {
    if dev.len() >= libc::IF_NAMESIZE || dev.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {dev:?}"),
        ));
    }
    // SAFETY: a plain datagram socket for the ioctl; checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor this function owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut value = EthtoolValue { cmd, data };
    let mut req = IfReq {
        name: [0; libc::IF_NAMESIZE],
        data: &mut value,
        _pad: [0; 16],
    };
    for (d, s) in req.name.iter_mut().zip(dev.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is an ifreq whose data pointer points at `value`, both
    // alive for the call; the kernel reads and writes only those.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Turns transmit checksum offload on or off (`ethtool -K DEV tx on|off`;
/// the features that need it, such as TSO, follow).
pub fn set_tx_checksum(dev: &str, on: bool) -> io::Result<()> {
    ioctl(dev, ETHTOOL_STXCSUM, u32::from(on))
        .map(|_| ())
        .map_err(|e| crate::context(format!("{dev}: tx checksum offload"), e))
}

/// Whether transmit checksum offload is on.
pub fn tx_checksum(dev: &str) -> io::Result<bool> {
    ioctl(dev, ETHTOOL_GTXCSUM, 0)
        .map(|v| v != 0)
        .map_err(|e| crate::context(format!("{dev}: tx checksum offload"), e))
}

/// Turns generic receive offload on or off (`ethtool -K DEV gro on|off`).
pub fn set_gro(dev: &str, on: bool) -> io::Result<()> {
    ioctl(dev, ETHTOOL_SGRO, u32::from(on))
        .map(|_| ())
        .map_err(|e| crate::context(format!("{dev}: GRO"), e))
}

/// Whether GRO is on.
pub fn gro(dev: &str) -> io::Result<bool> {
    ioctl(dev, ETHTOOL_GGRO, 0)
        .map(|v| v != 0)
        .map_err(|e| crate::context(format!("{dev}: GRO"), e))
}
