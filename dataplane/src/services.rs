//! Services in the pipeline: where a worker consults the service table,
//! and how conntrack's hook ([`nat::Services`]) is answered.
//!
//! - Egress: a packet from a pod (or the host device) to a service address
//!   ([`lb::ServiceTable::concerns`]) goes through conntrack with the table
//!   as its hook, before routing: a new flow is balanced once (Maglev,
//!   session affinity) and DNATed, with the client masqueraded to this
//!   node's gateway address where kube-proxy masquerades (hairpin, clients
//!   outside the pod CIDRs); later packets find the entry. The packet is
//!   then routed by its new destination: to a local pod, or by VXLAN.
//! - Replies: a backend answers the client's address; wherever the reply
//!   comes from (a local pod, VXLAN, another worker), it is un-DNATed on
//!   the client's worker just before delivery ([`nat::Conntrack::reverse`]).
//!   Replies to a masqueraded flow are addressed to the gateway address:
//!   they are reversed before routing, on the worker whose port slice the
//!   masquerade port came from.
//! - No endpoint: kube-proxy's reject (ICMP port unreachable from the
//!   service address, for TCP too) or drop, each counted by reason.
//! - From outside (`services.node_ports`: the XDP program steers NodePorts,
//!   externalIPs and LB IPs here): [`Worker::services_ingress`]. The flow
//!   lives on the worker a hash of the client's address picks
//!   ([`client_owner`]), whichever queue it arrived on: every flow of one
//!   client meets one worker's session affinity table; a Local-policy
//!   backend's replies carry that address as their destination, so its
//!   worker hands them there ([`Worker::external_reply_owner`]); Cluster
//!   policy masquerades to the gateway address with a port from that
//!   worker's slice, which names it too. Replies leave through the uplink.

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::ethernet::EthernetFrame;
use encap::ip_proto;
use encap::ipv4::Ipv4Packet;
use lb::{AffinityTable, Backend, ServiceTable};
use nat::{Direction, Nat, Origin, Services, Tuple, Verdict};

use crate::buf::Buf;
use crate::counters::Reason;
use crate::icmp;
use crate::pipeline::{check_ipv4, push_ethernet, strip_ethernet};
use crate::route::{Route, Snapshot};
use crate::worker::{Handoff, Out, Worker};

/// The worker (of `n`) owning the service flows of an outside client at
/// `ip`. Its address alone, not its port: sessionAffinity ClientIP binds
/// all of a client's flows, and a worker's affinity table sees only its own.
pub(crate) fn client_owner(ip: Ipv4Addr, n: usize) -> u8 {
    let k = u64::from(u32::from(ip)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((k >> 32) % n.max(1) as u64) as u8
}

/// Source and destination ports of a TCP or UDP packet.
fn ports(ip: &Ipv4Packet<&[u8]>) -> Option<(u16, u16)> {
    if !matches!(ip.protocol(), ip_proto::TCP | ip_proto::UDP) {
        return None;
    }
    let p = ip.payload().get(..4)?;
    let (s, d) = p.split_at(2);
    Some((
        u16::from_be_bytes(s.try_into().ok()?),
        u16::from_be_bytes(d.try_into().ok()?),
    ))
}

/// Session affinity bindings a worker keeps (a power of two).
pub const AFFINITY_ENTRIES: usize = 16 * 1024;

/// The service table as conntrack's hook, for one packet.
struct Hooks<'a> {
    table: &'a ServiceTable,
    affinity: &'a mut AffinityTable,
    /// Where masqueraded service flows come from (the gateway address).
    masquerade: Ipv4Addr,
    /// What the table said about a refused flow.
    refused: Option<lb::Verdict>,
    /// A new flow was balanced to this service port.
    balanced: Option<lb::PortId>,
}

