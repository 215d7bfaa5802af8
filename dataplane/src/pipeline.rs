//! The per-packet path, run to completion on the worker that received the
//! packet: parse -> anti-spoof -> route (longest prefix) -> local delivery,
//! VXLAN to a peer, or conntrack + SNAT to the world; and from the uplink,
//! VXLAN decap from known VTEPs or reverse NAT, to a pod.
//!
//! Each function returns the port the buffer leaves by, or the one
//! [`Reason`] it is dropped for.

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::ethernet::{self, EthernetFrame, ethertype};
use encap::ipv4::Ipv4Packet;
use encap::vxlan::{self, OVERHEAD};
use encap::{MacAddr, ip_proto};
use nat::{Direction, Origin, Verdict};

use crate::buf::Buf;
use crate::counters::Reason;
use crate::icmp;
use crate::port::Framing;
use crate::route::{Peer, Route, Snapshot};
use crate::worker::{Handoff, Out, Role, Worker};

/// Writes an Ethernet header in front of the frame.
pub(crate) fn push_ethernet(buf: &mut Buf, dst: MacAddr, src: MacAddr) -> Result<(), Reason> {
    let h = buf
        .push_front(ethernet::HEADER_LEN)
        .ok_or(Reason::Malformed)?;
    let [t0, t1] = ethertype::IPV4.to_be_bytes();
    let (d, rest) = h.split_at_mut(6);
    let (s, t) = rest.split_at_mut(6);
    d.copy_from_slice(&dst.0);
    s.copy_from_slice(&src.0);
    t.copy_from_slice(&[t0, t1]);
    Ok(())
}

/// Checks the IPv4 packet at the front of `buf` and trims link padding:
/// returns (source, destination).
pub(crate) fn check_ipv4(buf: &mut Buf) -> Result<(Ipv4Addr, Ipv4Addr), Reason> {
    if buf.data().first().map(|b| b >> 4) != Some(4) {
        return Err(Reason::NotIpv4);
    }
    let ip = Ipv4Packet::new_checked(buf.data()).map_err(|_| Reason::Malformed)?;
    if !ip.verify_checksum() {
        return Err(Reason::BadIpChecksum);
    }
    let (src, dst, total) = (ip.src_addr(), ip.dst_addr(), ip.total_len());
    // Ethernet pads short frames to 60 bytes: the IP length is the truth.
    buf.truncate(usize::from(total));
    Ok((src, dst))
}

/// Strips an Ethernet header carrying IPv4.
pub(crate) fn strip_ethernet(buf: &mut Buf) -> Result<(), Reason> {
    let eth = EthernetFrame::new_checked(buf.data()).map_err(|_| Reason::Malformed)?;
    if eth.ethertype() != ethertype::IPV4 {
        return Err(Reason::NotIpv4);
    }
    buf.pull_front(ethernet::HEADER_LEN);
    Ok(())
}

impl Worker {
    /// Handles one frame received on port `from`.
    pub(crate) fn handle(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        from: usize,
        buf: &mut Buf,
    ) -> Result<Out, Reason> {
        let Some(slot) = self.port(from) else {
            return Err(Reason::NoSuchPod);
        };
        match (slot.role, slot.port.framing()) {
            (Role::Uplink, _) => self.uplink_rx(snap, now, buf, false),
            (Role::Host { .. }, _) => self.pod_rx(snap, now, Some(from), None, buf),
            (Role::Pod { ip, .. }, framing) => {
                if framing == Framing::Ethernet {
                    let eth =
                        EthernetFrame::new_checked(buf.data()).map_err(|_| Reason::Malformed)?;
                    if eth.ethertype() == ethertype::ARP {
                        let mac = slot.port.mac().unwrap_or(snap.node.vtep_mac);
                        return self.arp(from, ip, mac, buf).map(Out::Port);
                    }
                    strip_ethernet(buf)?;
                }
                self.pod_rx(snap, now, Some(from), Some(ip), buf)
            }
        }
    }

