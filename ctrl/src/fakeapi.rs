//! A fake Kubernetes API server for Node, Service and EndpointSlice
//! objects, over real HTTP on 127.0.0.1, close enough to the API-concepts
//! document that the real `kube` client cannot tell: list (with
//! `resourceVersion`, `limit` and `continue`), watch (chunked
//! newline-delimited ADDED / MODIFIED / DELETED / BOOKMARK events from a
//! resourceVersion, `timeoutSeconds`), and for Nodes get and merge-patch of
//! annotations. All kinds share one resourceVersion sequence, as etcd's. Knobs break it the ways real API servers
//! break: compacting history (watches from an old resourceVersion get a
//! 410 Gone ERROR event, old `continue` tokens a 410), cutting open
//! streams, stalling them (open but silent), and answering every request
//! with a status such as 500 or 403.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The kinds served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Node,
    Service,
    EndpointSlice,
    Namespace,
    Pod,
    NetworkPolicy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::Node | Kind::Service | Kind::Namespace | Kind::Pod => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
        }
    }
}

/// An object's key in the store: its kind, then namespace/name (or name).
type Key = (Kind, String);

fn key_of(kind: Kind, v: &Value) -> Key {
    let m = v.get("metadata");
    let name = m
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    match m.and_then(|m| m.get("namespace")).and_then(Value::as_str) {
        Some(ns) => (kind, format!("{ns}/{name}")),
        None => (kind, name.to_string()),
    }
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// (resourceVersion, event type, kind, object) in order.
    events: Vec<(u64, &'static str, Kind, Value)>,
    /// Events at or below this resourceVersion are gone.
    compacted: u64,
    fail: Option<u16>,
    /// Watch streams with an id at or below this are silent forever.
    stalled_upto: u64,
    cut: u64,
    lists: u64,
    watches: u64,
    patches: u64,
    gets: u64,
    /// (lists, watches) per kind.
    by_kind: BTreeMap<Kind, (u64, u64)>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Notify,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
}

/// Counts of requests served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// List requests.
    pub lists: u64,
    /// Watch requests.
    pub watches: u64,
    /// Patch requests.
    pub patches: u64,
    /// Get requests (one node by name).
    pub gets: u64,
}

/// A running fake API server; stops on drop.
#[derive(Debug)]
pub struct FakeApi {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn status_response(code: u16, reason: &str, message: &str) -> Response {
    let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        sc,
        [("content-type", "application/json")],
        status_body(code, reason, message).to_string(),
    )
        .into_response()
}

fn with_rv(mut v: Value, kind: Kind, rv: u64) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), json!(kind.name()));
        o.insert("apiVersion".into(), json!(kind.api_version()));
        let m = o.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = m.as_object_mut() {
            m.insert("resourceVersion".into(), json!(rv.to_string()));
        }
    }
    v
}

fn to_value(o: &impl Serialize) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

impl FakeApi {
    /// Starts a server on a free port of 127.0.0.1.
    pub fn start() -> std::io::Result<FakeApi> {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0")?)
    }

