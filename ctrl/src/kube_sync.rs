//! The control thread: watches Node objects through the real `kube` client
//! and publishes a [`ClusterView`] on every change.
//!
//! Failure behaviour, as flannel #1272, k3s #4847 and felix #1537 asked
//! for:
//! - The last good view stays published while the API server is down,
//!   slow, answers 5xx/403 or cuts streams. The watcher retries with
//!   jittered exponential backoff (`kube::runtime::WatchStreamExt::default_backoff`).
//! - A 410 Gone makes the watcher relist. The relisted set *replaces* the
//!   store at `InitDone`, and the diff against the previous view applies
//!   deletes missed while disconnected (flannel #2554).
//! - A stream that goes silent is abandoned after the server-side watch
//!   timeout plus 5 s (kube's watcher idle timeout) and re-established.
//! - A node without a pod CIDR, or with garbage annotations, is left out
//!   with a warning naming it; the rest of the view is built.
//! - Changed VTEP MACs and IPs replace the old ones (flannel #1795).
//!
//! [`Status`] says whether the view is in sync and how old it is, for
//! `sluice status` and `/readyz`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use encap::MacAddr;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::node::{AnnotationPolicy, NodeProblem, node_route, own_annotations};
use crate::view::{Change, ClusterView};
use crate::watch_thread::{WatchThread, set as set_status};

/// What this node announces about itself on its own Node object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnNode {
    /// Its VTEP address.
    pub ip: Ipv4Addr,
    /// Its VTEP MAC.
    pub vtep_mac: MacAddr,
    /// The VNI.
    pub vni: u32,
    /// Also write Flannel's annotations.
    pub flannel: bool,
}

/// How to reach the API server and what to watch.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// A kubeconfig file; `None`: in-cluster configuration (service account),
    /// else `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: excluded from the peers; its annotations are
    /// patched.
    pub node_name: String,
    /// Which annotations to read.
    pub policy: AnnotationPolicy,
    /// Annotations to publish on this node (`None`: publish nothing).
    pub own: Option<OwnNode>,
    /// Server-side watch timeout; a stream silent for this plus 5 s is
    /// restarted.
    pub watch_timeout_secs: u32,
}

/// The control plane's health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// A complete list has been received and no error since.
    pub in_sync: bool,
    /// When the view last changed or was confirmed by a (re)list.
    pub last_sync: Option<Instant>,
    /// The last error (API server unreachable, 5xx, ...).
    pub last_error: Option<String>,
    /// Errors seen (each followed by a backoff and a retry).
    pub errors: u64,
    /// Peers in the current view.
    pub peers: usize,
    /// Nodes left out, with why.
    pub problems: Vec<String>,
    /// Whether this node's annotations have been written.
    pub annotated: bool,
}

/// A running control thread; stops on drop or `stop`.
pub type SyncHandle = WatchThread<Status>;

/// The view from a set of nodes: every node but `me` that yields a route.
pub fn build_view(
    nodes: &BTreeMap<String, Node>,
    me: &str,
    policy: AnnotationPolicy,
) -> (ClusterView, Vec<NodeProblem>) {
    let mut view = ClusterView::default();
    let mut problems = Vec::new();
    for (name, n) in nodes {
        if name == me {
            continue;
        }
        match node_route(n, policy) {
            Ok(r) => {
                view.peers.insert(name.clone(), r);
            }
            Err(p) => problems.push(p),
        }
    }
    (view, problems)
}

pub(crate) async fn client(cfg: &SyncConfig) -> Result<Client, String> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    // kube retries 429/503/504 inside the client, up to 15 times with
    // growing delays, and no error surfaces meanwhile. The watcher's own
    // backoff retries here instead, so status can say the API server is
    // failing.
    let mut config = config;
    config.default_retry = false;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// This node's pod CIDR from its Node object (`spec.podCIDRs`, else
/// `spec.podCIDR`), waiting up to `wait` for the node controller to
/// allocate one. For a daemon whose config leaves `node.pod_cidr` out.
pub fn fetch_pod_cidr(cfg: &SyncConfig, wait: Duration) -> Result<ipnet::Ipv4Net, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let deadline = Instant::now() + wait;
        let mut last = String::from("not tried");
        while Instant::now() < deadline {
            match client(cfg).await {
                Ok(c) => {
                    let api: Api<Node> = Api::all(c);
                    match api.get(&cfg.node_name).await {
                        Ok(n) => {
                            let spec = n.spec.unwrap_or_default();
                            let cidrs = spec
                                .pod_cidrs
                                .unwrap_or_default()
                                .into_iter()
                                .chain(spec.pod_cidr);
                            let v4 = cidrs
                                .filter_map(|c| c.parse::<ipnet::Ipv4Net>().ok())
                                .next();
                            match v4 {
                                Some(net) => return Ok(net.trunc()),
                                None => {
                                    last =
                                        format!("node {} has no IPv4 pod CIDR yet", cfg.node_name)
                                }
                            }
                        }
                        Err(e) => last = format!("node {}: {e}", cfg.node_name),
                    }
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last)
    })
}

/// Starts the control thread. `publish` gets every new view and the
/// changes from the previous one; it runs on the control thread.
pub fn spawn(
    cfg: SyncConfig,
    publish: impl FnMut(&ClusterView, &[Change]) + Send + 'static,
) -> std::io::Result<SyncHandle> {
    WatchThread::spawn(
        "sluice-ctrl",
        |x: &mut Status, e| x.last_error = Some(e),
        move |s| run(cfg, publish, s),
    )
}

