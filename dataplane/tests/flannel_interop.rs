//! One Sluice node (AF_XDP uplink on a veth, TUN pod) and one plain Linux
//! node configured the way Flannel's vxlan backend configures it (vxlan VNI
//! 1, port 8472, permanent ARP and FDB entries, onlink route): ping, a
//! 10 MB TCP transfer compared byte for byte, and UDP, in both directions;
//! and the Sluice node's own kernel still answers on the uplink.

#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::port::Port;
use dataplane::port::steer::Hook;
use dataplane::port::tap::{OffloadUplink, Redirect, UplinkTap};
use dataplane::port::tun::TunPort;
use dataplane::port::xdp::{SteerConfig, SteerProgram, XdpPort};
use dataplane::route::{Node, PeerSpec, Routes, Snapshot};
use dataplane::worker::{IdlePolicy, Role, Worker};
use encap::MacAddr;
use encap::vxlan::VxlanConfig;
use nat::{ConntrackConfig, SnatConfig};
use support::{Netns, require_root, tcp_transfer};

const A_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const VTEP_A: MacAddr = MacAddr([0x0a, 0x5e, 0, 0, 0, 1]);
const VTEP_B: &str = "0a:5e:00:00:00:02";

/// The kernel node: Flannel's flannel.1 plus one pod on a routed veth;
/// with `defaults`, every offload left as the kernel sets it.
fn flannel_node(node: &Netns, pod: &Netns, defaults: bool) {
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.ip(&[
        "link",
        "add",
        "flannel.1",
        "address",
        VTEP_B,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "192.168.77.2",
        "dev",
        "up-b",
        "dstport",
        "8472",
        "nolearning",
    ]);
    node.ip(&["link", "set", "flannel.1", "mtu", "1450", "up"]);
    node.ip(&["addr", "add", "10.244.2.0/32", "dev", "flannel.1"]);
    // What flanneld writes for a peer: route, neighbour, FDB.
    node.ip(&[
        "route",
        "add",
        "10.244.1.0/24",
        "via",
        "10.244.1.0",
        "dev",
        "flannel.1",
        "onlink",
    ]);
    node.ip(&[
        "neigh",
        "add",
        "10.244.1.0",
        "lladdr",
        "0a:5e:00:00:00:01",
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ]);
    support::run(&[
        "bridge",
        "-n",
        &node.name,
        "fdb",
        "append",
        "0a:5e:00:00:00:01",
        "dev",
        "flannel.1",
        "dst",
        "192.168.77.1",
    ]);
    // The pod, routed (cni0's role played by the veth's host end).
    node.ip(&[
        "link", "add", "vb-pod", "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
    ]);
    node.ip(&["addr", "add", "10.244.2.1/24", "dev", "vb-pod"]);
    node.ip(&["link", "set", "vb-pod", "mtu", "1450", "up"]);
    pod.ip(&["addr", "add", "10.244.2.2/24", "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "mtu", "1450", "up"]);
    pod.ip(&["route", "add", "default", "via", "10.244.2.1"]);
    // Software checksums on the pod side: AF_XDP in copy mode on veth sees
    // frames as the kernel left them, and a CHECKSUM_PARTIAL inner packet
    // would reach the Sluice pod unfinished (a NIC finishes it in hardware).
    // Receiving through the TAP, the virtio-net header says so instead.
    if !defaults {
        pod.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
    }
}

/// How node A's uplink runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Uplink {
    /// AF_XDP both ways, the program at XDP.
    AfXdp,
    /// Receiving on AF_XDP; sending super-packets through the TAP.
    OffloadTx,
    /// The program at TCX ingress, receiving through the TAP too.
    Offload,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Worker>>,
}

impl Running {
    fn stop(mut self) -> Worker {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts Sluice on node A: its uplink up-a run as `mode`, a TUN pod in
/// `pod`.
fn sluice_node(node: &Netns, pod: &Netns, peer_mac: [u8; 6], mode: Uplink) -> Running {
    let uplink_mac = MacAddr(node.mac("up-a"));
    let vxlan = VxlanConfig::default();
    let snapshot = Snapshot::new(
        1,
        Node {
            name: "a".into(),
            ip: A_IP,
            uplink_mac,
            uplink_mtu: 1500,
            vtep_mac: VTEP_A,
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            gateway_ip: Ipv4Addr::new(10, 244, 1, 1),
            gateway_mac: None,
        },
        vxlan,
        vec!["10.244.0.0/16".parse().unwrap()],
        [PeerSpec {
            name: "b".into(),
            ip: B_IP,
            vtep_mac: VTEP_B.parse().unwrap(),
            pod_cidrs: vec!["10.244.2.0/24".parse().unwrap()],
        }],
        &|ip| (ip == B_IP).then_some(MacAddr(peer_mac)),
    );
    let routes = Routes::new(snapshot);
    let snat = SnatConfig::new(
        vec!["10.244.1.0/24".parse().unwrap()],
        vec!["10.244.0.0/16".parse().unwrap()],
        A_IP,
    );
    let (pmin, pmax) = (snat.ports.min, snat.ports.max);
    let mut w = Worker::new(routes, ConntrackConfig::default(), Some(snat), 1024);
    let ns_path = PathBuf::from(format!("/var/run/netns/{}", node.name));
    let uplink = dataplane::netns::run_in(&ns_path, move || {
        let cfg = |tap| SteerConfig {
            node_ip: A_IP,
            vxlan_port: 8472,
            ports: (pmin, pmax),
            idents: (pmin, pmax),
            all: false,
            tap,
        };
        let hook = if mode == Uplink::Offload {
            Hook::Tcx
        } else {
            Hook::Xdp
        };
        let prog = Arc::new(SteerProgram::attach_at("up-a", cfg(0), hook)?);
        let rx = XdpPort::open("up-a", 0, Some(prog.clone()))?;
        if mode == Uplink::AfXdp {
            return Ok(Box::new(rx) as Box<dyn Port>);
        }
        let tx = UplinkTap::open("sl-up")?;
        UplinkTap::prepare("sl-up")?;
        let redirect = Arc::new(Redirect::attach("sl-up", "up-a")?);
        prog.configure(cfg(netcfg::if_index("sl-up")?))?;
        let tap_rx = mode == Uplink::Offload;
        Ok(Box::new(OffloadUplink::new(rx, tx, redirect, tap_rx)) as Box<dyn Port>)
    })
    .expect("AF_XDP uplink");
    w.add_port(uplink, Role::Uplink);
    let pod_ns = PathBuf::from(format!("/var/run/netns/{}", pod.name));
    let tun = TunPort::create(&pod_ns, "eth0", POD_A, 1450, true).expect("TUN pod");
    w.add_port(
        Box::new(tun),
        Role::Pod {
            ip: POD_A,
            mac: None,
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let t0 = Instant::now();
        w.run(&s, IdlePolicy::default(), || t0.elapsed(), |_| {})
            .expect("worker");
        w
    });
    Running {
        stop,
        thread: Some(thread),
    }
}

/// Node A (for Sluice) and the Flannel node B joined by a veth, with a
/// pod namespace each, named from `tag`; with `defaults`, node B keeps
/// every offload as the kernel sets it.
fn wire(tag: &str, defaults: bool) -> (Netns, Netns, Netns, Netns) {
    let a = Netns::new(&format!("{tag}a"));
    let b = Netns::new(&format!("{tag}b"));
    let pa = Netns::new(&format!("{tag}pa"));
    let pb = Netns::new(&format!("{tag}pb"));
    a.ip(&[
        "link", "add", "up-a", "type", "veth", "peer", "name", "up-b", "netns", &b.name,
    ]);
    a.ip(&["addr", "add", "192.168.77.1/24", "dev", "up-a"]);
    b.ip(&["addr", "add", "192.168.77.2/24", "dev", "up-b"]);
    a.ip(&["link", "set", "up-a", "up"]);
    b.ip(&["link", "set", "up-b", "up"]);
    // Native XDP on a veth receives only when the peer end has GRO or XDP.
    if !defaults {
        b.exec(&["ethtool", "-K", "up-b", "gro", "on", "tx", "off"]);
    }
    if !defaults {
        a.exec(&["ethtool", "-K", "up-a", "gro", "on"]);
    }
    flannel_node(&b, &pb, defaults);
    (a, b, pa, pb)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A UDP request from `client` answered by an echo in `server`.
fn udp_echo(client: &Netns, server: &Netns, addr: Ipv4Addr, size: usize) {
    let sock = server
        .enter(move || UdpSocket::bind((addr, 5300)))
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 4000];
        let (n, from) = sock.recv_from(&mut b).expect("udp request");
        sock.send_to(&b[..n], from).expect("udp reply");
    });
    let msg = pattern(size);
    let got = client
        .enter(move || {
            let c = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            // Bounded retries: the first datagram may race the echo's bind.
            for _ in 0..5 {
                c.send_to(&msg, (addr, 5300))?;
                let mut b = [0u8; 4000];
                if let Ok(n) = c.recv(&mut b) {
                    return Ok(b[..n].to_vec());
                }
            }
            Err(std::io::Error::other("no UDP answer"))
        })
        .expect("udp client");
    echo.join().unwrap();
    assert_eq!(got, pattern(size));
}

#[test]
fn sluice_joins_a_flannel_node() {
    if !require_root("sluice_joins_a_flannel_node") {
        return;
    }
    let (a, b, pa, pb) = wire("fl", false);
    let running = sluice_node(&a, &pa, b.mac("up-b"), Uplink::AfXdp);
    // Node A's kernel answers on the uplink while Sluice runs.
    b.exec(&["ping", "-c", "2", "-W", "2", "192.168.77.1"]);
    pa.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.2.2"]);
    pb.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.2"]);
    udp_echo(&pa, &pb, POD_B, 1000);
    udp_echo(&pb, &pa, POD_A, 1400);
    let data = pattern(10 << 20);
    tcp_transfer(&pa, &pb, POD_B, &data);
    tcp_transfer(&pb, &pa, POD_A, &data);
    let w = running.stop();
    let c = &w.counters;
    assert!(c.encapsulated > 1000, "{c:?}");
    assert!(c.decapsulated > 1000, "{c:?}");
    eprintln!("counters: {c:?}");
}

/// The link's received packets, read in its namespace.
fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    link_packets(ns, dev, "rx")
}

