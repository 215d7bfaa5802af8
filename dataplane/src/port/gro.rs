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

/// Parses `pkt` as a coalescing candidate: IPv4 without options or
/// fragmentation, TCP with ACK (and maybe PSH) only and a payload, lengths
/// consistent.
fn candidate(pkt: &[u8]) -> Option<Seg> {
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

/// A coalescing buffer: one per TUN port, allocated once.
pub struct Coalescer {
    /// The virtio-net header, then the packet being built.
    buf: Box<[u8]>,
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
    /// A coalescer with room for the largest IPv4 packet.
    pub fn new() -> Coalescer {
        Coalescer {
            buf: vec![0u8; VNET_HDR_LEN + MAX_IP].into_boxed_slice(),
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
            let seg = candidate(pkt);
            if self.append(pkt, seg) {
                continue;
            }
            self.flush(&mut write, &mut w, &mut err);
            if !self.start(pkt, seg) {
                // Larger than any IPv4 packet: cannot be written.
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
        let Some(dst) = self.buf.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + pkt.len()) else {
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
        let head = self
            .buf
            .get(VNET_HDR_LEN..VNET_HDR_LEN + self.len)
            .unwrap_or_default();
        if run.closed
            || s.hlen != run.hlen
            || s.seq != run.next_seq
            || s.payload > run.gso_size
            || self.len + s.payload > MAX_IP
            || !same_flow(head, pkt, run.hlen)
        {
            return false;
        }
        if !run.head_checked {
            if !tcp_checksum_ok(head) {
                return false;
            }
            run.head_checked = true;
        }
        if !tcp_checksum_ok(pkt) {
            return false;
        }
        let at = VNET_HDR_LEN + self.len;
        let (Some(dst), Some(src)) = (
            self.buf.get_mut(at..at + s.payload),
            pkt.get(run.hlen..run.hlen + s.payload),
        ) else {
            return false;
        };
        dst.copy_from_slice(src);
        self.len += s.payload;
        run.segs += 1;
        run.next_seq = run.next_seq.wrapping_add(s.payload as u32);
        run.closed = s.psh || s.payload < run.gso_size;
        if s.psh
            && let Some(f) = self.buf.get_mut(VNET_HDR_LEN + 33)
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
        let mut hdr = [0u8; VNET_HDR_LEN];
        if let Some(r) = run.filter(|r| r.segs > 1) {
            self.finish_merged(&r, &mut hdr);
        }
        if let Some(h) = self.buf.get_mut(..VNET_HDR_LEN) {
            h.copy_from_slice(&hdr);
        }
        let out = self.buf.get(..VNET_HDR_LEN + self.len).unwrap_or_default();
        w.writes += 1;
        if let Err(e) = write(out) {
            w.failed += segs;
            *err = Some(e);
        }
        self.len = 0;
        self.held = false;
    }

    /// Rewrites the merged packet's IP length and checksum and its TCP
    /// checksum field (the pseudo-header sum, for the kernel to finish), and
    /// fills `hdr` for TSO.
    fn finish_merged(&mut self, r: &Run, hdr: &mut [u8; VNET_HDR_LEN]) {
        let Ok(total) = u16::try_from(self.len) else {
            return;
        };
        let Some(p) = self
            .buf
            .get_mut(VNET_HDR_LEN..)
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
        // struct virtio_net_hdr, in the host's byte order (a TUN device
        // without TUNSETVNETBE/LE on a little-endian host).
        let put = |h: &mut [u8; VNET_HDR_LEN], at: usize, v: usize| {
            let v = u16::try_from(v).unwrap_or(u16::MAX).to_ne_bytes();
            if let Some(d) = h.get_mut(at..at + 2) {
                d.copy_from_slice(&v);
            }
        };
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = GSO_TCPV4;
        put(hdr, 2, r.hlen);
        put(hdr, 4, r.gso_size);
        put(hdr, 6, 20);
        put(hdr, 8, 16);
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
    /// correct IP header.
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
        let mut writes: Vec<Vec<u8>> = Vec::new();
        let (w, err) = Coalescer::new().write_batch(pkts.iter().map(Vec::as_slice), |b| {
            writes.push(b.to_vec());
            Ok(b.len())
        });
        assert_eq!((w.failed, err.is_none()), (0, true));
        assert_eq!(w.writes, writes.len());
        let mut i = 0;
        for out in &writes {
            let (h, p) = out.split_at(VNET_HDR_LEN);
            if h[1] == 0 {
                assert_eq!(h, [0; VNET_HDR_LEN]);
                assert_eq!(Some(p), pkts.get(i).map(Vec::as_slice));
                i += 1;
                continue;
            }
            assert_eq!(encap::checksum::internet_checksum(&p[..20]), 0);
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            let hlen = usize::from(u16::from_ne_bytes([h[2], h[3]]));
            let gso = usize::from(u16::from_ne_bytes([h[4], h[5]]));
            let mut payload = Vec::new();
            let k = (p.len() - hlen).div_ceil(gso);
            assert!(k >= 2);
            for q in &pkts[i..i + k] {
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
mod tests {
    use super::fuzzing::tcp_segment;
    use super::*;

    fn run(pkts: &[Vec<u8>]) -> (Vec<Vec<u8>>, Written) {
        let mut c = Coalescer::new();
        let mut out = Vec::new();
        let (w, e) = c.write_batch(pkts.iter().map(|p| p.as_slice()), |b| {
            out.push(b.to_vec());
            Ok(b.len())
        });
        assert!(e.is_none());
        (out, w)
    }

    /// What the kernel does with a TSO write: the segments back, with
    /// their checksums completed from the partial one.
    fn resegment(w: &[u8]) -> Vec<Vec<u8>> {
        let (h, p) = w.split_at(VNET_HDR_LEN);
        if h[1] == 0 {
            return vec![p.to_vec()];
        }
        let hlen = usize::from(u16::from_ne_bytes([h[2], h[3]]));
        let gso = usize::from(u16::from_ne_bytes([h[4], h[5]]));
        let seq0 = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
        let body = &p[hlen..];
        let n = body.len().div_ceil(gso);
        (0..n)
            .map(|i| {
                let chunk = &body[i * gso..((i + 1) * gso).min(body.len())];
                let flags = if i + 1 == n { p[33] } else { p[33] & !TCP_PSH };
                tcp_segment(seq0 + (i * gso) as u32, chunk, flags, &p[40..hlen])
            })
            .collect()
    }

    #[test]
    fn a_burst_of_one_flow_becomes_one_tso_write_that_segments_back() {
        let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let pkts: Vec<Vec<u8>> = (0..5u32)
            .map(|i| {
                let flags = if i == 4 { TCP_ACK | TCP_PSH } else { TCP_ACK };
                let len = if i == 4 { 300 } else { 1000 };
                tcp_segment(1000 + i * 1000, &vec![i as u8; len], flags, &opts)
            })
            .collect();
        let (out, w) = run(&pkts);
        assert_eq!(
            w,
            Written {
                writes: 1,
                failed: 0
            }
        );
        let h = &out[0][..VNET_HDR_LEN];
        assert_eq!((h[0], h[1]), (F_NEEDS_CSUM, GSO_TCPV4));
        assert_eq!(u16::from_ne_bytes([h[4], h[5]]), 1000);
        let p = &out[0][VNET_HDR_LEN..];
        assert_eq!(p.len(), 52 + 4300);
        assert_eq!(encap::checksum::internet_checksum(&p[..20]), 0);
        // The kernel finishes the checksum from the partial one: the sum
        // from csum_start, field included, complemented.
        let mut q = p.to_vec();
        let mut c = Checksum::new();
        c.add_bytes(&q[20..]);
        q[36..38].copy_from_slice(&c.finish().to_be_bytes());
        assert!(tcp_checksum_ok(&q));
        let back = resegment(&out[0]);
        // IP ids differ (the kernel makes its own); compare the rest.
        let strip = |v: &Vec<u8>| [&v[..4], &v[6..10], &v[12..]].concat();
        assert_eq!(
            back.iter().map(strip).collect::<Vec<_>>(),
            pkts.iter().map(strip).collect::<Vec<_>>()
        );
    }

    #[test]
    fn gaps_other_flows_bad_checksums_and_non_candidates_are_written_alone() {
        let a = tcp_segment(1, &[1; 100], TCP_ACK, &[]);
        let gap = tcp_segment(500, &[2; 100], TCP_ACK, &[]);
        let mut other = tcp_segment(201, &[3; 100], TCP_ACK, &[]);
        other[22..24].copy_from_slice(&5202u16.to_be_bytes());
        let mut corrupt = tcp_segment(101, &[4; 100], TCP_ACK, &[]);
        corrupt[60] ^= 1;
        let syn = tcp_segment(101, &[5; 100], 0x02, &[]);
        let pure_ack = tcp_segment(101, &[], TCP_ACK, &[]);
        for b in [gap, other, corrupt, syn, pure_ack] {
            let (out, w) = run(&[a.clone(), b.clone()]);
            assert_eq!(w.writes, 2);
            assert_eq!(out[0][..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
            assert_eq!(out[0][VNET_HDR_LEN..], a[..]);
            assert_eq!(out[1][VNET_HDR_LEN..], b[..]);
        }
        // After PSH, or after a short segment, the run is closed.
        let psh = tcp_segment(1, &[1; 100], TCP_ACK | TCP_PSH, &[]);
        let (_, w) = run(&[psh, tcp_segment(101, &[1; 100], TCP_ACK, &[])]);
        assert_eq!(w.writes, 2);
        let (_, w) = run(&[
            tcp_segment(1, &[1; 100], TCP_ACK, &[]),
            tcp_segment(101, &[1; 50], TCP_ACK, &[]),
            tcp_segment(151, &[1; 100], TCP_ACK, &[]),
        ]);
        assert_eq!(w.writes, 2);
        // Malformed bytes pass through untouched, an empty packet too (the
        // kernel refuses it, and the failed write counts it).
        let (out, w) = run(&[vec![0x45, 0, 0], vec![]]);
        assert_eq!(w.writes, 2);
        assert_eq!(out[1], [0; VNET_HDR_LEN]);
        assert_eq!(out[0][VNET_HDR_LEN..], [0x45, 0, 0]);
    }

    /// The first segment of a run is checked only when a second one joins
    /// (a lone segment is written as it came): a corrupt head must not be
    /// merged with the sound segments after it, which go on as a run.
    #[test]
    fn a_corrupt_first_segment_is_written_alone_and_the_rest_merge() {
        let mut head = tcp_segment(1, &[1; 100], TCP_ACK, &[]);
        head[70] ^= 0x10;
        assert!(!tcp_checksum_ok(&head));
        let rest: Vec<Vec<u8>> = (1..4u32)
            .map(|i| tcp_segment(1 + i * 100, &[1; 100], TCP_ACK, &[]))
            .collect();
        let mut pkts = vec![head.clone()];
        pkts.extend(rest.iter().cloned());
        let (out, w) = run(&pkts);
        assert_eq!(w.writes, 2, "the head alone, then one run of three");
        assert_eq!(out[0][..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
        assert_eq!(out[0][VNET_HDR_LEN..], head[..]);
        assert_eq!(out[1][1], GSO_TCPV4);
        let strip = |v: &Vec<u8>| [&v[..4], &v[6..10], &v[12..]].concat();
        assert_eq!(
            resegment(&out[1]).iter().map(strip).collect::<Vec<_>>(),
            rest.iter().map(strip).collect::<Vec<_>>()
        );
        // A corrupt head with nothing after it is written as it came.
        let (out, w) = run(std::slice::from_ref(&head));
        assert_eq!((w.writes, &out[0][VNET_HDR_LEN..]), (1, &head[..]));
    }

    /// Recomputes the IPv4 header and TCP checksums of `p` after an edit.
    fn refix(p: &mut [u8]) {
        p[10..12].copy_from_slice(&[0, 0]);
        let ipc = encap::checksum::internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&ipc.to_be_bytes());
        p[36..38].copy_from_slice(&[0, 0]);
        let ip: &[u8; 20] = p[..20].try_into().unwrap();
        let (src, dst) = addrs(ip);
        let mut c = pseudo_header_v4(src, dst, 6, (p.len() - 20) as u16);
        c.add_bytes(&p[20..]);
        let tc = c.finish();
        p[36..38].copy_from_slice(&tc.to_be_bytes());
    }

    /// A second segment that continues the first's sequence but differs in
    /// one header byte the kernel requires equal (tcp_gro_receive's flush
    /// conditions) is not merged; one that differs only where segments
    /// may (IP id and checksum, TCP checksum) is.
    #[test]
    fn only_segments_of_one_flow_with_equal_headers_merge() {
        let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let a = tcp_segment(1, &[7; 100], TCP_ACK, &opts);
        let hlen = 52;
        for at in (0..2)
            .chain(6..10)
            .chain(12..24)
            .chain(28..36)
            .chain(40..hlen)
        {
            if at == 9 || at == 32 || at == 33 {
                continue; // protocol, data offset and flags: not candidates then
            }
            let mut b = tcp_segment(101, &[7; 100], TCP_ACK, &opts);
            b[at] ^= 0x04;
            refix(&mut b);
            let (_, w) = run(&[a.clone(), b]);
            assert_eq!(w.writes, 2, "merged although byte {at} differs");
        }
        // The IP id may differ, and so may the urgent pointer (URG is
        // never set in a candidate; Linux compares neither).
        for at in [4, 5, 38, 39] {
            let mut b = tcp_segment(101, &[7; 100], TCP_ACK, &opts);
            b[at] ^= 0x5a;
            refix(&mut b);
            let (_, w) = run(&[a.clone(), b]);
            assert_eq!(w.writes, 1, "byte {at} may differ");
        }
        // Another flow whose sequence number happens to continue this one's.
        let mut other = tcp_segment(101, &[7; 100], TCP_ACK, &opts);
        other[22..24].copy_from_slice(&5202u16.to_be_bytes());
        refix(&mut other);
        assert_eq!(run(&[a.clone(), other]).1.writes, 2);
    }

    #[test]
    fn what_is_not_a_whole_plain_tcp_segment_is_written_alone() {
        let a = tcp_segment(1, &[1; 100], TCP_ACK, &[]);
        type Edit = fn(&mut Vec<u8>);
        let edits: [(&str, Edit); 5] = [
            ("more fragments", |p| p[6] |= 0x20),
            ("fragment offset", |p| p[7] = 1),
            ("URG", |p| p[33] |= 0x20),
            ("IP options", |p| p[0] = 0x46),
            ("length beyond the buffer", |p| p[3] = p[3].wrapping_add(4)),
        ];
        for (what, edit) in edits {
            let mut b = tcp_segment(101, &[1; 100], TCP_ACK, &[]);
            edit(&mut b);
            if what != "IP options" {
                refix(&mut b);
            }
            let (out, w) = run(&[a.clone(), b.clone()]);
            assert_eq!(w.writes, 2, "{what}");
            assert_eq!(out[1][VNET_HDR_LEN..], b[..], "{what}: written as it came");
            assert!(candidate(&b).is_none(), "{what}");
        }
        assert!(candidate(&a).is_some());
    }

    /// A run may fill an IPv4 packet exactly (65535 bytes), and a segment
    /// larger than the run's size may not join it.
    #[test]
    fn a_run_fills_an_ipv4_packet_exactly_and_no_larger_segment_joins() {
        // 40 header bytes + 5 x 13099 = 65535.
        let pkts: Vec<Vec<u8>> = (0..5u32)
            .map(|i| tcp_segment(1 + i * 13099, &vec![3; 13099], TCP_ACK, &[]))
            .collect();
        let (out, w) = run(&pkts);
        assert_eq!(w.writes, 1, "exactly the limit fits");
        assert_eq!(out[0].len() - VNET_HDR_LEN, MAX_IP);
        let (_, w) = run(&[
            tcp_segment(1, &[1; 100], TCP_ACK, &[]),
            tcp_segment(101, &[1; 101], TCP_ACK, &[]),
        ]);
        assert_eq!(w.writes, 2, "a larger segment starts a new run");
    }

    #[test]
    fn a_failed_write_counts_every_segment_in_it() {
        let pkts: Vec<Vec<u8>> = (0..3u32)
            .map(|i| tcp_segment(1 + i * 100, &[0; 100], TCP_ACK, &[]))
            .collect();
        let mut c = Coalescer::new();
        let (w, e) = c.write_batch(pkts.iter().map(|p| p.as_slice()), |_| {
            Err(io::Error::other("down"))
        });
        assert_eq!(
            w,
            Written {
                writes: 1,
                failed: 3
            }
        );
        assert!(e.is_some());
    }

    #[test]
    fn a_packet_larger_than_ipv4_allows_is_counted_not_written() {
        let mut c = Coalescer::new();
        let big = vec![0u8; MAX_IP + 1];
        let (w, e) = c.write_batch([big.as_slice()], |_| Ok(0));
        assert_eq!(
            w,
            Written {
                writes: 0,
                failed: 1
            }
        );
        assert!(e.is_some());
    }

    #[test]
    fn the_run_stops_below_the_ipv4_length_limit() {
        let pkts: Vec<Vec<u8>> = (0..50u32)
            .map(|i| tcp_segment(1 + i * 1400, &[9; 1400], TCP_ACK, &[]))
            .collect();
        let (out, w) = run(&pkts);
        assert_eq!(w.writes, 2);
        assert!(out.iter().all(|o| o.len() - VNET_HDR_LEN <= MAX_IP));
        assert_eq!(out.iter().map(|o| resegment(o).len()).sum::<usize>(), 50);
    }
}