    /// Starts a server on `std_listener` (bound wherever the test needs it,
    /// such as inside a network namespace).
    pub fn start_on(std_listener: std::net::TcpListener) -> std::io::Result<FakeApi> {
        let shared = Arc::new(Shared::default());
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let app = Router::new()
                        .route("/api/v1/nodes", get(nodes))
                        .route("/api/v1/nodes/{name}", get(get_node).patch(patch_node))
                        .route("/api/v1/services", get(services))
                        .route(
                            "/apis/discovery.k8s.io/v1/endpointslices",
                            get(endpoint_slices),
                        )
                        .route("/api/v1/namespaces", get(namespaces))
                        .route("/api/v1/pods", get(pods))
                        .route(
                            "/apis/networking.k8s.io/v1/networkpolicies",
                            get(network_policies),
                        )
                        .with_state(s);
                    // No Nagle: a watch event is one small chunk, and Nagle
                    // plus the client's delayed ACK would hold it ~40 ms
                    // (a real API server sets TCP_NODELAY too, as Go does).
                    use axum::serve::ListenerExt;
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
            })?;
        Ok(FakeApi {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// Writes a kubeconfig pointing at this server (plain HTTP).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://{}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
current-context: fake
users:
- name: fake
  user:
    token: fake-token
",
            self.addr
        );
        std::fs::write(path, text)
    }

    /// Creates or replaces an object (ADDED or MODIFIED), or deletes the
    /// stored one of its key; returns the new resourceVersion.
    fn put(&self, kind: Kind, v: Value, delete: bool) -> u64 {
        let rv = self.shared.with(|s| {
            s.rv += 1;
            let rv = s.rv;
            let key = key_of(kind, &v);
            let v = with_rv(v, kind, rv);
            let ty = if delete {
                s.objects.remove(&key);
                "DELETED"
            } else if s.objects.insert(key, v.clone()).is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            s.events.push((rv, ty, kind, v));
            rv
        });
        self.shared.changed.notify_waiters();
        rv
    }

    fn delete(&self, kind: Kind, key: &str) -> Option<u64> {
        let v = self
            .shared
            .with(|s| s.objects.get(&(kind, key.to_string())).cloned())?;
        Some(self.put(kind, v, true))
    }

    /// Creates or replaces a node (ADDED or MODIFIED); returns its
    /// resourceVersion.
    pub fn put_node(&self, n: Node) -> u64 {
        self.put(Kind::Node, to_value(&n), false)
    }

    /// Deletes a node.
    pub fn delete_node(&self, name: &str) {
        self.delete(Kind::Node, name);
    }

    /// Creates or replaces a Service; returns its resourceVersion.
    pub fn put_service(&self, svc: Service) -> u64 {
        self.put(Kind::Service, to_value(&svc), false)
    }

    /// Deletes a Service.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.delete(Kind::Service, &format!("{namespace}/{name}"));
    }

    /// Creates or replaces an EndpointSlice; returns its resourceVersion.
    pub fn put_endpoint_slice(&self, slice: EndpointSlice) -> u64 {
        self.put(Kind::EndpointSlice, to_value(&slice), false)
    }

    /// Deletes an EndpointSlice.
    pub fn delete_endpoint_slice(&self, namespace: &str, name: &str) {
        self.delete(Kind::EndpointSlice, &format!("{namespace}/{name}"));
    }

    /// Creates or replaces a Namespace; returns its resourceVersion.
    pub fn put_namespace(&self, ns: k8s_openapi::api::core::v1::Namespace) -> u64 {
        self.put(Kind::Namespace, to_value(&ns), false)
    }

    /// Deletes a Namespace (its objects stay: the test deletes them).
    pub fn delete_namespace(&self, name: &str) {
        self.delete(Kind::Namespace, name);
    }

    /// Creates or replaces a Pod; returns its resourceVersion.
    pub fn put_pod(&self, pod: k8s_openapi::api::core::v1::Pod) -> u64 {
        self.put(Kind::Pod, to_value(&pod), false)
    }

    /// Deletes a Pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.delete(Kind::Pod, &format!("{namespace}/{name}"));
    }

    /// Creates or replaces a NetworkPolicy; returns its resourceVersion.
    pub fn put_network_policy(&self, np: k8s_openapi::api::networking::v1::NetworkPolicy) -> u64 {
        self.put(Kind::NetworkPolicy, to_value(&np), false)
    }

    /// Deletes a NetworkPolicy.
    pub fn delete_network_policy(&self, namespace: &str, name: &str) {
        self.delete(Kind::NetworkPolicy, &format!("{namespace}/{name}"));
    }

    /// Deletes a node without recording an event a watch could see (it
    /// happened while the history was compacted away).
    pub fn delete_node_unseen(&self, name: &str) {
        self.shared.with(|s| {
            s.rv += 1;
            s.objects.remove(&(Kind::Node, name.to_string()));
            s.compacted = s.rv;
            s.events.clear();
        });
    }

    /// A node as stored.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.shared.with(|s| {
            s.objects
                .get(&(Kind::Node, name.to_string()))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
        })
    }

    /// Drops the event history: a watch resuming from any older
    /// resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.shared.with(|s| {
            s.compacted = s.rv;
            s.events.clear();
        });
    }

    /// Ends every open watch stream (as a restarting API server or a load
    /// balancer timeout does).
    pub fn cut_streams(&self) {
        self.shared.with(|s| s.cut += 1);
        self.shared.changed.notify_waiters();
    }

    /// Makes every open watch stream go silent (no events, no bookmarks)
    /// without ever ending, as a dead connection behind a proxy does; new
    /// streams work. The client must notice and reconnect by itself.
    pub fn stall_open_streams(&self) {
        self.shared.with(|s| s.stalled_upto = s.watches);
        self.shared.changed.notify_waiters();
    }

    /// Answers every request with this status (500, 503, 403...) until
    /// cleared; open streams are cut.
    pub fn set_fail(&self, code: Option<u16>) {
        self.shared.with(|s| s.fail = code);
        if code.is_some() {
            self.cut_streams();
        }
    }

    /// (lists, watches) served for one resource (`nodes`, `services`,
    /// `endpointslices`).
    pub fn requests_for(&self, resource: &str) -> (u64, u64) {
        let kind = match resource {
            "nodes" => Kind::Node,
            "services" => Kind::Service,
            "endpointslices" => Kind::EndpointSlice,
            "namespaces" => Kind::Namespace,
            "pods" => Kind::Pod,
            "networkpolicies" => Kind::NetworkPolicy,
            _ => return (0, 0),
        };
        self.shared
            .with(|s| s.by_kind.get(&kind).copied().unwrap_or_default())
    }

    /// Requests served so far.
    pub fn requests(&self) -> Requests {
        self.shared.with(|s| Requests {
            lists: s.lists,
            watches: s.watches,
            patches: s.patches,
            gets: s.gets,
        })
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.cut_streams();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn failing(s: &Shared) -> Option<Response> {
    let code = s.with(|st| st.fail)?;
    let reason = match code {
        403 => "Forbidden",
        401 => "Unauthorized",
        _ => "InternalError",
    };
    Some(status_response(code, reason, "injected failure"))
}

async fn nodes(
    AxState(s): AxState<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    list_or_watch(Kind::Node, s, q)
}

async fn services(
    AxState(s): AxState<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    list_or_watch(Kind::Service, s, q)
}

async fn endpoint_slices(
    AxState(s): AxState<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    list_or_watch(Kind::EndpointSlice, s, q)
}

async fn namespaces(
    AxState(s): AxState<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    list_or_watch(Kind::Namespace, s, q)
}

async fn pods(
    AxState(s): AxState<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    list_or_watch(Kind::Pod, s, q)
}

async fn network_policies(
    AxState(s): AxState<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    list_or_watch(Kind::NetworkPolicy, s, q)
}

fn list_or_watch(kind: Kind, s: Arc<Shared>, q: BTreeMap<String, String>) -> Response {
    if let Some(r) = failing(&s) {
        return r;
    }
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    s.with(|st| {
        let e = st.by_kind.entry(kind).or_default();
        if watch {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    });
    if watch {
        return watch_kind(kind, s, q);
    }
    // List, paginated by name.
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let token = q.get("continue").filter(|c| !c.is_empty()).cloned();
    s.with(|st| {
        st.lists += 1;
        let (list_rv, after) = match &token {
            Some(t) => {
                let (rv, name) = t.split_once('/').unwrap_or(("0", ""));
                let rv: u64 = rv.parse().unwrap_or(0);
                if rv < st.compacted {
                    return status_response(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result.",
                    );
                }
                (rv, Some(name.to_string()))
            }
            None => (st.rv, None),
        };
        let items: Vec<(&String, &Value)> = st
            .objects
            .iter()
            .filter(|((k, name), _)| {
                *k == kind && after.as_ref().is_none_or(|a| name.as_str() > a.as_str())
            })
            .map(|((_, name), v)| (name, v))
            .collect();
        let page: Vec<Value> = items.iter().take(limit).map(|(_, v)| (*v).clone()).collect();
        let mut meta = json!({ "resourceVersion": list_rv.to_string() });
        if items.len() > limit
            && let Some(last) = items.get(limit - 1).map(|(name, _)| (*name).clone())
            && let Some(m) = meta.as_object_mut()
        {
            m.insert("continue".into(), json!(format!("{list_rv}/{last}")));
            m.insert("remainingItemCount".into(), json!(items.len() - limit));
        }
        let body = json!({
            "apiVersion": kind.api_version(), "kind": format!("{}List", kind.name()),
            "metadata": meta, "items": page
        });
        ([("content-type", "application/json")], body.to_string()).into_response()
    })
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = json!({ "type": kind, "object": object }).to_string();
    v.push('\n');
    Bytes::from(v)
}

fn watch_kind(kind: Kind, s: Arc<Shared>, q: BTreeMap<String, String>) -> Response {
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && v.as_str() != "0")
        .and_then(|v| v.parse().ok());
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(64);
    let (cut_at_start, id) = s.with(|st| {
        st.watches += 1;
        (st.cut, st.watches)
    });
    tokio::spawn(async move {
        use futures::SinkExt;
        // Where the stream starts.
        let (mut sent_rv, initial) = s.with(|st| match from {
            Some(rv) if rv < st.compacted => (u64::MAX, Vec::new()),
            Some(rv) => (rv, Vec::new()),
            // No resourceVersion: synthetic ADDED for everything, then on.
            None => (
                st.rv,
                st.objects
                    .iter()
                    .filter(|((k, _), _)| *k == kind)
                    .map(|(_, v)| line("ADDED", v))
                    .collect(),
            ),
        });
        if sent_rv == u64::MAX {
            let gone = status_body(
                410,
                "Expired",
                &format!("too old resource version: {} ", from.unwrap_or(0)),
            );
            let _ = tx.send(line("ERROR", &gone)).await;
            return;
        }
        for l in initial {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        let started = tokio::time::Instant::now();
        loop {
            let (stall, cut, behind, pending, rv) = s.with(|st| {
                let pending: Vec<(u64, &'static str, Value)> = st
                    .events
                    .iter()
                    .filter(|(rv, _, k, _)| *rv > sent_rv && *k == kind)
                    .map(|(rv, t, _, v)| (*rv, *t, v.clone()))
                    .collect();
                (
                    id <= st.stalled_upto,
                    st.cut != cut_at_start,
                    sent_rv < st.compacted,
                    pending,
                    st.rv,
                )
            });
            if cut {
                return;
            }
            // History this stream had not sent yet was compacted away: as
            // the API server does with a watcher that fell behind, end it
            // with 410 Gone (the client must relist), never skip silently.
            if behind && !stall {
                let gone = status_body(
                    410,
                    "Expired",
                    &format!("too old resource version: {sent_rv} "),
                );
                let _ = tx.send(line("ERROR", &gone)).await;
                return;
            }
            if !stall {
                for (rv, ty, obj) in pending {
                    if tx.send(line(ty, &obj)).await.is_err() {
                        return;
                    }
                    sent_rv = rv;
                }
                if timeout.is_some_and(|t| started.elapsed() >= t) {
                    return;
                }
            }
            let changed = s.changed.notified();
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if bookmarks && !stall {
                        let bm = json!({
                            "kind": kind.name(), "apiVersion": kind.api_version(),
                            "metadata": { "resourceVersion": rv.max(sent_rv).to_string() }
                        });
                        if tx.send(line("BOOKMARK", &bm)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let body = Body::from_stream(rx.map(Ok::<_, Infallible>));
    ([("content-type", "application/json")], body).into_response()
}

async fn get_node(AxState(s): AxState<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    if let Some(r) = failing(&s) {
        return r;
    }
    match s.with(|st| {
        st.gets += 1;
        st.objects.get(&(Kind::Node, name.clone())).cloned()
    }) {
        Some(n) => ([("content-type", "application/json")], n.to_string()).into_response(),
        None => status_response(404, "NotFound", &format!("nodes \"{name}\" not found")),
    }
}

/// Merge patch (RFC 7386) restricted to `metadata.annotations`, which is
/// all Sluice writes; anything else is refused as the RBAC would.
async fn patch_node(
    AxState(s): AxState<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = failing(&s) {
        return r;
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status_response(400, "BadRequest", "patch is not JSON");
    };
    let Some(ann) = patch
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    else {
        return status_response(422, "Invalid", "only metadata.annotations may be patched");
    };
    if patch.as_object().is_some_and(|o| o.len() != 1)
        || patch
            .get("metadata")
            .and_then(Value::as_object)
            .is_some_and(|m| m.len() != 1)
    {
        return status_response(422, "Invalid", "only metadata.annotations may be patched");
    }
    let updated = s.with(|st| {
        st.patches += 1;
        let v = st.objects.get(&(Kind::Node, name.clone()))?;
        let mut n: Node = serde_json::from_value(v.clone()).ok()?;
        let a = n.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in ann {
            match v.as_str() {
                Some(v) => {
                    a.insert(k.clone(), v.to_string());
                }
                None => {
                    a.remove(k);
                }
            }
        }
        st.rv += 1;
        let rv = st.rv;
        let v = with_rv(to_value(&n), Kind::Node, rv);
        st.objects.insert((Kind::Node, name.clone()), v.clone());
        st.events.push((rv, "MODIFIED", Kind::Node, v.clone()));
        Some(v)
    });
    s.changed.notify_waiters();
    match updated {
        Some(n) => ([("content-type", "application/json")], n.to_string()).into_response(),
        None => status_response(404, "NotFound", &format!("nodes \"{name}\" not found")),
    }
}
