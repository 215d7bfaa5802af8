//! The routing snapshot: everything a worker needs to forward, immutable.
//!
//! The control side builds a new [`Snapshot`] whenever something changes
//! (a peer added, a neighbour's MAC moved) and publishes it through a
//! [`Routes`] handle; workers load it once per burst. A swap never blocks a
//! worker, and a burst in flight finishes on the snapshot it started with.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use encap::MacAddr;
use encap::vxlan::{EncapTemplate, TunnelEndpoint, VxlanConfig};
use ipnet::Ipv4Net;

/// A hasher for IPv4 keys: one multiply (the keys come from our own
/// configuration, not from packets an attacker chooses freely, and every
/// lookup is bounded by the table's size).
#[derive(Default, Clone, Copy, Debug)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    /// Keys other than `u32` (none today): each byte mixed as a `u32` is.
    /// (Shifting bytes in and multiplying, as this once did, left the low
    /// bits of /24 prefixes all zero: 16 buckets of 4096 used.)
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 29;
    }
}

/// A map keyed by IPv4 address (or masked prefix).
pub type AddrMap<V> = HashMap<u32, V, BuildHasherDefault<AddrHasher>>;

/// Longest-prefix match over IPv4 prefixes: one exact-match map per prefix
/// length present, searched from the longest. A cluster has a handful of
/// lengths (usually one: every node a /24), so a lookup is one or two hash
/// probes whatever the number of peers.
#[derive(Clone, Debug, Default)]
pub struct Lpm<V> {
    /// (prefix length, mask, map from masked address), longest first.
    levels: Vec<(u8, u32, AddrMap<V>)>,
}

impl<V: Clone> Lpm<V> {
    /// Inserts (or replaces) `net`.
    pub fn insert(&mut self, net: Ipv4Net, v: V) {
        let len = net.prefix_len();
        let mask = u32::from(net.netmask());
        let key = u32::from(net.network());
        match self.levels.iter_mut().find(|l| l.0 == len) {
            Some(l) => {
                l.2.insert(key, v);
            }
            None => {
                let mut m = AddrMap::default();
                m.insert(key, v);
                self.levels.push((len, mask, m));
                self.levels.sort_by_key(|l| std::cmp::Reverse(l.0));
            }
        }
    }

    /// The value of the longest prefix holding `a`.
    pub fn lookup(&self, a: Ipv4Addr) -> Option<&V> {
        let a = a.to_bits();
        self.levels
            .iter()
            .find_map(|(_, mask, m)| m.get(&(a & mask)))
    }
}

/// This node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// The node's IP on the uplink: VXLAN source, SNAT address.
    pub ip: Ipv4Addr,
    /// The uplink's MAC.
    pub uplink_mac: MacAddr,
    /// MTU of the uplink.
    pub uplink_mtu: u16,
    /// The VTEP MAC peers address inner frames to (Flannel's `VtepMAC`).
    pub vtep_mac: MacAddr,
    /// This node's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// The pods' gateway address (first address of the pod CIDR, as
    /// Flannel's cni0): source of ICMP errors Sluice sends to pods.
    pub gateway_ip: Ipv4Addr,
    /// MAC of the default gateway for traffic leaving the cluster; `None`
    /// until resolved (such traffic is dropped and counted until then).
    pub gateway_mac: Option<MacAddr>,
}

/// A peer node as the control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// Node name.
    pub name: String,
    /// Its IP (its VTEP address).
    pub ip: Ipv4Addr,
    /// Its VTEP MAC (inner destination MAC).
    pub vtep_mac: MacAddr,
    /// Its pod CIDRs.
    pub pod_cidrs: Vec<Ipv4Net>,
}

/// A peer ready for the fast path: the tunnel template is built once.
#[derive(Clone, Debug)]
pub struct Peer {
    /// What the control plane said.
    pub spec: PeerSpec,
    /// Next-hop MAC on the uplink (the peer's own on a shared segment);
    /// `None` while unresolved.
    pub next_hop_mac: Option<MacAddr>,
    /// Outer headers towards it (only when the next hop is known).
    pub tunnel: Option<EncapTemplate>,
}

/// Where a destination address goes.
#[derive(Clone, Copy, Debug)]
pub enum Route<'a> {
    /// This node's pod CIDR.
    Local,
    /// A peer's pod CIDR.
    Peer(&'a Peer),
    /// Inside the cluster CIDRs but no node owns it.
    Unroutable,
    /// Outside the cluster: leaves through SNAT.
    External,
}

