//! The receive side of the offload uplink: packets read from the uplink TAP
//! as the kernel queued them, behind a virtio-net header
//! (`struct virtio_net_hdr_v1_hash_tunnel`, read with
//! `TUN_F_UDP_TUNNEL_GSO`), turned into the frames the worker handles.
//!
//! A peer's TCP burst arrives as one super-packet of up to 64 KiB (the
//! sender's TSO, a VXLAN device's UDP-tunnel GSO, or the uplink's GRO):
//! read once instead of once per 1.4 KB frame. [`Plan`] checks its headers
//! once and then writes any segment `i` straight into a caller's buffer, as
//! Linux's `tcp_gso_segment` (and `skb_udp_tunnel_segment` around it) would
//! have cut it: each segment's sequence number, IP length and id, FIN and
//! PSH on the last segment only, CWR on the first only, checksums complete;
//! for VXLAN the outer IP length, id and checksum and the UDP length per
//! segment, UDP checksum zero (Linux's vxlan default). UDP GSO
//! (`GSO_UDP_L4`) is cut into datagrams of `gso_size` bytes each.
//!
//! A packet the kernel left with its checksum unfinished (`NEEDS_CSUM`: a
//! peer's veth or a local socket skipped it, a NIC would have filled it in)
//! is finished here, the way `skb_checksum_help` does; that is what lets a
//! kernel node keep its default offloads on.
//!
//! Nothing here allocates; a header the kernel would not write (offsets
//! outside the packet, a GSO type without the headers it names, a segment
//! larger than the buffer) is refused, and the caller counts it.

use std::net::Ipv4Addr;

use encap::checksum::{Checksum, internet_checksum, pseudo_header_v4};

use super::gro::VXLAN_OUTER;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` holds only the pseudo-header's sum.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM`: the outer UDP checksum is partial
/// too.
const F_UDP_TUNNEL_CSUM: u8 = 8;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP_L4: u8 = 5;
const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The fields of a virtio-net header the receive side uses (host byte
/// order, as a TAP without TUNSETVNETBE/LE writes them on a little-endian
/// host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the first 10 bytes of a header (the legacy part, which every
    /// larger header starts with).
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let &[flags, gso_type, _, _, s0, s1, c0, c1, o0, o1] = b.first_chunk::<10>()?;
        Some(VnetHdr {
            flags,
            gso_type,
            gso_size: u16::from_ne_bytes([s0, s1]),
            csum_start: u16::from_ne_bytes([c0, c1]),
            csum_offset: u16::from_ne_bytes([o0, o1]),
        })
    }

    /// Writes the header (legacy part) to `b`: for tests and fuzzing.
    pub fn write(&self, b: &mut [u8]) {
        let Some(h) = b.first_chunk_mut::<10>() else {
            return;
        };
        let [s0, s1] = self.gso_size.to_ne_bytes();
        let [c0, c1] = self.csum_start.to_ne_bytes();
        let [o0, o1] = self.csum_offset.to_ne_bytes();
        *h = [self.flags, self.gso_type, 0, 0, s0, s1, c0, c1, o0, o1];
    }
}

/// Why a packet read from the TAP cannot be handed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A GSO type this side does not cut (IPv6, UFO).
    GsoType(u8),
    /// Headers missing, or not what the GSO type names (not IPv4, not
    /// TCP or UDP, a fragment, offsets outside the packet).
    Malformed,
}

/// How the packet is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// One frame as it came, its checksum finished at `csum` (the field's
    /// offset and the summed range's start) if the kernel left it partial;
    /// `outer_udp`: the outer UDP checksum to clear.
    Whole {
        csum: Option<(usize, usize)>,
        outer_udp: bool,
    },
    /// TCP or UDP (`tcp`) segments of `mss` payload bytes.
    Segments {
        tcp: bool,
        tunnel: bool,
        /// The (inner) IPv4 header's offset and length.
        ip: usize,
        ihl: usize,
        /// End of the transport header: where the payload starts.
        hend: usize,
        mss: usize,
    },
}

