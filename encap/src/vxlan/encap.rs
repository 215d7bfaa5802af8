//! In-place VXLAN encapsulation.

use core::fmt;
use core::ops::Range;

use super::{OVERHEAD, TunnelEndpoint, VxlanConfig, header};
use std::net::IpAddr;

use crate::bytes::{array_mut, be16, sub};
use crate::ethernet::{self, ethertype};
use crate::flow::{FlowHasher, FlowKey};
use crate::icmp::QuotedL4;
use crate::ipv4::{Ipv4Packet, Ipv4Repr};
use crate::ipv6::Ipv6Packet;
use crate::{Ecn, Fragment, ip_proto};

/// Why a frame could not be encapsulated (a caller bug or an oversize frame,
/// never a property of a well-formed inner frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncapError {
    /// Fewer than [`OVERHEAD`] bytes in front of the inner frame.
    Headroom {
        /// Bytes needed in front of the inner frame.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// The inner range does not lie inside the buffer.
    BadRange {
        /// Start of the given range.
        start: usize,
        /// End of the given range.
        end: usize,
        /// Length of the buffer.
        buf_len: usize,
    },
    /// The inner frame is shorter than an Ethernet header.
    InnerTooShort {
        /// Its length.
        len: usize,
    },
    /// The outer IPv4 packet would exceed 65535 bytes.
    TooLarge {
        /// The inner frame's length.
        len: usize,
    },
}

impl fmt::Display for EncapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncapError::Headroom { needed, available } => {
                write!(
                    f,
                    "vxlan encap: needs {needed} bytes of headroom, has {available}"
                )
            }
            EncapError::BadRange {
                start,
                end,
                buf_len,
            } => {
                write!(
                    f,
                    "vxlan encap: inner range {start}..{end} outside a {buf_len}-byte buffer"
                )
            }
            EncapError::InnerTooShort { len } => write!(
                f,
                "vxlan encap: inner frame of {len} bytes has no Ethernet header"
            ),
            EncapError::TooLarge { len } => write!(
                f,
                "vxlan encap: inner frame of {len} bytes exceeds an IPv4 packet"
            ),
        }
    }
}

impl std::error::Error for EncapError {}

/// What encapsulation needs to know about the inner frame: the flow hash that
/// picks the outer source port, and the TOS/traffic class whose DSCP and ECN
/// the outer header copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerMeta {
    /// Flow hash of the inner frame.
    pub hash: u32,
    /// Inner IPv4 TOS or IPv6 traffic class (0 for non-IP).
    pub tos: u8,
}

impl InnerMeta {
    /// Reads the inner frame the way Linux's flow dissector does for
    /// `udp_flow_src_port`: addresses, protocol and ports when present (not
    /// validated: a damaged inner packet is still carried, as Linux carries
    /// it), else the MAC addresses.
    #[inline]
    pub fn from_frame(frame: &[u8], hasher: &FlowHasher) -> InnerMeta {
        if let Some(m) = Self::from_plain_ipv4(frame, hasher) {
            return m;
        }
        match light_flow(frame) {
            Some((key, tos)) => InnerMeta {
                hash: hasher.hash(&key),
                tos,
            },
            None => InnerMeta {
                hash: hasher.hash_bytes(sub(frame, 0, 12)),
                tos: 0,
            },
        }
    }
}

impl InnerMeta {
    /// The common case from one fixed 38-byte read: untagged, option-less,
    /// unfragmented IPv4 carrying TCP or UDP. Same result as the general
    /// path ([`light_flow`]) for such frames.
    #[inline(always)]
    fn from_plain_ipv4(frame: &[u8], hasher: &FlowHasher) -> Option<InnerMeta> {
        let h: [u8; 38] = frame.get(..38)?.try_into().ok()?;
        let proto = h[23];
        let plain = h[12] == 0x08
            && h[13] == 0x00
            && h[14] == 0x45
            && (h[20] & 0x3f) == 0
            && h[21] == 0
            && (proto == ip_proto::TCP || proto == ip_proto::UDP);
        plain.then(|| {
            let src = u32::from_be_bytes([h[26], h[27], h[28], h[29]]);
            let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
            let (sp, dp) = (
                u16::from_be_bytes([h[34], h[35]]),
                u16::from_be_bytes([h[36], h[37]]),
            );
            InnerMeta {
                hash: hasher.hash_v4(src, dst, proto, sp, dp),
                tos: h[15],
            }
        })
    }
}

