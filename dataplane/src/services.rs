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

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::ip_proto;
use encap::ipv4::Ipv4Packet;
use lb::{AffinityTable, Backend, ServiceTable};
use nat::{Nat, Origin, Services, Tuple, Verdict};

use crate::buf::Buf;
use crate::counters::Reason;
use crate::icmp;
use crate::route::Snapshot;
use crate::worker::{Handoff, Out, Worker};

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
                if let Some(id) = balanced {
                    self.counters.svc_flows += 1;
                    let i = id as usize;
                    if self.svc_hits.len() <= i {
                        self.svc_hits.resize(i + 1, 0);
                    }
                    if let Some(h) = self.svc_hits.get_mut(i) {
                        *h += 1;
                    }
                }
                self.counters.svc_translated += u64::from(a.translated);
                Ok(None)
            }
            Verdict::Drop(r) => Err(Reason::Conntrack(r)),
            Verdict::Refused => match refused {
                Some(lb::Verdict::Reject(r)) => self.reject(snap, from, dst, r, buf).map(Some),
                Some(lb::Verdict::Drop(d)) => Err(Reason::Service(d)),
                _ => Err(Reason::Service(lb::LbDrop::UnallocatedClusterIp)),
            },
        }
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
            Some(Verdict::Accept(_)) => {
                self.counters.svc_translated += 1;
                Ok(())
            }
            Some(Verdict::Drop(r)) => Err(Reason::Conntrack(r)),
            Some(Verdict::Refused) => Err(Reason::Service(lb::LbDrop::UnallocatedClusterIp)),
        }
    }

    /// The worker whose port slice a masquerade port (the destination port
    /// of a reply to the gateway address) comes from, when it can be told.
    fn masquerade_owner(&self, ip: &Ipv4Packet<&[u8]>) -> Option<u8> {
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
