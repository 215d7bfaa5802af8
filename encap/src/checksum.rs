//! The Internet checksum: RFC 1071 full computation and RFC 1624 incremental
//! updates.
//!
//! The full sum reads the buffer four bytes at a time in native byte order and
//! accumulates into a 64-bit register (which the compiler vectorises); RFC 1071
//! section 2(B) shows the one's-complement sum is independent of byte order, so
//! the result is swapped once at the end rather than per word.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A running one's-complement sum (RFC 1071).
///
/// Add the pieces of the checksummed data in order with [`add_bytes`](Self::add_bytes)
/// and friends; every piece except the last must have an even length, because
/// a piece always starts on a 16-bit word boundary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    // Sum of big-endian 16-bit words; folded only when read. 64 bits hold
    // the sum of any buffer below 2^48 bytes without overflow.
    acc: u64,
}

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Self {
        Checksum { acc: 0 }
    }

    /// Adds `data`, starting on a 16-bit boundary; an odd final byte is padded
    /// with zero, as RFC 1071 prescribes.
    #[inline]
    pub fn add_bytes(&mut self, data: &[u8]) {
        let (words, tail) = data.as_chunks::<4>();
        let mut native: u64 = 0;
        for w in words {
            native += u64::from(u32::from_ne_bytes(*w));
        }
        // Native-order 16-bit sum -> big-endian order (a no-op on big-endian).
        self.acc += u64::from(u16::from_be(fold(native)));
        let (pairs, odd) = tail.as_chunks::<2>();
        for p in pairs {
            self.acc += u64::from(u16::from_be_bytes(*p));
        }
        if let Some(&b) = odd.first() {
            self.acc += u64::from(u16::from_be_bytes([b, 0]));
        }
    }

    /// Adds one 16-bit word.
    #[inline]
    pub fn add_u16(&mut self, v: u16) {
        self.acc += u64::from(v);
    }

    /// Adds a 32-bit value as two 16-bit words.
    #[inline]
    pub fn add_u32(&mut self, v: u32) {
        self.acc += u64::from(v >> 16) + u64::from(v & 0xffff);
    }

    /// The folded 16-bit one's-complement sum (not complemented).
    #[inline]
    pub fn sum(self) -> u16 {
        fold(self.acc)
    }

    /// The checksum field value: the complement of the sum.
    #[inline]
    pub fn finish(self) -> u16 {
        !self.sum()
    }
}

/// Folds a 64-bit accumulator to 16 bits with end-around carry.
#[inline(always)]
const fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The Internet checksum of `data` (RFC 1071): the value to put in a checksum
/// field, or, computed over data that includes a correct checksum field, zero.
#[inline]
pub fn internet_checksum(data: &[u8]) -> u16 {
    // An option-less IPv4 header, checked on every packet: fixed-size loads,
    // no loop.
    if let Ok(h) = <&[u8; 20]>::try_from(data) {
        return ipv4_header_checksum(h);
    }
    let mut c = Checksum::new();
    c.add_bytes(data);
    c.finish()
}

/// [`internet_checksum`] of a 20-byte IPv4 header.
#[inline]
pub fn ipv4_header_checksum(h: &[u8; 20]) -> u16 {
    ipv4_header_checksum_at(h, 0)
}

/// [`internet_checksum`] of the 20 bytes of `buf` at `at` (zeros past its end).
/// Five word loads and a short fold: the sum of five 32-bit words fits in 35
/// bits, so three 16-bit folds finish it.
#[inline(always)]
pub fn ipv4_header_checksum_at(buf: &[u8], at: usize) -> u16 {
    use crate::bytes::array;
    let w = |k: usize| u64::from(u32::from_ne_bytes(array::<4>(buf, at + 4 * k)));
    let mut s = w(0) + w(1) + w(2) + w(3) + w(4);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !u16::from_be(s as u16)
}

/// The IPv4 pseudo-header sum for TCP/UDP (RFC 9293 section 3.1, RFC 768).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> Checksum {
    let mut c = Checksum::new();
    c.add_u32(src.to_bits());
    c.add_u32(dst.to_bits());
    c.add_u16(u16::from(protocol));
    c.add_u16(len);
    c
}

/// The IPv6 pseudo-header sum for TCP/UDP/ICMPv6 (RFC 8200 section 8.1).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> Checksum {
    let mut c = Checksum::new();
    c.add_bytes(&src.octets());
    c.add_bytes(&dst.octets());
    c.add_u32(len);
    c.add_u16(u16::from(next_header));
    c
}

