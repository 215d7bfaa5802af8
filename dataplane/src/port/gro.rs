//! TCP receive coalescing (GRO) for writes into an offloading TUN device.
//!
//! Consecutive in-order segments of one IPv4 TCP flow in a transmit batch
//! become one write of up to 64 KiB behind a virtio-net header that marks it
//! as a TSO super-packet (`GSO_TCPV4`, checksum partial), the way Linux's
//! own GRO hands a veth or TUN peer one skb per burst. The pod's kernel then
//! runs its TCP receive path once per write instead of once per segment.
//!
//! The rules follow Linux's `tcp_gro_receive`: same addresses and ports,
//! same TTL, TOS and DF; no IP options and no fragments; flags ACK, with
//! PSH only on the last segment merged; identical TCP options (timestamps
//! included) and acknowledgement number and window; sequence numbers
//! contiguous; every segment but the last exactly the first one's size.
//! A segment's TCP checksum is verified before it is merged, because the
//! merged packet's checksum is recomputed by the pod's kernel and would hide
//! a corrupted segment. Everything else is written as it came, one write per
//! packet, behind an empty header.
//!
//! tun-rs has a GRO of its own (`send_multiple`), but it copies every TCP
//! segment into a fresh `Vec` and coalesces only into buffers that already
//! have the room: one allocation per packet on the fast path. This one
//! works in a buffer allocated once per port.

use std::io;
use std::net::Ipv4Addr;

use encap::checksum::{Checksum, pseudo_header_v4};

/// The legacy virtio-net header that precedes every packet on a TUN device
/// opened with `IFF_VNET_HDR` (`struct virtio_net_hdr`, 10 bytes).
pub const VNET_HDR_LEN: usize = 10;

/// The virtio-net header with UDP-tunnel offsets
/// (`struct virtio_net_hdr_v1_hash_tunnel`, Linux 6.17): what a TAP set to
/// this header size and `TUN_F_UDP_TUNNEL_GSO` reads and writes.
pub const TUNNEL_HDR_LEN: usize = 24;

/// A VXLAN frame's headers before the inner IP packet: outer Ethernet,
/// IPv4 (no options), UDP, VXLAN, inner Ethernet.
pub const VXLAN_OUTER: usize = 14 + 20 + 8 + 8 + 14;

const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;

/// Where packets sit in what the coalescer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The virtio-net header's size.
    pub vnet: usize,
    /// Bytes of encapsulation before the (inner) IP packet: 0 for a TUN
    /// device, 14 (Ethernet) or [`VXLAN_OUTER`] for frames to an uplink
    /// TAP.
    pub outer: usize,
    /// The frames are VXLAN (outer Ethernet, IPv4, UDP, VXLAN, inner
    /// Ethernet) and merge into UDP-tunnel GSO packets.
    pub tunnel: bool,
}

impl Layout {
    /// IP packets to a TUN device (`IFF_VNET_HDR`, legacy header).
    pub const TUN: Layout = Layout {
        vnet: VNET_HDR_LEN,
        outer: 0,
        tunnel: false,
    };
    /// VXLAN frames to a TAP with UDP-tunnel GSO: a merged frame becomes
    /// one packet the kernel segments late (`GSO_TCPV4 | UDP_TUNNEL_IPV4`),
    /// as its own vxlan device's packets are.
    pub const VXLAN: Layout = Layout {
        vnet: TUNNEL_HDR_LEN,
        outer: VXLAN_OUTER,
        tunnel: true,
    };
    /// Ethernet frames (SNAT-bound traffic, replies from pods) to the
    /// uplink TAP: a merged run becomes one TSO packet (`GSO_TCPV4`) the
    /// uplink segments.
    pub const ETHERNET: Layout = Layout {
        vnet: TUNNEL_HDR_LEN,
        outer: 14,
        tunnel: false,
    };

    /// Largest inner IP packet: 64 KiB, less the outer IP packet's share
    /// of the encapsulation (its total length is 16 bits too).
    fn max_inner(self) -> usize {
        if self.tunnel {
            MAX_IP - self.outer.saturating_sub(14)
        } else {
            MAX_IP
        }
    }

