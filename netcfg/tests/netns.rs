//! netcfg against the kernel, in network namespaces this test creates
//! (root needed; skipped otherwise). Each operation is checked with the
//! `ip` and `ethtool` commands as the independent reader.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use netcfg::{Rtnl, ethtool, netns};

/// A namespace removed on drop.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Option<Ns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return None;
        }
        let name = format!("netcfg-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .ok()?;
        assert!(ok.success(), "ip netns add {name}");
        Some(Ns(name))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.0))
    }

    /// Output of a command run in the namespace.
    fn sh(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_veth_pod_is_configured_without_ip_or_ethtool() {
    let (Some(host), Some(pod)) = (Ns::new("host"), Ns::new("pod")) else {
        return;
    };
    let pod_fd = File::open(pod.path()).unwrap();
    let fd = pod_fd.as_raw_fd();
    netns::run_in(&host.path(), move || {
        let mut nl = Rtnl::new()?;
        nl.veth_add("vh0", "vp0", 1400)?;
        nl.link_set_netns("vp0", fd)?;
        nl.link_up("vh0")?;
        // Deleting what is not there is no error.
        assert!(!nl.link_del("nothere")?);
        Ok(())
    })
    .unwrap();
    drop(pod_fd);
    let mac = netns::run_in(&pod.path(), || {
        let mut nl = Rtnl::new()?;
        nl.link_rename("vp0", "eth0")?;
        nl.addr_add("eth0", "10.244.1.5/32".parse().unwrap())?;
        // Twice: idempotent, as a retried CNI ADD needs.
        nl.addr_add("eth0", "10.244.1.5/32".parse().unwrap())?;
        nl.link_up("lo")?;
        nl.link_up("eth0")?;
        nl.route_replace(
            "0.0.0.0/0".parse().unwrap(),
            "eth0",
            Some("10.244.1.1".parse().unwrap()),
            true,
        )?;
        ethtool::set_tx_checksum("eth0", false)?;
        ethtool::set_gro("eth0", true)?;
        assert!(!ethtool::tx_checksum("eth0")?);
        assert!(ethtool::gro("eth0")?);
        let addrs = nl.addrs()?;
        let routes = nl.routes()?;
        assert!(
            addrs.iter().any(|a| a.net.to_string() == "10.244.1.5/32"),
            "{addrs:?}"
        );
        assert!(
            routes.iter().any(
                |r| r.dst.prefix_len() == 0 && r.gateway == Some("10.244.1.1".parse().unwrap())
            ),
            "{routes:?}"
        );
        nl.link_mac("eth0")
    })
    .unwrap();
    // The kernel, read by iproute2 and ethtool, agrees.
    let link = pod.sh(&["ip", "-br", "link", "show", "dev", "eth0"]);
    assert!(link.contains("UP"), "{link}");
    let want = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(link.contains(&want), "{link} has {want}");
    assert!(
        pod.sh(&["ip", "-4", "addr", "show", "dev", "eth0"])
            .contains("10.244.1.5/32")
    );
    let route = pod.sh(&["ip", "route", "show", "default"]);
    assert!(route.contains("via 10.244.1.1 dev eth0 onlink"), "{route}");
    let k = pod.sh(&["ethtool", "-k", "eth0"]);
    assert!(k.contains("tx-checksumming: off"), "{k}");
    assert!(k.contains("generic-receive-offload: on"), "{k}");
    let mtu = host.sh(&["ip", "link", "show", "dev", "vh0"]);
    assert!(mtu.contains("mtu 1400") && mtu.contains("UP"), "{mtu}");
    // Deleting the host end takes the pair.
    netns::run_in(&host.path(), || Rtnl::new()?.link_del("vh0"))
        .map(|existed| assert!(existed))
        .unwrap();
    assert!(!pod.sh(&["ip", "-br", "link"]).contains("eth0"));
}

#[test]
fn neighbour_changes_arrive_as_events() {
    let Some(ns) = Ns::new("neigh") else { return };
    ns.sh(&[
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    ns.sh(&["ip", "link", "set", "d0", "up"]);
    let path = ns.path();
    let (tx, rx) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        netns::run_in(&path, move || {
            let mut w = netcfg::NeighbourWatch::new()?;
            tx.send(()).ok();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                for n in w.wait(Duration::from_millis(100))? {
                    if n.ip == "10.9.0.2".parse::<std::net::Ipv4Addr>().unwrap()
                        && n.mac == Some([2, 0, 0, 0, 0, 9])
                    {
                        return Ok(());
                    }
                }
            }
            Err(std::io::Error::other("no event in 5 s"))
        })
    });
    rx.recv().unwrap();
    ns.sh(&[
        "ip",
        "neigh",
        "replace",
        "10.9.0.2",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "d0",
        "nud",
        "permanent",
    ]);
    watcher.join().unwrap().unwrap();
    // And the dump has it.
    let all = netns::run_in(&ns.path(), || Rtnl::new()?.neighbours()).unwrap();
    assert!(
        all.iter().any(|n| n.mac == Some([2, 0, 0, 0, 0, 9])),
        "{all:?}"
    );
}
