//! The policy thread: watches NetworkPolicies, Namespaces and Pods through
//! the real `kube` client and publishes the policy model
//! ([`crate::netpol::cluster`]) after each change, with the Node and
//! Services watchers' discipline ([`crate::kube_sync`]): the last model
//! stays published while the API server fails; a 410 Gone relists and the
//! relisted set replaces the cache (deletes missed while away apply); a
//! silent stream is restarted; a bad object is reported, naming it.
//!
//! Nothing is published until all three kinds are listed: a model with
//! the policies but not yet the pods would isolate pods against peers it
//! does not know. Changes that arrive together are published together
//! (the stream is drained before each publication).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::kube_sync::{SyncConfig, client};
use crate::watch_thread::{WatchThread, set};

/// The policy thread's health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySyncStatus {
    /// All three kinds listed and no error since.
    pub in_sync: bool,
    /// When the model was last published.
    pub last_sync: Option<Instant>,
    /// The last error.
    pub last_error: Option<String>,
    /// Errors seen.
    pub errors: u64,
    /// (NetworkPolicies, Namespaces, Pods) known.
    pub objects: (usize, usize, usize),
}

/// A running policy thread; stops on drop.
pub type PolicySyncHandle = WatchThread<PolicySyncStatus>;

/// Starts the thread. `publish` gets the whole model (and the problems
/// its objects have) once all kinds are listed, then after each change.
pub fn spawn(
    cfg: SyncConfig,
    publish: impl FnMut(&policy::Cluster, &[String]) + Send + 'static,
) -> std::io::Result<PolicySyncHandle> {
    WatchThread::spawn(
        "sluice-policy",
        |x: &mut PolicySyncStatus, e| x.last_error = Some(e),
        move |s| run(cfg, publish, s),
    )
}

/// One event of any of the three watches (boxed: this is the control
/// thread, and the objects are large).
enum Ev {
    Np(Box<Result<Event<NetworkPolicy>, watcher::Error>>),
    Ns(Box<Result<Event<Namespace>, watcher::Error>>),
    Pod(Box<Result<Event<Pod>, watcher::Error>>),
}

type ObjKey = (String, String);

fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// One kind's cache: the objects by key, the list being received, and
/// whether a list completed.
struct Cache<K> {
    objects: BTreeMap<ObjKey, K>,
    init: Option<BTreeMap<ObjKey, K>>,
    listed: bool,
}

impl<K: kube::Resource> Cache<K> {
    fn new() -> Self {
        Cache {
            objects: BTreeMap::new(),
            init: None,
            listed: false,
        }
    }

    /// Applies an event; whether the cache changed.
    fn apply(&mut self, ev: Event<K>) -> bool {
        match ev {
            Event::Init => {
                self.init = Some(BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                if let Some(m) = self.init.as_mut() {
                    m.insert(key(o.meta()), o);
                }
                false
            }
            Event::InitDone => {
                self.objects = self.init.take().unwrap_or_default();
                self.listed = true;
                true
            }
            Event::Apply(o) => {
                self.objects.insert(key(o.meta()), o);
                true
            }
            Event::Delete(o) => self.objects.remove(&key(o.meta())).is_some(),
        }
    }

    fn values(&self) -> Vec<K>
    where
        K: Clone,
    {
        self.objects.values().cloned().collect()
    }
}

async fn run(
    cfg: SyncConfig,
    mut publish: impl FnMut(&policy::Cluster, &[String]),
    status: Arc<Mutex<PolicySyncStatus>>,
) {
    let mut delay = std::time::Duration::from_millis(200);
    let client = loop {
        match client(&cfg).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!("kubernetes client: {e}; retrying in {delay:?}");
                set(&status, |s| {
                    s.last_error = Some(e);
                    s.errors += 1;
                });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        }
    };
    let wcfg = watcher::Config::default().timeout(cfg.watch_timeout_secs);
    let nps = watcher::watcher(Api::<NetworkPolicy>::all(client.clone()), wcfg.clone())
        .default_backoff()
        .map(|e| Ev::Np(Box::new(e)));
    let nss = watcher::watcher(Api::<Namespace>::all(client.clone()), wcfg.clone())
        .default_backoff()
        .map(|e| Ev::Ns(Box::new(e)));
    let pods = watcher::watcher(Api::<Pod>::all(client), wcfg)
        .default_backoff()
        .map(|e| Ev::Pod(Box::new(e)));
    let mut stream = futures::stream::select(futures::stream::select(nps, nss), pods).boxed();
    let (mut np, mut ns, mut pod) = (
        Cache::<NetworkPolicy>::new(),
        Cache::<Namespace>::new(),
        Cache::<Pod>::new(),
    );
    let mut dirty = false;
    // The latest event was not an error.
    let mut healthy = false;
    while let Some(first) = stream.next().await {
        // This event and every one already waiting: published together.
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            let r = match ev {
                Ev::Np(b) => (*b).map(|e| np.apply(e)),
                Ev::Ns(b) => (*b).map(|e| ns.apply(e)),
                Ev::Pod(b) => (*b).map(|e| pod.apply(e)),
            };
            healthy = r.is_ok();
            match r {
                Ok(changed) => dirty |= changed,
                Err(e) => {
                    tracing::warn!(
                        "watching network policy objects: {e}; keeping the last model, retrying"
                    );
                    set(&status, |s| {
                        s.in_sync = false;
                        s.last_error = Some(e.to_string());
                        s.errors += 1;
                    });
                }
            }
            next = stream.next().now_or_never().flatten();
        }
        let ready = np.listed && ns.listed && pod.listed;
        if ready && dirty {
            let (model, problems) =
                crate::netpol::cluster(&ns.values(), &pod.values(), &np.values());
            publish(&model, &problems);
            dirty = false;
            set(&status, |s| s.last_sync = Some(Instant::now()));
        }
        if ready && healthy {
            set(&status, |s| {
                s.in_sync = true;
                s.objects = (np.objects.len(), ns.objects.len(), pod.objects.len());
            });
        }
    }
}
