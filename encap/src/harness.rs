//! Fuzz harness bodies, shared by the `fuzz/` targets and by the regression
//! test that replays the committed corpora and crashers under plain
//! `cargo test` (`tests/fuzz_regressions.rs`).
//!
//! Each function takes arbitrary bytes, must never panic on its own account,
//! and asserts the invariants the API promises: an `assert!` failure here is a
//! bug found.

use std::net::Ipv4Addr;

use crate::checksum::internet_checksum;
use crate::flow::FlowHasher;
use crate::icmp::IcmpPacket;
use crate::parse::{L4, parse_frame};
use crate::vxlan::{self, EncapTemplate, ReservedBits, TunnelEndpoint, Vni, VxlanConfig};
use crate::{MacAddr, ethernet};

/// Ethernet -> IP -> L4: offsets stay in bounds, the flow key hashes
/// symmetrically, and views made at the reported offsets accept the bytes.
pub fn parse_chain(data: &[u8]) {
    let Ok(p) = parse_frame(data) else { return };
    assert!(p.l3_offset >= ethernet::HEADER_LEN && p.l3_offset <= data.len());
    let Some(ip) = p.ip else { return };
    assert!(
        ip.l4_offset <= ip.end && ip.end <= data.len(),
        "{ip:?} len {}",
        data.len()
    );
    let key = p.flow_key();
    assert!(key.is_some());
    if let Some(k) = key {
        let h = FlowHasher::symmetric(1);
        assert_eq!(h.hash(&k), h.hash(&k.reversed()));
    }
    let l4 = data.get(ip.l4_offset..ip.end).unwrap_or(&[]);
    match ip.l4 {
        L4::Tcp { .. } => assert!(crate::tcp::TcpPacket::new_checked(l4).is_ok()),
        L4::Udp { .. } => assert!(crate::udp::UdpPacket::new_lax(l4).is_ok()),
        L4::Icmp { .. } => {
            let m = IcmpPacket::new_checked_v4(l4);
            assert!(m.is_ok());
            if let Ok(m) = m {
                let _ = m.quoted();
            }
        }
        L4::None => {}
    }
}

/// VXLAN decapsulation of arbitrary frames. The first byte picks the policy
/// and whether to repair the outer IPv4 checksum first (so the fuzzer reaches
/// the checks behind it without a special build).
pub fn vxlan_decap(data: &[u8]) {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    let mut buf = frame.to_vec();
    if ctl & 1 == 1 {
        fix_outer_ipv4_checksum(&mut buf);
    }
    let cfg = VxlanConfig {
        reserved_bits: if ctl & 2 == 2 {
            ReservedBits::Ignore
        } else {
            ReservedBits::Drop
        },
        vni: Vni::new(u32::from(ctl >> 2)).unwrap_or(VxlanConfig::default().vni),
        ..VxlanConfig::default()
    };
    let before = buf.clone();
    // Differential: the fast path agrees with the general one, error or not.
    let mut reference = buf.clone();
    let general = vxlan::decap::decapsulate_general(&mut reference, &cfg);
    let result = vxlan::decapsulate(&mut buf, &cfg);
    assert_eq!(result, general, "fast and general decapsulation disagree");
    assert_eq!(buf, reference);
    match result {
        Ok(d) => {
            assert!(d.inner.start <= d.inner.end && d.inner.end <= buf.len());
            assert!(d.inner.len() >= ethernet::HEADER_LEN);
            assert_eq!(d.vni, cfg.vni);
            // Only the inner IP header's ECN bits and checksum may change.
            let changed = before.iter().zip(&buf).filter(|(a, b)| a != b).count();
            assert!(changed <= 4, "decap rewrote {changed} bytes");
        }
        Err(e) => {
            assert_eq!(buf, before, "a refused frame is left untouched");
            let _ = e.to_string();
        }
    }
}

