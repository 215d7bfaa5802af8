//! Wire compatibility with the Linux vxlan driver (as Flannel's `flannel.1`
//! configures it: VNI 1, UDP port 8472), in network namespaces:
//!
//! ```text
//!  ns "sl" (Sluice side)            ns "kv" (kernel node)                     ns "pod"
//!  ul0 192.0.2.1  <-- veth -->  ul0 192.0.2.2   vx0 (vxlan id 1 dstport 8472)
//!  raw AF_PACKET socket                         br0 = { vx0, pod0 }  pod0 <-- veth --> eth0 (raw socket)
//! ```
//!
//! (a) Frames that `encap` encapsulates and sends on `ul0` are decapsulated by
//!     the kernel and arrive in "pod" byte for byte.
//! (b) Frames sent from "pod" are encapsulated by the kernel; `encap`
//!     decapsulates the capture on `ul0` to exactly the frame that was sent.
//!
//! The bridge forwards inner frames at L2, so nothing rewrites them on the
//! way: any byte that differs is an encap or decap bug.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::vxlan::{self, EncapTemplate, OVERHEAD, TunnelEndpoint, Vni, VxlanConfig};
use encap::{MacAddr, flow::PortRange};
use etherparse::PacketBuilder;
use support::{Netns, require_root};

const SLUICE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Inner IPv4 payload sizes: UDP payloads from tiny to the overlay MTU
/// (1500 - 50 = 1450-byte inner IP packets, 1422 bytes of UDP payload).
const PAYLOADS: [usize; 6] = [16, 64, 200, 512, 1000, 1422];

struct Topo {
    sluice: Netns,
    kernel: Netns,
    pod: Netns,
}

/// The kernel node's outer UDP checksum setting.
#[derive(Clone, Copy, Debug)]
enum UdpCsum {
    /// `udpcsum`: the default of current kernels (6.x) for IPv4 vxlan.
    On,
    /// `noudpcsum`: zero checksum, RFC 7348's "SHOULD" and older defaults.
    Off,
}

fn topology(csum: UdpCsum) -> Topo {
    let sluice = Netns::new("sl");
    let kernel = Netns::new("kv");
    let pod = Netns::new("pod");
    let (k, p) = (&kernel.name[..], &pod.name[..]);
    sluice.ip(&[
        "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", k,
    ]);
    sluice.ip(&["addr", "add", "192.0.2.1/24", "dev", "ul0"]);
    sluice.ip(&["link", "set", "ul0", "up"]);
    kernel.ip(&["addr", "add", "192.0.2.2/24", "dev", "ul0"]);
    kernel.ip(&["link", "set", "ul0", "up"]);
    kernel.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "8472",
        "local",
        "192.0.2.2",
        "dev",
        "ul0",
        "nolearning",
        match csum {
            UdpCsum::On => "udpcsum",
            UdpCsum::Off => "noudpcsum",
        },
    ]);
    // veth leaves checksums CHECKSUM_PARTIAL (only the pseudo-header seed in
    // the field) for the receiver to trust. A real NIC completes them on the
    // wire; turning tx offload off makes Linux compute them in software, so
    // the capture holds what a wire would carry.
    kernel.exec(&["ethtool", "-K", "ul0", "tx", "off"]);
    // Unknown inner destinations are flooded to the Sluice VTEP.
    kernel.exec(&[
        "bridge",
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        "vx0",
        "dst",
        "192.0.2.1",
    ]);
    kernel.ip(&["link", "add", "br0", "type", "bridge"]);
    kernel.ip(&["link", "set", "vx0", "master", "br0", "up"]);
    kernel.ip(&[
        "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", p,
    ]);
    kernel.ip(&["link", "set", "pod0", "mtu", "1450", "master", "br0", "up"]);
    kernel.ip(&["link", "set", "br0", "up"]);
    pod.ip(&["link", "set", "eth0", "mtu", "1450", "up"]);
    Topo {
        sluice,
        kernel,
        pod,
    }
}

/// The Sluice side's tunnel endpoint towards the kernel node.
fn sluice_endpoint(t: &Topo) -> TunnelEndpoint {
    TunnelEndpoint {
        local_mac: MacAddr(t.sluice.mac("ul0")),
        next_hop_mac: MacAddr(t.kernel.mac("ul0")),
        local_ip: SLUICE_IP,
        remote_ip: KERNEL_IP,
    }
}

/// `inner` encapsulated by `encap`, as the outer frame to put on the wire.
fn encapsulated(inner: &[u8], cfg: &VxlanConfig, ep: &TunnelEndpoint) -> Vec<u8> {
    let mut buf = vec![0u8; OVERHEAD];
    buf.extend_from_slice(inner);
    let end = buf.len();
    let outer = vxlan::encapsulate(&mut buf, OVERHEAD..end, &EncapTemplate::new(cfg, ep)).unwrap();
    buf[outer].to_vec()
}

/// An inner Ethernet/IPv4/UDP frame whose payload starts with a marker that
/// identifies the test, direction and size, then counts bytes.
fn inner_frame(dst: [u8; 6], src: [u8; 6], tag: u8, index: usize, payload_len: usize) -> Vec<u8> {
    let mut payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + index) as u8).collect();
    let marker = marker(tag, index);
    payload[..marker.len()].copy_from_slice(&marker);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 244, 1, 2], [10, 244, 2, 3], 64)
        .udp(40000 + index as u16, 8080)
        .write(&mut f, &payload)
        .unwrap();
    f
}

