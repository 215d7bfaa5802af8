//! Network configuration in-process, for the daemon and the CNI plugin:
//! links, addresses, routes and neighbours over rtnetlink ([`Rtnl`]),
//! offload switches over the ethtool ioctl ([`ethtool`]), and namespace
//! entry with `setns` ([`netns`]). Nodes such as Talos or Bottlerocket
//! carry no `ip`, `ethtool` or `nsenter`, and a subprocess per pod is the
//! slow path of a CNI ADD anyway.
//!
//! Every call works in the network namespace of the calling thread: run it
//! inside [`netns::run_in`] to configure another one. Errors carry the
//! errno and what was being done.

pub mod ethtool;
pub mod netns;
mod rtnl;

pub use rtnl::{Addr, Neighbour, NeighbourWatch, Route, Rtnl};

use std::io;

/// The index of interface `name` in this thread's namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name}"),
        ))
    } else {
        Ok(i)
    }
}

/// The name of interface `index` in this thread's namespace.
pub fn if_name(index: u32) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface with index {index}"),
        ));
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// `err` with what was being done in front of it (the errno kept).
pub(crate) fn context(what: impl std::fmt::Display, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}
