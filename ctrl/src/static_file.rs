//! Static mode: the peers from a YAML file instead of the Kubernetes API,
//! for clusters without Kubernetes and for demos. The file is re-read when
//! it changes. A broken file is reported with the field at fault and the
//! last good view stays published.
//!
//! ```yaml
//! peers:
//!   - name: node-b
//!     ip: 192.168.77.2
//!     vtep_mac: 0a:58:c0:a8:4d:02
//!     pod_cidrs: [10.244.2.0/24]
//!     vni: 1            # optional, default 1
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use encap::MacAddr;
use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::node::NodeRoute;
use crate::view::{Change, ClusterView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Required (`peers: []` for none): an empty file is more likely one
    /// caught half-written than a cluster of one node.
    peers: Option<Vec<RawPeer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    ip: String,
    vtep_mac: String,
    pod_cidrs: Vec<String>,
    #[serde(default)]
    vni: Option<u32>,
}

/// A problem with the file: the field and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    /// `peers[2].vtep_mac`, or `document` for YAML syntax.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn bad<T>(field: String, message: impl Into<String>) -> Result<T, FileError> {
    Err(FileError {
        field,
        message: message.into(),
    })
}

/// Parses a peers file.
pub fn parse(text: &str) -> Result<ClusterView, FileError> {
    let missing = || FileError {
        field: "peers".into(),
        message: "missing (a file caught half-written?); write `peers: []` for none".into(),
    };
    if text.trim().is_empty() {
        return Err(missing());
    }
    let raw: RawFile = serde_yaml::from_str(text).map_err(|e| FileError {
        field: "document".into(),
        message: e.to_string(),
    })?;
    let mut view = ClusterView::default();
    for (i, p) in raw.peers.ok_or_else(missing)?.iter().enumerate() {
        let f = |x: &str| format!("peers[{i}].{x}");
        if p.name.is_empty() {
            return bad(f("name"), "empty");
        }
        if view.peers.contains_key(&p.name) {
            return bad(f("name"), format!("{:?} listed twice", p.name));
        }
        let Ok(ip) = p.ip.parse() else {
            return bad(f("ip"), format!("{:?} is not an IPv4 address", p.ip));
        };
        let vtep_mac: MacAddr = match p.vtep_mac.parse() {
            Ok(m) if !MacAddr::is_multicast(m) => m,
            _ => {
                return bad(
                    f("vtep_mac"),
                    format!("{:?} is not a unicast MAC", p.vtep_mac),
                );
            }
        };
        let mut pod_cidrs = Vec::new();
        for (k, c) in p.pod_cidrs.iter().enumerate() {
            match c.parse::<Ipv4Net>() {
                Ok(n) if n.trunc() == n => pod_cidrs.push(n),
                _ => {
                    return bad(
                        f(&format!("pod_cidrs[{k}]")),
                        format!("{c:?} is not an IPv4 network"),
                    );
                }
            }
        }
        if pod_cidrs.is_empty() {
            return bad(f("pod_cidrs"), "empty");
        }
        let vni = p.vni.unwrap_or(1);
        if vni > 0x00ff_ffff {
            return bad(f("vni"), format!("{vni} is not a 24-bit VNI"));
        }
        view.peers.insert(
            p.name.clone(),
            NodeRoute {
                name: p.name.clone(),
                ip,
                vtep_mac,
                vni,
                pod_cidrs,
            },
        );
    }
    Ok(view)
}

/// The file watcher's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticStatus {
    /// The current file parsed.
    pub in_sync: bool,
    /// When the view was last loaded.
    pub last_load: Option<Instant>,
    /// Why the current file was refused (the last good view stays).
    pub last_error: Option<String>,
}

