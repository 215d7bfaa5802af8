//! The Services thread: watches Services and EndpointSlices through the
//! real `kube` client and publishes each change to the service table, with
//! the Node watcher's discipline ([`crate::kube_sync`]): the last good table
//! stays while the API server fails; a 410 Gone relists and the relisted
//! set replaces the cache (deletes missed while away apply); a silent
//! stream is restarted; a bad object is left out with a problem naming it.
//!
//! An Apply or Delete recomputes one service ([`ServiceCache`]), so an
//! endpoint change costs that service, not the table.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::kube_sync::{SyncConfig, client};
use crate::services::{ObjKey, ServiceCache, Update};
use crate::watch_thread::{WatchThread, set};

/// The Services thread's health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSyncStatus {
    /// Both kinds have been listed and no error since.
    pub in_sync: bool,
    /// When the table last changed or was confirmed by a relist.
    pub last_sync: Option<Instant>,
    /// The last error.
    pub last_error: Option<String>,
    /// Errors seen.
    pub errors: u64,
    /// Services known.
    pub services: usize,
    /// Objects left out, with why.
    pub problems: Vec<String>,
}

/// A running Services thread; stops on drop.
pub type ServiceSyncHandle = WatchThread<ServiceSyncStatus>;

/// Starts the thread. `publish` gets every change to the service table
/// (the first is the whole table), on this thread.
pub fn spawn(
    cfg: SyncConfig,
    publish: impl FnMut(&Update) + Send + 'static,
) -> std::io::Result<ServiceSyncHandle> {
    WatchThread::spawn(
        "sluice-services",
        |x: &mut ServiceSyncStatus, e| x.last_error = Some(e),
        move |s| run(cfg, publish, s),
    )
}

/// One event of either watch (boxed: a Service is large, and this is the
/// control thread).
enum Ev {
    Svc(Box<Result<Event<Service>, watcher::Error>>),
    Slice(Box<Result<Event<EndpointSlice>, watcher::Error>>),
}

/// An unboxed event (short-lived, on the stack of the control thread).
#[allow(clippy::large_enum_variant, reason = "one at a time, never stored")]
enum Kind {
    Svc(Result<Event<Service>, watcher::Error>),
    Slice(Result<Event<EndpointSlice>, watcher::Error>),
}

fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

async fn run(
    cfg: SyncConfig,
    mut publish: impl FnMut(&Update),
    status: Arc<Mutex<ServiceSyncStatus>>,
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
    let svcs = watcher::watcher(Api::<Service>::all(client.clone()), wcfg.clone())
        .default_backoff()
        .map(|e| Ev::Svc(Box::new(e)));
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client), wcfg)
        .default_backoff()
        .map(|e| Ev::Slice(Box::new(e)));
    let mut stream = futures::stream::select(svcs, slices).boxed();
    let mut cache = ServiceCache::new(&cfg.node_name);
    let (mut init_svc, mut init_slices): (Option<Vec<Service>>, Option<Vec<EndpointSlice>>) =
        (None, None);
    let mut listed = (false, false);
    let mut published = false;
    while let Some(ev) = stream.next().await {
        // Service events as `Kind::Svc`, slice events as `Kind::Slice`.
        let ev = match ev {
            Ev::Svc(b) => Kind::Svc(*b),
            Ev::Slice(b) => Kind::Slice(*b),
        };
        let update = match ev {
            Kind::Svc(Err(e)) | Kind::Slice(Err(e)) => {
                tracing::warn!("watching services: {e}; keeping the last table, retrying");
                set(&status, |s| {
                    s.in_sync = false;
                    s.last_error = Some(e.to_string());
                    s.errors += 1;
                });
                continue;
            }
            Kind::Svc(Ok(Event::Init)) => {
                init_svc = Some(Vec::new());
                continue;
            }
            Kind::Svc(Ok(Event::InitApply(o))) => {
                if let Some(v) = init_svc.as_mut() {
                    v.push(o);
                }
                continue;
            }
            Kind::Svc(Ok(Event::InitDone)) => {
                listed.0 = true;
                cache.replace_services(init_svc.take().unwrap_or_default())
            }
            Kind::Svc(Ok(Event::Apply(o))) => cache.apply_service(o),
            Kind::Svc(Ok(Event::Delete(o))) => cache.delete_service(&key(&o.metadata)),
            Kind::Slice(Ok(Event::Init)) => {
                init_slices = Some(Vec::new());
                continue;
            }
            Kind::Slice(Ok(Event::InitApply(o))) => {
                if let Some(v) = init_slices.as_mut() {
                    v.push(o);
                }
                continue;
            }
            Kind::Slice(Ok(Event::InitDone)) => {
                listed.1 = true;
                cache.replace_slices(init_slices.take().unwrap_or_default())
            }
            Kind::Slice(Ok(Event::Apply(o))) => cache.apply_slice(o),
            Kind::Slice(Ok(Event::Delete(o))) => cache.delete_slice(&key(&o.metadata)),
        };
        // Until both kinds are listed, a service would be published with
        // no endpoints (a reject) for a moment: wait for both, then publish
        // the whole table once, then each change.
        let ready = listed.0 && listed.1;
        if ready && !published {
            publish(&Update {
                upserts: cache.all_ports(),
                removes: Vec::new(),
            });
            published = true;
        } else if published && !update.is_empty() {
            publish(&update);
        }
        set(&status, |s| {
            if ready {
                s.in_sync = true;
                s.last_sync = Some(Instant::now());
            }
            s.services = cache.services();
            s.problems = cache.problems();
        });
    }
}
