//! Drop reasons and per-worker counters. Every packet a worker takes in
//! leaves through a port or is counted under exactly one reason.

use encap::vxlan::decap::DecapDrop;

/// Why the dataplane dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Truncated or invalid Ethernet/IPv4 header.
    Malformed,
    /// IPv4 header checksum wrong.
    BadIpChecksum,
    /// Not IPv4 (IPv6 and others are not forwarded yet).
    NotIpv4,
    /// A pod sent from an address that is not its own.
    Spoofed,
    /// VXLAN inner source outside the sending peer's pod CIDRs.
    InnerSpoofed,
    /// Destination inside the cluster CIDRs that no node owns.
    NoRoute,
    /// Destination in this node's pod CIDR with no pod attached.
    NoSuchPod,
    /// TTL ran out (an ICMP time exceeded was sent when possible).
    TtlExceeded,
    /// Too big for the uplink after encapsulation, DF set (an ICMP
    /// fragmentation needed was sent).
    FragNeeded,
    /// Too big for the uplink after encapsulation, DF clear (fragmenting is
    /// not supported: pod MTU is uplink MTU - 50, so this means a
    /// misconfigured pod).
    TooBig,
    /// VXLAN from an address that is not a known peer's VTEP.
    UnknownVtep,
    /// The next hop (peer or gateway) has no resolved MAC yet.
    NoNeighbour,
    /// A frame on the uplink that is not for Sluice (not VXLAN, not a reply
    /// to a masqueraded flow): the XDP program should have passed it to the
    /// kernel.
    NotOurs,
    /// The output port's queue was full.
    TxFull,
    /// The output port failed.
    TxError,
    /// Another worker's hand-off queue was full.
    HandoffFull,
    /// An ARP packet from a pod that needs no answer (a reply, a probe, a
    /// request for the pod's own address).
    ArpIgnored,
    /// A port read a frame but could not hand it over (TUN offload: a
    /// super-packet that could not be split into segments).
    RxError,
    /// Over the pod's egress rate limit ([`crate::shaper`]).
    PodEgressRate,
    /// Over the pod's ingress rate limit ([`crate::shaper`]).
    PodIngressRate,
    /// Refused by the sending pod's egress NetworkPolicy ([`crate::enforce`]).
    PolicyEgress,
    /// Refused by the receiving pod's ingress NetworkPolicy.
    PolicyIngress,
    /// Policies exist and the pod's labels are not known yet: held back
    /// until its policies are compiled (isolated before its first packet).
    PolicyPending,
    /// VXLAN decapsulation refused the frame.
    Decap(DecapDrop),
    /// Conntrack/NAT refused the packet.
    Conntrack(nat::DropReason),
    /// A new flow to a service address dropped as kube-proxy drops it.
    Service(lb::LbDrop),
    /// A new flow to a service address rejected (an ICMP port unreachable
    /// went back when one may be sent).
    ServiceReject(lb::LbReject),
}

const LOCAL: [Reason; 23] = [
    Reason::Malformed,
    Reason::BadIpChecksum,
    Reason::NotIpv4,
    Reason::Spoofed,
    Reason::InnerSpoofed,
    Reason::NoRoute,
    Reason::NoSuchPod,
    Reason::TtlExceeded,
    Reason::FragNeeded,
    Reason::TooBig,
    Reason::UnknownVtep,
    Reason::NoNeighbour,
    Reason::NotOurs,
    Reason::TxFull,
    Reason::TxError,
    Reason::HandoffFull,
    Reason::ArpIgnored,
    Reason::RxError,
    Reason::PodEgressRate,
    Reason::PodIngressRate,
    Reason::PolicyEgress,
    Reason::PolicyIngress,
    Reason::PolicyPending,
];

/// Number of distinct reasons.
pub const REASONS: usize = LOCAL.len()
    + DecapDrop::ALL.len()
    + nat::DropReason::ALL.len()
    + lb::LbDrop::ALL.len()
    + lb::LbReject::ALL.len();

/// Where the service reasons start in the counter array.
const SERVICE_AT: usize = LOCAL.len() + DecapDrop::ALL.len() + nat::DropReason::ALL.len();

impl Reason {
    /// Every reason, in counter order.
    pub fn all() -> impl Iterator<Item = Reason> {
        LOCAL
            .into_iter()
            .chain(DecapDrop::ALL.into_iter().map(Reason::Decap))
            .chain(nat::DropReason::ALL.into_iter().map(Reason::Conntrack))
            .chain(lb::LbDrop::ALL.into_iter().map(Reason::Service))
            .chain(lb::LbReject::ALL.into_iter().map(Reason::ServiceReject))
    }

    /// Index into a counter array.
    pub fn index(self) -> usize {
        match self {
            Reason::Decap(d) => LOCAL.len() + d as usize,
            Reason::Conntrack(c) => LOCAL.len() + DecapDrop::ALL.len() + c as usize,
            Reason::Service(d) => SERVICE_AT + d as usize,
            Reason::ServiceReject(r) => SERVICE_AT + lb::LbDrop::ALL.len() + r as usize,
            // In LOCAL's order (a match, not a search: drops can be every
            // packet under attack); a unit test checks the two agree.
            Reason::Malformed => 0,
            Reason::BadIpChecksum => 1,
            Reason::NotIpv4 => 2,
            Reason::Spoofed => 3,
            Reason::InnerSpoofed => 4,
            Reason::NoRoute => 5,
            Reason::NoSuchPod => 6,
            Reason::TtlExceeded => 7,
            Reason::FragNeeded => 8,
            Reason::TooBig => 9,
            Reason::UnknownVtep => 10,
            Reason::NoNeighbour => 11,
            Reason::NotOurs => 12,
            Reason::TxFull => 13,
            Reason::TxError => 14,
            Reason::HandoffFull => 15,
            Reason::ArpIgnored => 16,
            Reason::RxError => 17,
            Reason::PodEgressRate => 18,
            Reason::PodIngressRate => 19,
            Reason::PolicyEgress => 20,
            Reason::PolicyIngress => 21,
            Reason::PolicyPending => 22,
        }
    }

