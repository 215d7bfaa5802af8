//! Differential test against the real Linux conntrack + MASQUERADE (root,
//! network namespaces): the same scripted traffic goes through a kernel
//! router configured as Calico's `natOutgoing` is (MASQUERADE for the pod
//! CIDR, `ctstate INVALID` dropped in FORWARD) and through `nat`, and each
//! step must get the same decision: forwarded or dropped, translated or
//! not, original port kept or not, RELATED ICMP errors translated back.
//!
//! ```text
//!  ns "pods" eth0 10.244.1.2+.3 <-veth-> ns "router" rp 10.244.1.1 | ro 198.51.100.1 <-veth-> ns "out" eth0 198.51.100.7
//! ```
//!
//! Ports the kernel picks for colliding flows are its own (random); steps
//! that answer a flow are addressed to whatever port each system chose.

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use encap::icmp::IcmpPacket;
use encap::ipv4::Ipv4Packet;
use etherparse::PacketBuilder;
use nat::{Conntrack, ConntrackConfig, CtState, Origin, PortRange, SnatConfig, Verdict};
use support::{Netns, PacketSocket, require_root};

const POD_A: [u8; 4] = [10, 244, 1, 2];
const POD_B: [u8; 4] = [10, 244, 1, 3];
const ROUTER_OUT: [u8; 4] = [198, 51, 100, 1];
const OUT: [u8; 4] = [198, 51, 100, 7];

