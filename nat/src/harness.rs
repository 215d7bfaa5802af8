//! Fuzz harness body for the `conntrack_ops` target in `fuzz/`, also
//! replayed by `cargo test` from the committed corpus.
//!
//! The input is a sequence of operations on one tracker with a small table:
//! raw packets from every origin (a pod, the host device, the uplink),
//! structured (valid) packets that reach deep TCP states quickly, corrupted
//! replies to the last translated flow (uplink bytes that match an entry),
//! and time steps. After each, the invariants hold: no panic, occupancy <=
//! limit, one listed entry per live entry, and, for an accepted translated
//! pod packet, the reply to it reverse-translates to exactly the reply the
//! pod would have got without NAT.
//!
//! [`conntrack_ops`] returns what it exercised ([`Exercised`]), so a test
//! can fail when an origin or an operation is never reached (the raw arm
//! once never fed the uplink, although this comment said it did).

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::icmp::IcmpPacket;
use encap::ip_proto;
use encap::ipv4::{Ipv4Packet, Ipv4Repr};
use encap::tcp::TcpPacket;
use encap::udp::UdpPacket;

use crate::{Conntrack, ConntrackConfig, DropReason, Origin, PortRange, SnatConfig, Verdict};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const LIMIT: usize = 16;
/// The origins a raw packet can come from, by `(op >> 2) % 3`.
pub const ORIGINS: [Origin; 3] = [Origin::Pod, Origin::Host, Origin::Uplink];

/// What one operation sequence exercised, per operation kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exercised {
    /// Raw packets processed, by index in [`ORIGINS`].
    pub raw: [u32; 3],
    /// Of those, the ones that parsed (any verdict but `Malformed`).
    pub raw_parsed: [u32; 3],
    /// Structured valid packets from a pod.
    pub structured: u32,
    /// Replies to a translated packet checked for reverse translation.
    pub replies_checked: u32,
    /// Corrupted replies fed from the uplink.
    pub corrupted_replies: u32,
    /// Time steps.
    pub time_steps: u32,
}

impl Exercised {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &Exercised) {
        for (a, b) in self.raw.iter_mut().zip(o.raw) {
            *a += b;
        }
        for (a, b) in self.raw_parsed.iter_mut().zip(o.raw_parsed) {
            *a += b;
        }
        self.structured += o.structured;
        self.replies_checked += o.replies_checked;
        self.corrupted_replies += o.corrupted_replies;
        self.time_steps += o.time_steps;
    }
}

/// Runs one operation sequence; returns what it exercised.
///
/// Operations, by `op % 4`: 0, a raw packet (a length byte, then that many
/// bytes) from `ORIGINS[(op >> 2) % 3]`, its IPv4 version, length and
/// header checksum mended unless bit 7 is set; 1, the last translated flow's
/// reply with one byte changed (an offset byte and an XOR byte), from the
/// uplink; 2, a time step; 3, a structured valid packet from a pod.
#[allow(
    clippy::indexing_slicing,
    reason = "indices into [_; 3] arrays are taken modulo 3"
)]
pub fn conntrack_ops(data: &[u8]) -> Exercised {
    let (cfg, snat) = setup();
    let mut ct = Conntrack::new(cfg, Some(snat));
    run_ops(&mut ct, Duration::from_secs(1), data, false).0
}

/// The tracker the targets run: a small table, eight SNAT ports.
fn setup() -> (ConntrackConfig, SnatConfig) {
    let cfg = ConntrackConfig {
        max_entries: LIMIT,
        expiry_budget: 8,
        early_drop_budget: 8,
        ..ConntrackConfig::default()
    };
    let mut snat = SnatConfig::new(
        vec![ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap_or_default()],
        vec![ipnet::Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default()],
        NODE,
    );
    snat.ports = PortRange {
        min: 61000,
        max: 61007,
    };
    (cfg, snat)
}