fn fix_outer_ipv4_checksum(buf: &mut [u8]) {
    let Ok(l3) = ethernet::header_len(buf) else {
        return;
    };
    let hl = usize::from(buf.get(l3).copied().unwrap_or(0) & 0x0f) * 4;
    if hl < 20 || buf.len() < l3 + hl {
        return;
    }
    if let Some(c) = buf.get_mut(l3 + 10..l3 + 12) {
        c.fill(0);
    }
    let sum = internet_checksum(buf.get(l3..l3 + hl).unwrap_or(&[]));
    if let Some(c) = buf.get_mut(l3 + 10..l3 + 12) {
        c.copy_from_slice(&sum.to_be_bytes());
    }
}

/// ICMP (first byte even: v4, odd: v6) with a quoted packet: offsets of the
/// quote lie inside the message.
pub fn icmp_quoted(data: &[u8]) {
    let Some((&ctl, msg)) = data.split_first() else {
        return;
    };
    let p = if ctl & 1 == 0 {
        IcmpPacket::new_checked_v4(msg)
    } else {
        IcmpPacket::new_checked_v6(msg)
    };
    let Ok(p) = p else { return };
    if let Ok(q) = p.quoted() {
        assert!(p.is_error());
        assert_eq!(q.ip_offset, crate::icmp::HEADER_LEN);
        assert!(q.l4_offset <= msg.len(), "{q:?} len {}", msg.len());
    }
}

/// Encapsulation then decapsulation is the identity on the inner frame, for
/// any inner bytes and any endpoint, and the outer headers are valid.
pub fn encap_roundtrip(data: &[u8]) {
    if data.len() < 16 {
        return;
    }
    let (params, inner) = data.split_at(16);
    let p = |i: usize| params.get(i).copied().unwrap_or(0);
    let cfg = VxlanConfig {
        vni: Vni::new(u32::from_be_bytes([0, p(0), p(1), p(2)]))
            .unwrap_or(VxlanConfig::default().vni),
        dst_port: u16::from_be_bytes([p(3), p(4)]),
        ttl: p(5).max(1),
        hasher: FlowHasher::new(u64::from(p(6))),
        ..VxlanConfig::default()
    };
    let ep = TunnelEndpoint {
        local_mac: MacAddr([2, p(7), 0, 0, 0, 1]),
        next_hop_mac: MacAddr([2, p(8), 0, 0, 0, 2]),
        local_ip: Ipv4Addr::new(192, 0, 2, p(9)),
        remote_ip: Ipv4Addr::new(198, 51, 100, p(10)),
    };
    let headroom = vxlan::OVERHEAD + usize::from(p(11) % 8);
    let mut buf = vec![0u8; headroom];
    buf.extend_from_slice(inner);
    let end = buf.len();
    let tmpl = EncapTemplate::new(&cfg, &ep);
    let res = vxlan::encapsulate(&mut buf, headroom..end, &tmpl);
    if inner.len() < ethernet::HEADER_LEN {
        assert!(res.is_err());
        return;
    }
    let Ok(outer) = res else {
        invariant_violated("encapsulate refused a valid inner frame")
    };
    let mut frame = buf.get(outer).unwrap_or(&[]).to_vec();
    let again = vxlan::encapsulate(&mut buf, headroom..end, &tmpl);
    assert_eq!(
        again.map(|r| buf.get(r).map(<[u8]>::to_vec)),
        Ok(Some(frame.clone())),
        "deterministic"
    );
    match vxlan::decapsulate(&mut frame, &cfg) {
        Ok(d) => {
            assert_eq!(d.inner_frame(&frame), inner);
            assert_eq!((d.outer_src, d.outer_dst), (ep.local_ip, ep.remote_ip));
            assert!(cfg.src_ports.contains(d.outer_src_port));
        }
        Err(e) => invariant_violated(&format!("decap of our own encap failed: {e}")),
    }
}

#[allow(
    clippy::panic,
    reason = "fuzz harness: a violated invariant must abort"
)]
fn invariant_violated(msg: &str) -> ! {
    panic!("{msg}")
}