/// A packet read from the TAP, checked, with the number of frames it makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    cut: Cut,
    len: usize,
    count: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*b.get(at..)?.first_chunk::<2>()?))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(d) = b.get_mut(at..at + 2) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

/// Whether `frame` carries IPv4 after an Ethernet header at `eth`.
fn ipv4_after(frame: &[u8], eth: usize) -> bool {
    u16_at(frame, eth + 12) == Some(0x0800)
}

/// The IPv4 header at `ip`: its length, if it is a whole, unfragmented
/// header of protocol `proto`.
fn ipv4_header(frame: &[u8], ip: usize, proto: u8) -> Option<usize> {
    let vihl = *frame.get(ip)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    let frag = u16_at(frame, ip + 6)?;
    (vihl >> 4 == 4 && ihl >= 20 && frame.get(ip + 9) == Some(&proto) && frag & 0x3fff == 0)
        .then_some(ihl)
        .filter(|&ihl| ip + ihl <= frame.len())
}

impl Plan {
    /// Checks the Ethernet frame `frame` (after the virtio-net header `h`)
    /// and plans its frames.
    pub fn new(h: &VnetHdr, frame: &[u8]) -> Result<Plan, Refused> {
        Plan::with_l2(h, frame, 14)
    }

    /// [`Plan::new`] for an IP packet without a link header (a TUN
    /// device's): no tunnel.
    pub fn for_ip(h: &VnetHdr, frame: &[u8]) -> Result<Plan, Refused> {
        if h.gso_type & GSO_UDP_TUNNEL_IPV4 != 0 || h.flags & F_UDP_TUNNEL_CSUM != 0 {
            return Err(Refused::Malformed);
        }
        Plan::with_l2(h, frame, 0)
    }

    fn with_l2(h: &VnetHdr, frame: &[u8], l2: usize) -> Result<Plan, Refused> {
        let len = frame.len();
        if len < l2.max(1) {
            return Err(Refused::Malformed);
        }
        let base = h.gso_type & !(GSO_ECN | GSO_UDP_TUNNEL_IPV4);
        if base == GSO_NONE && h.gso_type & GSO_UDP_TUNNEL_IPV4 == 0 {
            let csum = if h.flags & F_NEEDS_CSUM != 0 {
                let start = usize::from(h.csum_start);
                let field = start + usize::from(h.csum_offset);
                if start < l2 || field + 2 > len {
                    return Err(Refused::Malformed);
                }
                Some((field, start))
            } else {
                None
            };
            let outer_udp = h.flags & F_UDP_TUNNEL_CSUM != 0;
            if outer_udp && !(ipv4_after(frame, 0) && ipv4_header(frame, 14, 17) == Some(20)) {
                return Err(Refused::Malformed);
            }
            let cut = Cut::Whole { csum, outer_udp };
            return Ok(Plan { cut, len, count: 1 });
        }
        let tcp = match base {
            GSO_TCPV4 => true,
            GSO_UDP_L4 => false,
            _ => return Err(Refused::GsoType(h.gso_type)),
        };
        let tunnel = h.gso_type & GSO_UDP_TUNNEL_IPV4 != 0;
        if l2 > 0 && !ipv4_after(frame, 0) {
            return Err(Refused::Malformed);
        }
        let ip = if tunnel {
            // Outer IPv4 without options (what VXLAN_OUTER counts), UDP,
            // VXLAN, inner Ethernet carrying IPv4.
            if ipv4_header(frame, 14, 17) != Some(20) || !ipv4_after(frame, 50) {
                return Err(Refused::Malformed);
            }
            VXLAN_OUTER
        } else {
            l2
        };
        let proto = if tcp { 6 } else { 17 };
        let ihl = ipv4_header(frame, ip, proto).ok_or(Refused::Malformed)?;
        let l4 = ip + ihl;
        let thl = if tcp {
            usize::from(frame.get(l4 + 12).ok_or(Refused::Malformed)? >> 4) * 4
        } else {
            8
        };
        let hend = l4 + thl;
        let mss = usize::from(h.gso_size);
        if thl < 8 || (tcp && thl < 20) || hend > len || mss == 0 {
            return Err(Refused::Malformed);
        }
        let payload = len - hend;
        let count = payload.div_ceil(mss).max(1);
        let cut = Cut::Segments {
            tcp,
            tunnel,
            ip,
            ihl,
            hend,
            mss,
        };
        Ok(Plan { cut, len, count })
    }

