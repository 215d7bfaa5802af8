//! A third node for the demo topology, configured as flanneld configures a
//! kernel node: the interop peer of tests and of the harness's mixed-node
//! TCP rows.

use std::io;

use super::Topology;
use crate::netns;

impl Topology {
    /// Adds kernel node `c` on the wire at 192.168.77.3 with pod `c1`
    /// (10.244.3.2) on a routed veth and flannel.1 (VNI 1, port 8472,
    /// permanent neighbour and FDB entries, an onlink route) peering with
    /// node-a only. Node-a learns it from `peers add` or its API server.
    pub fn add_flannel_node_c(&mut self) -> io::Result<()> {
        self.add_ns("c")?;
        self.add_ns("c1")?;
        let (c, c1) = (self.ns("c"), self.ns("c1"));
        self.ip(
            "wire",
            &[
                "link", "add", "w-c", "type", "veth", "peer", "name", "up-c", "netns", &c,
            ],
        )?;
        self.ip("wire", &["link", "set", "w-c", "master", "br0", "up"])?;
        // As the other nodes' wire ports ([`Topology::kernel_offloads`]).
        let tx = if self.kernel_offloads() { "on" } else { "off" };
        self.exec("wire", &["ethtool", "-K", "w-c", "gro", "on", "tx", tx])?;
        self.ip("c", &["addr", "add", "192.168.77.3/24", "dev", "up-c"])?;
        self.ip("c", &["link", "set", "up-c", "up"])?;
        self.exec("c", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        self.ip(
            "c",
            &[
                "link",
                "add",
                "flannel.1",
                "address",
                "0a:5e:00:00:00:03",
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                "192.168.77.3",
                "dev",
                "up-c",
                "dstport",
                "8472",
                "nolearning",
            ],
        )?;
        self.ip("c", &["link", "set", "flannel.1", "mtu", "1450", "up"])?;
        self.ip("c", &["addr", "add", "10.244.3.0/32", "dev", "flannel.1"])?;
        self.ip(
            "c",
            &[
                "route",
                "add",
                "10.244.1.0/24",
                "via",
                "10.244.1.0",
                "dev",
                "flannel.1",
                "onlink",
            ],
        )?;
        self.ip(
            "c",
            &[
                "neigh",
                "add",
                "10.244.1.0",
                "lladdr",
                "0a:58:c0:a8:4d:01",
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ],
        )?;
        netns::cmd(&[
            "bridge",
            "-n",
            &c,
            "fdb",
            "append",
            "0a:58:c0:a8:4d:01",
            "dev",
            "flannel.1",
            "dst",
            "192.168.77.1",
        ])?;
        self.ip(
            "c",
            &[
                "link", "add", "vc-pod", "type", "veth", "peer", "name", "eth0", "netns", &c1,
            ],
        )?;
        self.ip("c", &["addr", "add", "10.244.3.1/24", "dev", "vc-pod"])?;
        self.ip("c", &["link", "set", "vc-pod", "mtu", "1450", "up"])?;
        self.ip("c1", &["addr", "add", "10.244.3.2/24", "dev", "eth0"])?;
        self.ip("c1", &["link", "set", "eth0", "mtu", "1450", "up"])?;
        self.ip("c1", &["route", "add", "default", "via", "10.244.3.1"])?;
        // A Flannel node as installed: its pod's offloads on, unless node-a
        // receives through AF_XDP (copy mode on veth would hand it
        // unfinished checksums).
        if self.kernel_offloads() {
            Ok(())
        } else {
            self.exec("c1", &["ethtool", "-K", "eth0", "tx", "off"])
        }
    }
}
