//! Static mode for a whole cluster: Kubernetes objects in a YAML file,
//! exactly as `kubectl get
//! services,endpointslices,nodes,namespaces,pods,networkpolicies -A -o yaml`
//! prints them (a `kind: List` with `items`), decoded with the
//! k8s-openapi types. The file is re-read when it changes; each load goes
//! through the same code as the API watchers' relists ([`build_view`] for
//! Nodes, [`ServiceCache`] for Services and EndpointSlices,
//! [`crate::netpol::cluster`] for Namespaces, Pods and NetworkPolicies).
//! A broken file is reported naming the item and field, and the last good
//! state stays.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
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
    /// Namespaces (their labels, for policy peers).
    pub namespaces: Vec<Namespace>,
    /// Pods (labels, addresses, named ports).
    pub pods: Vec<Pod>,
    /// NetworkPolicies.
    pub policies: Vec<NetworkPolicy>,
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
/// Nodes, Services, EndpointSlices, Namespaces, Pods and NetworkPolicies;
/// other kinds are refused, so a typo does not silently drop an object.
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
            "Namespace" => out
                .namespaces
                .push(serde_yaml::from_value(item).map_err(at)?),
            "Pod" => out.pods.push(serde_yaml::from_value(item).map_err(at)?),
            "NetworkPolicy" => out.policies.push(serde_yaml::from_value(item).map_err(at)?),
            other => {
                return Err(err(
                    format!("items[{i}].kind"),
                    format!(
                        "{other:?}: only Node, Service, EndpointSlice, Namespace, Pod and \
                         NetworkPolicy are read"
                    ),
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

/// Gets each new peer view (and what changed).
pub type PublishView = Box<dyn FnMut(&ClusterView, &[Change]) + Send>;
/// Gets each change to the service table (the first load: the whole table).
pub type PublishServices = Box<dyn FnMut(&Update) + Send>;
/// Gets the policy model at each load that changed it (the first load
/// always), with the problems its objects had.
pub type PublishPolicy = Box<dyn FnMut(&policy::Cluster, &[String]) + Send>;

/// What a cluster file's watcher publishes to.
#[allow(missing_debug_implementations)]
pub struct Publish {
    /// Peer views.
    pub view: PublishView,
    /// Service table changes.
    pub services: PublishServices,
    /// Policy models.
    pub policy: PublishPolicy,
}

/// Watches `path` every `interval`, publishing to `to`.
pub fn spawn(
    path: PathBuf,
    node: String,
    policy: AnnotationPolicy,
    interval: Duration,
    mut to: Publish,
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
            let mut last_policy: Option<::policy::Cluster> = None;
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
                                (to.view)(&new, &changes);
                            }
                            loaded = true;
                            view = new;
                            let u = cache.replace(objs.services, objs.slices);
                            (to.services)(&u);
                            let (model, policy_problems) = crate::netpol::cluster(
                                &objs.namespaces,
                                &objs.pods,
                                &objs.policies,
                            );
                            if last_policy.as_ref() != Some(&model) {
                                (to.policy)(&model, &policy_problems);
                                last_policy = Some(model);
                            }
                            if let Ok(mut s) = st.lock() {
                                s.in_sync = true;
                                s.last_load = Some(Instant::now());
                                s.last_error = None;
                                s.services = cache.services();
                                s.problems = problems
                                    .iter()
                                    .map(ToString::to_string)
                                    .chain(cache.problems())
                                    .chain(policy_problems)
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