/// RFC 1624 equation 3: the checksum after one 16-bit word of the covered
/// data changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
///
/// Gives exactly the value a full recomputation gives (never 0x0000 where
/// the full computation gives 0xFFFF, the pitfall of RFC 1141's equation).
#[inline]
pub const fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let s = (!check) as u64 + (!old) as u64 + new as u64;
    !fold(s)
}

/// RFC 1624 update for a 32-bit field (two adjacent words).
#[inline]
pub const fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let s = (!check) as u64
        + (!(old >> 16) & 0xffff) as u64
        + (!old & 0xffff) as u64
        + (new >> 16) as u64
        + (new & 0xffff) as u64;
    !fold(s)
}

/// RFC 1624 update for a changed IPv4 address.
#[inline]
pub const fn update_ipv4_addr(check: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(check, old.to_bits(), new.to_bits())
}

/// RFC 1624 update for a changed IPv6 address.
#[inline]
pub fn update_ipv6_addr(check: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    let mut s = u64::from(!check);
    for (o, n) in old.segments().iter().zip(new.segments()) {
        s += u64::from(!*o) + u64::from(n);
    }
    !fold(s)
}

/// Several field changes folded into one RFC 1624 update: the sum of
/// `~m + m'` over every changed 16-bit word, applied to any number of
/// checksums that cover those words (a NAT's address change is covered by
/// the IPv4 header checksum and the TCP/UDP pseudo-header alike).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// No change.
    pub const fn new() -> Self {
        Delta(0)
    }

    /// A 16-bit word changed from `old` to `new`.
    #[inline]
    #[must_use]
    pub const fn u16(self, old: u16, new: u16) -> Self {
        Delta(self.0 + (!old) as u64 + new as u64)
    }

    /// A 32-bit field (two words) changed.
    #[inline]
    #[must_use]
    pub const fn u32(self, old: u32, new: u32) -> Self {
        self.u16((old >> 16) as u16, (new >> 16) as u16)
            .u16(old as u16, new as u16)
    }

    /// An IPv4 address changed.
    #[inline]
    #[must_use]
    pub const fn ipv4_addr(self, old: Ipv4Addr, new: Ipv4Addr) -> Self {
        self.u32(old.to_bits(), new.to_bits())
    }

    /// `check` after the changes (RFC 1624 equation 3; the same value a
    /// full recomputation gives).
    #[inline]
    pub const fn apply(self, check: u16) -> u16 {
        !fold((!check) as u64 + self.0)
    }
}