/// The immutable routing state.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Increases with every publication.
    pub generation: u64,
    /// This node.
    pub node: Node,
    /// The overlay.
    pub vxlan: VxlanConfig,
    /// Cluster CIDRs (pods, services, extra no-NAT ranges).
    pub cluster_cidrs: Vec<Ipv4Net>,
    peers: Vec<Peer>,
    by_cidr: Lpm<usize>,
    by_ip: AddrMap<usize>,
    /// Local pods -> the worker that owns their port.
    pod_workers: AddrMap<u8>,
    /// Services (shared between snapshots until they change).
    pub services: Arc<lb::ServiceTable>,
    /// NetworkPolicy tables for this node's pods (shared likewise).
    pub policy: Arc<policy::Tables>,
}

impl Snapshot {
    /// Builds a snapshot. `neighbour` resolves a next-hop MAC on the uplink
    /// (from the kernel's neighbour table); unresolved peers stay in the
    /// snapshot with no tunnel.
    pub fn new(
        generation: u64,
        node: Node,
        vxlan: VxlanConfig,
        cluster_cidrs: Vec<Ipv4Net>,
        peers: impl IntoIterator<Item = PeerSpec>,
        neighbour: &dyn Fn(Ipv4Addr) -> Option<MacAddr>,
    ) -> Snapshot {
        let mut s = Snapshot {
            generation,
            node,
            vxlan,
            cluster_cidrs,
            peers: Vec::new(),
            by_cidr: Lpm::default(),
            by_ip: AddrMap::default(),
            pod_workers: AddrMap::default(),
            services: Arc::default(),
            policy: Arc::default(),
        };
        for spec in peers {
            if spec.ip == s.node.ip {
                continue;
            }
            let next_hop_mac = neighbour(spec.ip);
            let tunnel = next_hop_mac.map(|mac| {
                EncapTemplate::new(
                    &s.vxlan,
                    &TunnelEndpoint {
                        local_mac: s.node.uplink_mac,
                        next_hop_mac: mac,
                        local_ip: s.node.ip,
                        remote_ip: spec.ip,
                    },
                )
            });
            let i = s.peers.len();
            for c in &spec.pod_cidrs {
                s.by_cidr.insert(*c, i);
            }
            s.by_ip.insert(spec.ip.to_bits(), i);
            s.peers.push(Peer {
                spec,
                next_hop_mac,
                tunnel,
            });
        }
        s
    }

    /// The same snapshot with `services`.
    pub fn with_services(mut self, services: Arc<lb::ServiceTable>) -> Self {
        self.services = services;
        self
    }

    /// With these NetworkPolicy tables.
    pub fn with_policy(mut self, policy: Arc<policy::Tables>) -> Self {
        self.policy = policy;
        self
    }

    /// Where `dst` goes.
    pub fn route(&self, dst: Ipv4Addr) -> Route<'_> {
        if self.node.pod_cidr.contains(&dst) {
            return Route::Local;
        }
        if let Some(p) = self.by_cidr.lookup(dst).and_then(|&i| self.peers.get(i)) {
            return Route::Peer(p);
        }
        if self.cluster_cidrs.iter().any(|c| c.contains(&dst)) {
            Route::Unroutable
        } else {
            Route::External
        }
    }

    /// The peer whose VTEP is `ip`.
    pub fn peer_by_ip(&self, ip: Ipv4Addr) -> Option<&Peer> {
        self.by_ip
            .get(&ip.to_bits())
            .and_then(|&i| self.peers.get(i))
    }

    /// Every peer.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Records which worker owns each local pod's port (with several
    /// workers, a frame for a pod another worker owns is handed to it).
    #[must_use]
    pub fn with_pod_workers(mut self, pods: impl IntoIterator<Item = (Ipv4Addr, u8)>) -> Self {
        self.pod_workers = pods.into_iter().map(|(ip, w)| (ip.to_bits(), w)).collect();
        self
    }

    /// The worker owning local pod `ip`.
    pub fn pod_worker(&self, ip: Ipv4Addr) -> Option<u8> {
        self.pod_workers.get(&ip.to_bits()).copied()
    }
}

/// The publication point: the control side stores, workers load.
#[derive(Clone, Debug)]
pub struct Routes(Arc<ArcSwap<Snapshot>>);

impl Routes {
    /// Starts with `s`.
    pub fn new(s: Snapshot) -> Routes {
        Routes(Arc::new(ArcSwap::from_pointee(s)))
    }

    /// The current snapshot (lock-free; hold it for one burst).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }

    /// The current snapshot, owned.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Publishes `s`; workers see it from their next burst.
    pub fn store(&self, s: Snapshot) {
        self.0.store(Arc::new(s));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn node() -> Node {
        Node {
            name: "a".into(),
            ip: Ipv4Addr::new(192, 168, 50, 1),
            uplink_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            uplink_mtu: 1500,
            vtep_mac: MacAddr([2, 0xee, 0, 0, 0, 1]),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            gateway_ip: Ipv4Addr::new(10, 244, 1, 1),
            gateway_mac: Some(MacAddr([2, 0, 0, 0, 0, 0xfe])),
        }
    }

    pub(crate) fn peer(n: u8) -> PeerSpec {
        PeerSpec {
            name: format!("n{n}"),
            ip: Ipv4Addr::new(192, 168, 50, n),
            vtep_mac: MacAddr([2, 0xee, 0, 0, 0, n]),
            pod_cidrs: vec![Ipv4Net::new(Ipv4Addr::new(10, 244, n, 0), 24).unwrap()],
        }
    }

    pub(crate) fn snapshot(peers: &[u8]) -> Snapshot {
        Snapshot::new(
            1,
            node(),
            VxlanConfig::default(),
            vec![
                "10.244.0.0/16".parse().unwrap(),
                "10.96.0.0/12".parse().unwrap(),
            ],
            peers.iter().map(|&n| peer(n)),
            &|ip| Some(MacAddr([2, 0, 0, 0, 0, ip.octets()[3]])),
        )
    }

    /// The address hasher spreads what a node's maps hold (pod addresses
    /// one apart, /24 prefixes 256 apart) over the hash table's bucket bits
    /// (the low bits) and its tag bits (the top seven), as a uniform hash
    /// would: 4096 keys into 4096 buckets fill about 2590.
    #[test]
    fn the_address_hasher_spreads_pods_and_prefixes() {
        use std::collections::HashSet;
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<AddrHasher>::default();
        let by_u32 = |a: u32| build.hash_one(a);
        let by_bytes = |a: u32| build.hash_one(a.to_be_bytes());
        let base = u32::from(Ipv4Addr::new(10, 244, 0, 0));
        for (what, stride) in [("pods", 1u32), ("prefixes", 256)] {
            for (how, hash) in [
                ("u32", &by_u32 as &dyn Fn(u32) -> u64),
                ("bytes", &by_bytes),
            ] {
                let hashes: Vec<u64> = (0..4096).map(|i| hash(base + i * stride)).collect();
                let buckets: HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
                let tags: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
                assert!(
                    buckets.len() > 2400,
                    "{what} by {how}: {} buckets",
                    buckets.len()
                );
                assert!(tags.len() > 120, "{what} by {how}: {} tags", tags.len());
            }
        }
        // A map keyed this way finds every key.
        let m: AddrMap<u32> = (0..1000).map(|i| (base + i, i)).collect();
        assert!((0..1000).all(|i| m.get(&(base + i)) == Some(&i)));
    }

    #[test]
    fn routes_by_longest_prefix() {
        let mut s = snapshot(&[2, 3]);
        assert!(matches!(
            s.route("10.244.1.7".parse().unwrap()),
            Route::Local
        ));
        assert!(
            matches!(s.route("10.244.3.9".parse().unwrap()), Route::Peer(p) if p.spec.name == "n3")
        );
        assert!(matches!(
            s.route("10.244.9.9".parse().unwrap()),
            Route::Unroutable
        ));
        assert!(matches!(
            s.route("10.96.0.10".parse().unwrap()),
            Route::Unroutable
        ));
        assert!(matches!(
            s.route("1.1.1.1".parse().unwrap()),
            Route::External
        ));
        // A longer prefix wins over a shorter one that also holds the address.
        s.by_cidr.insert("10.244.3.128/25".parse().unwrap(), 0);
        assert!(
            matches!(s.route("10.244.3.200".parse().unwrap()), Route::Peer(p) if p.spec.name == "n2")
        );
        assert!(
            matches!(s.route("10.244.3.100".parse().unwrap()), Route::Peer(p) if p.spec.name == "n3")
        );
        assert_eq!(
            s.peer_by_ip("192.168.50.3".parse().unwrap())
                .map(|p| &p.spec.name[..]),
            Some("n3")
        );
        assert!(s.peer_by_ip("192.168.50.9".parse().unwrap()).is_none());
    }

    #[test]
    fn an_unresolved_peer_has_no_tunnel_and_this_node_is_not_a_peer() {
        let s = Snapshot::new(
            1,
            node(),
            VxlanConfig::default(),
            vec![],
            [peer(1), peer(2)],
            &|_| None,
        );
        assert_eq!(s.peers().len(), 1, "node 1 is this node");
        assert!(s.peers()[0].tunnel.is_none());
    }
}