    /// Leaves by pod port `to`, with an Ethernet header if it takes one
    /// (from the port's own MAC, the pod's gateway, to the pod's MAC).
    pub(crate) fn deliver(
        &self,
        snap: &Snapshot,
        to: usize,
        buf: &mut Buf,
    ) -> Result<usize, Reason> {
        if let Some(slot) = self.port(to)
            && slot.port.framing() == Framing::Ethernet
        {
            let Role::Pod { mac, .. } = slot.role else {
                return Err(Reason::NoSuchPod);
            };
            let src = slot.port.mac().unwrap_or(snap.node.vtep_mac);
            push_ethernet(buf, mac.unwrap_or(MacAddr::BROADCAST), src)?;
        }
        Ok(to)
    }

    /// Towards local pod `dst`: out of its port if this worker owns it
    /// (un-DNATed first if it answers a service flow balanced here), else
    /// handed to the worker that does.
    pub(crate) fn toward_pod(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        dst: Ipv4Addr,
        buf: &mut Buf,
    ) -> Result<Out, Reason> {
        if let Some(to) = self.pod_port(dst) {
            self.services_reverse(snap, now, buf)?;
            self.police_ingress(snap, now, buf)?;
            return self.deliver(snap, to, buf).map(Out::Port);
        }
        match snap.pod_worker(dst) {
            Some(w) if w != self.id() => Ok(Out::Worker(w, Handoff::Deliver(dst))),
            _ => Err(Reason::NoSuchPod),
        }
    }

    /// A frame another worker handed over.
    pub(crate) fn handed(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        kind: Handoff,
        buf: &mut Buf,
    ) -> Result<Out, Reason> {
        match kind {
            // Never handed on again: a pod that moved is a counted drop.
            Handoff::Deliver(ip) => {
                let to = self.pod_port(ip).ok_or(Reason::NoSuchPod)?;
                self.services_reverse(snap, now, buf)?;
                self.police_ingress(snap, now, buf)?;
                self.deliver(snap, to, buf).map(Out::Port)
            }
            Handoff::FromHost(ip) => {
                let to = self.pod_port(ip).ok_or(Reason::NoSuchPod)?;
                self.track_from_host(now, buf)?;
                self.police_ingress(snap, now, buf)?;
                self.deliver(snap, to, buf).map(Out::Port)
            }
            Handoff::Uplink => self.uplink_rx(snap, now, buf, true),
            // A pod's packet to the gateway address answering a flow this
            // worker masqueraded: as if this worker had received it.
            Handoff::Masqueraded => {
                let (src, _) = check_ipv4(buf)?;
                self.pod_rx(snap, now, None, Some(src), buf)
            }
        }
    }

    /// The worker owning the masqueraded flow a frame from the uplink
    /// answers: the SNAT port (or ICMP identifier) names it
    /// ([`nat::SnatConfig::owner_of`]). `None` when not decidable (the
    /// frame is processed here and meets conntrack's verdict).
    fn reply_owner(&self, ip: &Ipv4Packet<&[u8]>) -> Option<u8> {
        let snat = self.snat()?;
        if snat.worker.1 <= 1 {
            return None;
        }
        let l4 = ip.payload();
        let (range, port) = match ip.protocol() {
            // The destination port: the translated source port of the flow.
            ip_proto::TCP | ip_proto::UDP => (
                snat.ports,
                l4.get(2..4)
                    .and_then(|x| <[u8; 2]>::try_from(x).ok())
                    .map(u16::from_be_bytes)?,
            ),
            ip_proto::ICMP => {
                let icmp = encap::icmp::IcmpPacket::new_checked_v4(l4).ok()?;
                match icmp.msg_type() {
                    0 => (snat.icmp_ids, icmp.echo_ident()),
                    _ => match icmp.quoted().ok()?.l4 {
                        encap::icmp::QuotedL4::Ports { src, .. } => (snat.ports, src),
                        encap::icmp::QuotedL4::EchoId(id) => (snat.icmp_ids, id),
                        encap::icmp::QuotedL4::None => return None,
                    },
                }
            }
            _ => return None,
        };
        snat.owner_of(range, port)
            .and_then(|w| u8::try_from(w).ok())
    }

