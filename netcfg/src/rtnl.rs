//! rtnetlink requests on a blocking socket: one request at a time, each
//! acknowledged (or its dump read to the end) before the next.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};

use ipnet::Ipv4Net;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use crate::context;

/// An IPv4 address on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    /// The interface's index.
    pub index: u32,
    /// The address and its prefix.
    pub net: Ipv4Net,
}

/// An IPv4 route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destination.
    pub dst: Ipv4Net,
    /// The gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// The output interface's index.
    pub oif: Option<u32>,
}

/// An IPv4 neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The interface's index.
    pub index: u32,
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// Its link-layer address, when resolved (reachable, stale, delay,
    /// probe, permanent or noarp entries).
    pub mac: Option<[u8; 6]>,
}

/// A route-netlink socket.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 64 * 1024;

fn link(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

fn parse_all(buf: &[u8]) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(rest) = buf.get(at..) {
        if rest.len() < 16 {
            break;
        }
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}")))?;
        let len = m.header.length as usize;
        if len == 0 {
            break;
        }
        // Messages are 4-byte aligned.
        at += (len + 3) & !3;
        out.push(m);
    }
    Ok(out)
}

impl Rtnl {
    /// A socket in this thread's network namespace.
    pub fn new() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| context("netlink socket", e))?;
        sock.bind_auto().map_err(|e| context("netlink bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| context("netlink connect", e))?;
        Ok(Rtnl {
            sock,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends `msg` with `flags` and reads until the kernel's ACK or the end
    /// of the dump; returns the messages it sent back.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut bytes = vec![0u8; m.buffer_len()];
        m.serialize(&mut bytes);
        self.sock.send(&bytes, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            self.sock.recv(&mut self.buf, 0)?;
            for m in parse_all(&self.buf)? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(i) => {
                        out.push(i);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            }
        }
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, NLM_F_ACK | flags).map(|_| ())
    }

    /// Deletes link `name`; `Ok(false)` if there was none.
    pub fn link_del(&mut self, name: &str) -> io::Result<bool> {
        let Ok(index) = crate::if_index(name) else {
            return Ok(false);
        };
        match self.ack(RouteNetlinkMessage::DelLink(link(index)), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(context(format!("deleting link {name}"), e)),
        }
    }

    /// Creates a veth pair `name` / `peer`, both with `mtu`.
    pub fn veth_add(&mut self, name: &str, peer: &str, mtu: u32) -> io::Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.into()));
        p.attributes.push(LinkAttribute::Mtu(mtu));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| context(format!("creating veth {name}/{peer}"), e))
    }

    fn set_link(
        &mut self,
        name: &str,
        what: &str,
        f: impl FnOnce(&mut LinkMessage),
    ) -> io::Result<()> {
        let index = crate::if_index(name)?;
        let mut m = link(index);
        f(&mut m);
        self.ack(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|e| context(format!("{what} {name}"), e))
    }

    /// Brings link `name` up.
    pub fn link_up(&mut self, name: &str) -> io::Result<()> {
        self.set_link(name, "bringing up", |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Moves link `name` into the network namespace open at `ns_fd`.
    pub fn link_set_netns(&mut self, name: &str, ns_fd: RawFd) -> io::Result<()> {
        self.set_link(name, "moving to another namespace:", |m| {
            m.attributes.push(LinkAttribute::NetNsFd(ns_fd));
        })
    }

    /// Renames link `name` to `to` (it must be down).
    pub fn link_rename(&mut self, name: &str, to: &str) -> io::Result<()> {
        self.set_link(name, &format!("renaming to {to}:"), |m| {
            m.attributes.push(LinkAttribute::IfName(to.into()));
        })
    }

    /// Link `name`'s attributes.
    fn link_attrs(&mut self, name: &str) -> io::Result<Vec<LinkAttribute>> {
        let index = crate::if_index(name)?;
        let got = self
            .request(RouteNetlinkMessage::GetLink(link(index)), 0)
            .map_err(|e| context(format!("reading link {name}"), e))?;
        Ok(got
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l.attributes),
                _ => None,
            })
            .unwrap_or_default())
    }

    /// The link-layer address of link `name`.
    pub fn link_mac(&mut self, name: &str) -> io::Result<[u8; 6]> {
        self.link_attrs(name)?
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| io::Error::other(format!("{name}: no Ethernet address")))
    }

    /// The MTU of link `name`.
    pub fn link_mtu(&mut self, name: &str) -> io::Result<u32> {
        self.link_attrs(name)?
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .ok_or_else(|| io::Error::other(format!("{name}: no MTU")))
    }

    /// Adds `net` (address and prefix) to link `name`; an address already
    /// there is kept.
    pub fn addr_add(&mut self, name: &str, net: Ipv4Net) -> io::Result<()> {
        let index = crate::if_index(name)?;
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = net.prefix_len();
        m.header.index = index;
        m.attributes
            .push(AddressAttribute::Local(IpAddr::V4(net.addr())));
        m.attributes
            .push(AddressAttribute::Address(IpAddr::V4(net.addr())));
        self.ack(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map_err(|e| context(format!("adding {net} to {name}"), e))
    }

    /// Every IPv4 address of this namespace.
    pub fn addrs(&mut self) -> io::Result<Vec<Addr>> {
        let mut q = AddressMessage::default();
        q.header.family = AddressFamily::Inet;
        let got = self
            .request(RouteNetlinkMessage::GetAddress(q), NLM_F_DUMP)
            .map_err(|e| context("listing addresses", e))?;
        Ok(got
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    let ip = a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })?;
                    Some(Addr {
                        index: a.header.index,
                        net: Ipv4Net::new(ip, a.header.prefix_len).ok()?,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds or replaces the main-table route to `dst` through link `dev`,
    /// via `gateway` if given (`onlink`: the gateway need not be in a
    /// connected subnet, as a pod's /32 address has none).
    pub fn route_replace(
        &mut self,
        dst: Ipv4Net,
        dev: &str,
        gateway: Option<Ipv4Addr>,
        onlink: bool,
    ) -> io::Result<()> {
        let index = crate::if_index(dev)?;
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = dst.prefix_len();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        if onlink {
            m.header.flags = RouteFlags::Onlink;
        }
        if dst.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    dst.network(),
                )));
        }
        if let Some(gw) = gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        self.ack(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map_err(|e| context(format!("route {dst} dev {dev}"), e))
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let got = self
            .request(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)
            .map_err(|e| context("listing routes", e))?;
        Ok(got
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.table == RouteHeader::RT_TABLE_MAIN =>
                {
                    let mut dst = Ipv4Addr::UNSPECIFIED;
                    let (mut gateway, mut oif) = (None, None);
                    for a in &r.attributes {
                        match a {
                            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                            RouteAttribute::Oif(i) => oif = Some(*i),
                            _ => {}
                        }
                    }
                    Some(Route {
                        dst: Ipv4Net::new(dst, r.header.destination_prefix_length).ok()?,
                        gateway,
                        oif,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// The IPv4 neighbour table.
    pub fn neighbours(&mut self) -> io::Result<Vec<Neighbour>> {
        let mut q = NeighbourMessage::default();
        q.header.family = AddressFamily::Inet;
        let got = self
            .request(RouteNetlinkMessage::GetNeighbour(q), NLM_F_DUMP)
            .map_err(|e| context("listing neighbours", e))?;
        Ok(got.iter().filter_map(neighbour).collect())
    }
}

/// The entry a neighbour message describes (a deletion as unresolved).
fn neighbour(m: &RouteNetlinkMessage) -> Option<Neighbour> {
    let (n, deleted) = match m {
        RouteNetlinkMessage::NewNeighbour(n) => (n, false),
        RouteNetlinkMessage::DelNeighbour(n) => (n, true),
        _ => return None,
    };
    if n.header.family != AddressFamily::Inet {
        return None;
    }
    let ip = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    let resolved = matches!(
        n.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    let mac = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLocalAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    });
    Some(Neighbour {
        index: n.header.ifindex,
        ip,
        mac: mac.filter(|m| resolved && !deleted && *m != [0; 6]),
    })
}

/// Neighbour changes as the kernel announces them (RTNLGRP_NEIGH).
#[derive(Debug)]
pub struct NeighbourWatch {
    sock: Socket,
    buf: Vec<u8>,
}

impl NeighbourWatch {
    /// Subscribes in this thread's network namespace.
    pub fn new() -> io::Result<NeighbourWatch> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| context("netlink socket", e))?;
        // RTMGRP_NEIGH: the legacy group bit of RTNLGRP_NEIGH (3).
        sock.bind(&SocketAddr::new(0, 1 << 2))
            .map_err(|e| context("netlink bind (neighbour group)", e))?;
        Ok(NeighbourWatch {
            sock,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// The socket, to wait on (readable when a change arrived).
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Waits up to `timeout` for changes; returns those that arrived
    /// (empty on timeout).
    pub fn wait(&mut self, timeout: std::time::Duration) -> io::Result<Vec<Neighbour>> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        if rc == 0 {
            return Ok(Vec::new());
        }
        self.buf.clear();
        self.buf.reserve(RECV_BUF);
        self.sock.recv(&mut self.buf, 0)?;
        Ok(parse_all(&self.buf)?
            .into_iter()
            .filter_map(|m| match m.payload {
                NetlinkPayload::InnerMessage(i) => neighbour(&i),
                _ => None,
            })
            .collect())
    }
}