impl Services for Hooks<'_> {
    fn generation(&self) -> u32 {
        self.table.generation() as u32
    }

    fn new_flow(&mut self, now: Duration, t: &Tuple) -> Option<Nat> {
        // SCTP and others have no ports in conntrack's tuple: only TCP and
        // UDP are balanced; the rest meet the table's reject or drop.
        let port = match t.proto {
            ip_proto::TCP | ip_proto::UDP => t.dst_port,
            _ => 0,
        };
        let flow = lb::Flow {
            src: t.src,
            dst: t.dst,
            proto: t.proto,
            sport: t.src_port,
            dport: port,
        };
        let v = self.table.decide_with_affinity(self.affinity, now, &flow);
        match v {
            lb::Verdict::NotService => Some(Nat::default()),
            lb::Verdict::Dnat {
                port,
                backend,
                masquerade,
            } => {
                self.balanced = Some(port);
                Some(Nat {
                    dnat: Some((backend.ip, backend.port)),
                    masquerade: masquerade.then_some(self.masquerade),
                    service: port + 1,
                })
            }
            lb::Verdict::Reject(_) | lb::Verdict::Drop(_) => {
                self.refused = Some(v);
                None
            }
        }
    }

    fn still_serves(&mut self, service: u32, (ip, port): (Ipv4Addr, u16)) -> bool {
        service
            .checked_sub(1)
            .and_then(|id| self.table.port(id))
            .is_some_and(|p| p.serves(Backend { ip, port }))
    }
}

impl Worker {
    /// A packet from a pod (`origin` Pod) or the host device (Host) to a
    /// service address or the gateway address, before routing.
    /// `Ok(None)`: translated if it was for a service; route it by its
    /// (new) destination. `Ok(Some(out))`: answered or handed over.
    pub(crate) fn services_egress(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        from: Option<usize>,
        origin: Origin,
        buf: &mut Buf,
    ) -> Result<Option<Out>, Reason> {
        let ip = Ipv4Packet::new_unchecked(buf.data());
        let dst = ip.dst_addr();
        if dst == snap.node.gateway_ip
            && let Some(w) = self.masquerade_owner(&ip)
            && w != self.id()
        {
            return Ok(Some(Out::Worker(w, Handoff::Masqueraded)));
        }
        match self.track_service(snap, now, origin, buf)? {
            Ok(a) => {
                // A backend's answer to an outside client (a NodePort,
                // externalIP or LB IP flow): out through the uplink, not
                // through SNAT again.
                if a.dir == Direction::Reply && a.translated {
                    let to = Ipv4Packet::new_unchecked(buf.data()).dst_addr();
                    if to != snap.node.ip && matches!(snap.route(to), Route::External) {
                        return self.out_uplink(snap, buf).map(Some);
                    }
                }
                Ok(None)
            }
            Err(r) => self.reject(snap, from, dst, r, buf).map(Some),
        }
    }

    /// Conntrack with the service table as its hook, and the counting of
    /// what it did. `Ok(Ok(_))`: accepted (translated as the entry says);
    /// `Ok(Err(r))`: to be rejected with ICMP port unreachable; `Err`: a
    /// drop with its reason.
    fn track_service(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        origin: Origin,
        buf: &mut Buf,
    ) -> Result<Result<nat::Accepted, lb::LbReject>, Reason> {
        let mut hooks = Hooks {
            table: &snap.services,
            affinity: &mut self.affinity,
            masquerade: snap.node.gateway_ip,
            refused: None,
            balanced: None,
        };
        let v = self
            .ct
            .process_with(now, buf.data_mut(), origin, &mut hooks);
        let (refused, balanced) = (hooks.refused, hooks.balanced);
        match v {
            Verdict::Accept(a) => {
                self.count_balanced(balanced);
                self.count_service_packet(a.service, buf.len());
                self.counters.svc_translated += u64::from(a.translated);
                Ok(Ok(a))
            }
            Verdict::Drop(r) => Err(Reason::Conntrack(r)),
            Verdict::Refused => match refused {
                Some(lb::Verdict::Reject(r)) => Ok(Err(r)),
                Some(lb::Verdict::Drop(d)) => Err(Reason::Service(d)),
                _ => Err(Reason::Service(lb::LbDrop::UnallocatedClusterIp)),
            },
        }
    }

