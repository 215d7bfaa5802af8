//! Service NAT through the conntrack hook: DNAT to a backend chosen once
//! per flow, reverse translation of replies and of ICMP errors, service
//! masquerade, refusal, UDP entries to a backend that stopped serving
//! replaced on their next datagram (TCP left to finish), and one entry for
//! two datagrams racing (kubernetes #56903).

use std::net::Ipv4Addr;
use std::time::Duration;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use nat::{Conntrack, ConntrackConfig, Nat, Origin, Services, SnatConfig, Tuple, Verdict};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const B1: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
const B2: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 6);
const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// A fake balancer: sends VIP:53 to `backend`, counts its calls.
struct Fake {
    backend: (Ipv4Addr, u16),
    masquerade: Option<Ipv4Addr>,
    refuse: bool,
    generation: u32,
    serving: Vec<(Ipv4Addr, u16)>,
    calls: u32,
    checks: u32,
}

impl Fake {
    fn new(backend: (Ipv4Addr, u16)) -> Fake {
        Fake {
            backend,
            masquerade: None,
            refuse: false,
            generation: 1,
            serving: vec![backend],
            calls: 0,
            checks: 0,
        }
    }
}

impl Services for Fake {
    fn generation(&self) -> u32 {
        self.generation
    }

    fn new_flow(&mut self, _now: Duration, t: &Tuple) -> Option<Nat> {
        self.calls += 1;
        if t.dst != VIP {
            return Some(Nat::default());
        }
        (!self.refuse).then_some(Nat {
            dnat: Some(self.backend),
            masquerade: self.masquerade,
            service: 7,
        })
    }

    fn still_serves(&mut self, service: u32, backend: (Ipv4Addr, u16)) -> bool {
        assert_eq!(service, 7);
        self.checks += 1;
        self.serving.contains(&backend)
    }
}

fn ct() -> Conntrack {
    // SNAT for traffic leaving the cluster; none inside it.
    let snat = SnatConfig::new(
        vec!["10.244.1.0/24".parse().unwrap()],
        vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.96.0.0/12".parse().unwrap(),
        ],
        NODE,
    );
    Conntrack::new(ConntrackConfig::default(), Some(snat))
}

fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .udp(sp, dp)
        .write(&mut v, b"query")
        .unwrap();
    v
}