fn marker(tag: u8, index: usize) -> [u8; 10] {
    let mut m = *b"SLUICE-\0\0\0";
    m[7] = tag;
    m[8..].copy_from_slice(&(index as u16).to_be_bytes());
    m
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// (a) encap -> kernel vxlan decap -> delivered byte-identical.
#[test]
fn kernel_vxlan_delivers_what_encap_builds() {
    if !require_root("kernel_vxlan_delivers_what_encap_builds") {
        return;
    }
    let t = topology(UdpCsum::On);
    let tx = t.sluice.packet_socket("ul0");
    let rx = t.pod.packet_socket("eth0");
    let ep = sluice_endpoint(&t);
    let cfg = VxlanConfig::default();
    assert_eq!((cfg.vni.get(), cfg.dst_port), (1, 8472));
    let pod_mac = t.pod.mac("eth0");
    for (i, len) in PAYLOADS.into_iter().enumerate() {
        let inner = inner_frame(pod_mac, [0x02, 0x5a, 0, 0, 0, 1], b'a', i, len);
        let outer = encapsulated(&inner, &cfg, &ep);
        assert!(outer.len() <= 1514, "outer frame fits a 1500 MTU");
        let m = marker(b'a', i);
        let got = tx
            .send_until(&outer, &rx, 20, Duration::from_millis(100), |f| {
                contains(f, &m)
            })
            .unwrap_or_else(|| panic!("kernel never delivered the {len}-byte payload frame"));
        assert_eq!(
            got, inner,
            "payload {len}: delivered frame differs from the inner frame"
        );
    }
}

/// The same path refuses a frame with the wrong VNI: a control showing the
/// delivery check above can fail.
#[test]
fn kernel_vxlan_drops_a_foreign_vni() {
    if !require_root("kernel_vxlan_drops_a_foreign_vni") {
        return;
    }
    let t = topology(UdpCsum::On);
    let tx = t.sluice.packet_socket("ul0");
    let rx = t.pod.packet_socket("eth0");
    let ep = sluice_endpoint(&t);
    let pod_mac = t.pod.mac("eth0");
    let send = |vni: u32, i: usize| {
        let cfg = VxlanConfig {
            vni: Vni::new(vni).unwrap(),
            ..VxlanConfig::default()
        };
        let inner = inner_frame(pod_mac, [0x02, 0x5a, 0, 0, 0, 1], b'v', i, 64);
        let outer = encapsulated(&inner, &cfg, &ep);
        let m = marker(b'v', i);
        tx.send_until(&outer, &rx, 5, Duration::from_millis(100), |f| {
            contains(f, &m)
        })
    };
    assert!(send(2, 0).is_none(), "VNI 2 must not reach a VNI 1 device");
    assert!(send(1, 1).is_some(), "VNI 1 is delivered");
}

/// (b) kernel vxlan encap -> captured on the underlay -> decap -> exactly
/// the frame that was sent; with the kernel's UDP checksum (which decap
/// verifies) and without.
#[test]
fn encap_decapsulates_what_kernel_vxlan_builds() {
    if !require_root("encap_decapsulates_what_kernel_vxlan_builds") {
        return;
    }
    for csum in [UdpCsum::On, UdpCsum::Off] {
        kernel_to_encap(csum);
    }
}

fn kernel_to_encap(csum: UdpCsum) {
    let t = topology(csum);
    let tx = t.pod.packet_socket("eth0");
    let rx = t.sluice.packet_socket("ul0");
    let cfg = VxlanConfig::default();
    for (i, len) in PAYLOADS.into_iter().enumerate() {
        // Unknown destination MAC: the bridge floods it to vx0, whose
        // all-zeros FDB entry sends it to the Sluice VTEP.
        let inner = inner_frame(
            [0x02, 0x5b, 0, 0, 0, 9],
            [0x02, 0x5c, 0, 0, 0, 1],
            b'b',
            i,
            len,
        );
        let m = marker(b'b', i);
        let outer = tx
            .send_until(&inner, &rx, 20, Duration::from_millis(100), |f| {
                contains(f, &m)
            })
            .unwrap_or_else(|| {
                panic!("{csum:?}: kernel never encapsulated the {len}-byte payload frame")
            });
        assert_eq!(
            outer.len(),
            inner.len() + OVERHEAD,
            "{csum:?} payload {len}: 50 bytes of overhead"
        );
        let udp_checksum = u16::from_be_bytes([outer[40], outer[41]]);
        match csum {
            UdpCsum::On => assert_ne!(
                udp_checksum, 0,
                "udpcsum: Linux computed a checksum for decap to verify"
            ),
            UdpCsum::Off => assert_eq!(udp_checksum, 0),
        }
        let mut outer = outer;
        let d = vxlan::decapsulate(&mut outer, &cfg)
            .unwrap_or_else(|e| panic!("{csum:?} payload {len}: {e}"));
        assert_eq!(
            d.inner_frame(&outer),
            &inner[..],
            "{csum:?} payload {len}: decapsulated frame differs"
        );
        assert_eq!(
            (d.vni.get(), d.outer_src, d.outer_dst),
            (1, KERNEL_IP, SLUICE_IP)
        );
        // Linux picks the source port from its ephemeral range, as we do.
        assert!(
            PortRange::new(32768, 61000)
                .unwrap()
                .contains(d.outer_src_port),
            "port {}",
            d.outer_src_port
        );
    }
}