    /// Proxy ARP on an Ethernet pod port (RFC 826): every request from the
    /// pod for another address (its gateway, or a neighbour in its /24) is
    /// answered with the port's MAC, so all its traffic comes to Sluice,
    /// as Calico's proxy_arp does.
    fn arp(
        &mut self,
        from: usize,
        pod_ip: Ipv4Addr,
        mac: MacAddr,
        buf: &mut Buf,
    ) -> Result<usize, Reason> {
        let p = buf.data_mut();
        let Some(arp) = p.get_mut(ethernet::HEADER_LEN..ethernet::HEADER_LEN + 28) else {
            return Err(Reason::Malformed);
        };
        // Ethernet/IPv4, request.
        if arp.get(..8) != Some(&[0, 1, 8, 0, 6, 4, 0, 1]) {
            return Err(Reason::ArpIgnored);
        }
        let sha: [u8; 6] = arp
            .get(8..14)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default();
        let spa: [u8; 4] = arp
            .get(14..18)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default();
        let tpa: [u8; 4] = arp
            .get(24..28)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default();
        if Ipv4Addr::from(spa) != pod_ip || Ipv4Addr::from(tpa) == pod_ip {
            return Err(Reason::ArpIgnored);
        }
        let mut reply = [0u8; 28];
        reply[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        reply[8..14].copy_from_slice(&mac.0);
        reply[14..18].copy_from_slice(&tpa);
        reply[18..24].copy_from_slice(&sha);
        reply[24..28].copy_from_slice(&spa);
        arp.copy_from_slice(&reply);
        if let Some(h) = p
            .get_mut(..12)
            .and_then(|h| <&mut [u8; 12]>::try_from(h).ok())
        {
            h[..6].copy_from_slice(&sha);
            h[6..12].copy_from_slice(&mac.0);
        }
        buf.truncate(ethernet::HEADER_LEN + 28);
        self.counters.arp_replies += 1;
        Ok(from)
    }

    /// Decrements the TTL of a packet being forwarded. When it runs out,
    /// turns the buffer into an ICMP time exceeded for the sender and
    /// returns `Err(port back to the sender)` (or the drop reason if no
    /// error may be sent).
    pub(crate) fn decrement_ttl(
        &mut self,
        snap: &Snapshot,
        back: Option<usize>,
        buf: &mut Buf,
    ) -> Result<(), Result<usize, Reason>> {
        self.ttl_expired(snap, back, buf)?;
        let mut ip = Ipv4Packet::new_unchecked(buf.data_mut());
        let ttl = ip.ttl();
        ip.set_ttl(ttl.saturating_sub(1));
        Ok(())
    }

    /// The TTL check of [`Self::decrement_ttl`] alone (Linux's
    /// `ip_forward` checks TTL, then the MTU, then decrements, so an ICMP
    /// fragmentation needed quotes the TTL the sender used).
    fn ttl_expired(
        &mut self,
        snap: &Snapshot,
        back: Option<usize>,
        buf: &mut Buf,
    ) -> Result<(), Result<usize, Reason>> {
        if Ipv4Packet::new_unchecked(buf.data()).ttl() > 1 {
            return Ok(());
        }
        // Without an error to send, the caller counts the drop (once).
        let Some(back) = back else {
            return Err(Err(Reason::TtlExceeded));
        };
        if icmp::make_error(
            buf,
            snap.node.gateway_ip,
            icmp::TIME_EXCEEDED,
            icmp::TTL_EXCEEDED,
            0,
        ) {
            // The packet is dropped and counted here; the buffer now
            // carries the error, a frame of its own.
            self.counters.drop(Reason::TtlExceeded);
            self.counters.icmp_sent += 1;
            Err(self.deliver(snap, back, buf))
        } else {
            Err(Err(Reason::TtlExceeded))
        }
    }

    /// Tracks a packet the node's stack sends to a local pod from outside
    /// the cluster (a hostPort or NodePort client the node DNATed), so the
    /// pod's replies return through the host device, where the node undoes
    /// its DNAT, instead of leaving masqueraded: the pod sees the client's
    /// address.
    fn track_from_host(&mut self, now: Duration, buf: &mut Buf) -> Result<(), Reason> {
        match self.ct.process(now, buf.data_mut(), Origin::Host) {
            Verdict::Accept(_) => Ok(()),
            Verdict::Drop(r) => Err(Reason::Conntrack(r)),
            // No service hook here: never refused.
            Verdict::Refused => Err(Reason::Conntrack(nat::DropReason::NoEntry)),
        }
    }

    /// A packet from pod `pod_ip`, or from the node's own stack (`None`:
    /// any source, and never masqueraded).
    fn pod_rx(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        from: Option<usize>,
        pod_ip: Option<Ipv4Addr>,
        buf: &mut Buf,
    ) -> Result<Out, Reason> {
        let (src, mut dst) = check_ipv4(buf)?;
        if pod_ip.is_some_and(|ip| ip != src) {
            return Err(Reason::Spoofed);
        }
        // NetworkPolicy: the pod's egress, by what it sent (a packet
        // handed over from another worker was checked there).
        let mut first = crate::enforce::Pending::Done;
        if pod_ip.is_some() && from.is_some() {
            first = self.egress_lookup(snap, now, buf)?;
        }
        // Services first: DNAT (or reject), or the reverse of a
        // masqueraded flow; then route by the new destination.
        if snap.services.concerns(dst) || (dst == snap.node.gateway_ip && !snap.services.is_empty())
        {
            let origin = if pod_ip.is_some() {
                Origin::Pod
            } else {
                Origin::Host
            };
            if let Some(out) = self.services_egress(snap, now, from, origin, buf)? {
                // Leaving for an outside client or another worker: a new
                // flow is decided for the destination it now carries.
                if let crate::enforce::Pending::First(k) = first {
                    self.egress_first(snap, now, k, buf)?;
                }
                return Ok(out);
            }
            dst = Ipv4Packet::new_unchecked(buf.data()).dst_addr();
        }
        // A new flow: decided for its destination after DNAT, before SNAT.
        if let crate::enforce::Pending::First(k) = first {
            self.egress_first(snap, now, k, buf)?;
        }
        // To the node itself, through the host device when there is one.
        if dst == snap.node.ip
            && pod_ip.is_some()
            && (self.pod_port(dst).is_some() || snap.pod_worker(dst).is_some())
        {
            if let Err(r) = self.decrement_ttl(snap, from, buf) {
                return r.map(Out::Port);
            }
            return self.toward_pod(snap, now, dst, buf);
        }
        match snap.route(dst) {
            Route::Local => {
                if self.pod_port(dst).is_none() && snap.pod_worker(dst).is_none() {
                    return Err(Reason::NoSuchPod);
                }
                if let Err(r) = self.decrement_ttl(snap, from, buf) {
                    return r.map(Out::Port);
                }
                // From the node on behalf of a client outside the cluster.
                if pod_ip.is_none()
                    && src != snap.node.ip
                    && matches!(snap.route(src), Route::External)
                {
                    if self.pod_port(dst).is_none() {
                        return match snap.pod_worker(dst) {
                            Some(w) if w != self.id() => Ok(Out::Worker(w, Handoff::FromHost(dst))),
                            _ => Err(Reason::NoSuchPod),
                        };
                    }
                    self.track_from_host(now, buf)?;
                }
                self.toward_pod(snap, now, dst, buf)
            }
            Route::Peer(peer) => self.encap_to_peer(snap, from, peer, buf),
            Route::Unroutable => Err(Reason::NoRoute),
            // The node routes only cluster addresses to its host device.
            Route::External if pod_ip.is_none() => Err(Reason::NoRoute),
            Route::External => {
                // A Local-policy backend answering an outside client: the
                // flow lives on the worker the client's address picks.
                if let Some(w) = self.external_reply_owner(snap, buf)
                    && w != self.id()
                {
                    return Ok(Out::Worker(w, Handoff::Masqueraded));
                }
                if let Err(r) = self.decrement_ttl(snap, from, buf) {
                    return r.map(Out::Port);
                }
                match self.ct.process(now, buf.data_mut(), Origin::Pod) {
                    // A reply to a client the node connected to this pod
                    // (only those flows start on the far side): back
                    // through the host device.
                    Verdict::Accept(a) if a.dir == Direction::Reply && !a.translated => {
                        return self.toward_pod(snap, now, snap.node.gateway_ip, buf);
                    }
                    Verdict::Accept(a) => {
                        if a.translated {
                            self.counters.nat += 1;
                        }
                        // A Local-policy backend answering an outside client.
                        self.count_service_packet(a.service, buf.len());
                    }
                    Verdict::Drop(r) => return Err(Reason::Conntrack(r)),
                    // No service hook here: never refused.
                    Verdict::Refused => return Err(Reason::NoRoute),
                }
                let gw = snap.node.gateway_mac.ok_or(Reason::NoNeighbour)?;
                let up = self.uplink().ok_or(Reason::NoNeighbour)?;
                push_ethernet(buf, gw, snap.node.uplink_mac)?;
                Ok(Out::Port(up))
            }
        }
    }

    /// To a pod on a peer node: VXLAN, with the overlay MTU enforced
    /// (Linux vxlan's fragmentation needed, sent back through `from`).
    pub(crate) fn encap_to_peer(
        &mut self,
        snap: &Snapshot,
        from: Option<usize>,
        peer: &Peer,
        buf: &mut Buf,
    ) -> Result<Out, Reason> {
        if let Err(r) = self.ttl_expired(snap, from, buf) {
            return r.map(Out::Port);
        }
        let tunnel = peer.tunnel.as_ref().ok_or(Reason::NoNeighbour)?;
        let mtu = usize::from(snap.node.uplink_mtu);
        // Outer IP packet = inner IP packet + inner Ethernet + VXLAN
        // + UDP + IPv4 = inner + 50; a super-packet's largest segment.
        let len = match buf.gso() {
            Some(g) => crate::port::tso::segment_ip_len(buf.data(), false, g).unwrap_or(usize::MAX),
            None => buf.len(),
        };
        if len.saturating_add(OVERHEAD) > mtu {
            let df = Ipv4Packet::new_unchecked(buf.data()).dont_frag();
            if !df {
                return Err(Reason::TooBig);
            }
            // RFC 1191 / Linux vxlan: tell the sender the overlay MTU.
            let inner_mtu = mtu.saturating_sub(OVERHEAD) as u32;
            if !icmp::make_error(
                buf,
                snap.node.gateway_ip,
                icmp::DEST_UNREACH,
                icmp::FRAG_NEEDED,
                inner_mtu,
            ) {
                // Counted once, by the caller.
                return Err(Reason::FragNeeded);
            }
            // The packet's drop, counted here: the buffer now
            // carries the error.
            let Some(back) = from else {
                return Err(Reason::FragNeeded);
            };
            self.counters.drop(Reason::FragNeeded);
            self.counters.icmp_sent += 1;
            return self.deliver(snap, back, buf).map(Out::Port);
        }
        if let Err(r) = self.decrement_ttl(snap, from, buf) {
            return r.map(Out::Port);
        }
        let frames = crate::port::tso::segments(buf.data(), buf.gso());
        push_ethernet(buf, peer.spec.vtep_mac, snap.node.vtep_mac)?;
        let (raw, inner) = buf.raw_mut();
        let outer = vxlan::encapsulate(raw, inner, tunnel).map_err(|_| Reason::TooBig)?;
        buf.set_range(outer);
        if let Some(g) = buf.gso() {
            buf.set_gso(Some(crate::buf::Gso { tunnel: true, ..g }));
        }
        self.counters.encapsulated += frames;
        self.uplink().map(Out::Port).ok_or(Reason::NoNeighbour)
    }

    /// A frame from the uplink; `handed` when another worker passed it on
    /// (it is then processed here whatever its owner looks like).
    pub(crate) fn uplink_rx(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        buf: &mut Buf,
        handed: bool,
    ) -> Result<Out, Reason> {
        let eth = EthernetFrame::new_checked(buf.data()).map_err(|_| Reason::Malformed)?;
        if eth.ethertype() != ethertype::IPV4 {
            return Err(Reason::NotIpv4);
        }
        let p = eth.payload();
        let ip = Ipv4Packet::new_checked(p).map_err(|_| Reason::Malformed)?;
        let vxlan_port = ip.protocol() == ip_proto::UDP
            && !ip.is_fragment()
            && ip
                .payload()
                .get(2..4)
                .is_some_and(|b| b == snap.vxlan.dst_port.to_be_bytes());
        // VXLAN to the node IP first: the overlay's frames never pay the
        // service lookup.
        if vxlan_port && ip.dst_addr() == snap.node.ip {
            return self.decap(snap, now, buf);
        }
        // NodePorts, externalIPs and LB IPs the XDP program steered here
        // (`services.node_ports`).
        let frontend = !snap.services.is_empty()
            && !ip.is_fragment()
            && matches!(ip.protocol(), ip_proto::TCP | ip_proto::UDP)
            && ip
                .payload()
                .get(2..4)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .is_some_and(|p| {
                    snap.services
                        .is_frontend(ip.dst_addr(), ip.protocol(), u16::from_be_bytes(p))
                });
        if frontend {
            return self.services_ingress(snap, now, buf, handed);
        }
        if ip.dst_addr() != snap.node.ip {
            return Err(Reason::NotOurs);
        }
        // A reply arriving on another worker's queue: conntrack lives with
        // the flow's owner.
        if !handed
            && let Some(w) = self.reply_owner(&ip)
            && w != self.id()
        {
            return Ok(Out::Worker(w, Handoff::Uplink));
        }
        // A reply to a masqueraded flow (or an ICMP error about one).
        strip_ethernet(buf)?;
        check_ipv4(buf)?;
        match self.ct.process(now, buf.data_mut(), Origin::Uplink) {
            Verdict::Accept(a) => {
                if a.translated {
                    self.counters.nat += 1;
                }
            }
            Verdict::Drop(r) => return Err(Reason::Conntrack(r)),
            Verdict::Refused => return Err(Reason::Conntrack(nat::DropReason::NoEntry)),
        }
        let dst = Ipv4Packet::new_unchecked(buf.data()).dst_addr();
        if self.pod_port(dst).is_none() && snap.pod_worker(dst).is_none() {
            return Err(Reason::NoSuchPod);
        }
        if let Err(r) = self.decrement_ttl(snap, None, buf) {
            return r.map(Out::Port);
        }
        self.toward_pod(snap, now, dst, buf)
    }

    /// RFC 7348: a VXLAN frame to this node. Only from known VTEPs, only
    /// the configured VNI (checked by `decapsulate`), only towards a pod
    /// here, only from an address inside the sending peer's pod CIDRs.
    fn decap(&mut self, snap: &Snapshot, now: Duration, buf: &mut Buf) -> Result<Out, Reason> {
        let d = vxlan::decap::decapsulate(buf.data_mut(), &snap.vxlan)
            .map_err(|e| Reason::Decap(e.drop_kind()))?;
        let peer = snap.peer_by_ip(d.outer_src).ok_or(Reason::UnknownVtep)?;
        buf.truncate(d.inner.end);
        buf.pull_front(d.inner.start);
        if let Some(g) = buf.gso() {
            buf.set_gso(Some(crate::buf::Gso { tunnel: false, ..g }));
        }
        strip_ethernet(buf)?;
        let (src, mut dst) = check_ipv4(buf)?;
        if !peer.spec.pod_cidrs.iter().any(|c| c.contains(&src)) {
            return Err(Reason::InnerSpoofed);
        }
        let frames = crate::port::tso::segments(buf.data(), buf.gso());
        // A remote backend answering a service flow from the gateway
        // address (the node's own clients, masqueraded ones): reversed
        // here if this worker holds the flow, else on the gateway's worker
        // at delivery.
        if dst == snap.node.gateway_ip && !snap.services.is_empty() {
            // A flow another worker masqueraded (its port slice says
            // which): processed there as if its pod had sent it.
            if let Some(w) = self.masquerade_owner(&Ipv4Packet::new_unchecked(buf.data()))
                && w != self.id()
            {
                self.counters.decapsulated += frames;
                return Ok(Out::Worker(w, Handoff::Masqueraded));
            }
            self.services_reverse(snap, now, buf)?;
            dst = Ipv4Packet::new_unchecked(buf.data()).dst_addr();
            // The answer to a client outside the cluster (a NodePort,
            // externalIP or LB IP flow): out through the uplink.
            if dst != snap.node.ip && matches!(snap.route(dst), Route::External) {
                self.counters.decapsulated += frames;
                return self.out_uplink(snap, buf);
            }
        }
        if self.pod_port(dst).is_none() && snap.pod_worker(dst).is_none() {
            return Err(Reason::NoSuchPod);
        }
        if let Err(r) = self.decrement_ttl(snap, None, buf) {
            return r.map(Out::Port);
        }
        self.counters.decapsulated += frames;
        self.toward_pod(snap, now, dst, buf)
    }
}
