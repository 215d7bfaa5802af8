//! Static mode for a whole cluster: Kubernetes objects in a YAML file,
//! exactly as `kubectl get services,endpointslices,nodes -A -o yaml`
//! prints them (a `kind: List` with `items`), decoded with the
//! k8s-openapi types. The file is re-read when it changes; each load goes
//! through the same code as the API watchers' relists ([`build_view`] for
//! Nodes, [`ServiceCache`] for Services and EndpointSlices). A broken file
//! is reported naming the item and field, and the last good state stays.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

use crate::kube_sync::build_view;
use crate::node::AnnotationPolicy;
use crate::services::{ServiceCache, Update};
use crate::static_file::{FileError, stamp};
use crate::view::{Change, ClusterView};

/// The objects a cluster file holds.
#[derive(Clone, Debug, Default)]
pub struct ClusterObjects {
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub slices: Vec<EndpointSlice>,
}

#[derive(Deserialize)]
struct RawList {
    kind: Option<String>,
    items: Option<Vec<serde_yaml::Value>>,
}

fn err(field: String, message: impl Into<String>) -> FileError {
    FileError {
        field,
        message: message.into(),
    }
}

/// Parses a cluster file: a `kind: List` (or any `*List`) whose items are
/// Nodes, Services and EndpointSlices; other kinds are refused, so a typo
/// does not silently drop an object.
pub fn parse(text: &str) -> Result<ClusterObjects, FileError> {
    if text.trim().is_empty() {
        return Err(err(
            "items".into(),
            "empty file (caught half-written?); write `kind: List` with `items: []` for none",
        ));
    }
    let raw: RawList =
        serde_yaml::from_str(text).map_err(|e| err("document".into(), e.to_string()))?;
    if !raw.kind.as_deref().is_some_and(|k| k.ends_with("List")) {
        return Err(err(
            "kind".into(),
            format!("{:?}: expected a List (kubectl get ... -o yaml)", raw.kind),
        ));
    }
    let items = raw
        .items
        .ok_or_else(|| err("items".into(), "missing; write `items: []` for none"))?;
    let mut out = ClusterObjects::default();
    for (i, item) in items.into_iter().enumerate() {
        let kind = item
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let name = item
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_string();
        let at = |e: serde_yaml::Error| {
            err(
                format!("items[{i}] ({kind} {name})"),
                format!("{e}; fix the field it names"),
            )
        };
        match kind.as_str() {
            "Node" => {
                let n: Node = serde_yaml::from_value(item).map_err(at)?;
                out.nodes
                    .insert(n.metadata.name.clone().unwrap_or_default(), n);
            }
            "Service" => out.services.push(serde_yaml::from_value(item).map_err(at)?),
            "EndpointSlice" => out.slices.push(serde_yaml::from_value(item).map_err(at)?),
            other => {
                return Err(err(
                    format!("items[{i}].kind"),
                    format!("{other:?}: only Node, Service and EndpointSlice are read"),
                ));
            }
        }
    }
    Ok(out)
}

/// The cluster file watcher's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFileStatus {
    /// The last read parsed.
    pub in_sync: bool,
    /// When a good file was last applied.
    pub last_load: Option<Instant>,
    /// What was wrong with the last bad read.
    pub last_error: Option<String>,
    /// Services in the last good file.
    pub services: usize,
    /// Objects left out (named, with the field).
    pub problems: Vec<String>,
}

/// A running watcher; stops on drop.
#[derive(Debug)]
pub struct ClusterFileHandle {
    status: Arc<Mutex<ClusterFileStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ClusterFileHandle {
    /// Current status.
    pub fn status(&self) -> ClusterFileStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for ClusterFileHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches `path` every `interval`. `publish_view` gets each new peer view
/// (and what changed), `publish_services` each change to the service
/// table (the first load is the whole table).
pub fn spawn(
    path: PathBuf,
    node: String,
    policy: AnnotationPolicy,
    interval: Duration,
    mut publish_view: impl FnMut(&ClusterView, &[Change]) + Send + 'static,
    mut publish_services: impl FnMut(&Update) + Send + 'static,
) -> std::io::Result<ClusterFileHandle> {
    let status = Arc::new(Mutex::new(ClusterFileStatus::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (st, sp) = (status.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("sluice-cluster-file".into())
        .spawn(move || {
            let mut seen = None;
            let mut last_text: Option<String> = None;
            let mut view = ClusterView::default();
            let mut cache = ServiceCache::new(&node);
            let mut loaded = false;
            while !sp.load(Ordering::Relaxed) {
                let now = stamp(&path);
                if now != seen || now.is_none() {
                    seen = now;
                    let read = std::fs::read_to_string(&path)
                        .map_err(|e| err("file".into(), format!("{}: {e}", path.display())));
                    let parsed = read.and_then(|t| {
                        if last_text.as_deref() == Some(t.as_str()) {
                            return Ok(None);
                        }
                        let p = parse(&t)?;
                        last_text = Some(t);
                        Ok(Some(p))
                    });
                    match parsed {
                        Ok(Some(objs)) => {
                            let (new, problems) = build_view(&objs.nodes, &node, policy);
                            let changes = view.diff(&new);
                            for c in &changes {
                                tracing::info!("{c}");
                            }
                            if !changes.is_empty() || !loaded {
                                publish_view(&new, &changes);
                            }
                            loaded = true;
                            view = new;
                            let u = cache.replace(objs.services, objs.slices);
                            publish_services(&u);
                            if let Ok(mut s) = st.lock() {
                                s.in_sync = true;
                                s.last_load = Some(Instant::now());
                                s.last_error = None;
                                s.services = cache.services();
                                s.problems = problems
                                    .iter()
                                    .map(ToString::to_string)
                                    .chain(cache.problems())
                                    .collect();
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(
                                "cluster file {}: {e}; keeping the last good state",
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
    Ok(ClusterFileHandle {
        status,
        stop,
        thread: Some(thread),
    })
}