/// Runs the operations in `data` on `ct` from time `now`; returns what
/// they exercised and the time they ended at. `restored_from_changed`: the
/// table was restored from a state file whose bytes were altered, so an
/// entry may hold any state that decodes (window edges, TCP state); a
/// packet landing on such an entry may then be refused, as a kernel
/// conntrack entry with those windows would refuse it, and the reply
/// invariants are checked only for flows a packet opens.
#[allow(
    clippy::indexing_slicing,
    reason = "indices into [_; 3] arrays are taken modulo 3"
)]
fn run_ops(
    ct: &mut Conntrack,
    mut now: Duration,
    data: &[u8],
    restored_from_changed: bool,
) -> (Exercised, Duration) {
    let mut seen = Exercised::default();
    // The reply to the last translated pod packet, as the peer sends it.
    let mut last_reply: Option<Vec<u8>> = None;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 4 {
            0 => {
                let Some((&len, tail)) = rest.split_first() else {
                    return (seen, now);
                };
                let n = usize::from(len).min(tail.len());
                let (raw, tail) = tail.split_at(n);
                rest = tail;
                let mut p = raw.to_vec();
                // Conntrack refuses a bad IPv4 header (version, length,
                // checksum) first: mend those fields, unless bit 7 keeps the
                // bytes as they came, so raw bytes reach the parsers and the
                // state machine behind the header check.
                if op & 0x80 == 0 {
                    fix_ip_header(&mut p);
                }
                let o = usize::from(op >> 2) % 3;
                let v = ct.process(now, &mut p, ORIGINS[o]);
                seen.raw[o] += 1;
                if v != Verdict::Drop(DropReason::Malformed) {
                    seen.raw_parsed[o] += 1;
                }
            }
            1 => {
                let Some((&[at, xor], tail)) = rest.split_first_chunk::<2>() else {
                    return (seen, now);
                };
                rest = tail;
                let Some(mut p) = last_reply.clone() else {
                    continue;
                };
                let i = usize::from(at) % p.len().max(1);
                if let Some(b) = p.get_mut(i) {
                    *b ^= xor;
                }
                let _ = ct.process(now, &mut p, Origin::Uplink);
                seen.corrupted_replies += 1;
            }
            2 => {
                let Some((&dt, tail)) = rest.split_first() else {
                    return (seen, now);
                };
                rest = tail;
                now += Duration::from_secs(u64::from(dt));
                ct.handle_timeout(now);
                seen.time_steps += 1;
            }
            _ => {
                // A structured valid packet from the pod side.
                let Some(fields) = rest.get(..8) else {
                    return (seen, now);
                };
                rest = rest.get(8..).unwrap_or(&[]);
                let original = build(fields);
                let mut out = original.clone();
                seen.structured += 1;
                let before = ct.len();
                if let Verdict::Accept(a) = ct.process(now, &mut out, Origin::Pod)
                    && a.translated
                    && starts_flow(&original)
                    && (!restored_from_changed || ct.len() > before)
                {
                    let mut reply = mirror(&out);
                    last_reply = Some(reply.clone());
                    seen.replies_checked += 1;
                    let v = ct.process(now, &mut reply, Origin::Uplink);
                    assert!(
                        matches!(v, Verdict::Accept(_)),
                        "reply to a translated packet refused: {v:?}"
                    );
                    assert_eq!(
                        reply,
                        mirror(&original),
                        "reverse translation is not the identity"
                    );
                }
            }
        }
        assert!(ct.len() <= LIMIT, "occupancy {} over the limit", ct.len());
        assert_eq!(ct.entries().count(), ct.len());
    }
    (seen, now)
}

