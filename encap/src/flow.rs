//! Flow keys and the flow hash used for worker selection (RSS-like) and for
//! the VXLAN outer UDP source port.

use std::net::IpAddr;

/// A transport flow: addresses, protocol and ports. For ICMP echo both ports
/// hold the echo identifier (so a request and its reply are one flow); for
/// protocols without ports, and ICMP errors, both ports are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// Source port (or echo identifier).
    pub src_port: u16,
    /// Destination port (or echo identifier).
    pub dst_port: u16,
}

impl FlowKey {
    /// The key of the reply direction.
    #[must_use]
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// A seeded flow hash. The symmetric variant gives both directions of a flow
/// the same hash, so a flow and its replies land on the same worker.
///
/// The construction is a folded 128-bit multiply (as in wyhash) over the
/// key's words: a few cycles per key, and well spread (see the chi-square
/// test). It is not a keyed PRF against an adversary choosing flows; the seed
/// only keeps different nodes from agreeing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHasher {
    seed: u64,
    symmetric: bool,
}

const K0: u64 = 0xa076_1d64_78bd_642f;
const K1: u64 = 0xe703_7ed1_a0b4_28db;
const K2: u64 = 0x8ebc_6af0_9c88_c6e3;
const K3: u64 = 0x5899_65cc_7537_4cc3;

#[inline(always)]
const fn mum(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

impl FlowHasher {
    /// A hash that tells the two directions of a flow apart.
    pub const fn new(seed: u64) -> Self {
        FlowHasher {
            seed,
            symmetric: false,
        }
    }

    /// A hash under which a flow and its reply hash the same.
    pub const fn symmetric(seed: u64) -> Self {
        FlowHasher {
            seed,
            symmetric: true,
        }
    }

    /// Whether this hasher is symmetric.
    pub const fn is_symmetric(&self) -> bool {
        self.symmetric
    }

    /// Hashes a flow key: one 128-bit multiply for IPv4, three for IPv6.
    #[inline]
    pub fn hash(&self, k: &FlowKey) -> u32 {
        let (mut sp, mut dp) = (k.src_port, k.dst_port);
        let h = match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                return self.hash_v4(s.to_bits(), d.to_bits(), k.protocol, sp, dp);
            }
            (src, dst) => {
                let (mut a, mut b) = (addr_words(src), addr_words(dst));
                if self.symmetric && (a, sp) > (b, dp) {
                    core::mem::swap(&mut a, &mut b);
                    core::mem::swap(&mut sp, &mut dp);
                }
                let ports = (u64::from(sp) << 48) | (u64::from(dp) << 32) | u64::from(k.protocol);
                let h = mum(a.0 ^ self.seed ^ K0, b.0 ^ K1);
                let h = mum(h ^ a.1 ^ K2, b.1 ^ ports ^ K3);
                mum(h ^ self.seed, K0)
            }
        };
        (h ^ (h >> 32)) as u32
    }

    /// [`hash`](Self::hash) of an IPv4 flow given as raw fields (for callers
    /// that read them straight from a header).
    #[inline]
    pub fn hash_v4(&self, src: u32, dst: u32, protocol: u8, src_port: u16, dst_port: u16) -> u32 {
        let (mut a, mut b, mut sp, mut dp) = (src, dst, src_port, dst_port);
        if self.symmetric && (a, sp) > (b, dp) {
            core::mem::swap(&mut a, &mut b);
            core::mem::swap(&mut sp, &mut dp);
        }
        let ports = (u64::from(sp) << 48) | (u64::from(dp) << 32) | u64::from(protocol);
        let h = mum(
            ((u64::from(a) << 32) | u64::from(b)) ^ self.seed ^ K0,
            ports ^ K1,
        );
        (h ^ (h >> 32)) as u32
    }

    /// Hashes raw bytes (for frames that carry no IP flow, such as ARP: Linux
    /// hashes the MAC addresses in that case).
    #[inline]
    pub fn hash_bytes(&self, bytes: &[u8]) -> u32 {
        let mut h = self.seed ^ K0;
        let (words, tail) = bytes.as_chunks::<8>();
        for w in words {
            h = mum(h ^ u64::from_le_bytes(*w), K1);
        }
        let mut last = [0u8; 8];
        for (d, s) in last.iter_mut().zip(tail) {
            *d = *s;
        }
        h = mum(h ^ u64::from_le_bytes(last) ^ K2, (bytes.len() as u64) ^ K3);
        (h ^ (h >> 32)) as u32
    }
}

impl Default for FlowHasher {
    fn default() -> Self {
        FlowHasher::symmetric(0x5175_1ce0_0000_0001)
    }
}

