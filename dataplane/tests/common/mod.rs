//! Helpers shared by the daemon tests.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::io::Write;
use std::process::{Command, Stdio};

use dataplane::demo::Topology;

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
    t.add_flannel_node_c().unwrap();
}

pub fn pings(t: &Topology, from: &str, to: &str) -> bool {
    t.exec(from, &["ping", "-c", "2", "-i", "0.2", "-W", "1", to])
        .is_ok()
}
pub mod cni;

/// Counter `key` from the daemon's `stats` at `sock` (panics, with the
/// listing, if it is not there).
pub fn stat(sock: &std::path::Path, key: &str) -> u64 {
    let out = dataplane::daemon::request(sock, "stats").unwrap();
    out.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == key).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no {key:?} in stats:\n{out}"))
}
