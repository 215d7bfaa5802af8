//! ICMP errors the forwarder sends to pods: time exceeded (RFC 792) and
//! fragmentation needed with the next-hop MTU (RFC 1191), built in place in
//! the offending packet's buffer.

use std::net::Ipv4Addr;

use encap::checksum::{internet_checksum, ipv4_header_checksum_at};
use encap::ip_proto;

use crate::buf::Buf;

/// ICMP type 3 code 4: fragmentation needed and DF set.
pub const DEST_UNREACH: u8 = 3;
/// Code 4 of type 3.
pub const FRAG_NEEDED: u8 = 4;
/// Code 3 of type 3: port unreachable (what kube-proxy's `reject` sends
/// for a service with no endpoints, TCP included).
pub const PORT_UNREACH: u8 = 3;
/// Type 11: time exceeded.
pub const TIME_EXCEEDED: u8 = 11;
/// Code 0 of type 11: TTL exceeded in transit.
pub const TTL_EXCEEDED: u8 = 0;

/// Most bytes of the offending packet quoted: the reply stays within 576
/// bytes, as RFC 1812 section 4.3.2.3 asks and Linux does.
const MAX_QUOTE: usize = 576 - 28;

/// Whether an ICMP error may be sent about the IPv4 packet `p`: never about
/// an ICMP error, a non-first fragment, or a broadcast/multicast source
/// (RFC 1812 section 4.3.2.7).
pub fn may_answer(p: &[u8]) -> bool {
    let Some(&vihl) = p.first() else {
        return false;
    };
    let hl = usize::from(vihl & 0x0f) * 4;
    let frag = be16(p, 6) & 0x1fff;
    let src = addr_at(p, 12).unwrap_or(Ipv4Addr::UNSPECIFIED);
    if frag != 0 || src.is_multicast() || src.is_broadcast() || src.is_unspecified() {
        return false;
    }
    if p.get(9) == Some(&ip_proto::ICMP) {
        // Only errors about queries (echo etc.) are allowed.
        let ty = p.get(hl).copied().unwrap_or(0);
        return matches!(ty, 0 | 8 | 13 | 14 | 17 | 18);
    }
    true
}

fn be16(p: &[u8], at: usize) -> u16 {
    p.get(at..at + 2)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map_or(0, u16::from_be_bytes)
}

/// The IPv4 address at `at`.
pub(crate) fn addr_at(p: &[u8], at: usize) -> Option<Ipv4Addr> {
    p.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(Ipv4Addr::from)
}

/// Turns the IPv4 packet in `buf` into an ICMP error about it, from `from`
/// to the packet's source: `rest` is the 32-bit field after the checksum
/// (the next-hop MTU for fragmentation needed). Returns false (buffer
/// untouched) when the packet may not be answered or the headroom is short.
pub fn make_error(buf: &mut Buf, from: Ipv4Addr, ty: u8, code: u8, rest: u32) -> bool {
    if !may_answer(buf.data()) {
        return false;
    }
    let Some(dst) = addr_at(buf.data(), 12) else {
        return false;
    };
    buf.truncate(MAX_QUOTE);
    // A super-packet's error is one small packet.
    buf.set_gso(None);
    let quoted = buf.len();
    let Some(h) = buf.push_front(28) else {
        return false;
    };
    let total = (28 + quoted) as u16;
    let [t0, t1] = total.to_be_bytes();
    let [s0, s1, s2, s3] = from.octets();
    let [d0, d1, d2, d3] = dst.octets();
    let [r0, r1, r2, r3] = rest.to_be_bytes();
    h.copy_from_slice(&[
        0x45,
        0xc0,
        t0,
        t1,
        0,
        0,
        0,
        0,
        64,
        ip_proto::ICMP,
        0,
        0,
        s0,
        s1,
        s2,
        s3,
        d0,
        d1,
        d2,
        d3, // IPv4 (Linux sends errors with precedence 6: TOS 0xc0)
        ty,
        code,
        0,
        0,
        r0,
        r1,
        r2,
        r3, // ICMP
    ]);
    let p = buf.data_mut();
    let ipc = ipv4_header_checksum_at(p, 0);
    if let Some(c) = p.get_mut(10..12) {
        c.copy_from_slice(&ipc.to_be_bytes());
    }
    let icmpc = internet_checksum(p.get(20..).unwrap_or_default());
    if let Some(c) = p.get_mut(22..24) {
        c.copy_from_slice(&icmpc.to_be_bytes());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, PacketBuilder, SlicedPacket, TransportSlice};

    fn udp(len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4([10, 244, 1, 5], [10, 244, 2, 7], 1)
            .udp(1234, 53)
            .write(&mut v, &vec![7; len])
            .unwrap();
        v
    }

    #[test]
    fn frag_needed_quotes_the_packet_and_carries_the_mtu() {
        let mut b = Buf::new();
        b.fill(&udp(1000));
        assert!(make_error(
            &mut b,
            Ipv4Addr::new(10, 244, 1, 1),
            DEST_UNREACH,
            FRAG_NEEDED,
            1450
        ));
        assert_eq!(b.len(), 576);
        let p = SlicedPacket::from_ip(b.data()).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header().source_addr(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(ip.header().destination_addr(), Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(internet_checksum(&b.data()[..20]), 0, "header checksum");
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not icmp")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1450
                }
            )
        );
        assert_eq!(internet_checksum(&b.data()[20..]), 0);
        assert_eq!(&b.data()[28..48], &udp(1000)[..20], "quoted header");
    }

    #[test]
    fn no_error_about_an_error_or_a_later_fragment() {
        let mut b = Buf::new();
        b.fill(&udp(10));
        assert!(make_error(&mut b, Ipv4Addr::new(10, 244, 1, 1), 11, 0, 0));
        let err = b.data().to_vec();
        b.fill(&err);
        assert!(!make_error(&mut b, Ipv4Addr::new(10, 244, 1, 1), 11, 0, 0));
        assert_eq!(b.data(), &err[..], "untouched");
        let mut frag = udp(10);
        frag[7] = 1; // fragment offset 8
        assert!(!may_answer(&frag));
    }
}
