//! Helpers shared by the daemon tests.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::io::Write;
use std::process::{Command, Stdio};

use dataplane::demo::Topology;

use crate::support;

/// What a CNI plugin run printed and its exit status.
pub struct Run {
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub out: String,
}

/// Runs CNI plugin `exe` as a runtime does: `CNI_COMMAND=cmd`, the other
/// `CNI_*` from `env`, `conf` on stdin, nothing else in the environment
/// but `PATH=path` and `CNI_PATH=cni_path`; inside namespace `netns` when
/// given (as a runtime runs plugins on the node; `ip netns exec` is found
/// in the test's own PATH).
pub fn cni_plugin(
    netns: Option<&str>,
    exe: &str,
    cmd: &str,
    env: &[(&str, &str)],
    conf: &serde_json::Value,
    path: &str,
    cni_path: &str,
) -> Run {
    let mut c = match netns {
        Some(ns) => {
            let ip = std::env::var_os("PATH")
                .and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("ip"))
                        .find(|f| f.exists())
                })
                .expect("ip in PATH");
            let mut c = Command::new(ip);
            c.args(["netns", "exec", ns, exe]);
            c
        }
        None => Command::new(exe),
    };
    c.env_clear()
        .env("PATH", path)
        .env("CNI_COMMAND", cmd)
        .env("CNI_PATH", cni_path);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
    }
}

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