    /// Whether `frame` has this layout's outer headers: for
    /// [`Layout::VXLAN`], a VXLAN frame over IPv4 without options, UDP
    /// checksum zero (as Linux's vxlan sends), carrying Ethernet + IPv4;
    /// for [`Layout::ETHERNET`], Ethernet carrying IPv4.
    pub fn matches(self, frame: &[u8]) -> bool {
        let b = |i: usize| frame.get(i).copied();
        let ipv4_at =
            |o: usize| b(o.wrapping_sub(2)) == Some(0x08) && b(o.wrapping_sub(1)) == Some(0);
        if self.tunnel {
            ipv4_at(14)
                && b(14) == Some(0x45)
                && b(23) == Some(17)
                && b(40) == Some(0)
                && b(41) == Some(0)
                && ipv4_at(self.outer)
        } else {
            self.outer == 0 || ipv4_at(self.outer)
        }
    }
}

const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Largest IPv4 packet (total length is 16 bits).
const MAX_IP: usize = 65535;

/// The parts of a segment that decide whether it joins a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seg {
    /// IP header length + TCP header length.
    hlen: usize,
    seq: u32,
    payload: usize,
    psh: bool,
}

/// Parses `frame` as a coalescing candidate: outer headers that
/// [`Layout::matches`]; then the (inner) packet is IPv4 without options or
/// fragmentation, TCP with ACK (and maybe PSH) only and a payload, lengths
/// consistent.
fn candidate(frame: &[u8], lay: Layout) -> Option<Seg> {
    if !lay.matches(frame) {
        return None;
    }
    let pkt = frame.get(lay.outer..)?;
    let b = |i: usize| pkt.get(i).copied();
    if b(0)? != 0x45 || b(9)? != 6 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([b(2)?, b(3)?]));
    // MF set or a fragment offset: not a whole segment.
    if total != pkt.len() || b(6)? & 0x3f != 0 || b(7)? != 0 {
        return None;
    }
    let thlen = usize::from(b(32)? >> 4) * 4;
    let flags = b(33)?;
    if !(20..=60).contains(&thlen) || flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    let hlen = 20 + thlen;
    let payload = total.checked_sub(hlen).filter(|&p| p > 0)?;
    Some(Seg {
        hlen,
        seq: u32::from_be_bytes([b(24)?, b(25)?, b(26)?, b(27)?]),
        payload,
        psh: flags & TCP_PSH != 0,
    })
}

/// Source and destination of an IPv4 header.
fn addrs(ip: &[u8; 20]) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
    )
}

/// Whether the TCP checksum of the IPv4 packet `pkt` (20-byte header) is
/// right.
fn tcp_checksum_ok(pkt: &[u8]) -> bool {
    let (Some(ip), Some(tcp)) = (pkt.first_chunk::<20>(), pkt.get(20..)) else {
        return false;
    };
    let Ok(len) = u16::try_from(tcp.len()) else {
        return false;
    };
    let (src, dst) = addrs(ip);
    let mut c: Checksum = pseudo_header_v4(src, dst, 6, len);
    c.add_bytes(tcp);
    c.finish() == 0
}

/// Whether frames `a` and `b` may share a run: the same outer headers but
/// for the outer IP length, id and checksum and the UDP length, and
/// [`same_flow`] inner packets.
fn same_frame(a: &[u8], b: &[u8], hlen: usize, lay: Layout) -> bool {
    let same = |r: std::ops::Range<usize>| matches!((a.get(r.clone()), b.get(r)), (Some(x), Some(y)) if x == y);
    if lay.tunnel {
        // Ethernet; IP version to TOS; flags to protocol; addresses and
        // UDP ports; UDP checksum, VXLAN, inner Ethernet.
        if !(same(0..16) && same(20..24) && same(26..38) && same(40..lay.outer)) {
            return false;
        }
    } else if !same(0..lay.outer) {
        return false;
    }
    match (a.get(lay.outer..), b.get(lay.outer..)) {
        (Some(x), Some(y)) => same_flow(x, y, hlen),
        _ => false,
    }
}