/// One scripted packet.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A TCP segment from a pod (flow name, pod, sport, flags, seq, ack).
    PodTcp(&'static str, [u8; 4], u16, u8, u32, u32),
    /// A TCP segment from outside to the translated end of a flow.
    OutTcp(&'static str, u8, u32, u32),
    /// UDP from a pod.
    PodUdp(&'static str, [u8; 4], u16),
    /// UDP reply from outside.
    OutUdp(&'static str),
    /// UDP from outside to a port no flow uses.
    OutUdpStray(u16),
    /// ICMP echo request from a pod.
    PodPing(&'static str, [u8; 4], u16),
    /// ICMP echo reply from outside.
    OutPong(&'static str),
    /// ICMP fragmentation-needed from outside about a flow's last packet.
    OutFragNeeded(&'static str),
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;
const RSTACK: u8 = 0x14;
const PSHACK: u8 = 0x18;

const SCRIPT: &[Step] = &[
    Step::PodTcp("a", POD_A, 40000, SYN, 1000, 0),
    Step::OutTcp("a", SYNACK, 5000, 1001),
    Step::PodTcp("a", POD_A, 40000, ACK, 1001, 5001),
    // Same source port from another pod to the same destination.
    Step::PodTcp("b", POD_B, 40000, SYN, 2000, 0),
    Step::OutTcp("b", SYNACK, 6000, 2001),
    Step::PodTcp("b", POD_B, 40000, ACK, 2001, 6001),
    // A blind RST far outside the window: INVALID in both.
    Step::OutTcp("a", RSTACK, 5001u32.wrapping_add(0x4000_0000), 1001),
    // Flow a still works.
    Step::PodTcp("a", POD_A, 40000, PSHACK, 1001, 5001),
    Step::OutTcp("a", ACK, 5001, 1011),
    Step::OutFragNeeded("a"),
    // A SYN/ACK nobody asked for, from a pod: invalid.
    Step::PodTcp("c", POD_A, 41000, SYNACK, 1, 1),
    Step::PodUdp("u", POD_A, 5353),
    Step::OutUdp("u"),
    Step::OutUdpStray(33333),
    Step::PodPing("p", POD_B, 77),
    Step::OutPong("p"),
];

/// What a system did with one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Dropped,
    Forwarded { translated: bool, kept_port: bool },
}

/// A system under test: the kernel router or `nat`.
trait System {
    /// Handles a packet from the pod side; returns what left on the other
    /// side, if anything.
    fn send_from_pod(&mut self, pkt: &[u8]) -> Option<Vec<u8>>;
    /// Handles a packet from outside; returns what reached the pods.
    fn send_from_out(&mut self, pkt: &[u8], pod: [u8; 4]) -> Option<Vec<u8>>;
}

/// A flow as one system mapped it: pod, pod port, translated address,
/// translated port, and the last packet it sent out.
type Flow = ([u8; 4], u16, [u8; 4], u16, Vec<u8>);

/// Runs the script on `sys`, returning each step's decision.
fn run(sys: &mut dyn System) -> Vec<Decision> {
    let mut flows: HashMap<&str, Flow> = HashMap::new();
    let mut out = Vec::new();
    for step in SCRIPT {
        let d = match *step {
            Step::PodTcp(name, pod, sp, flags, seq, ack) => {
                let p = tcp(
                    pod,
                    sp,
                    OUT,
                    443,
                    flags,
                    seq,
                    ack,
                    if flags == PSHACK { b"0123456789" } else { b"" },
                );
                pod_side(sys, &mut flows, name, pod, sp, &p)
            }
            Step::PodUdp(name, pod, sp) => {
                let mut p = Vec::new();
                PacketBuilder::ipv4(pod, OUT, 64)
                    .udp(sp, 53)
                    .write(&mut p, b"query")
                    .unwrap();
                pod_side(sys, &mut flows, name, pod, sp, &p)
            }
            Step::PodPing(name, pod, id) => {
                let mut p = Vec::new();
                PacketBuilder::ipv4(pod, OUT, 64)
                    .icmpv4_echo_request(id, 1)
                    .write(&mut p, b"ping")
                    .unwrap();
                pod_side(sys, &mut flows, name, pod, id, &p)
            }
            Step::OutTcp(name, flags, seq, ack) => {
                let (pod, sp, na, np, _) = flows[name].clone();
                let p = tcp(OUT, 443, na, np, flags, seq, ack, b"");
                out_side(sys, pod, &p, Some((pod, sp)))
            }
            Step::OutUdp(name) => {
                let (pod, sp, na, np, _) = flows[name].clone();
                let mut p = Vec::new();
                PacketBuilder::ipv4(OUT, na, 64)
                    .udp(53, np)
                    .write(&mut p, b"answer")
                    .unwrap();
                out_side(sys, pod, &p, Some((pod, sp)))
            }
            Step::OutUdpStray(port) => {
                let mut p = Vec::new();
                PacketBuilder::ipv4(OUT, ROUTER_OUT, 64)
                    .udp(53, port)
                    .write(&mut p, b"stray")
                    .unwrap();
                out_side(sys, POD_A, &p, None)
            }
            Step::OutPong(name) => {
                let (pod, id, na, nid, _) = flows[name].clone();
                let mut p = Vec::new();
                PacketBuilder::ipv4(OUT, na, 64)
                    .icmpv4_echo_reply(nid, 1)
                    .write(&mut p, b"ping")
                    .unwrap();
                out_side(sys, pod, &p, Some((pod, id)))
            }
            Step::OutFragNeeded(name) => {
                let (pod, sp, _, _, last) = flows[name].clone();
                let mut p = Vec::new();
                PacketBuilder::ipv4(OUT, ROUTER_OUT, 64)
                    .icmpv4_raw(3, 4, [0, 0, 0x05, 0x00])
                    .write(&mut p, &last[..28])
                    .unwrap();
                match sys.send_from_out(&p, pod) {
                    None => Decision::Dropped,
                    Some(got) => {
                        // Delivered to the pod with the quote translated back.
                        let ip = Ipv4Packet::new_checked(&got[..]).unwrap();
                        assert_eq!(ip.dst_addr(), Ipv4Addr::from(pod));
                        let m = IcmpPacket::new_checked_v4(ip.payload()).unwrap();
                        assert!(m.verify_checksum_v4());
                        let q = Ipv4Packet::new_lax(m.payload()).unwrap();
                        assert_eq!(q.src_addr(), Ipv4Addr::from(pod));
                        let qp = &m.payload()[q.header_len()..];
                        assert_eq!(u16::from_be_bytes([qp[0], qp[1]]), sp);
                        Decision::Forwarded {
                            translated: true,
                            kept_port: true,
                        }
                    }
                }
            }
        };
        out.push(d);
    }
    out
}

fn pod_side(
    sys: &mut dyn System,
    flows: &mut HashMap<&'static str, Flow>,
    name: &'static str,
    pod: [u8; 4],
    sp: u16,
    p: &[u8],
) -> Decision {
    match sys.send_from_pod(p) {
        None => Decision::Dropped,
        Some(got) => {
            let ip = Ipv4Packet::new_checked(&got[..]).unwrap();
            let na = ip.src_addr().octets();
            let l4 = ip.payload();
            let np = if ip.protocol() == 1 {
                u16::from_be_bytes([l4[4], l4[5]])
            } else {
                u16::from_be_bytes([l4[0], l4[1]])
            };
            flows.insert(name, (pod, sp, na, np, got.clone()));
            Decision::Forwarded {
                translated: na != pod,
                kept_port: np == sp,
            }
        }
    }
}

fn out_side(
    sys: &mut dyn System,
    pod: [u8; 4],
    p: &[u8],
    expect: Option<([u8; 4], u16)>,
) -> Decision {
    match sys.send_from_out(p, pod) {
        None => Decision::Dropped,
        Some(got) => {
            let ip = Ipv4Packet::new_checked(&got[..]).unwrap();
            if let Some((pod, port)) = expect {
                assert_eq!(
                    ip.dst_addr(),
                    Ipv4Addr::from(pod),
                    "reply reaches the right pod"
                );
                let l4 = ip.payload();
                let dp = if ip.protocol() == 1 {
                    u16::from_be_bytes([l4[4], l4[5]])
                } else {
                    u16::from_be_bytes([l4[2], l4[3]])
                };
                assert_eq!(dp, port, "reply reaches the right port");
            }
            Decision::Forwarded {
                translated: true,
                kept_port: true,
            }
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "a packet literal")]
fn tcp(
    src: [u8; 4],
    sp: u16,
    dst: [u8; 4],
    dp: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, 64240);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(ack);
    }
    if flags & 0x04 != 0 {
        b = b.rst();
    }
    if flags & 0x08 != 0 {
        b = b.psh();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// `nat` as a system.
struct Sluice {
    ct: Conntrack,
    now: Duration,
}

impl System for Sluice {
    fn send_from_pod(&mut self, pkt: &[u8]) -> Option<Vec<u8>> {
        self.now += Duration::from_millis(10);
        let mut p = pkt.to_vec();
        matches!(
            self.ct.process(self.now, &mut p, Origin::Pod),
            Verdict::Accept(_)
        )
        .then_some(p)
    }

    fn send_from_out(&mut self, pkt: &[u8], _pod: [u8; 4]) -> Option<Vec<u8>> {
        self.now += Duration::from_millis(10);
        let mut p = pkt.to_vec();
        match self.ct.process(self.now, &mut p, Origin::Uplink) {
            Verdict::Accept(a) => {
                assert!(a.state != CtState::New);
                Some(p)
            }
            Verdict::Drop(_) => None,
            Verdict::Refused => unreachable!("no service hook here"),
        }
    }
}

/// The kernel router as a system, driven through raw sockets.
struct Kernel {
    _ns: [Netns; 3],
    pods_tx: PacketSocket,
    out_tx: PacketSocket,
    router_pod_mac: [u8; 6],
    router_out_mac: [u8; 6],
    pods_mac: [u8; 6],
    out_mac: [u8; 6],
}

fn ether(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

/// Waits (bounded) for an IPv4 frame on `rx` matching `want`; returns its IP packet.
fn capture(rx: &PacketSocket, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    for _ in 0..10 {
        while let Some(f) = rx.recv() {
            if f.len() > 14 && f[12..14] == [0x08, 0x00] && want(&f[14..]) {
                return Some(f[14..].to_vec());
            }
        }
    }
    None
}

impl Kernel {
    fn new() -> Kernel {
        let pods = Netns::new("pods");
        let router = Netns::new("rtr");
        let out = Netns::new("out");
        pods.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "rp",
            "netns",
            &router.name,
        ]);
        out.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "ro",
            "netns",
            &router.name,
        ]);
        for (ns, dev, addrs) in [
            (&pods, "eth0", &["10.244.1.2/24", "10.244.1.3/24"][..]),
            (&router, "rp", &["10.244.1.1/24"][..]),
            (&router, "ro", &["198.51.100.1/24"][..]),
            (&out, "eth0", &["198.51.100.7/24"][..]),
        ] {
            for a in addrs {
                ns.ip(&["addr", "add", a, "dev", dev]);
            }
            ns.ip(&["link", "set", dev, "up"]);
        }
        pods.ip(&["route", "add", "default", "via", "10.244.1.1"]);
        router.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
        // Calico natOutgoing, and Calico's drop of conntrack-INVALID packets.
        router.exec(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "10.244.1.0/24",
            "!",
            "-d",
            "10.244.0.0/16",
            "-j",
            "MASQUERADE",
        ]);
        router.exec(&[
            "iptables",
            "-A",
            "FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "INVALID",
            "-j",
            "DROP",
        ]);
        // The end hosts' kernels must not answer the crafted packets.
        for ns in [&pods, &out] {
            ns.exec(&["iptables", "-A", "INPUT", "-j", "DROP"]);
        }
        Kernel {
            pods_tx: pods.packet_socket("eth0"),
            out_tx: out.packet_socket("eth0"),
            router_pod_mac: router.mac("rp"),
            router_out_mac: router.mac("ro"),
            pods_mac: pods.mac("eth0"),
            out_mac: out.mac("eth0"),
            _ns: [pods, router, out],
        }
    }
}

/// Whether `got` is `sent` after NAT: the same protocol and the fields NAT
/// does not touch (TCP sequence, acknowledgment and flags; UDP destination
/// port and payload; ICMP sequence and payload). `pod_side` also requires
/// the same destination address.
fn same_packet(got: &[u8], sent: &[u8], pod_side: bool) -> bool {
    let (Ok(g), Ok(s)) = (Ipv4Packet::new_checked(got), Ipv4Packet::new_checked(sent)) else {
        return false;
    };
    let (gl, sl) = (g.payload(), s.payload());
    if g.protocol() != s.protocol()
        || gl.len() != sl.len()
        || (pod_side && g.dst_addr() != s.dst_addr())
    {
        return false;
    }
    match s.protocol() {
        6 => gl.get(4..14) == sl.get(4..14),
        17 => gl.get(2..4) == sl.get(2..4) && gl.get(8..) == sl.get(8..),
        _ => gl.first() == sl.first() && gl.get(6..) == sl.get(6..) || gl.first() == Some(&3),
    }
}

impl System for Kernel {
    fn send_from_pod(&mut self, pkt: &[u8]) -> Option<Vec<u8>> {
        let frame = ether(self.router_pod_mac, self.pods_mac, pkt);
        self.pods_tx.send(&frame);
        capture(&self.out_tx, |ip| same_packet(ip, pkt, true))
    }

    fn send_from_out(&mut self, pkt: &[u8], _pod: [u8; 4]) -> Option<Vec<u8>> {
        let frame = ether(self.router_out_mac, self.out_mac, pkt);
        self.out_tx.send(&frame);
        capture(&self.pods_tx, |ip| same_packet(ip, pkt, false))
    }
}

#[test]
fn same_decisions_as_linux_conntrack_masquerade() {
    if !require_root("same_decisions_as_linux_conntrack_masquerade") {
        return;
    }
    let mut kernel = Kernel::new();
    let linux = run(&mut kernel);
    let mut snat = SnatConfig::new(
        vec!["10.244.1.0/24".parse().unwrap()],
        vec!["10.244.0.0/16".parse().unwrap()],
        Ipv4Addr::from(ROUTER_OUT),
    );
    // MASQUERADE without --to-ports: the whole unprivileged class.
    snat.ports = PortRange {
        min: 1024,
        max: 65535,
    };
    let mut sluice = Sluice {
        ct: Conntrack::new(ConntrackConfig::default(), Some(snat)),
        now: Duration::from_secs(1),
    };
    let ours = run(&mut sluice);
    for (i, (step, (l, o))) in SCRIPT.iter().zip(linux.iter().zip(&ours)).enumerate() {
        eprintln!("step {i:2} {step:?}\n        linux {l:?}\n        nat   {o:?}");
    }
    assert_eq!(
        ours, linux,
        "nat and Linux conntrack/MASQUERADE decide differently (steps listed above)"
    );
    // The script exercises both outcomes.
    assert!(linux.contains(&Decision::Dropped));
    assert!(
        linux.iter().any(|d| matches!(
            d,
            Decision::Forwarded {
                kept_port: false,
                ..
            }
        )),
        "a port collision"
    );
}