/// An address as two 64-bit words (IPv4 in the low bits of the first).
#[inline(always)]
fn addr_words(a: IpAddr) -> (u64, u64) {
    match a {
        IpAddr::V4(v) => (u64::from(v.to_bits()), 0),
        IpAddr::V6(v) => {
            let x = v.to_bits();
            ((x >> 64) as u64, x as u64 | 1 << 63)
        }
    }
}

/// An inclusive UDP port range, such as the VXLAN source port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    min: u16,
    max: u16,
}

impl PortRange {
    /// Linux's default ephemeral range (`net.ipv4.ip_local_port_range`),
    /// which the vxlan driver uses for source ports.
    pub const LINUX_EPHEMERAL: PortRange = PortRange {
        min: 32768,
        max: 60999,
    };

    /// `min..=max`; `None` if `min > max`.
    pub const fn new(min: u16, max: u16) -> Option<Self> {
        if min > max {
            None
        } else {
            Some(PortRange { min, max })
        }
    }

    /// Lowest port.
    pub const fn min(self) -> u16 {
        self.min
    }

    /// Highest port.
    pub const fn max(self) -> u16 {
        self.max
    }

    /// Whether `p` is in the range.
    pub const fn contains(self, p: u16) -> bool {
        self.min <= p && p <= self.max
    }

    /// Maps a 32-bit hash onto the range with a multiply-shift, as Linux's
    /// `udp_flow_src_port` does (no modulo bias worth the name, no division).
    #[inline]
    pub const fn pick(self, hash: u32) -> u16 {
        let width = (self.max - self.min) as u64 + 1;
        self.min + ((hash as u64 * width) >> 32) as u16
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::LINUX_EPHEMERAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::StdRng};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn random_key(rng: &mut StdRng, v6: bool) -> FlowKey {
        let (src, dst) = if v6 {
            (
                IpAddr::V6(Ipv6Addr::from_bits(rng.random())),
                IpAddr::V6(Ipv6Addr::from_bits(rng.random())),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::from_bits(rng.random())),
                IpAddr::V4(Ipv4Addr::from_bits(rng.random())),
            )
        };
        FlowKey {
            src,
            dst,
            protocol: [6, 17, 1][rng.random_range(0..3)],
            src_port: rng.random(),
            dst_port: rng.random(),
        }
    }

    #[test]
    fn symmetric_hash_ignores_direction_and_plain_does_not() {
        let mut rng = StdRng::seed_from_u64(7);
        let sym = FlowHasher::symmetric(99);
        let plain = FlowHasher::new(99);
        let mut differ = 0;
        for i in 0..10_000 {
            let k = random_key(&mut rng, i % 2 == 0);
            assert_eq!(sym.hash(&k), sym.hash(&k.reversed()));
            if plain.hash(&k) != plain.hash(&k.reversed()) {
                differ += 1;
            }
        }
        assert!(
            differ > 9_990,
            "plain hash must distinguish directions ({differ})"
        );
    }

    #[test]
    fn seed_changes_the_hash() {
        let mut rng = StdRng::seed_from_u64(8);
        let k = random_key(&mut rng, false);
        assert_ne!(FlowHasher::new(1).hash(&k), FlowHasher::new(2).hash(&k));
    }

    #[test]
    fn one_bit_changes_flip_about_half_the_output() {
        // Avalanche: flipping one input bit flips ~16 of 32 output bits.
        let mut rng = StdRng::seed_from_u64(9);
        let h = FlowHasher::new(5);
        let mut total = 0u32;
        let n = 4000;
        for _ in 0..n {
            let k = random_key(&mut rng, false);
            let mut k2 = k;
            k2.src_port ^= 1 << rng.random_range(0..16);
            total += (h.hash(&k) ^ h.hash(&k2)).count_ones();
        }
        let mean = f64::from(total) / f64::from(n);
        assert!((14.0..18.0).contains(&mean), "mean flipped bits {mean}");
    }

    #[test]
    fn port_range_pick_stays_in_range_and_covers_the_ends() {
        let r = PortRange::new(32768, 60999).unwrap();
        assert_eq!(r.pick(0), 32768);
        assert_eq!(r.pick(u32::MAX), 60999);
        let one = PortRange::new(4789, 4789).unwrap();
        assert_eq!(one.pick(12345), 4789);
        assert!(PortRange::new(2, 1).is_none());
        let full = PortRange::new(0, u16::MAX).unwrap();
        assert_eq!(full.pick(u32::MAX), u16::MAX);
    }

    #[test]
    fn hash_bytes_depends_on_every_byte() {
        let h = FlowHasher::new(1);
        let a = [1u8; 12];
        for i in 0..12 {
            let mut b = a;
            b[i] ^= 0x80;
            assert_ne!(h.hash_bytes(&a), h.hash_bytes(&b), "byte {i}");
        }
    }
}
