//! Writes the seed corpora for the `fuzz/` targets:
//! `cargo run -p encap --example fuzz_seeds -- fuzz/corpus`.
//!
//! Seeds are small valid inputs for each target (frames of every kind the
//! parsers handle), so fuzzing starts deep in the parsers rather than at the
//! first length check. The output is committed; rerun after adding seeds.

use std::fs;
use std::path::{Path, PathBuf};

use encap::vxlan::{self, EncapTemplate, OVERHEAD, TunnelEndpoint, VxlanConfig};
use encap::{MacAddr, checksum::internet_checksum};
use etherparse::{IpNumber, Ipv4Header, Ipv6FragmentHeader, PacketBuilder, VlanId};

const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut w = |name, f: Vec<u8>| out.push((name, f));
    let mut v = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv4([10, 244, 1, 2], [10, 244, 2, 3], 64)
        .udp(40000, 53)
        .write(&mut v, b"dns?")
        .unwrap();
    w("v4_udp", v);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv4([10, 244, 1, 2], [1, 1, 1, 1], 64)
        .tcp(50000, 443, 1, 65535)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1410)])
        .unwrap()
        .write(&mut v, b"")
        .unwrap();
    w("v4_tcp_syn_mss", v);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv4([10, 244, 1, 2], [8, 8, 8, 8], 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut v, b"ping")
        .unwrap();
    w("v4_icmp_echo", v);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .udp(5353, 5353)
        .write(&mut v, b"mdns")
        .unwrap();
    w("v6_udp", v);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .icmpv6_echo_request(9, 2)
        .write(&mut v, b"ping6")
        .unwrap();
    w("v6_icmp_echo", v);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .single_vlan(VlanId::try_new(100).unwrap())
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1, 2, 3, 4)
        .write(&mut v, b"vlan")
        .unwrap();
    w("vlan_v4_tcp", v);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .double_vlan(VlanId::try_new(10).unwrap(), VlanId::try_new(20).unwrap())
        .ipv6([1; 16], [2; 16], 1)
        .udp(1, 2)
        .write(&mut v, b"qinq")
        .unwrap();
    w("qinq_v6_udp", v);
    // IPv6 with a fragment header (first fragment) then UDP.
    let mut v = Vec::new();
    let frag = Ipv6FragmentHeader::new(IpNumber::UDP, etherparse::IpFragOffset::ZERO, true, 0x1234);
    let mut ext = frag.to_bytes().to_vec();
    ext.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0x00, 0x40, 0, 0]);
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    ip6.extend_from_slice(&[44, 64]);
    ip6.extend_from_slice(&[0xfd; 16]);
    ip6.extend_from_slice(&[0xfe; 16]);
    ip6.extend_from_slice(&ext);
    v.extend_from_slice(&B);
    v.extend_from_slice(&A);
    v.extend_from_slice(&[0x86, 0xdd]);
    v.extend_from_slice(&ip6);
    w("v6_frag_udp", v);
    // IPv4 with options and a later fragment.
    let mut h = Ipv4Header::new(8, 64, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2]).unwrap();
    h.options = etherparse::Ipv4Options::try_from(&[1u8, 1, 1, 0][..]).unwrap();
    h.fragment_offset = etherparse::IpFragOffset::try_new(100).unwrap();
    h.header_checksum = h.calc_header_checksum();
    let mut v = B.to_vec();
    v.extend_from_slice(&A);
    v.extend_from_slice(&[0x08, 0x00]);
    v.extend_from_slice(&h.to_bytes());
    v.extend_from_slice(&[0xab; 8]);
    w("v4_opts_later_fragment", v);
    // ARP request.
    let mut v = vec![0xff; 6];
    v.extend_from_slice(&A);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&A);
    v.extend_from_slice(&[10, 244, 1, 2, 0, 0, 0, 0, 0, 0, 10, 244, 1, 1]);
    w("arp", v);
    out
}

/// ICMP messages (with the control byte: 0 = v4, 1 = v6).
fn icmp_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, f) in frames() {
        let v4 = f.get(12..14) == Some(&[0x08, 0x00][..]);
        let ip = &f[14..];
        let quoted_len = ip.len().min(64);
        let (ctl, ty) = if v4 { (0u8, 3u8) } else { (1, 1) };
        if f.get(12..14) == Some(&[0x08, 0x06][..]) {
            continue;
        }
        let mut m = vec![ctl, ty, if v4 { 4 } else { 0 }, 0, 0, 0, 0, 0x05, 0x78];
        m.extend_from_slice(&ip[..quoted_len]);
        if v4 {
            let c = internet_checksum(&m[1..]);
            m[3..5].copy_from_slice(&c.to_be_bytes());
        }
        out.push((name, m));
    }
    out.push((
        "v4_time_exceeded_short",
        vec![
            0, 11, 0, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 20, 0, 0, 0, 0, 1, 17, 0, 0, 1, 2, 3, 4, 5, 6,
            7, 8,
        ],
    ));
    out
}

fn endpoint() -> TunnelEndpoint {
    TunnelEndpoint {
        local_mac: MacAddr(A),
        next_hop_mac: MacAddr(B),
        local_ip: [192, 0, 2, 1].into(),
        remote_ip: [192, 0, 2, 2].into(),
    }
}

fn encapsulated(inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; OVERHEAD];
    buf.extend_from_slice(inner);
    let end = buf.len();
    let r = vxlan::encapsulate(
        &mut buf,
        OVERHEAD..end,
        &EncapTemplate::new(&VxlanConfig::default(), &endpoint()),
    )
    .unwrap();
    buf[r].to_vec()
}

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), data).unwrap();
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    for (name, f) in frames() {
        write(&dir, "parse_chain", name, &f);
        // vxlan_decap: control byte 1 = repair the outer IPv4 checksum first;
        // VNI from ctl >> 2 = 0 -> default VNI 1.
        let outer = encapsulated(&f);
        write(&dir, "vxlan_decap", name, &[&[0u8][..], &outer].concat());
        // encap_roundtrip: 16 parameter bytes, then the inner frame.
        let params = [0, 0, 1, 0x21, 0x18, 64, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0];
        write(&dir, "encap_roundtrip", name, &[&params[..], &f].concat());
    }
    for (name, m) in icmp_seeds() {
        write(&dir, "icmp_quoted", name, &m);
    }
    println!("wrote seed corpora under {}", dir.display());
}