/// Fuzz harness body for the `state_loader` target: a state file is never
/// trusted.
///
/// With bit 7 of the first byte set, the rest is a whole state file: it is
/// loaded, and if it passes the header check, restored into a tracker that
/// then runs traffic. Otherwise the first byte counts 4-byte groups of
/// [`conntrack_ops`] operations, run on a tracker mirrored to a state
/// region; the region's bytes are then changed by the (offset, value)
/// triples that follow (a 16-bit offset into the file, one byte), loaded
/// back and restored. Invariants: no panic; every restored entry is
/// internally consistent (the protocol state matches the protocol, window
/// scales at most 14, live at restore time); the tracker holds what the
/// restore reported; with no change to the bytes, exactly the live entries
/// come back; and the restored tracker runs the same operations again.
/// Returns the restore's report, if the file was accepted.
pub fn state_loader(data: &[u8]) -> Option<crate::Restored> {
    let (cfg, snat) = setup();
    let spec = crate::state_spec(&cfg, Some(&snat), [7; 16]);
    let (&first, rest) = data.split_first()?;
    let now = Duration::from_secs(1);
    if first & 0x80 != 0 {
        let region = persist::Region::from_bytes(&spec, rest).ok()?;
        let (mut ct, r) = Conntrack::with_state(cfg, Some(snat), region, now);
        check_restored(&ct, &r, now);
        run_ops(&mut ct, now, rest.get(..256).unwrap_or(rest), true);
        return Some(r);
    }
    let n = (usize::from(first) * 4).min(rest.len());
    let (ops, changes) = rest.split_at(n);
    let region = persist::Region::anonymous(&spec).ok()?;
    let (mut ct, _) = Conntrack::with_state(cfg.clone(), Some(snat.clone()), region, now);
    let (_, end) = run_ops(&mut ct, now, ops, false);
    let mut bytes = ct.state()?.bytes().to_vec();
    let mut changed = false;
    for c in changes.chunks_exact(3) {
        let &[lo, hi, v] = c else { continue };
        // Offsets into the header's first bytes and the records alike.
        let at = usize::from(u16::from_le_bytes([lo, hi])) % bytes.len().max(1);
        if let Some(b) = bytes.get_mut(at)
            && *b != v
        {
            *b = v;
            changed = true;
        }
    }
    let region = persist::Region::from_bytes(&spec, &bytes).ok()?;
    let (mut back, r) = Conntrack::with_state(cfg, Some(snat), region, end);
    check_restored(&back, &r, end);
    if !changed {
        let shape = |c: &Conntrack| {
            let mut v: Vec<_> = c
                .entries()
                .filter(|e| e.expires() > end)
                .map(|e| {
                    (
                        e.orig,
                        e.reply,
                        e.proto,
                        e.seen_reply,
                        e.expires(),
                        e.service,
                    )
                })
                .collect();
            v.sort_by_key(|x| (x.0, x.1));
            v
        };
        assert_eq!(
            shape(&back),
            shape(&ct),
            "an unchanged file restores the table"
        );
        assert_eq!(r.torn + r.invalid + r.duplicate, 0, "{r:?}");
    }
    run_ops(&mut back, end, ops, changed);
    Some(r)
}

fn check_restored(ct: &Conntrack, r: &crate::Restored, now: Duration) {
    use crate::ProtoState;
    assert_eq!(ct.len(), r.entries, "{r:?}");
    assert_eq!(ct.entries().count(), r.entries);
    for e in ct.entries() {
        assert!(e.expires() > now, "an expired entry restored");
        assert_eq!(e.orig.proto, e.reply.proto);
        match e.proto {
            ProtoState::Tcp { senders, .. } => {
                assert_eq!(e.orig.proto, ip_proto::TCP);
                assert!(senders.iter().all(|s| s.scale <= 14));
            }
            ProtoState::Udp => assert_eq!(e.orig.proto, ip_proto::UDP),
            ProtoState::Icmp => {
                assert_eq!(e.orig.proto, ip_proto::ICMP);
                assert_eq!((e.orig.dst_port, e.reply.dst_port), (0, 0));
            }
            ProtoState::Other => {
                assert!(!matches!(e.orig.proto, ip_proto::TCP | ip_proto::UDP));
                assert_eq!((e.orig.src_port, e.orig.dst_port), (0, 0));
            }
        }
    }
}

/// A valid IPv4 packet from 8 bytes: protocol, pod, destination, ports,
/// TCP flags.
#[allow(
    clippy::indexing_slicing,
    reason = "harness-built buffers of fixed, known length"
)]
fn build(f: &[u8]) -> Vec<u8> {
    let b = |i: usize| f.get(i).copied().unwrap_or(0);
    let proto = [ip_proto::TCP, ip_proto::UDP, ip_proto::ICMP][usize::from(b(0) % 3)];
    let src = Ipv4Addr::new(10, 244, if b(0) & 0x80 != 0 { 2 } else { 1 }, b(1) % 4 + 2);
    let dst = if b(0) & 0x40 != 0 {
        Ipv4Addr::new(10, 96, 0, 10)
    } else {
        Ipv4Addr::new(198, 51, 100, b(2) % 4 + 1)
    };
    let (sp, dp) = (u16::from_be_bytes([0xf0, b(3)]), u16::from(b(4) % 4) + 80);
    let l4: Vec<u8> = match proto {
        ip_proto::TCP => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&sp.to_be_bytes());
            t[2..4].copy_from_slice(&dp.to_be_bytes());
            t[4..8].copy_from_slice(&u32::from(b(6)).to_be_bytes());
            t[8..12].copy_from_slice(&u32::from(b(7)).to_be_bytes());
            t[12] = 0x50;
            t[13] = b(5) & 0x1f;
            t[14] = 0xff;
            t
        }
        ip_proto::UDP => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&sp.to_be_bytes());
            u[2..4].copy_from_slice(&dp.to_be_bytes());
            u[4..6].copy_from_slice(&8u16.to_be_bytes());
            u
        }
        _ => vec![8, 0, 0, 0, b(3), b(5), 0, 1],
    };
    let mut p = vec![0u8; 20];
    let mut h = [0u8; 20];
    Ipv4Repr {
        src,
        dst,
        protocol: proto,
        payload_len: l4.len() as u16,
        tos: 0,
        ttl: 64,
        dont_frag: true,
        ident: 0,
    }
    .emit(&mut h);
    p.copy_from_slice(&h);
    p.extend_from_slice(&l4);
    fill_l4(&mut p);
    p
}

