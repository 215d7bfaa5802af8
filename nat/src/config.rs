//! Conntrack and SNAT settings. Defaults are Linux's
//! (`Documentation/networking/nf_conntrack-sysctl.rst`), so users see no
//! surprise; every one is configurable.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

/// Per-protocol, per-state timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN_SENT (`nf_conntrack_tcp_timeout_syn_sent`, 120 s).
    pub tcp_syn_sent: Duration,
    /// TCP SYN_RECV (60 s).
    pub tcp_syn_recv: Duration,
    /// TCP ESTABLISHED (432000 s = 5 days; kube-proxy sets 24 h).
    pub tcp_established: Duration,
    /// TCP FIN_WAIT (120 s).
    pub tcp_fin_wait: Duration,
    /// TCP CLOSE_WAIT (60 s; kube-proxy sets 1 h).
    pub tcp_close_wait: Duration,
    /// TCP LAST_ACK (30 s).
    pub tcp_last_ack: Duration,
    /// TCP TIME_WAIT (120 s).
    pub tcp_time_wait: Duration,
    /// TCP CLOSE (10 s).
    pub tcp_close: Duration,
    /// UDP before any reply (`nf_conntrack_udp_timeout`, 30 s).
    pub udp_unreplied: Duration,
    /// UDP once replied (`nf_conntrack_udp_timeout_stream`, 120 s).
    pub udp_replied: Duration,
    /// ICMP echo (`nf_conntrack_icmp_timeout`, 30 s).
    pub icmp: Duration,
    /// Other protocols (`nf_conntrack_generic_timeout`, 600 s).
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(432_000),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp_unreplied: s(30),
            udp_replied: s(120),
            icmp: s(30),
            other: s(600),
        }
    }
}

/// Connection tracking settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Table limit (`nf_conntrack_max`). When full, a new flow evicts an
    /// entry that never saw a reply, or is refused.
    pub max_entries: usize,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Pick up TCP connections mid-stream from a non-SYN packet
    /// (`nf_conntrack_tcp_loose`, on by default in Linux).
    pub tcp_loose: bool,
    /// Skip TCP window checks (`nf_conntrack_tcp_be_liberal`, off by default).
    pub tcp_liberal: bool,
    /// Slots examined per [`crate::Conntrack::handle_timeout`] call.
    pub expiry_budget: usize,
    /// Slots examined for an evictable entry when the table is full.
    pub early_drop_budget: usize,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            max_entries: 262_144,
            timeouts: Timeouts::default(),
            tcp_loose: true,
            tcp_liberal: false,
            expiry_budget: 256,
            early_drop_budget: 64,
        }
    }
}

/// An inclusive range of ports (or ICMP identifiers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest.
    pub min: u16,
    /// Highest.
    pub max: u16,
}

impl PortRange {
    /// Number of ports in the range.
    pub const fn len(self) -> u32 {
        self.max as u32 - self.min as u32 + 1
    }

    /// Always false: a range holds at least one port.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Whether `p` is inside.
    pub const fn contains(self, p: u16) -> bool {
        self.min <= p && p <= self.max
    }
}

/// Masquerade policy: what is translated, to what, and with which ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnatConfig {
    /// Translate packets whose source is in one of these (the pod CIDRs)...
    pub pod_cidrs: Vec<Ipv4Net>,
    /// ...and whose destination is in none of these (cluster pod CIDRs,
    /// the service CIDR, extra exclusions).
    pub no_nat_cidrs: Vec<Ipv4Net>,
    /// The address translated to (the node IP).
    pub snat_addr: Ipv4Addr,
    /// TCP/UDP source ports translated to. Keep it outside the host's
    /// ephemeral range (`ip_local_port_range`) or reserve it
    /// (`ip_local_reserved_ports`) so the node's own sockets never collide.
    pub ports: PortRange,
    /// ICMP echo identifiers translated to.
    pub icmp_ids: PortRange,
    /// Linux `--random-fully`: never keep the original port, always start
    /// the search at a random offset.
    pub random_fully: bool,
    /// Ports tried before the flow is refused as port-exhausted.
    pub max_probes: u32,
    /// This worker's index and the number of workers: the port and ID ranges
    /// are split into equal contiguous slices, one per worker, so the
    /// destination port of a reply names the worker owning its flow
    /// ([`SnatConfig::owner_of`]).
    pub worker: (u16, u16),
    /// Seed of the allocator's random offsets.
    pub seed: u64,
}

/// The ports a service masquerade takes when no SNAT policy is configured
/// (Linux's default `ip_local_port_range` upper part, as kube-proxy's
/// `masquerade fully-random` would draw from).
pub const SNAT_PORTS: PortRange = PortRange {
    min: 61000,
    max: 65535,
};

impl SnatConfig {
    /// A policy translating `pod_cidrs` to `snat_addr` except towards
    /// `no_nat_cidrs`, with the default ranges (ports 61000-65535, IDs all)
    /// for a single worker.
    pub fn new(pod_cidrs: Vec<Ipv4Net>, no_nat_cidrs: Vec<Ipv4Net>, snat_addr: Ipv4Addr) -> Self {
        SnatConfig {
            pod_cidrs,
            no_nat_cidrs,
            snat_addr,
            ports: PortRange {
                min: 61000,
                max: 65535,
            },
            icmp_ids: PortRange { min: 0, max: 65535 },
            random_fully: false,
            max_probes: 128,
            worker: (0, 1),
            seed: 0x5eed,
        }
    }

    /// Whether a packet from `src` to `dst` is masqueraded.
    pub fn applies(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.pod_cidrs.iter().any(|n| n.contains(&src))
            && !self.no_nat_cidrs.iter().any(|n| n.contains(&dst))
    }

    /// This worker's slice of `range`.
    pub fn slice(&self, range: PortRange) -> PortRange {
        let (index, workers) = (u32::from(self.worker.0), u32::from(self.worker.1.max(1)));
        let per = range.len() / workers;
        let min = u32::from(range.min) + per * index;
        let max = if index + 1 == workers {
            u32::from(range.max)
        } else {
            min + per.max(1) - 1
        };
        PortRange {
            min: min as u16,
            max: max as u16,
        }
    }

    /// The worker whose slice of `range` holds `port` (for handing a reply
    /// that arrived on the wrong queue to its owner), or `None` outside it.
    pub fn owner_of(&self, range: PortRange, port: u16) -> Option<u16> {
        if !range.contains(port) {
            return None;
        }
        let workers = u32::from(self.worker.1.max(1));
        let per = (range.len() / workers).max(1);
        Some(((u32::from(port - range.min) / per).min(workers - 1)) as u16)
    }
}