/// The flow key and TOS of an inner frame, without validating more than the
/// reads need.
#[inline]
fn light_flow(frame: &[u8]) -> Option<(FlowKey, u8)> {
    let l3 = ethernet::header_len(frame).ok()?;
    let ip = sub(frame, l3, frame.len());
    // (address source, protocol, transport offset or None for a later
    // fragment, TOS) for each family; the rest is shared.
    let (src, dst, protocol, l4_at, tos): (IpAddr, IpAddr, u8, Option<usize>, u8) =
        match be16(frame, l3 - 2) {
            ethertype::IPV4 => {
                let p = Ipv4Packet::new_lax(ip).ok()?;
                let at = (!p.is_fragment()).then(|| p.header_len());
                (
                    p.src_addr().into(),
                    p.dst_addr().into(),
                    p.protocol(),
                    at,
                    p.tos(),
                )
            }
            ethertype::IPV6 => {
                let p = Ipv6Packet::new_lax(ip).ok()?;
                let (protocol, at) = match p.next_header() {
                    n @ (ip_proto::TCP | ip_proto::UDP) => (n, Some(crate::ipv6::HEADER_LEN)),
                    _ => match p.upper_layer() {
                        Ok(u) => (
                            u.protocol,
                            (u.fragment != Fragment::Later).then_some(u.offset),
                        ),
                        Err(_) => (p.next_header(), None),
                    },
                };
                (
                    p.src_addr().into(),
                    p.dst_addr().into(),
                    protocol,
                    at,
                    p.traffic_class(),
                )
            }
            _ => return None,
        };
    let l4 = l4_at.map_or(&[][..], |at| sub(ip, at, ip.len()));
    let (src_port, dst_port) = match crate::icmp::transport_ids(protocol, l4, src.is_ipv6()) {
        QuotedL4::Ports { src, dst } => (src, dst),
        QuotedL4::EchoId(id) => (id, id),
        QuotedL4::None => (0, 0),
    };
    Some((
        FlowKey {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
        },
        tos,
    ))
}

/// RFC 6040 section 4.1, normal mode: the outer ECN field is the inner one,
/// except that CE is not propagated (11 -> 10) so the tunnel's own
/// congestion marking stays distinguishable.
pub const fn encap_ecn(inner: Ecn) -> Ecn {
    match inner {
        Ecn::Ce => Ecn::Ect0,
        e => e,
    }
}

/// The outer headers of one tunnel, prepared once (when the routing snapshot
/// is built) so that per packet encapsulation is a 50-byte copy and four
/// patches: the IPv4 total length and TOS, the header checksum (from a
/// precomputed partial sum), and the UDP source port and length. This is the
/// "rewrite string" VPP keeps per tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapTemplate {
    header: [u8; OVERHEAD],
    /// One's-complement sum of the outer IPv4 header words with total
    /// length, TOS and checksum zero.
    ip_sum: u32,
    src_ports: crate::flow::PortRange,
    hasher: FlowHasher,
}

mod at {
    use crate::ethernet::HEADER_LEN as ETH;
    pub const TOS: usize = ETH + 1;
    pub const TOTAL_LEN: usize = ETH + 2;
    pub const IP_CHECKSUM: usize = ETH + 10;
    pub const UDP: usize = ETH + crate::ipv4::MIN_HEADER_LEN;
    pub const SRC_PORT: usize = UDP;
    pub const UDP_LEN: usize = UDP + 4;
}