/// UDP's variant of an incremental update (RFC 768): a zero checksum means
/// "none computed" and stays zero; a computed zero is sent as 0xFFFF.
#[inline]
pub fn udp_adjust(check: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    if check == 0 {
        return 0;
    }
    match update(check) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};

    #[test]
    fn delta_equals_updates_applied_one_by_one_and_a_full_recompute() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..10_000 {
            let mut data = [0u8; 24];
            rng.fill_bytes(&mut data);
            let before = internet_checksum(&data);
            let (a, b): (u32, u32) = (rng.random(), rng.random());
            let p: u16 = rng.random();
            let old_a = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            let old_b = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
            let old_p = u16::from_be_bytes([data[20], data[21]]);
            data[4..8].copy_from_slice(&a.to_be_bytes());
            data[12..16].copy_from_slice(&b.to_be_bytes());
            data[20..22].copy_from_slice(&p.to_be_bytes());
            let d = Delta::new().u32(old_a, a).u32(old_b, b).u16(old_p, p);
            let one_by_one =
                update_u16(update_u32(update_u32(before, old_a, a), old_b, b), old_p, p);
            assert_eq!(d.apply(before), one_by_one);
            assert_eq!(d.apply(before), internet_checksum(&data));
        }
    }

    /// The obvious byte-at-a-time RFC 1071 reference.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            s += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            s += u32::from(data[i]) << 8;
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    /// The carries that random data almost never produces: a word sum
    /// whose first 32-bit fold carries again, and 20-byte headers whose
    /// sum needs the third 16-bit fold (4 in 65536 of these).
    #[test]
    fn folds_that_carry_twice_match_the_reference() {
        // Native-order words 0xffffffff, 0xffffffff, 1: the sum is
        // 0x1_ffff_ffff, its 32-bit fold 0x1_0000_0000, folded again to 1.
        let mut data = Vec::new();
        for w in [u32::MAX, u32::MAX, 1] {
            data.extend_from_slice(&w.to_ne_bytes());
        }
        assert_eq!(internet_checksum(&data), reference(&data));
        let mut third_fold = 0;
        for v in 0..=u16::MAX {
            let mut h = [0xffu8; 20];
            h[..2].copy_from_slice(&v.to_be_bytes());
            let s: u64 = h
                .as_chunks::<4>()
                .0
                .iter()
                .map(|w| u64::from(u32::from_ne_bytes(*w)))
                .sum();
            let s1 = (s & 0xffff) + (s >> 16);
            if (s1 & 0xffff) + (s1 >> 16) > 0xffff {
                third_fold += 1;
            }
            assert_eq!(ipv4_header_checksum(&h), reference(&h), "{h:02x?}");
        }
        assert!(third_fold > 0, "no header needed the third fold");
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let mut c = Checksum::new();
        c.add_bytes(&data);
        assert_eq!(c.sum(), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn fast_sum_matches_reference_at_every_length() {
        let mut rng = StdRng::seed_from_u64(1);
        for len in 0..300 {
            for _ in 0..20 {
                let mut data = vec![0u8; len];
                rng.fill_bytes(&mut data);
                if rng.random_bool(0.1) {
                    data.fill(0xff);
                }
                assert_eq!(internet_checksum(&data), reference(&data), "len {len}");
            }
        }
    }

    #[test]
    fn pieces_sum_like_the_whole() {
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..500 {
            let len = rng.random_range(0..200);
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            let cut = rng.random_range(0..=len / 2) * 2;
            let mut c = Checksum::new();
            c.add_bytes(&data[..cut]);
            c.add_bytes(&data[cut..]);
            assert_eq!(c.finish(), reference(&data));
        }
    }

    /// Differential: for random data and random rewrites of a 16-bit, a
    /// 32-bit and a 128-bit field, the incremental update equals a full
    /// recomputation, bit for bit.
    #[test]
    fn incremental_equals_full_recompute() {
        let mut rng = StdRng::seed_from_u64(3);
        for round in 0..20_000 {
            let len = rng.random_range(20..120) & !1;
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            if round % 7 == 0 {
                // Bias towards the edge where sums wrap to 0xFFFF/0x0000.
                data.fill(0);
                data[0] = rng.random();
            }
            // Checksum field at offset 0..2, computed over the rest.
            data[0] = 0;
            data[1] = 0;
            let c = internet_checksum(&data);
            data[..2].copy_from_slice(&c.to_be_bytes());
            assert_eq!(reference(&data), 0);

            let at = rng.random_range(1..(len / 2 - 8)) * 2;
            match round % 3 {
                0 => {
                    let old = u16::from_be_bytes([data[at], data[at + 1]]);
                    let new: u16 = if round % 5 == 0 { !old } else { rng.random() };
                    data[at..at + 2].copy_from_slice(&new.to_be_bytes());
                    let inc = update_u16(c, old, new);
                    data[..2].fill(0);
                    assert_eq!(inc, internet_checksum(&data), "u16 round {round}");
                }
                1 => {
                    let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
                    let new: u32 = rng.random();
                    data[at..at + 4].copy_from_slice(&new.to_be_bytes());
                    let inc =
                        update_ipv4_addr(c, Ipv4Addr::from_bits(old), Ipv4Addr::from_bits(new));
                    data[..2].fill(0);
                    assert_eq!(inc, internet_checksum(&data), "u32 round {round}");
                }
                _ => {
                    if len < at + 16 {
                        continue;
                    }
                    let old: [u8; 16] = data[at..at + 16].try_into().unwrap();
                    let mut new = [0u8; 16];
                    rng.fill_bytes(&mut new);
                    data[at..at + 16].copy_from_slice(&new);
                    let inc = update_ipv6_addr(c, Ipv6Addr::from(old), Ipv6Addr::from(new));
                    data[..2].fill(0);
                    assert_eq!(inc, internet_checksum(&data), "v6 round {round}");
                }
            }
        }
    }

    #[test]
    fn udp_zero_checksum_rule() {
        // "No checksum" stays "no checksum".
        assert_eq!(udp_adjust(0, |c| update_u16(c, 1, 2)), 0);
        // A computed zero is transmitted as all ones: find an update that
        // yields 0 and check it is mapped.
        let c = 0x1234;
        let mut hit = false;
        for v in 0..=u16::MAX {
            if update_u16(c, 0, v) == 0 {
                assert_eq!(udp_adjust(c, |k| update_u16(k, 0, v)), 0xffff);
                hit = true;
                break;
            }
        }
        assert!(hit, "some rewrite must give a zero checksum");
    }
}