/// The link's packets in direction `dir` ("rx", "tx").
fn link_packets(ns: &Netns, dev: &str, dir: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "-s", "-j", "link", "show", dev])
        .output()
        .expect("ip");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    v[0]["stats64"][dir]["packets"].as_u64().expect("packets")
}

/// Issue 17: the offload uplink. Sluice's VXLAN frames of a TCP flow go
/// out as UDP-tunnel GSO super-packets through the TAP, which the
/// Flannel-style kernel node takes whole (its veth counts far fewer
/// packets than 1.4 KB segments) and decapsulates byte-exact; the other
/// direction and ping and UDP work as in AF_XDP mode.
#[test]
fn sluice_joins_a_flannel_node_sending_super_packets() {
    if !require_root("sluice_joins_a_flannel_node_sending_super_packets") {
        return;
    }
    if let Err(e) = dataplane::port::tap::probe_tunnel_gso() {
        eprintln!("skipped: {e}");
        return;
    }
    let (a, b, pa, pb) = wire("fo", false);
    let running = sluice_node(&a, &pa, b.mac("up-b"), Uplink::OffloadTx);
    b.exec(&["ping", "-c", "2", "-W", "2", "192.168.77.1"]);
    pa.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.2.2"]);
    pb.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.2"]);
    udp_echo(&pa, &pb, POD_B, 1000);
    udp_echo(&pb, &pa, POD_A, 1400);
    let data = pattern(10 << 20);
    let before = rx_packets(&b, "up-b");
    tcp_transfer(&pa, &pb, POD_B, &data);
    let packets = rx_packets(&b, "up-b") - before;
    let segments = data.len() as u64 / 1400;
    eprintln!(
        "10 MB A -> B: {packets} packets on the kernel node's uplink ({segments} segments' worth)"
    );
    assert!(
        packets < segments / 3,
        "{packets} packets for {segments} segments: not sent as super-packets"
    );
    tcp_transfer(&pb, &pa, POD_A, &data);
    let w = running.stop();
    let c = &w.counters;
    assert!(c.encapsulated > 1000, "{c:?}");
    assert!(c.decapsulated > 1000, "{c:?}");
}