fn tcp_syn(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .tcp(sp, dp, 1, 65535)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

/// (src, sport, dst, dport), with every checksum verified.
fn ends(p: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let s = SlicedPacket::from_ip(p).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    let h = ip.header();
    assert_eq!(
        h.header_checksum(),
        h.to_header().calc_header_checksum(),
        "IP checksum"
    );
    let (src, dst) = (h.source_addr(), h.destination_addr());
    match &s.transport {
        Some(TransportSlice::Udp(u)) => {
            let want = u
                .to_header()
                .calc_checksum_ipv4_raw(src.octets(), dst.octets(), u.payload())
                .unwrap();
            assert_eq!(u.checksum(), want, "UDP checksum");
            (src, u.source_port(), dst, u.destination_port())
        }
        Some(TransportSlice::Tcp(t)) => {
            let want = t
                .to_header()
                .calc_checksum_ipv4_raw(src.octets(), dst.octets(), t.payload())
                .unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum");
            (src, t.source_port(), dst, t.destination_port())
        }
        _ => (src, 0, dst, 0),
    }
}

fn at(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn dnat_once_per_flow_and_replies_come_back_from_the_vip() {
    let mut ct = ct();
    let mut lb = Fake::new((B1, 5353));
    for i in 0..3 {
        let mut p = udp(CLIENT, 40000, VIP, 53);
        let v = ct.process_with(at(i), &mut p, Origin::Pod, &mut lb);
        assert!(
            matches!(v, Verdict::Accept(a) if a.translated && a.service == 7),
            "{v:?}"
        );
        assert_eq!(ends(&p), (CLIENT, 40000, B1, 5353), "DNAT, client kept");
    }
    assert_eq!(lb.calls, 1, "asked once, at the first packet");
    let e = ct.entries().next().copied().unwrap();
    assert_eq!(e.service, 7);
    // The backend answers; the reply is un-DNATed where it reaches the pod.
    let mut r = udp(B1, 5353, CLIENT, 40000);
    let v = ct
        .reverse(at(10), &mut r)
        .expect("a reply of a translated flow");
    assert!(matches!(v, Verdict::Accept(a) if a.translated && a.service == 7));
    assert_eq!(ends(&r), (VIP, 53, CLIENT, 40000));
    // Pod-to-pod traffic that is no reply is left alone.
    let mut other = udp(B2, 9, CLIENT, 40000);
    let before = other.clone();
    assert!(ct.reverse(at(11), &mut other).is_none());
    assert_eq!(other, before);
    // The forward packet after DNAT is not a reply either.
    let mut fwd = udp(CLIENT, 40000, B1, 5353);
    assert!(ct.reverse(at(12), &mut fwd).is_none());
}

#[test]
fn an_icmp_error_from_the_backend_quotes_the_vip() {
    let mut ct = ct();
    let mut lb = Fake::new((B1, 5353));
    let mut p = udp(CLIENT, 40000, VIP, 53);
    ct.process_with(at(0), &mut p, Origin::Pod, &mut lb);
    // B1 answers with port unreachable, quoting what it received.
    let mut e = Vec::new();
    PacketBuilder::ipv4(B1.octets(), CLIENT.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut e, &p)
        .unwrap();
    let v = ct.reverse(at(1), &mut e).expect("related to the flow");
    assert!(matches!(v, Verdict::Accept(a) if a.translated), "{v:?}");
    let (src, _, dst, _) = ends(&e);
    assert_eq!(
        (src, dst),
        (VIP, CLIENT),
        "from the address the client used"
    );
    let quoted = &e[28..];
    assert_eq!(ends(quoted), (CLIENT, 40000, VIP, 53), "quote restored");
}

#[test]
fn service_masquerade_uses_the_given_address_and_comes_back() {
    let mut ct = ct();
    // Hairpin: the client is the backend.
    let mut lb = Fake::new((CLIENT, 8080));
    lb.masquerade = Some(GW);
    let mut p = tcp_syn(CLIENT, 40000, VIP, 53);
    let v = ct.process_with(at(0), &mut p, Origin::Pod, &mut lb);
    assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
    let (src, sport, dst, dport) = ends(&p);
    assert_eq!(
        (src, dst, dport),
        (GW, CLIENT, 8080),
        "to itself, from the gateway"
    );
    assert!(
        (61000..=65535).contains(&sport),
        "fully random port {sport}"
    );
    // Its SYN-ACK goes to the gateway address and comes back as the VIP's.
    let mut r = Vec::new();
    PacketBuilder::ipv4(CLIENT.octets(), GW.octets(), 64)
        .tcp(8080, sport, 9, 65535)
        .syn()
        .ack(2)
        .write(&mut r, &[])
        .unwrap();
    let v = ct.process_with(at(1), &mut r, Origin::Pod, &mut lb);
    assert!(
        matches!(v, Verdict::Accept(a) if a.dir == nat::Direction::Reply),
        "{v:?}"
    );
    assert_eq!(ends(&r), (VIP, 53, CLIENT, 40000));
    assert_eq!(lb.calls, 1);
}

#[test]
fn a_refused_flow_leaves_no_entry_and_is_asked_again() {
    let mut ct = ct();
    let mut lb = Fake::new((B1, 53));
    lb.refuse = true;
    for i in 0..3 {
        let mut p = udp(CLIENT, 40000, VIP, 53);
        let before = p.clone();
        assert_eq!(
            ct.process_with(at(i), &mut p, Origin::Pod, &mut lb),
            Verdict::Refused
        );
        assert_eq!(p, before, "untouched");
    }
    assert_eq!(lb.calls, 3);
    assert!(ct.is_empty());
    // Replies from the uplink never reach the hook.
    let mut r = udp(B1, 53, CLIENT, 40000);
    let _ = ct.process_with(at(5), &mut r, Origin::Uplink, &mut lb);
    assert_eq!(lb.calls, 3);
    // A plain flow (not to the VIP) is tracked with SNAT policy.
    let mut p = udp(CLIENT, 40001, Ipv4Addr::new(198, 51, 100, 1), 53);
    assert!(matches!(
        ct.process_with(at(6), &mut p, Origin::Pod, &mut lb),
        Verdict::Accept(_)
    ));
    assert_eq!(ends(&p).0, NODE, "masqueraded by policy");
}

/// kube-proxy's conntrack cleanup, as a lookup: after the service
/// generation changes, a UDP flow whose backend left picks a live backend
/// at its next datagram; one whose backend still serves keeps it; TCP
/// flows are never moved.
#[test]
fn udp_flows_to_a_backend_that_left_move_at_the_next_datagram() {
    let mut ct = ct();
    let mut lb = Fake::new((B1, 53));
    let send = |ct: &mut Conntrack, lb: &mut Fake, t: u64, p: Vec<u8>| {
        let mut p = p;
        let v = ct.process_with(at(t), &mut p, Origin::Pod, lb);
        assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
        ends(&p)
    };
    assert_eq!(send(&mut ct, &mut lb, 0, udp(CLIENT, 40000, VIP, 53)).2, B1);
    assert_eq!(
        send(&mut ct, &mut lb, 1, tcp_syn(CLIENT, 40001, VIP, 53)).2,
        B1
    );
    // New generation, B1 still serving: kept, checked once, not again.
    lb.generation = 2;
    assert_eq!(send(&mut ct, &mut lb, 2, udp(CLIENT, 40000, VIP, 53)).2, B1);
    assert_eq!(send(&mut ct, &mut lb, 3, udp(CLIENT, 40000, VIP, 53)).2, B1);
    assert_eq!(lb.checks, 1);
    // B1 leaves; B2 is the backend now.
    lb.generation = 3;
    lb.serving = vec![(B2, 53)];
    lb.backend = (B2, 53);
    assert_eq!(send(&mut ct, &mut lb, 4, udp(CLIENT, 40000, VIP, 53)).2, B2);
    assert_eq!(ct.counters().stale_removed, 1);
    assert_eq!(lb.calls, 3, "the UDP flow was asked again");
    // The TCP flow stays on B1 (it drains), whatever the generation.
    let mut p = tcp_syn(CLIENT, 40001, VIP, 53);
    let v = ct.process_with(at(5), &mut p, Origin::Pod, &mut lb);
    assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
    assert_eq!(ends(&p).2, B1);
    // Without a generation change nothing is checked.
    let checks = lb.checks;
    send(&mut ct, &mut lb, 6, udp(CLIENT, 40000, VIP, 53));
    assert_eq!(lb.checks, checks);
}

/// kubernetes #56903: two datagrams of one socket sent at once (glibc's A
/// and AAAA queries) must meet one entry. Both directions are inserted
/// with the first, so the second finds it.
#[test]
fn two_datagrams_racing_share_one_entry() {
    let mut ct = ct();
    let mut lb = Fake::new((B1, 53));
    let mut a = udp(CLIENT, 40000, VIP, 53);
    let mut aaaa = udp(CLIENT, 40000, VIP, 53);
    let mut burst = [a.as_mut_slice(), aaaa.as_mut_slice()];
    for p in burst.iter_mut() {
        assert!(matches!(
            ct.process_with(at(0), p, Origin::Pod, &mut lb),
            Verdict::Accept(_)
        ));
    }
    assert_eq!(ct.len(), 1);
    assert_eq!(lb.calls, 1);
    assert_eq!(ends(&a), ends(&aaaa));
    // Both answers come back.
    for _ in 0..2 {
        let mut r = udp(B1, 53, CLIENT, 40000);
        assert!(matches!(
            ct.reverse(at(1), &mut r),
            Some(Verdict::Accept(_))
        ));
        assert_eq!(ends(&r).0, VIP);
    }
}

/// Every address of 10.96.0.0/24 is a service on port 53 backed by B1:5353
/// (service number = last octet).
struct Shared;

impl Services for Shared {
    fn generation(&self) -> u32 {
        1
    }

    fn new_flow(&mut self, _now: Duration, t: &Tuple) -> Option<Nat> {
        Some(Nat {
            dnat: Some((B1, 5353)),
            masquerade: None,
            service: u32::from(t.dst.octets()[3]),
        })
    }

    fn still_serves(&mut self, _service: u32, _backend: (Ipv4Addr, u16)) -> bool {
        true
    }
}

/// One client port to two services sharing a backend (a resolver's socket
/// asking two DNS services served by the same pods): after DNAT both flows
/// have the same tuple, so the second one's source port is remapped, as
/// Linux's NAT does (get_unique_tuple), instead of being dropped. Each
/// reply comes back to the client's own port from its own service.
#[test]
fn two_services_sharing_a_backend_from_one_client_port() {
    let mut ct = ct();
    let (vip_a, vip_b) = (Ipv4Addr::new(10, 96, 0, 10), Ipv4Addr::new(10, 96, 0, 11));
    let mut lb = Shared;
    let mut a = udp(CLIENT, 40000, vip_a, 53);
    let v = ct.process_with(at(0), &mut a, Origin::Pod, &mut lb);
    assert!(matches!(v, Verdict::Accept(x) if x.service == 10), "{v:?}");
    assert_eq!(
        ends(&a),
        (CLIENT, 40000, B1, 5353),
        "the first keeps its port"
    );
    let mut b = udp(CLIENT, 40000, vip_b, 53);
    let v = ct.process_with(at(1), &mut b, Origin::Pod, &mut lb);
    assert!(matches!(v, Verdict::Accept(x) if x.service == 11), "{v:?}");
    let (src, remapped, dst, dport) = ends(&b);
    assert_eq!(
        (src, dst, dport),
        (CLIENT, B1, 5353),
        "address kept, DNAT done"
    );
    assert_ne!(remapped, 40000, "the source port is remapped");
    // Later datagrams of each flow keep their translation.
    let mut b2 = udp(CLIENT, 40000, vip_b, 53);
    ct.process_with(at(2), &mut b2, Origin::Pod, &mut lb);
    assert_eq!(ends(&b2).1, remapped);
    // The backend answers both; each reply reaches the client's port from
    // the service it asked.
    for (port, vip) in [(40000, vip_a), (remapped, vip_b)] {
        let mut r = udp(B1, 5353, CLIENT, port);
        let v = ct
            .reverse(at(3), &mut r)
            .expect("a reply of a translated flow");
        assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
        assert_eq!(ends(&r), (vip, 53, CLIENT, 40000));
    }
}