    /// Frames the packet makes.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The largest frame [`Plan::segment`] writes.
    pub fn max_frame(&self) -> usize {
        match self.cut {
            Cut::Whole { .. } => self.len,
            Cut::Segments { hend, mss, .. } => (hend + mss).min(self.len),
        }
    }

    /// Writes frame `i` of `frame` (the packet this plan was made for)
    /// into `out`; returns its length, or `None` if `i` is past
    /// [`Plan::count`] or `out` is too small.
    pub fn segment(&self, frame: &[u8], i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.count || frame.len() != self.len {
            return None;
        }
        match self.cut {
            Cut::Whole { csum, outer_udp } => {
                let o = out.get_mut(..self.len)?;
                o.copy_from_slice(frame);
                if outer_udp {
                    put16(o, 40, 0);
                }
                if let Some((field, start)) = csum {
                    let mut c = Checksum::new();
                    c.add_bytes(o.get(start..)?);
                    let v = match c.finish() {
                        0 => 0xffff,
                        v => v,
                    };
                    put16(o, field, v);
                }
                Some(self.len)
            }
            Cut::Segments {
                tcp,
                tunnel,
                ip,
                ihl,
                hend,
                mss,
            } => {
                let from = hend + i * mss;
                let to = (from + mss).min(self.len);
                let n = hend + (to - from);
                let o = out.get_mut(..n)?;
                o.get_mut(..hend)?.copy_from_slice(frame.get(..hend)?);
                o.get_mut(hend..)?.copy_from_slice(frame.get(from..to)?);
                let step = u16::try_from(i).ok()?;
                if tunnel {
                    put16(o, 16, u16::try_from(n - 14).ok()?);
                    let id = u16_at(o, 18)?.wrapping_add(step);
                    put16(o, 18, id);
                    put16(o, 24, 0);
                    let c = internet_checksum(o.get(14..34)?);
                    put16(o, 24, c);
                    put16(o, 38, u16::try_from(n - 34).ok()?);
                    put16(o, 40, 0);
                }
                let l4 = ip + ihl;
                let l4_len = u16::try_from(n - l4).ok()?;
                put16(o, ip + 2, u16::try_from(n - ip).ok()?);
                let id = u16_at(o, ip + 4)?.wrapping_add(step);
                put16(o, ip + 4, id);
                put16(o, ip + 10, 0);
                let c = internet_checksum(o.get(ip..l4)?);
                put16(o, ip + 10, c);
                let &[a, b, c, d, e, f, g, h] = o.get(ip + 12..)?.first_chunk::<8>()?;
                let (src, dst) = (Ipv4Addr::new(a, b, c, d), Ipv4Addr::new(e, f, g, h));
                let field = if tcp {
                    let seq = u32::from_be_bytes(*o.get(l4 + 4..)?.first_chunk::<4>()?)
                        .wrapping_add(u32::try_from(i * mss).ok()?);
                    o.get_mut(l4 + 4..l4 + 8)?
                        .copy_from_slice(&seq.to_be_bytes());
                    let flags = o.get_mut(l4 + 13)?;
                    if i + 1 < self.count {
                        *flags &= !(TCP_FIN | TCP_PSH);
                    }
                    if i > 0 {
                        *flags &= !TCP_CWR;
                    }
                    l4 + 16
                } else {
                    put16(o, l4 + 4, l4_len);
                    l4 + 6
                };
                put16(o, field, 0);
                let mut c = pseudo_header_v4(src, dst, if tcp { 6 } else { 17 }, l4_len);
                c.add_bytes(o.get(l4..)?);
                let v = match c.finish() {
                    0 if !tcp => 0xffff,
                    v => v,
                };
                put16(o, field, v);
                Some(n)
            }
        }
    }
}