/// Whether `a` and `b` may share a run: the same header fields except
/// those that differ per segment (IP length, id, checksum; TCP sequence
/// number, checksum, PSH).
fn same_flow(a: &[u8], b: &[u8], hlen: usize) -> bool {
    let same = |r: std::ops::Range<usize>| matches!((a.get(r.clone()), b.get(r)), (Some(x), Some(y)) if x == y);
    let flags = |p: &[u8]| p.get(33).map(|f| f & !TCP_PSH);
    // IP: version/IHL and TOS; flags (DF); TTL and protocol; addresses.
    same(0..2)
        && same(6..10)
        && same(12..20)
        // TCP: ports; acknowledgement number and data offset; flags other
        // than PSH; window; options.
        && same(20..24)
        && same(28..33)
        && flags(a).is_some()
        && flags(a) == flags(b)
        && same(34..36)
        && same(40..hlen)
}

/// The run being built.
#[derive(Clone, Copy, Debug)]
struct Run {
    hlen: usize,
    gso_size: usize,
    next_seq: u32,
    segs: usize,
    /// No more segments may join (PSH seen, or a short segment).
    closed: bool,
    /// The first segment's checksum has been verified (done when a second
    /// one joins: a lone segment is written as it came).
    head_checked: bool,
}

/// A coalescing buffer: one per port, allocated once.
pub struct Coalescer {
    /// The virtio-net header, then the packet (or frame) being built.
    buf: Box<[u8]>,
    lay: Layout,
    len: usize,
    /// A packet is buffered (`len` may be 0 for an empty one).
    held: bool,
    run: Option<Run>,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("len", &self.len)
            .field("run", &self.run)
            .finish()
    }
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

/// What a batch came to: packets written and packets the writes lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// `write` calls made.
    pub writes: usize,
    /// Packets (segments) in writes that failed.
    pub failed: usize,
}

impl Coalescer {
    /// A coalescer for a TUN device, with room for the largest IPv4
    /// packet.
    pub fn new() -> Coalescer {
        Coalescer::with_layout(Layout::TUN)
    }

    /// A coalescer writing `lay`'s packets or frames.
    pub fn with_layout(lay: Layout) -> Coalescer {
        Coalescer {
            buf: vec![0u8; lay.vnet + lay.outer + lay.max_inner()].into_boxed_slice(),
            lay,
            len: 0,
            held: false,
            run: None,
        }
    }