impl EncapTemplate {
    /// Prepares the outer headers for `ep` under `cfg`.
    pub fn new(cfg: &VxlanConfig, ep: &TunnelEndpoint) -> EncapTemplate {
        let mut ip = [0u8; crate::ipv4::MIN_HEADER_LEN];
        Ipv4Repr {
            src: ep.local_ip,
            dst: ep.remote_ip,
            protocol: ip_proto::UDP,
            payload_len: 0,
            tos: 0,
            ttl: cfg.ttl,
            dont_frag: true,
            ident: 0,
        }
        .emit(&mut ip);
        // The partial sum leaves out what changes per packet: TOS, total
        // length, and the checksum itself.
        let mut zeroed = ip;
        zeroed[1] = 0;
        zeroed[2] = 0;
        zeroed[3] = 0;
        zeroed[crate::ipv4::field::CHECKSUM] = 0;
        zeroed[crate::ipv4::field::CHECKSUM + 1] = 0;
        let mut c = crate::checksum::Checksum::new();
        c.add_bytes(&zeroed);
        let ip_sum = u32::from(c.sum());
        let [m0, m1, m2, m3, m4, m5] = ep.next_hop_mac.0;
        let [s0, s1, s2, s3, s4, s5] = ep.local_mac.0;
        let [t0, t1] = ethertype::IPV4.to_be_bytes();
        let [d0, d1] = cfg.dst_port.to_be_bytes();
        let [
            i0,
            i1,
            i2,
            i3,
            i4,
            i5,
            i6,
            i7,
            i8,
            i9,
            i10,
            i11,
            i12,
            i13,
            i14,
            i15,
            i16,
            i17,
            i18,
            i19,
        ] = ip;
        let [v0, v1, v2, v3, v4, v5, v6, v7] = header::emit(cfg.vni);
        // UDP checksum zero: RFC 7348 section 5, and Linux's default.
        let header = [
            m0, m1, m2, m3, m4, m5, s0, s1, s2, s3, s4, s5, t0, t1, // Ethernet
            i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, i10, i11, i12, i13, i14, i15, i16, i17, i18,
            i19, // IPv4
            0, 0, d0, d1, 0, 0, 0, 0, // UDP
            v0, v1, v2, v3, v4, v5, v6, v7, // VXLAN
        ];
        EncapTemplate {
            header,
            ip_sum,
            src_ports: cfg.src_ports,
            hasher: cfg.hasher,
        }
    }

    /// The flow hasher that picks source ports (for [`InnerMeta::from_frame`]).
    pub fn hasher(&self) -> &FlowHasher {
        &self.hasher
    }
}

/// Encapsulates the Ethernet frame at `buf[inner]` in place: writes the outer
/// Ethernet, IPv4, UDP and VXLAN headers into the [`OVERHEAD`] bytes in front
/// of it and returns the range of the outer frame. The inner frame is not
/// moved or copied.
///
/// Reads the inner frame once for the flow hash and TOS; a caller that has
/// already parsed it passes those with [`encapsulate_with`].
#[inline]
pub fn encapsulate(
    buf: &mut [u8],
    inner: Range<usize>,
    tmpl: &EncapTemplate,
) -> Result<Range<usize>, EncapError> {
    let meta = InnerMeta::from_frame(buf.get(inner.clone()).unwrap_or(&[]), &tmpl.hasher);
    encapsulate_with(buf, inner, tmpl, meta)
}