    /// Counter name (Prometheus label value).
    pub fn name(self) -> String {
        match self {
            Reason::Decap(d) => d.name().to_string(),
            Reason::Conntrack(c) => c.name().to_string(),
            Reason::Service(d) => d.name().to_string(),
            Reason::ServiceReject(r) => r.name().to_string(),
            Reason::Malformed => "malformed".into(),
            Reason::BadIpChecksum => "bad_ip_checksum".into(),
            Reason::NotIpv4 => "not_ipv4".into(),
            Reason::Spoofed => "spoofed_source".into(),
            Reason::InnerSpoofed => "vxlan_inner_spoofed".into(),
            Reason::NoRoute => "no_route".into(),
            Reason::NoSuchPod => "no_such_pod".into(),
            Reason::TtlExceeded => "ttl_exceeded".into(),
            Reason::FragNeeded => "frag_needed".into(),
            Reason::TooBig => "too_big".into(),
            Reason::UnknownVtep => "vxlan_unknown_vtep".into(),
            Reason::NoNeighbour => "no_neighbour".into(),
            Reason::NotOurs => "not_ours".into(),
            Reason::TxFull => "tx_full".into(),
            Reason::TxError => "tx_error".into(),
            Reason::HandoffFull => "handoff_full".into(),
            Reason::ArpIgnored => "arp_ignored".into(),
            Reason::RxError => "port_rx_error".into(),
            Reason::PodEgressRate => "pod_egress_rate_limited".into(),
            Reason::PodIngressRate => "pod_ingress_rate_limited".into(),
            Reason::PolicyEgress => "policy_egress_denied".into(),
            Reason::PolicyIngress => "policy_ingress_denied".into(),
            Reason::PolicyPending => "policy_pod_pending".into(),
        }
    }
}

/// Per-port counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Port name.
    pub name: String,
    /// Frames received.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Frames the kernel dropped before the port read them
    /// ([`crate::port::Port::kernel_drops`]), as of the last publish.
    pub kernel_dropped: u64,
    /// Frames dropped by the port's rate limits, both directions
    /// ([`crate::shaper`]).
    pub rate_limited: u64,
    /// Frames that waited for the port's tokens: towards the pod, queued
    /// while its ingress bucket was in debt; from a veth (AF_XDP) pod,
    /// held in the worker's queue.
    pub shaped: u64,
    /// Polls that left a TUN pod unread because its egress bucket was in
    /// debt (its own qdisc holds the frames and pushes back).
    pub paused: u64,
}

/// A worker's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Drops by [`Reason::index`].
    pub drops: [u64; REASONS],
    /// Frames encapsulated towards peers (a super-packet counts as the
    /// segments it carries).
    pub encapsulated: u64,
    /// Frames decapsulated from peers (a super-packet counts as the
    /// segments it carries).
    pub decapsulated: u64,
    /// Packets translated by SNAT (either direction).
    pub nat: u64,
    /// ICMP errors sent to pods.
    pub icmp_sent: u64,
    /// ARP requests from pods answered (proxy ARP for the gateway).
    pub arp_replies: u64,
    /// Frames handed to another worker (its pod, or its flow's reply).
    pub handed_off: u64,
    /// Frames received from other workers.
    pub handed_in: u64,
    /// New flows balanced to a service backend.
    pub svc_flows: u64,
    /// Packets translated for services (DNAT, its reverse, masquerade).
    pub svc_translated: u64,
    /// Super-packets written whole to a port that takes them
    /// ([`crate::buf::Gso`]).
    pub super_whole: u64,
    /// Super-packets cut into segments by the worker, for a port that
    /// takes none (AF_XDP).
    pub super_cut: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: [0; REASONS],
            encapsulated: 0,
            decapsulated: 0,
            nat: 0,
            icmp_sent: 0,
            arp_replies: 0,
            handed_off: 0,
            handed_in: 0,
            svc_flows: 0,
            svc_translated: 0,
            super_whole: 0,
            super_cut: 0,
        }
    }
}

impl Counters {
    /// Counts a drop.
    pub fn drop(&mut self, r: Reason) {
        if let Some(c) = self.drops.get_mut(r.index()) {
            *c += 1;
        }
    }

    /// The count for `r`.
    pub fn dropped(&self, r: Reason) -> u64 {
        self.drops.get(r.index()).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_name() {
        let all: Vec<Reason> = Reason::all().collect();
        assert_eq!(all.len(), REASONS);
        let mut idx: Vec<usize> = all.iter().map(|r| r.index()).collect();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx, (0..REASONS).collect::<Vec<_>>());
        for (i, r) in LOCAL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let mut names: Vec<String> = all.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REASONS);
    }
}

/// One service port's traffic on one worker ([`lb::PortId`] indexes them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvcStats {
    /// New flows balanced to a backend.
    pub flows: u64,
    /// Packets of its flows, both directions, as translated.
    pub packets: u64,
    /// Their bytes (IP packets, no link header).
    pub bytes: u64,
}

impl SvcStats {
    /// Adds `other`.
    pub fn add(&mut self, other: &SvcStats) {
        self.flows += other.flows;
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}