    /// Writes `pkts` through `write` (one call per resulting packet, each
    /// with its virtio-net header), coalescing what may be; returns the
    /// count of writes and of packets whose write failed, and the last
    /// error.
    pub fn write_batch<'a, W>(
        &mut self,
        pkts: impl IntoIterator<Item = &'a [u8]>,
        mut write: W,
    ) -> (Written, Option<io::Error>)
    where
        W: FnMut(&[u8]) -> io::Result<usize>,
    {
        let mut w = Written::default();
        let mut err = None;
        for pkt in pkts {
            // Parsed once: for joining the run, or for starting the next.
            let seg = candidate(pkt, self.lay);
            if self.append(pkt, seg) {
                continue;
            }
            self.flush(&mut write, &mut w, &mut err);
            if !self.start(pkt, seg) {
                // Larger than any packet: cannot be written.
                w.failed += 1;
                err = Some(io::Error::from(io::ErrorKind::InvalidInput));
            } else if self.run.is_none() {
                // Not a candidate: alone, behind an empty header.
                self.flush(&mut write, &mut w, &mut err);
            }
        }
        self.flush(&mut write, &mut w, &mut err);
        (w, err)
    }

    /// Copies `pkt` in as the start of a run (or as a lone packet when it
    /// is not a candidate); false if it does not fit.
    fn start(&mut self, pkt: &[u8], seg: Option<Seg>) -> bool {
        let v = self.lay.vnet;
        let Some(dst) = self.buf.get_mut(v..v + pkt.len()) else {
            return false;
        };
        dst.copy_from_slice(pkt);
        self.len = pkt.len();
        self.held = true;
        self.run = seg.map(|s| Run {
            hlen: s.hlen,
            gso_size: s.payload,
            next_seq: s.seq.wrapping_add(s.payload as u32),
            segs: 1,
            closed: s.psh,
            head_checked: false,
        });
        true
    }

    /// Appends `pkt`'s payload to the run if it may join; false otherwise.
    fn append(&mut self, pkt: &[u8], seg: Option<Seg>) -> bool {
        let (Some(mut run), Some(s)) = (self.run, seg) else {
            return false;
        };
        let (v, o) = (self.lay.vnet, self.lay.outer);
        let head = self.buf.get(v..v + self.len).unwrap_or_default();
        if run.closed
            || s.hlen != run.hlen
            || s.seq != run.next_seq
            || s.payload > run.gso_size
            || self.len - o + s.payload > self.lay.max_inner()
            || !same_frame(head, pkt, run.hlen, self.lay)
        {
            return false;
        }
        if !run.head_checked {
            if !tcp_checksum_ok(head.get(o..).unwrap_or_default()) {
                return false;
            }
            run.head_checked = true;
        }
        if !tcp_checksum_ok(pkt.get(o..).unwrap_or_default()) {
            return false;
        }
        let at = v + self.len;
        let (Some(dst), Some(src)) = (
            self.buf.get_mut(at..at + s.payload),
            pkt.get(o + run.hlen..o + run.hlen + s.payload),
        ) else {
            return false;
        };
        dst.copy_from_slice(src);
        self.len += s.payload;
        run.segs += 1;
        run.next_seq = run.next_seq.wrapping_add(s.payload as u32);
        run.closed = s.psh || s.payload < run.gso_size;
        if s.psh
            && let Some(f) = self.buf.get_mut(v + o + 33)
        {
            *f |= TCP_PSH;
        }
        self.run = Some(run);
        true
    }

    /// Finishes the buffered packet (headers of a merged one; the virtio-net
    /// header) and writes it.
    fn flush<W>(&mut self, write: &mut W, w: &mut Written, err: &mut Option<io::Error>)
    where
        W: FnMut(&[u8]) -> io::Result<usize>,
    {
        if !self.held {
            return;
        }
        let run = self.run.take();
        let segs = run.map_or(1, |r| r.segs);
        let v = self.lay.vnet;
        if let Some(h) = self.buf.get_mut(..v) {
            h.fill(0);
        }
        if let Some(r) = run.filter(|r| r.segs > 1) {
            self.finish_merged(&r);
        }
        let out = self.buf.get(..v + self.len).unwrap_or_default();
        w.writes += 1;
        if let Err(e) = write(out) {
            w.failed += segs;
            *err = Some(e);
        }
        self.len = 0;
        self.held = false;
    }

    /// Rewrites the merged packet's IP length and checksum and its TCP
    /// checksum field (the pseudo-header sum, for the kernel to finish),
    /// the outer IP and UDP lengths of a VXLAN frame, and fills the
    /// virtio-net header for TSO (through the tunnel).
    fn finish_merged(&mut self, r: &Run) {
        let (v, o) = (self.lay.vnet, self.lay.outer);
        let Ok(total) = u16::try_from(self.len - o) else {
            return;
        };
        if self.lay.tunnel
            && let Some(f) = self
                .buf
                .get_mut(v..)
                .and_then(|b| b.first_chunk_mut::<42>())
        {
            let outer_ip = usize::from(total) + o - 14;
            let udp = outer_ip - 20;
            f[16..18].copy_from_slice(&u16::try_from(outer_ip).unwrap_or(0).to_be_bytes());
            f[24..26].fill(0);
            let c = encap::checksum::internet_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            f[38..40].copy_from_slice(&u16::try_from(udp).unwrap_or(0).to_be_bytes());
        }
        let Some(p) = self
            .buf
            .get_mut(v + o..)
            .and_then(|b| b.first_chunk_mut::<40>())
        else {
            return;
        };
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[10..12].fill(0);
        let ipc = encap::checksum::internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&ipc.to_be_bytes());
        let Some((src, dst)) = p.first_chunk::<20>().map(addrs) else {
            return;
        };
        let partial = pseudo_header_v4(src, dst, 6, total - 20).sum();
        p[36..38].copy_from_slice(&partial.to_be_bytes());
        // struct virtio_net_hdr (and _v1_hash_tunnel's offsets), in the
        // host's byte order (a TUN device without TUNSETVNETBE/LE on a
        // little-endian host).
        let Some(hdr) = self.buf.get_mut(..v) else {
            return;
        };
        let mut put = |at: usize, x: usize| {
            let x = u16::try_from(x).unwrap_or(u16::MAX).to_ne_bytes();
            if let Some(d) = hdr.get_mut(at..at + 2) {
                d.copy_from_slice(&x);
            }
        };
        put(2, o + r.hlen);
        put(4, r.gso_size);
        put(6, o + 20);
        put(8, 16);
        let tunnel = self.lay.tunnel;
        if tunnel {
            // Outer transport header, inner network header.
            put(20, 34);
            put(22, o);
        }
        if let Some(h) = hdr.first_chunk_mut::<2>() {
            h[0] = F_NEEDS_CSUM;
            h[1] = if tunnel {
                GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4
            } else {
                GSO_TCPV4
            };
        }
    }
}