/// [`encapsulate`] with the inner frame's hash and TOS supplied.
#[inline]
pub fn encapsulate_with(
    buf: &mut [u8],
    inner: Range<usize>,
    tmpl: &EncapTemplate,
    meta: InnerMeta,
) -> Result<Range<usize>, EncapError> {
    let Range { start, end } = inner;
    if start > end || end > buf.len() {
        return Err(EncapError::BadRange {
            start,
            end,
            buf_len: buf.len(),
        });
    }
    if start < OVERHEAD {
        return Err(EncapError::Headroom {
            needed: OVERHEAD,
            available: start,
        });
    }
    let inner_len = end - start;
    if inner_len < ethernet::HEADER_LEN {
        return Err(EncapError::InnerTooShort { len: inner_len });
    }
    // Largest inner frame: 65535 - 20 (IPv4) - 8 (UDP) - 8 (VXLAN).
    if inner_len > usize::from(u16::MAX) - (OVERHEAD - ethernet::HEADER_LEN) {
        return Err(EncapError::TooLarge { len: inner_len });
    }
    let total_len = (inner_len + OVERHEAD - ethernet::HEADER_LEN) as u16;
    let udp_len = total_len - crate::ipv4::MIN_HEADER_LEN as u16;

    let outer_start = start - OVERHEAD;
    let Some(h) = array_mut::<OVERHEAD>(buf, outer_start) else {
        return Err(EncapError::BadRange {
            start,
            end,
            buf_len: inner_len,
        });
    };
    *h = tmpl.header;
    // RFC 6040 normal mode: copy DSCP, map ECN.
    let tos = (meta.tos & !0b11) | encap_ecn(Ecn::from_tos(meta.tos)) as u8;
    let mut sum = tmpl.ip_sum + u32::from(total_len) + u32::from(tos);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let [c0, c1] = (!(sum as u16)).to_be_bytes();
    let [l0, l1] = total_len.to_be_bytes();
    let [p0, p1] = tmpl.src_ports.pick(meta.hash).to_be_bytes();
    let [u0, u1] = udp_len.to_be_bytes();
    h[at::TOS] = tos;
    h[at::TOTAL_LEN] = l0;
    h[at::TOTAL_LEN + 1] = l1;
    h[at::IP_CHECKSUM] = c0;
    h[at::IP_CHECKSUM + 1] = c1;
    h[at::SRC_PORT] = p0;
    h[at::SRC_PORT + 1] = p1;
    h[at::UDP_LEN] = u0;
    h[at::UDP_LEN + 1] = u1;
    Ok(outer_start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::Ipv4Packet;

    fn inner_ipv4(tos: u8) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, tos, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 244, 1, 2, 10, 244, 2, 3,
        ]);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
        f
    }

    /// The fixed-read fast path classifies exactly as the general path.
    #[test]
    fn fast_inner_classification_matches_general() {
        use rand::{SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(31);
        let hasher = FlowHasher::symmetric(5);
        let mut fast_hits = 0;
        for _ in 0..5_000 {
            let f = crate::testutil::random_frame(&mut rng, 64);
            let general = match light_flow(&f) {
                Some((k, tos)) => InnerMeta {
                    hash: hasher.hash(&k),
                    tos,
                },
                None => unreachable!("random frames are IP"),
            };
            if InnerMeta::from_plain_ipv4(&f, &hasher).is_some() {
                fast_hits += 1;
            }
            assert_eq!(InnerMeta::from_frame(&f, &hasher), general);
        }
        assert!(
            fast_hits > 1_000,
            "the fast path is exercised ({fast_hits})"
        );
    }

    #[test]
    fn ecn_encap_table() {
        // RFC 6040 section 4.1 normal mode.
        assert_eq!(encap_ecn(Ecn::NotEct), Ecn::NotEct);
        assert_eq!(encap_ecn(Ecn::Ect1), Ecn::Ect1);
        assert_eq!(encap_ecn(Ecn::Ect0), Ecn::Ect0);
        assert_eq!(encap_ecn(Ecn::Ce), Ecn::Ect0);
    }

    #[test]
    fn outer_tos_copies_dscp_and_maps_ecn() {
        let cfg = VxlanConfig::default();
        let ep = TunnelEndpoint {
            local_mac: crate::MacAddr([2, 0, 0, 0, 1, 1]),
            next_hop_mac: crate::MacAddr([2, 0, 0, 0, 2, 2]),
            local_ip: [192, 0, 2, 1].into(),
            remote_ip: [192, 0, 2, 2].into(),
        };
        for (tos, outer) in [
            (0xb8u8, 0xb8u8),
            (0xb9, 0xb9),
            (0xba, 0xba),
            (0xbb, 0xba),
            (0x03, 0x02),
        ] {
            let inner = inner_ipv4(tos);
            let mut buf = vec![0u8; OVERHEAD];
            buf.extend_from_slice(&inner);
            let r = encapsulate(
                &mut buf,
                OVERHEAD..OVERHEAD + inner.len(),
                &EncapTemplate::new(&cfg, &ep),
            )
            .unwrap();
            assert_eq!(r, 0..buf.len());
            let ip = Ipv4Packet::new_checked(&buf[14..]).unwrap();
            assert_eq!(ip.tos(), outer, "inner tos {tos:#x}");
            assert!(ip.verify_checksum() && ip.dont_frag());
            assert_eq!(&buf[OVERHEAD..], &inner[..], "inner untouched");
        }
    }

    /// The outer checksum's second fold: the pre-fold sum is exactly
    /// 0x1ffff only when the template's fixed-field sum, the total length
    /// and the TOS add up to it, which needs an endpoint whose address
    /// words sum close to 0xffff. Found by search, then every TOS checked
    /// at the length that lands there.
    #[test]
    fn outer_checksum_folds_twice_when_the_sum_carries_into_a_carry() {
        let cfg = VxlanConfig::default();
        let tmpl = (0..=255u8)
            .flat_map(|a| (0..=255u8).map(move |b| (a, b)))
            .map(|(a, b)| {
                let ep = TunnelEndpoint {
                    local_mac: crate::MacAddr([2, 0, 0, 0, 1, 1]),
                    next_hop_mac: crate::MacAddr([2, 0, 0, 0, 2, 2]),
                    local_ip: [192, 0, 2, 1].into(),
                    remote_ip: [198, 51, a, b].into(),
                };
                EncapTemplate::new(&cfg, &ep)
            })
            .find(|t| t.ip_sum >= 0xff10)
            .expect("some endpoint sums near 0xffff");
        let mut hits = 0;
        for tos in (0..=255u8).filter(|t| t & 0b11 != 0b11) {
            let want = 0x1ffff - tmpl.ip_sum - u32::from(tos);
            let Ok(total) = u16::try_from(want) else {
                continue;
            };
            let inner_len = usize::from(total) - (OVERHEAD - ethernet::HEADER_LEN);
            let mut b = vec![0u8; OVERHEAD + inner_len];
            let end = b.len();
            let meta = InnerMeta { hash: 7, tos };
            let r = encapsulate_with(&mut b, OVERHEAD..end, &tmpl, meta).unwrap();
            let ip = Ipv4Packet::new_checked(&b[r.start + 14..r.end]).unwrap();
            assert_eq!(ip.total_len(), total);
            assert!(ip.verify_checksum(), "tos {tos:#x} total length {total}");
            hits += 1;
        }
        assert!(hits > 0, "some TOS reaches the 0x1ffff sum");
    }

    /// An inner IPv6 frame: `ext` (next header, bytes) is put between the
    /// fixed header and a UDP header with source port `sport`.
    fn inner_ipv6(ext: Option<(u8, [u8; 8])>, sport: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let ext_len = ext.map_or(0, |_| 8);
        let payload = (ext_len + 8) as u16;
        let next = ext.map_or(17, |(n, _)| n);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&payload.to_be_bytes());
        f.extend_from_slice(&[next, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        if let Some((_, bytes)) = ext {
            f.extend_from_slice(&bytes);
        }
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&[0, 53, 0, 8, 0, 0]);
        f
    }

    /// The outer source port spreads IPv6 flows by their ports even when
    /// extension headers come before the transport header, and leaves the
    /// ports out of a non-first fragment (they are not there).
    #[test]
    fn ipv6_ports_are_hashed_behind_extension_headers() {
        let hasher = FlowHasher::symmetric(9);
        let hash = |f: &[u8]| InnerMeta::from_frame(f, &hasher).hash;
        // Hop-by-hop options (PadN), then UDP.
        let hbh = (0u8, [17, 0, 1, 4, 0, 0, 0, 0]);
        // A first fragment (offset 0, more fragments), then UDP.
        let first = (44u8, [17, 0, 0, 1, 0, 0, 0, 9]);
        // A later fragment (offset 8 bytes): no transport header in it.
        let later = (44u8, [17, 0, 0, 8, 0, 0, 0, 9]);
        for ext in [None, Some(hbh), Some(first)] {
            assert_ne!(
                hash(&inner_ipv6(ext, 1000)),
                hash(&inner_ipv6(ext, 1001)),
                "ports hashed behind {ext:?}"
            );
        }
        assert_eq!(
            light_flow(&inner_ipv6(Some(hbh), 1000)).map(|(k, _)| (k.protocol, k.src_port)),
            Some((17, 1000))
        );
        assert_eq!(
            hash(&inner_ipv6(Some(later), 1000)),
            hash(&inner_ipv6(Some(later), 1001)),
            "a later fragment's bytes are not ports"
        );
    }

    #[test]
    fn errors_for_bad_calls() {
        let cfg = VxlanConfig::default();
        let ep = TunnelEndpoint {
            local_mac: crate::MacAddr::default(),
            next_hop_mac: crate::MacAddr::default(),
            local_ip: [0, 0, 0, 0].into(),
            remote_ip: [0, 0, 0, 0].into(),
        };
        let mut buf = vec![0u8; 100];
        assert_eq!(
            encapsulate(&mut buf, 49..100, &EncapTemplate::new(&cfg, &ep)),
            Err(EncapError::Headroom {
                needed: 50,
                available: 49
            })
        );
        assert_eq!(
            encapsulate(&mut buf, 50..63, &EncapTemplate::new(&cfg, &ep)),
            Err(EncapError::InnerTooShort { len: 13 })
        );
        assert_eq!(
            encapsulate(&mut buf, 60..101, &EncapTemplate::new(&cfg, &ep)),
            Err(EncapError::BadRange {
                start: 60,
                end: 101,
                buf_len: 100
            })
        );
        let mut big = vec![0u8; 50 + 65536];
        assert!(matches!(
            encapsulate(&mut big, 50..50 + 65500, &EncapTemplate::new(&cfg, &ep)),
            Err(EncapError::TooLarge { .. })
        ));
        assert!(encapsulate(&mut big, 50..50 + 65470, &EncapTemplate::new(&cfg, &ep)).is_ok());
    }
}