async fn run(
    cfg: SyncConfig,
    mut publish: impl FnMut(&ClusterView, &[Change]),
    status: Arc<Mutex<Status>>,
) {
    // The client itself can fail (bad kubeconfig, no in-cluster token):
    // retry with backoff rather than exit (flannel #1272).
    let mut delay = Duration::from_millis(200);
    let client = loop {
        match client(&cfg).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!("kubernetes client: {e}; retrying in {delay:?}");
                set_status(&status, |s| {
                    s.last_error = Some(e);
                    s.errors += 1;
                });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let nodes: Api<Node> = Api::all(client);
    if let Some(own) = cfg.own.clone() {
        let api = nodes.clone();
        let name = cfg.node_name.clone();
        let st = status.clone();
        tokio::spawn(async move { annotate(api, name, own, st).await });
    }
    // After an error on a quiet cluster no event says the watch is back:
    // probe with a one-item list while out of sync.
    {
        let api = nodes.clone();
        let st = status.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let out = st
                    .lock()
                    .map(|s| !s.in_sync && s.errors > 0)
                    .unwrap_or(false);
                if out
                    && api
                        .list(&kube::api::ListParams::default().limit(1))
                        .await
                        .is_ok()
                {
                    set_status(&st, |s| s.in_sync = true);
                }
            }
        });
    }
    let wcfg = watcher::Config::default().timeout(cfg.watch_timeout_secs);
    let mut stream = watcher::watcher(nodes, wcfg).default_backoff().boxed();
    let mut init: Option<BTreeMap<String, Node>> = None;
    let mut view = ClusterView::default();
    let mut problems: BTreeMap<String, NodeProblem> = BTreeMap::new();
    let mut emit =
        |view: &ClusterView, problems: &BTreeMap<String, NodeProblem>, changes: &[Change]| {
            for c in changes {
                tracing::info!("{c}");
            }
            if !changes.is_empty() {
                publish(view, changes);
            }
            set_status(&status, |s| {
                s.peers = view.peers.len();
                s.problems = problems.values().map(ToString::to_string).collect();
                s.last_sync = Some(Instant::now());
            });
        };
    while let Some(ev) = stream.next().await {
        match ev {
            Err(e) => {
                tracing::warn!("watching nodes: {e}; keeping the last view, retrying");
                set_status(&status, |s| {
                    s.in_sync = false;
                    s.last_error = Some(e.to_string());
                    s.errors += 1;
                });
            }
            Ok(Event::Init) => init = Some(BTreeMap::new()),
            Ok(Event::InitApply(n)) => {
                if let (Some(m), Some(name)) = (init.as_mut(), n.metadata.name.clone()) {
                    m.insert(name, n);
                }
            }
            Ok(Event::InitDone) => {
                // The relisted set replaces everything: nodes deleted while
                // we were away disappear here.
                let store = init.take().unwrap_or_default();
                let (new, found) = build_view(&store, &cfg.node_name, cfg.policy);
                for p in &found {
                    tracing::warn!("{p}");
                }
                problems = found
                    .into_iter()
                    .map(|p| (p.node().to_string(), p))
                    .collect();
                let changes = view.diff(&new);
                view = new;
                emit(&view, &problems, &changes);
                set_status(&status, |s| s.in_sync = true);
            }
            Ok(Event::Apply(n)) => {
                // One node: only it is re-read (5,000 others are not).
                if let Some(name) = n.metadata.name.clone() {
                    let changes = update_one(&mut view, &mut problems, &cfg, &name, Some(&n));
                    emit(&view, &problems, &changes);
                }
                // Events flow again after an error: the watch resumed from
                // its resourceVersion, nothing was missed.
                set_status(&status, |s| s.in_sync = true);
            }
            Ok(Event::Delete(n)) => {
                if let Some(name) = n.metadata.name.clone() {
                    let changes = update_one(&mut view, &mut problems, &cfg, &name, None);
                    emit(&view, &problems, &changes);
                }
                set_status(&status, |s| s.in_sync = true);
            }
        }
    }
}

/// Applies one node's new state (`None`: deleted) to the view; returns
/// what changed.
fn update_one(
    view: &mut ClusterView,
    problems: &mut BTreeMap<String, NodeProblem>,
    cfg: &SyncConfig,
    name: &str,
    node: Option<&Node>,
) -> Vec<Change> {
    let old = view.peers.remove(name);
    problems.remove(name);
    let new = match node {
        Some(n) if name != cfg.node_name => match node_route(n, cfg.policy) {
            Ok(r) => Some(r),
            Err(p) => {
                tracing::warn!("{p}");
                problems.insert(name.to_string(), p);
                None
            }
        },
        _ => None,
    };
    let change = match (old, &new) {
        (None, Some(n)) => Some(Change::Added(n.clone())),
        (Some(_), None) => Some(Change::Removed(name.to_string())),
        (Some(o), Some(n)) if &o != n => Some(Change::Changed {
            old: o,
            new: n.clone(),
        }),
        _ => None,
    };
    if let Some(n) = new {
        view.peers.insert(name.to_string(), n);
    }
    change.into_iter().collect()
}

/// Writes this node's annotations (a merge patch of
/// `metadata.annotations` only: the fields Sluice owns), retrying until it
/// succeeds.
async fn annotate(api: Api<Node>, name: String, own: OwnNode, status: Arc<Mutex<Status>>) {
    let ann = own_annotations(own.ip, own.vtep_mac, own.vni, own.flannel);
    let patch = serde_json::json!({ "metadata": { "annotations": ann } });
    let mut delay = Duration::from_millis(200);
    loop {
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                set_status(&status, |s| s.annotated = true);
                return;
            }
            Err(e) => {
                tracing::warn!("annotating node {name}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