/// Whether a reply to this packet is valid whatever the entry's history:
/// UDP, an echo request, or a bare SYN.
fn starts_flow(p: &[u8]) -> bool {
    match Ipv4Packet::new_unchecked(p).protocol() {
        ip_proto::TCP => p.get(33) == Some(&0x02),
        _ => true,
    }
}

/// The packet a peer answering `p` sends: addresses and ports swapped, TCP
/// as SYN/ACK, ICMP as echo reply, checksums computed from scratch.
#[allow(
    clippy::indexing_slicing,
    reason = "harness-built buffers of fixed, known length"
)]
pub fn mirror(p: &[u8]) -> Vec<u8> {
    let mut m = p.to_vec();
    let ip = Ipv4Packet::new_unchecked(p);
    let (hl, proto) = (ip.header_len(), ip.protocol());
    swap(&mut m, 12, 16, 4);
    match proto {
        ip_proto::TCP | ip_proto::UDP => {
            swap(&mut m, hl, hl + 2, 2);
            if proto == ip_proto::TCP {
                let seq = TcpPacket::new_unchecked(p.get(hl..).unwrap_or(&[])).seq();
                if let Some(t) = m.get_mut(hl + 4..hl + 14) {
                    t[..4].copy_from_slice(&7u32.to_be_bytes());
                    t[4..8].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
                    t[9] = 0x12;
                }
            }
        }
        _ => {
            if let Some(t) = m.get_mut(hl) {
                *t = 0;
            }
        }
    }
    fill_l4(&mut m);
    m
}

fn swap(m: &mut [u8], a: usize, b: usize, n: usize) {
    for i in 0..n {
        if let (Some(&x), Some(&y)) = (m.get(a + i), m.get(b + i)) {
            if let Some(s) = m.get_mut(a + i) {
                *s = y;
            }
            if let Some(s) = m.get_mut(b + i) {
                *s = x;
            }
        }
    }
}

/// Makes the IPv4 header of raw bytes `p` pass the checks conntrack makes
/// before anything else (version 4, an IHL of at least 5, the total length
/// of the buffer, a valid header checksum), leaving every other byte as it
/// came, so random bytes reach the transport parsers and the state machine.
fn fix_ip_header(p: &mut [u8]) {
    let Some(b0) = p.first_mut() else { return };
    *b0 = 0x40 | (*b0 & 0x0f).max(5);
    let hl = usize::from(*b0 & 0x0f) * 4;
    if p.len() < hl || p.len() > usize::from(u16::MAX) {
        return;
    }
    let total = (p.len() as u16).to_be_bytes();
    if let Some(t) = p.get_mut(2..4) {
        t.copy_from_slice(&total);
    }
    Ipv4Packet::new_unchecked(p).fill_checksum();
}

/// Recomputes the IPv4 and transport checksums of `p` from scratch.
fn fill_l4(p: &mut [u8]) {
    let mut ip = Ipv4Packet::new_unchecked(&mut *p);
    ip.fill_checksum();
    let (s, d, hl, proto) = (ip.src_addr(), ip.dst_addr(), ip.header_len(), ip.protocol());
    let Some(l4) = p.get_mut(hl..) else { return };
    match proto {
        ip_proto::TCP => TcpPacket::new_unchecked(l4).fill_checksum_v4(s, d),
        ip_proto::UDP => UdpPacket::new_unchecked(l4).fill_checksum_v4(s, d),
        _ => IcmpPacket::new_unchecked_v4(l4).fill_checksum_v4(),
    }
}