/// Issue 17 items 1 and 4: the offload uplink receiving too. The steering
/// program runs at up-a's TCX ingress (no XDP program, so the kernel
/// node's veth keeps its GSO) and hands Sluice's packets to the TAP whole:
/// the Flannel node, every offload left on (TSO, checksum offload: its
/// packets arrive with checksums unfinished), sends a TCP flow as
/// UDP-tunnel GSO super-packets that Sluice reads one at a time and cuts
/// into the pod's segments. Ping, 2000-byte UDP (fragmented in the pod)
/// and 100 MB of TCP each way, byte-exact.
#[test]
fn sluice_joins_a_flannel_node_with_its_offloads_on_receiving_super_packets() {
    if !require_root("sluice_joins_a_flannel_node_with_its_offloads_on_receiving_super_packets") {
        return;
    }
    if let Err(e) = dataplane::port::tap::probe_tunnel_gso() {
        eprintln!("skipped: {e}");
        return;
    }
    let (a, b, pa, pb) = wire("fr", true);
    let running = sluice_node(&a, &pa, b.mac("up-b"), Uplink::Offload);
    b.exec(&["ping", "-c", "2", "-W", "2", "192.168.77.1"]);
    pa.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.2.2"]);
    pb.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.2"]);
    udp_echo(&pa, &pb, POD_B, 2000);
    udp_echo(&pb, &pa, POD_A, 2000);
    let data = pattern(100 << 20);
    let (up, tap) = (rx_packets(&a, "up-a"), link_packets(&a, "sl-up", "tx"));
    tcp_transfer(&pb, &pa, POD_A, &data);
    let up = rx_packets(&a, "up-a") - up;
    let tap = link_packets(&a, "sl-up", "tx") - tap;
    let segments = data.len() as u64 / 1400;
    eprintln!(
        "100 MB B -> A: {up} packets on Sluice's uplink, {tap} read from the TAP \
         ({segments} segments' worth)"
    );
    assert!(
        tap < segments / 3,
        "{tap} reads for {segments} segments: not received as super-packets"
    );
    tcp_transfer(&pa, &pb, POD_B, &data);
    let w = running.stop();
    let c = &w.counters;
    assert!(c.encapsulated > 1000, "{c:?}");
    assert!(c.decapsulated > 1000, "{c:?}");
}