    /// A frame from the uplink to a service frontend (a NodePort on the
    /// node IP, an externalIP, a LoadBalancer IP), steered by the XDP
    /// program: balanced and DNATed (masqueraded to the gateway address
    /// under an external Cluster policy), then to the backend pod here or
    /// through VXLAN. `handed`: another worker passed it on.
    pub(crate) fn services_ingress(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        buf: &mut Buf,
        handed: bool,
    ) -> Result<Out, Reason> {
        let eth = EthernetFrame::new_checked(buf.data()).map_err(|_| Reason::Malformed)?;
        let client_mac = eth.src();
        let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| Reason::Malformed)?;
        let (src, frontend) = (ip.src_addr(), ip.dst_addr());
        let owner = client_owner(src, self.workers());
        if !handed && owner != self.id() {
            return Ok(Out::Worker(owner, Handoff::Uplink));
        }
        strip_ethernet(buf)?;
        check_ipv4(buf)?;
        // Host: the entry may be created, and is translated only as the
        // service says (DNAT, masquerade), never by SNAT policy.
        if let Err(r) = self.track_service(snap, now, Origin::Host, buf)? {
            return self.reject_outside(snap, client_mac, frontend, r, buf);
        }
        let dst = Ipv4Packet::new_unchecked(buf.data()).dst_addr();
        match snap.route(dst) {
            Route::Local => {
                if self.pod_port(dst).is_none() && snap.pod_worker(dst).is_none() {
                    return Err(Reason::NoSuchPod);
                }
                if let Err(r) = self.decrement_ttl(snap, None, buf) {
                    return r.map(Out::Port);
                }
                self.toward_pod(snap, now, dst, buf)
            }
            Route::Peer(peer) => self.encap_to_peer(snap, None, peer, buf),
            // Endpoints outside the pod network (a hand-made slice) are
            // not reached from outside.
            Route::Unroutable | Route::External => Err(Reason::NoRoute),
        }
    }

    /// Counts a new flow balanced to service port `id`.
    fn count_balanced(&mut self, id: Option<lb::PortId>) {
        let Some(id) = id else {
            return;
        };
        self.counters.svc_flows += 1;
        if let Some(c) = self.svc_slot(id) {
            c.flows += 1;
        }
    }

    /// Counts a packet of `len` bytes of a flow of service port `service`
    /// ([`nat::Accepted::service`]; 0: none).
    pub(crate) fn count_service_packet(&mut self, service: u32, len: usize) {
        if let Some(c) = service.checked_sub(1).and_then(|id| self.svc_slot(id)) {
            c.packets += 1;
            c.bytes += len as u64;
        }
    }

    fn svc_slot(&mut self, id: lb::PortId) -> Option<&mut crate::counters::SvcStats> {
        let i = id as usize;
        if self.svc.len() <= i {
            self.svc.resize(i + 1, crate::counters::SvcStats::default());
        }
        self.svc.get_mut(i)
    }

    /// An answer to a client outside the cluster: out through the uplink,
    /// to the node's gateway (as masqueraded traffic leaves).
    pub(crate) fn out_uplink(&mut self, snap: &Snapshot, buf: &mut Buf) -> Result<Out, Reason> {
        if let Err(r) = self.decrement_ttl(snap, None, buf) {
            return r.map(Out::Port);
        }
        let gw = snap.node.gateway_mac.ok_or(Reason::NoNeighbour)?;
        let up = self.uplink().ok_or(Reason::NoNeighbour)?;
        push_ethernet(buf, gw, snap.node.uplink_mac)?;
        Ok(Out::Port(up))
    }

    /// Where a pod's packet to an outside address belongs when the pod is
    /// a Local-policy backend answering an outside client: the worker the
    /// client's address picks ([`client_owner`]). `None`: anything else
    /// (the pod's own flows stay here).
    pub(crate) fn external_reply_owner(&self, snap: &Snapshot, buf: &Buf) -> Option<u8> {
        let n = self.workers();
        if n <= 1 {
            return None;
        }
        let ip = Ipv4Packet::new_unchecked(buf.data());
        let (sport, _) = ports(&ip)?;
        snap.services
            .external_local_backend(ip.src_addr(), ip.protocol(), sport)
            .then(|| client_owner(ip.dst_addr(), n))
    }

    /// kube-proxy's reject for a frontend reached from outside: ICMP port
    /// unreachable from the frontend address, back to the frame's sender.
    fn reject_outside(
        &mut self,
        snap: &Snapshot,
        to: encap::MacAddr,
        frontend: Ipv4Addr,
        r: lb::LbReject,
        buf: &mut Buf,
    ) -> Result<Out, Reason> {
        let up = self.uplink().ok_or(Reason::ServiceReject(r))?;
        if !icmp::make_error(buf, frontend, icmp::DEST_UNREACH, icmp::PORT_UNREACH, 0) {
            return Err(Reason::ServiceReject(r));
        }
        push_ethernet(buf, to, snap.node.uplink_mac)?;
        self.counters.drop(Reason::ServiceReject(r));
        self.counters.icmp_sent += 1;
        Ok(Out::Port(up))
    }

    /// kube-proxy's reject: ICMP port unreachable from the service address
    /// back to the sender; the packet itself counts as dropped.
    fn reject(
        &mut self,
        snap: &Snapshot,
        from: Option<usize>,
        service_ip: Ipv4Addr,
        r: lb::LbReject,
        buf: &mut Buf,
    ) -> Result<Out, Reason> {
        let Some(back) = from else {
            return Err(Reason::ServiceReject(r));
        };
        if !icmp::make_error(buf, service_ip, icmp::DEST_UNREACH, icmp::PORT_UNREACH, 0) {
            return Err(Reason::ServiceReject(r));
        }
        self.counters.drop(Reason::ServiceReject(r));
        self.counters.icmp_sent += 1;
        self.deliver(snap, back, buf).map(Out::Port)
    }

    /// Un-DNATs a reply about to reach its pod (a backend answering a
    /// service flow this worker balanced); anything else passes untouched.
    pub(crate) fn services_reverse(
        &mut self,
        snap: &Snapshot,
        now: Duration,
        buf: &mut Buf,
    ) -> Result<(), Reason> {
        if snap.services.is_empty() {
            return Ok(());
        }
        match self.ct.reverse(now, buf.data_mut()) {
            None => Ok(()),
            Some(Verdict::Accept(a)) => {
                self.count_service_packet(a.service, buf.len());
                self.counters.svc_translated += 1;
                Ok(())
            }
            Some(Verdict::Drop(r)) => Err(Reason::Conntrack(r)),
            Some(Verdict::Refused) => Err(Reason::Service(lb::LbDrop::UnallocatedClusterIp)),
        }
    }

    /// The worker whose port slice a masquerade port (the destination port
    /// of a reply to the gateway address) comes from, when it can be told.
    pub(crate) fn masquerade_owner(&self, ip: &Ipv4Packet<&[u8]>) -> Option<u8> {
        let snat = self.snat()?;
        if snat.worker.1 <= 1 || !matches!(ip.protocol(), ip_proto::TCP | ip_proto::UDP) {
            return None;
        }
        let port = ip
            .payload()
            .get(2..4)
            .and_then(|x| <[u8; 2]>::try_from(x).ok())
            .map(u16::from_be_bytes)?;
        snat.owner_of(snat.ports, port)
            .and_then(|w| u8::try_from(w).ok())
    }
}