/// Test and fuzz support: builds segments and checks the coalescer's
/// invariants, panicking when one breaks (that is its job, hence the
/// allowances).
#[doc(hidden)]
#[allow(clippy::indexing_slicing, clippy::panic)]
pub mod fuzzing {
    use super::*;

    /// A TCP/IPv4 segment 10.244.1.2:40000 -> 10.244.2.2:5201 with a correct
    /// checksum, for tests and the fuzz harness.
    pub fn tcp_segment(seq: u32, payload: &[u8], flags: u8, opts: &[u8]) -> Vec<u8> {
        let thlen = 20 + opts.len();
        let total = 20 + thlen + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&seq.to_be_bytes()[2..]);
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 2, 2]);
        let ipc = encap::checksum::internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&ipc.to_be_bytes());
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&7u32.to_be_bytes());
        p[32] = ((thlen / 4) as u8) << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&500u16.to_be_bytes());
        p[40..40 + opts.len()].copy_from_slice(opts);
        p[40 + opts.len()..].copy_from_slice(payload);
        let mut c = pseudo_header_v4(
            [10, 244, 1, 2].into(),
            [10, 244, 2, 2].into(),
            6,
            (total - 20) as u16,
        );
        c.add_bytes(&p[20..]);
        let tc = c.finish();
        p[36..38].copy_from_slice(&tc.to_be_bytes());
        p
    }

    /// Fuzz harness (the `tun_gro` target, also replayed by `cargo test`):
    /// the input is a list of packets, each a selector byte, then either raw
    /// bytes (length-prefixed) or a valid segment continuing the flow with the
    /// selector's bits choosing its flags, a gap, a short payload, a corrupt
    /// checksum. Invariants: no panic; every packet is in exactly one write,
    /// in order; a lone packet is written unchanged behind an empty header; a
    /// coalesced write carries exactly the payloads of the segments it took,
    /// each of which had a valid TCP checksum (the first one too), with a
    /// correct IP header. Run twice: as IP packets to a TUN device and as
    /// VXLAN frames to the uplink TAP (outer lengths and checksum right
    /// too, the outer IP within 64 KiB).
    pub fn harness(data: &[u8]) {
        let mut pkts: Vec<Vec<u8>> = Vec::new();
        let mut seq = 1u32;
        let mut it = data.iter().copied();
        while let Some(sel) = it.next() {
            if sel & 1 == 0 {
                let len = usize::from(it.next().unwrap_or(0)) * 8;
                pkts.push(it.by_ref().take(len).collect());
                continue;
            }
            let size = if sel & 2 != 0 { 700 } else { 1400 };
            let flags = if sel & 4 != 0 {
                TCP_ACK | TCP_PSH
            } else {
                TCP_ACK
            };
            let gap = if sel & 8 != 0 { 1 } else { 0 };
            let opts: &[u8] = if sel & 16 != 0 {
                &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
            } else {
                &[]
            };
            let mut p = tcp_segment(seq.wrapping_add(gap), &vec![sel; size], flags, opts);
            if sel & 32 != 0
                && let Some(b) = p.last_mut()
            {
                *b ^= 0xff;
            }
            seq = seq.wrapping_add(gap + size as u32);
            pkts.push(p);
        }
        check(&pkts, Layout::TUN);
        // The same packets as VXLAN frames, for the uplink TAP.
        let frames: Vec<Vec<u8>> = pkts.iter().map(|p| vxlan_wrap(p)).collect();
        check(&frames, Layout::VXLAN);
        // And as Ethernet frames (SNAT-bound) to the uplink TAP.
        let frames: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| f[VXLAN_OUTER - 14..].to_vec())
            .collect();
        check(&frames, Layout::ETHERNET);
    }

    /// `inner` behind fixed outer headers (Ethernet, IPv4, UDP without a
    /// checksum, VXLAN VNI 1, inner Ethernet), lengths and checksum right.
    pub fn vxlan_wrap(inner: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; VXLAN_OUTER];
        f[12] = 0x08;
        f[14] = 0x45;
        let ip_len = u16::try_from(VXLAN_OUTER - 14 + inner.len()).unwrap_or(u16::MAX);
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..34].copy_from_slice(&[192, 168, 77, 1, 192, 168, 77, 2]);
        let c = encap::checksum::internet_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..38].copy_from_slice(&[0x9c, 0x40, 0x21, 0x18]);
        f[38..40].copy_from_slice(&(ip_len.wrapping_sub(20)).to_be_bytes());
        f[42] = 0x08;
        f[48] = 1;
        f[62] = 0x08;
        f.extend_from_slice(inner);
        f
    }

    /// Writes `pkts` through a coalescer of layout `lay` and checks the
    /// invariants of [`harness`].
    fn check(pkts: &[Vec<u8>], lay: Layout) {
        let mut writes: Vec<Vec<u8>> = Vec::new();
        let (w, err) =
            Coalescer::with_layout(lay).write_batch(pkts.iter().map(Vec::as_slice), |b| {
                writes.push(b.to_vec());
                Ok(b.len())
            });
        assert_eq!((w.failed, err.is_none()), (0, true));
        assert_eq!(w.writes, writes.len());
        let (v, o) = (lay.vnet, lay.outer);
        let mut i = 0;
        for out in &writes {
            let (h, f) = out.split_at(v);
            if h[1] == 0 {
                assert!(h.iter().all(|b| *b == 0));
                assert_eq!(Some(f), pkts.get(i).map(Vec::as_slice));
                i += 1;
                continue;
            }
            if lay.tunnel {
                assert_eq!(
                    usize::from(u16::from_be_bytes([f[16], f[17]])),
                    f.len() - 14
                );
                assert_eq!(
                    usize::from(u16::from_be_bytes([f[38], f[39]])),
                    f.len() - 34
                );
                assert_eq!(encap::checksum::internet_checksum(&f[14..34]), 0);
                assert!(f.len() - 14 <= MAX_IP);
            }
            let p = &f[o..];
            assert_eq!(encap::checksum::internet_checksum(&p[..20]), 0);
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            let hlen = usize::from(u16::from_ne_bytes([h[2], h[3]])) - o;
            let gso = usize::from(u16::from_ne_bytes([h[4], h[5]]));
            let mut payload = Vec::new();
            let k = (p.len() - hlen).div_ceil(gso);
            assert!(k >= 2);
            for q in &pkts[i..i + k] {
                let q = &q[o..];
                assert_eq!(q.get(..20).map(|x| &x[12..20]), Some(&p[12..20]));
                // The pod's kernel recomputes a merged packet's checksum:
                // a corrupt segment merged would arrive looking sound.
                assert!(tcp_checksum_ok(q), "a segment with a bad checksum merged");
                payload.extend_from_slice(&q[hlen..]);
            }
            assert_eq!(payload, p[hlen..]);
            i += k;
        }
        assert_eq!(i, pkts.len(), "every packet in exactly one write");
    }
}

#[cfg(test)]
#[path = "gro_tests.rs"]
mod tests;