/// Fuzz support: checks the cutting's invariants, panicking when one
/// breaks (that is its job, hence the allowances).
#[doc(hidden)]
#[allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod fuzzing {
    use super::*;
    use crate::port::gro::fuzzing::{tcp_segment, vxlan_wrap};
    use crate::port::gro::{Coalescer, Layout, TUNNEL_HDR_LEN};

    /// Fuzz harness (the `tap_gso` target). With bit 0 of the first byte
    /// clear, the next 10 bytes are a virtio-net header and the rest a
    /// packet: planning and cutting never panic, no frame is larger than
    /// [`Plan::max_frame`], and every segment of a GSO packet has a right
    /// IP header checksum, IP length and transport checksum. With it set,
    /// the rest describes a burst of one TCP flow (segment sizes, VXLAN or
    /// not) that the transmit side's coalescer merges: cutting the merged
    /// write gives back exactly the segments that made it.
    pub fn harness(data: &[u8]) {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        if sel & 1 == 0 {
            raw(rest);
        } else {
            round_trip(sel & 2 != 0, rest);
        }
    }

    fn raw(data: &[u8]) {
        let Some(h) = VnetHdr::parse(data) else {
            return;
        };
        let frame = &data[10..];
        whole(&h, frame, true);
        whole(&h, frame.get(14..).unwrap_or_default(), false);
        let Ok(plan) = Plan::new(&h, frame) else {
            return;
        };
        let mut out = vec![0u8; 4096];
        for i in 0..plan.count().min(64) {
            let Some(n) = plan.segment(frame, i, &mut out) else {
                continue;
            };
            assert!(n <= plan.max_frame());
            if let Cut::Segments { tcp, ip, ihl, .. } = plan.cut {
                let o = &out[..n];
                assert_eq!(internet_checksum(&o[ip..ip + ihl]), 0, "IP checksum");
                assert_eq!(usize::from(u16_at(o, ip + 2).unwrap()), n - ip);
                let l4 = ip + ihl;
                let src = Ipv4Addr::new(o[ip + 12], o[ip + 13], o[ip + 14], o[ip + 15]);
                let dst = Ipv4Addr::new(o[ip + 16], o[ip + 17], o[ip + 18], o[ip + 19]);
                let proto = if tcp { 6 } else { 17 };
                let mut c = pseudo_header_v4(src, dst, proto, (n - l4) as u16);
                c.add_bytes(&o[l4..]);
                assert_eq!(c.finish(), 0, "transport checksum of segment {i}");
            }
        }
    }

    /// A packet the worker carries whole ([`tso::accept`]), made ready to
    /// be written ([`tso::finish`]) and cut by the header it is written
    /// with ([`tso::vnet`]), makes exactly the segments the header it was
    /// read with does; one that turns out a single segment is that segment.
    fn whole(h: &VnetHdr, frame: &[u8], eth: bool) {
        use crate::buf::Buf;
        use crate::port::tso;
        let mut taken = frame.to_vec();
        let Some(g) = tso::accept(h, &mut taken, eth) else {
            return;
        };
        let plan = |h: &VnetHdr, f: &[u8]| {
            if eth {
                Plan::new(h, f)
            } else {
                Plan::for_ip(h, f)
            }
        };
        let cut = |p: &Plan, f: &[u8]| -> Vec<Vec<u8>> {
            let mut out = vec![0u8; p.max_frame()];
            (0..p.count())
                .map(|i| {
                    let n = p.segment(f, i, &mut out).expect("a segment");
                    out[..n].to_vec()
                })
                .collect()
        };
        let want = cut(&plan(h, frame).expect("taken whole, so plannable"), frame);
        let mut b = Buf::big(0);
        b.fill(&taken);
        b.set_gso(Some(g));
        assert!(tso::finish(&mut b, eth));
        let got = match b.gso() {
            Some(g) => {
                let h2 = tso::vnet(b.data(), eth, g).expect("a header");
                cut(&plan(&h2, b.data()).expect("plannable"), b.data())
            }
            None => vec![b.data().to_vec()],
        };
        assert!(got == want, "carried whole, cut differently");
        // Counted as the frames it carries (the IP packet inside).
        let ip = match (eth, g.tunnel) {
            (true, true) => VXLAN_OUTER,
            (true, false) => 14,
            _ => 0,
        };
        let inner = b.gso().map(|g| crate::buf::Gso { tunnel: false, ..g });
        assert_eq!(tso::segments(&b.data()[ip..], inner), want.len() as u64);
    }

    /// `n` segments of one TCP flow as a sender's TSO cuts them: 1,400
    /// payload bytes each but the last (`last` bytes, with PSH), IP ids
    /// counting up, TCP options `opts`; as VXLAN frames (outer ids counting
    /// up too) if `tunnel`, else as Ethernet frames. Payload bytes mix in
    /// `seed`.
    pub fn burst(n: usize, last: usize, opts: &[u8], tunnel: bool, seed: u8) -> Vec<Vec<u8>> {
        let mut seq = 7u32;
        (0..n)
            .map(|i| {
                let size = if i + 1 == n { last } else { 1400 };
                let flags = if i + 1 == n { 0x18 } else { 0x10 };
                let body: Vec<u8> = (0..size).map(|k| (k as u8) ^ seed ^ (i as u8)).collect();
                let mut p = tcp_segment(seq, &body, flags, opts);
                seq = seq.wrapping_add(size as u32);
                p[4..6].copy_from_slice(&(i as u16).to_be_bytes());
                p[10..12].fill(0);
                let c = internet_checksum(&p[..20]);
                p[10..12].copy_from_slice(&c.to_be_bytes());
                let mut f = vxlan_wrap(&p);
                f[18..20].copy_from_slice(&(i as u16).to_be_bytes());
                f[24..26].fill(0);
                let c = internet_checksum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
                if tunnel {
                    f
                } else {
                    f[VXLAN_OUTER - 14..].to_vec()
                }
            })
            .collect()
    }

    fn round_trip(tunnel: bool, data: &[u8]) {
        let n = data.len().min(60);
        let Some(&b) = data.get(n.wrapping_sub(1)) else {
            return;
        };
        let frames = burst(n, 1 + usize::from(b) * 5, &[], tunnel, b);
        let lay = if tunnel {
            Layout::VXLAN
        } else {
            Layout::ETHERNET
        };
        let mut writes = Vec::new();
        let _ = Coalescer::with_layout(lay).write_batch(frames.iter().map(Vec::as_slice), |b| {
            writes.push(b.to_vec());
            Ok(b.len())
        });
        let mut got = Vec::new();
        let mut out = vec![0u8; 4096];
        for w in &writes {
            let h = VnetHdr::parse(w).unwrap();
            let f = &w[TUNNEL_HDR_LEN..];
            let plan = Plan::new(&h, f).unwrap();
            for i in 0..plan.count() {
                let n = plan.segment(f, i, &mut out).unwrap();
                got.push(out[..n].to_vec());
            }
        }
        assert!(got == frames, "cut back differently from what was merged");
    }
}

#[cfg(test)]
#[path = "gso_tests.rs"]
mod tests;
