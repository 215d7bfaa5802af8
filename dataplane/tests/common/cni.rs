//! Helpers of the CNI plugin tests (cni.rs, cni_chained.rs).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use dataplane::demo::Topology;
use serde_json::{Value, json};

use super::Run;

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
pub const CNI: &str = env!("CARGO_BIN_EXE_sluice-cni");
/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const CNI_PLUGINS: &str = "/usr/lib/cni";

/// Runs plugin `exe` with `CNI_COMMAND=cmd` and the other `CNI_*` from
/// `env`, `conf` on stdin: what a runtime does.
pub fn plugin(exe: &str, cmd: &str, env: &[(&str, &str)], conf: &Value) -> Run {
    run_plugin(None, exe, cmd, env, conf)
}

/// [`common::cni_plugin`] with the node's usual `PATH` and the reference
/// plugins and ours on `CNI_PATH`.
pub fn run_plugin(
    netns: Option<&str>,
    exe: &str,
    cmd: &str,
    env: &[(&str, &str)],
    conf: &Value,
) -> Run {
    let cni_path = format!("{CNI_PLUGINS}:{}", bin_dir().display());
    super::cni_plugin(
        netns,
        exe,
        cmd,
        env,
        conf,
        "/usr/sbin:/usr/bin:/sbin:/bin",
        &cni_path,
    )
}

pub fn bin_dir() -> PathBuf {
    Path::new(CNI).parent().unwrap().to_path_buf()
}

pub fn env<'a>(id: &'a str, netns: &'a str, ifname: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
    ]
}

/// The pod's view of `dev`: (IPv4 addresses, MTU), or None if absent.
pub fn link(t: &Topology, tag: &str, dev: &str) -> Option<(Vec<String>, u64)> {
    let out = Command::new("ip")
        .args(["-n", &t.ns(tag), "-j", "addr", "show", "dev", dev])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let l = v.get(0)?;
    let addrs = l["addr_info"]
        .as_array()?
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect();
    Some((addrs, l["mtu"].as_u64()?))
}

pub fn default_route_dev(t: &Topology, tag: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", &t.ns(tag), "-j", "route", "show", "default"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0)?["dev"].as_str().map(str::to_string)
}

pub fn conf(version: &str, name: &str, socket: &Path, data_dir: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": name,
        "type": "sluice-cni",
        "socket": socket,
        "ipam": {
            "type": "sluice-cni",
            "subnet": "usePodCidr",
            // Clear of the demo's own pods (.2, .3).
            "rangeStart": "10.244.1.100",
            "rangeEnd": "10.244.1.120",
            "dataDir": data_dir,
        }
    })
}

pub fn reservations(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(dir.join(name))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The address of an ADD result of either layout.
pub fn address(v: &Value) -> String {
    v["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
/// Serves HTTP (`/peer` -> the client's address as the pod sees it, any
/// other request -> `name`) and UDP (any datagram -> `name <bytes
/// received>`) on `ip` in the namespace at `ns` until `stop`.
pub fn serve(
    ns: &Path,
    ip: Ipv4Addr,
    name: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let (tcp, udp) = dataplane::netns::run_in(ns, move || {
        Ok((
            std::net::TcpListener::bind((ip, 8080))?,
            std::net::UdpSocket::bind((ip, 5300))?,
        ))
    })
    .expect("bind in the pod");
    tcp.set_nonblocking(true).unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let (n2, s2) = (name.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while !s2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = udp.recv_from(&mut b) {
                let _ = udp.send_to(format!("{n2} {n}").as_bytes(), from);
            }
        }
    });
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                    let mut req = Vec::new();
                    let mut b = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&b[..n]),
                        }
                    }
                    let body = if req.starts_with(b"GET /peer ") {
                        format!("{}\n", peer.ip())
                    } else {
                        format!("{name}\n")
                    };
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    });
}

/// `curl` from pod `tag`: the body, or None.
pub fn curl(t: &Topology, tag: &str, url: &str) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ns(tag),
            "curl",
            "-s",
            "--max-time",
            "3",
            url,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
