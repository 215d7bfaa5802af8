//! Helpers shared by the daemon tests.

#![allow(dead_code, reason = "each test binary uses a subset")]

use dataplane::demo::Topology;

use crate::support;

/// A kernel node configured as flanneld would, on the wire at .3 with a
/// pod 10.244.3.2, peering with node-a only.
pub fn flannel_node_c(t: &mut Topology) {
    t.add_ns("c").unwrap();
    t.add_ns("c1").unwrap();
    let (c, c1) = (t.ns("c"), t.ns("c1"));
    t.ip(
        "wire",
        &[
            "link", "add", "w-c", "type", "veth", "peer", "name", "up-c", "netns", &c,
        ],
    )
    .unwrap();
    t.ip("wire", &["link", "set", "w-c", "master", "br0", "up"])
        .unwrap();
    t.exec("wire", &["ethtool", "-K", "w-c", "gro", "on", "tx", "off"])
        .unwrap();
    t.ip("c", &["addr", "add", "192.168.77.3/24", "dev", "up-c"])
        .unwrap();
    t.ip("c", &["link", "set", "up-c", "up"]).unwrap();
    t.exec("c", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    t.ip(
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
    )
    .unwrap();
    t.ip("c", &["link", "set", "flannel.1", "mtu", "1450", "up"])
        .unwrap();
    t.ip("c", &["addr", "add", "10.244.3.0/32", "dev", "flannel.1"])
        .unwrap();
    t.ip(
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
    )
    .unwrap();
    t.ip(
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
    )
    .unwrap();
    support::run(&[
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
    ]);
    t.ip(
        "c",
        &[
            "link", "add", "vc-pod", "type", "veth", "peer", "name", "eth0", "netns", &c1,
        ],
    )
    .unwrap();
    t.ip("c", &["addr", "add", "10.244.3.1/24", "dev", "vc-pod"])
        .unwrap();
    t.ip("c", &["link", "set", "vc-pod", "mtu", "1450", "up"])
        .unwrap();
    t.ip("c1", &["addr", "add", "10.244.3.2/24", "dev", "eth0"])
        .unwrap();
    t.ip("c1", &["link", "set", "eth0", "mtu", "1450", "up"])
        .unwrap();
    t.ip("c1", &["route", "add", "default", "via", "10.244.3.1"])
        .unwrap();
    t.exec("c1", &["ethtool", "-K", "eth0", "tx", "off"])
        .unwrap();
}

pub fn pings(t: &Topology, from: &str, to: &str) -> bool {
    t.exec(from, &["ping", "-c", "2", "-i", "0.2", "-W", "1", to])
        .is_ok()
}