/// A running file watcher; stops on drop.
#[derive(Debug)]
pub struct StaticHandle {
    status: Arc<Mutex<StaticStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticHandle {
    /// Current status.
    pub fn status(&self) -> StaticStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for StaticHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A file's modification time and length (what the watchers poll).
pub(crate) fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Loads `path` now and again whenever it changes (checked every
/// `interval`), calling `publish` with each new good view and its changes.
pub fn spawn(
    path: PathBuf,
    interval: Duration,
    mut publish: impl FnMut(&ClusterView, &[Change]) + Send + 'static,
) -> std::io::Result<StaticHandle> {
    let status = Arc::new(Mutex::new(StaticStatus::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (st, sp) = (status.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("sluice-static".into())
        .spawn(move || {
            let mut seen: Option<(SystemTime, u64)> = None;
            let mut last_text: Option<String> = None;
            let mut view = ClusterView::default();
            while !sp.load(Ordering::Relaxed) {
                let now = stamp(&path);
                if now != seen || now.is_none() {
                    seen = now;
                    let result = std::fs::read_to_string(&path)
                        .map_err(|e| FileError {
                            field: "file".into(),
                            message: format!("{}: {e}", path.display()),
                        })
                        .and_then(|t| {
                            if last_text.as_deref() == Some(t.as_str()) {
                                return Ok(None);
                            }
                            last_text = Some(t.clone());
                            parse(&t).map(Some)
                        });
                    match result {
                        Ok(Some(new)) => {
                            let changes = view.diff(&new);
                            for c in &changes {
                                tracing::info!("{c}");
                            }
                            if !changes.is_empty() {
                                publish(&new, &changes);
                            }
                            view = new;
                            if let Ok(mut s) = st.lock() {
                                s.in_sync = true;
                                s.last_load = Some(Instant::now());
                                s.last_error = None;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(
                                "peers file {}: {e}; keeping the last good peers",
                                path.display()
                            );
                            if let Ok(mut s) = st.lock() {
                                s.in_sync = false;
                                s.last_error = Some(e.to_string());
                            }
                        }
                    }
                }
                std::thread::sleep(interval);
            }
        })?;
    Ok(StaticHandle {
        status,
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "peers:
  - name: node-b
    ip: 192.168.77.2
    vtep_mac: 0a:58:c0:a8:4d:02
    pod_cidrs: [10.244.2.0/24]
";

    #[test]
    fn errors_name_the_field() {
        assert_eq!(parse(GOOD).unwrap().peers.len(), 1);
        for (from, to, field) in [
            ("ip: 192.168.77.2", "ip: 192.168.77", "peers[0].ip"),
            (
                "0a:58:c0:a8:4d:02",
                "01:00:5e:00:00:01",
                "peers[0].vtep_mac",
            ),
            (
                "[10.244.2.0/24]",
                "[10.244.2.1/24]",
                "peers[0].pod_cidrs[0]",
            ),
            ("name: node-b", "name: \"\"", "peers[0].name"),
        ] {
            let e = parse(&GOOD.replace(from, to)).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        assert_eq!(parse("peers: [").unwrap_err().field, "document");
        // A file caught between truncation and write is not "no peers".
        for text in ["", "\n", "peers:", "peers: ~"] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.field, "peers", "{text:?}: {e}");
        }
        assert!(parse("peers: []").unwrap().peers.is_empty());
    }

    #[test]
    fn reloads_on_change_and_keeps_the_last_good_view() {
        let dir = std::env::temp_dir().join(format!("sluice-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peers.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let views = Arc::new(Mutex::new(Vec::<ClusterView>::new()));
        let v = views.clone();
        let h = spawn(path.clone(), Duration::from_millis(20), move |view, _| {
            v.lock().unwrap().push(view.clone());
        })
        .unwrap();
        let wait = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while views.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "no view {n}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait(1);
        assert!(views.lock().unwrap()[0].peers.contains_key("node-b"));
        // A broken file: reported by field, nothing published.
        std::fs::write(&path, GOOD.replace("192.168.77.2", "bogus")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.status().last_error.is_none() {
            assert!(Instant::now() < deadline, "error not noticed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(h.status().last_error.unwrap().contains("peers[0].ip"));
        assert_eq!(views.lock().unwrap().len(), 1, "last good view kept");
        // Fixed, with a second peer: published.
        let two = format!(
            "{GOOD}  - name: node-c\n    ip: 192.168.77.3\n    vtep_mac: 0a:58:c0:a8:4d:03\n    pod_cidrs: [10.244.3.0/24]\n"
        );
        std::fs::write(&path, two).unwrap();
        wait(2);
        assert_eq!(views.lock().unwrap()[1].peers.len(), 2);
        assert!(h.status().in_sync);
        drop(h);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
