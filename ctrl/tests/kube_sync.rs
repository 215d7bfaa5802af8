//! The control thread against the fake API server, through the real
//! `kube` client and a kubeconfig: every scenario asserts the resulting
//! view (the peers the dataplane would route to).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctrl::fakeapi::FakeApi;
use ctrl::kube_sync::{OwnNode, SyncConfig, SyncHandle, spawn};
use ctrl::node::{self, AnnotationPolicy};
use ctrl::view::ClusterView;
use encap::MacAddr;
use k8s_openapi::api::core::v1::Node;

fn mk(name: &str, ip: &str, cidr: Option<&str>, ann: &[(&str, &str)]) -> Node {
    node::node_object(name, ip, cidr, ann)
}

/// A Sluice node `n`: 192.168.1.n, 10.244.n.0/24, VTEP MAC ..:n.
fn sluice_node(n: u8) -> Node {
    mk(
        &format!("node-{n}"),
        &format!("192.168.1.{n}"),
        Some(&format!("10.244.{n}.0/24")),
        &[(node::SLUICE_VTEP_MAC, &format!("0a:58:00:00:00:{n:02x}"))],
    )
}

struct Rig {
    api: FakeApi,
    views: Arc<Mutex<Vec<ClusterView>>>,
    sync: Option<SyncHandle>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rig(initial: &[Node], policy: AnnotationPolicy, own: Option<OwnNode>) -> Rig {
    let api = FakeApi::start().unwrap();
    for n in initial {
        api.put_node(n.clone());
    }
    let dir = std::env::temp_dir().join(format!(
        "sluice-ctrl-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    api.write_kubeconfig(&kc).unwrap();
    let views = Arc::new(Mutex::new(Vec::new()));
    let v = views.clone();
    let sync = spawn(
        SyncConfig {
            kubeconfig: Some(kc),
            node_name: "node-1".into(),
            policy,
            own,
            watch_timeout_secs: 2,
        },
        move |view, _changes| v.lock().unwrap().push(view.clone()),
    )
    .unwrap();
    Rig {
        api,
        views,
        sync: Some(sync),
        _dir: TempDir(dir),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Rig {
    fn latest(&self) -> ClusterView {
        self.views
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (bounded) until the latest view satisfies `cond`.
    fn wait(&self, what: &str, cond: impl Fn(&ClusterView) -> bool) -> ClusterView {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.latest();
            if cond(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached; last view {:?}; status {:?}",
                v.peers.keys().collect::<Vec<_>>(),
                self.sync.as_ref().map(SyncHandle::status)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&self) -> ctrl::kube_sync::Status {
        self.sync.as_ref().unwrap().status()
    }
}

fn names(v: &ClusterView) -> Vec<&str> {
    v.peers.keys().map(String::as_str).collect()
}

#[test]
fn nodes_added_changed_and_deleted() {
    let r = rig(
        &[sluice_node(1), sluice_node(2)],
        AnnotationPolicy::default(),
        None,
    );
    // node-1 is this node: not a peer.
    r.wait("initial list", |v| names(v) == ["node-2"]);
    assert!(r.status().in_sync);
    r.api.put_node(sluice_node(3));
    r.wait("node-3 added", |v| names(v) == ["node-2", "node-3"]);
    // New VTEP MAC, new IP, new pod CIDR.
    let mut n3 = sluice_node(3);
    n3.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(node::SLUICE_VTEP_MAC.into(), "0a:58:00:00:00:99".into());
    n3.status.as_mut().unwrap().addresses.as_mut().unwrap()[0].address = "192.168.1.33".into();
    n3.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.33.0/24".into()]);
    r.api.put_node(n3);
    let v = r.wait("node-3 changed", |v| {
        v.peers
            .get("node-3")
            .is_some_and(|p| p.vtep_mac == MacAddr([0x0a, 0x58, 0, 0, 0, 0x99]))
    });
    let p = &v.peers["node-3"];
    assert_eq!(p.ip.to_string(), "192.168.1.33");
    assert_eq!(p.pod_cidrs[0].to_string(), "10.244.33.0/24");
    r.api.delete_node("node-2");
    r.wait("node-2 deleted", |v| names(v) == ["node-3"]);
}

#[test]
fn a_delete_missed_while_the_stream_was_cut_is_applied_after_410_and_relist() {
    let r = rig(
        &[sluice_node(1), sluice_node(2), sluice_node(3)],
        AnnotationPolicy::default(),
        None,
    );
    r.wait("initial", |v| names(v) == ["node-2", "node-3"]);
    let lists = r.api.requests().lists;
    // The stream is cut; meanwhile node-3 goes away and the history that
    // would have told us is compacted: resuming gets 410 Gone.
    r.api.cut_streams();
    r.api.delete_node_unseen("node-3");
    r.api.put_node(sluice_node(4));
    r.api.compact();
    r.wait("relisted", |v| names(v) == ["node-2", "node-4"]);
    assert!(r.api.requests().lists > lists, "a relist happened");
}

#[test]
fn api_server_down_keeps_the_last_view_and_resyncs() {
    let r = rig(
        &[sluice_node(1), sluice_node(2)],
        AnnotationPolicy::default(),
        None,
    );
    r.wait("initial", |v| names(v) == ["node-2"]);
    let mut expect: Vec<String> = vec!["node-2".into()];
    for (round, code) in [503u16, 403, 500].into_iter().enumerate() {
        r.api.set_fail(Some(code));
        // While it fails: errors are counted, the view is unchanged.
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.status().errors == 0 || r.status().in_sync {
            assert!(
                Instant::now() < deadline,
                "errors not noticed: {:?}",
                r.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(names(&r.latest()), expect, "last view kept during {code}");
        // Still retrying: the error count keeps moving (bounded wait).
        let errors = r.status().errors;
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.status().errors <= errors {
            assert!(
                Instant::now() < deadline,
                "no retry after {errors} errors: {:?}",
                r.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Changes made while it was down arrive once it is back.
        r.api.set_fail(None);
        let n = 10 + round as u8;
        r.api.put_node(sluice_node(n));
        let want = format!("node-{n}");
        r.wait("resynced", |v| v.peers.contains_key(&want));
        expect.push(want);
        expect.sort();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !r.status().in_sync {
            assert!(
                Instant::now() < deadline,
                "not in sync again: {:?}",
                r.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_silent_stream_is_detected_and_restarted() {
    let r = rig(
        &[sluice_node(1), sluice_node(2)],
        AnnotationPolicy::default(),
        None,
    );
    r.wait("initial", |v| names(v) == ["node-2"]);
    let watches = r.api.requests().watches;
    // The open stream goes silent: no events, no bookmarks, no end (a dead
    // connection). A node added meanwhile can only arrive on a new stream,
    // opened when the client's idle timeout (watch timeout 2 s + 5 s)
    // gives up on the silent one.
    r.api.stall_open_streams();
    r.api.put_node(sluice_node(5));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        names(&r.latest()),
        ["node-2"],
        "nothing arrives on a stalled stream"
    );
    r.wait("restarted and caught up", |v| {
        v.peers.contains_key("node-5")
    });
    assert!(r.api.requests().watches > watches, "a new watch was opened");
}

#[test]
fn nodes_without_cidr_or_with_garbage_are_ignored_by_name() {
    let r = rig(
        &[
            sluice_node(1),
            sluice_node(2),
            mk(
                "no-cidr",
                "192.168.1.7",
                None,
                &[(node::SLUICE_VTEP_MAC, "0a:58:00:00:00:07")],
            ),
            mk(
                "garbage",
                "192.168.1.8",
                Some("10.244.8.0/24"),
                &[(node::SLUICE_VTEP_MAC, "not-a-mac")],
            ),
        ],
        AnnotationPolicy::default(),
        None,
    );
    r.wait("initial", |v| names(v) == ["node-2"]);
    let problems = r.status().problems;
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no-cidr") && p.contains("no pod CIDR")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("garbage") && p.contains(node::SLUICE_VTEP_MAC)),
        "{problems:?}"
    );
}

#[test]
fn flannel_nodes_and_flannel_compatible_own_annotations() {
    let flannel = |n: u8| {
        mk(
            &format!("flannel-{n}"),
            &format!("192.168.1.{n}"),
            Some(&format!("10.244.{n}.0/24")),
            &[
                (
                    node::FLANNEL_BACKEND_DATA,
                    &format!(r#"{{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:{n:02x}"}}"#),
                ),
                (node::FLANNEL_PUBLIC_IP, &format!("172.16.0.{n}")),
                (node::FLANNEL_BACKEND_TYPE, "vxlan"),
                (node::FLANNEL_KUBE_SUBNET_MANAGER, "true"),
            ],
        )
    };
    // Our Node as the cluster made it, with an annotation of someone
    // else's and a label: both must survive the patch untouched.
    let mut me = mk(
        "node-1",
        "192.168.1.1",
        Some("10.244.1.0/24"),
        &[("example.com/owner", "ops")],
    );
    me.metadata.labels = Some(BTreeMap::from([(
        "kubernetes.io/hostname".to_string(),
        "node-1".to_string(),
    )]));
    let original = me.clone();
    let own = OwnNode {
        ip: "192.168.1.1".parse().unwrap(),
        vtep_mac: MacAddr([0x0a, 0x58, 0, 0, 0, 1]),
        vni: 1,
        flannel: true,
    };
    let r = rig(
        &[me, flannel(2), flannel(3), sluice_node(4)],
        AnnotationPolicy { flannel: true },
        Some(own),
    );
    let v = r.wait("flannel peers", |v| {
        names(v) == ["flannel-2", "flannel-3", "node-4"]
    });
    let p = &v.peers["flannel-2"];
    assert_eq!(p.ip.to_string(), "172.16.0.2", "Flannel's public-ip");
    assert_eq!(p.vtep_mac, MacAddr([0xaa, 0xbb, 0xcc, 0, 0, 2]));
    assert_eq!(p.vni, 1);
    // Our own Node now carries Sluice's and Flannel's annotations, exactly
    // as flanneld writes them, and nothing else was touched.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !r.status().annotated {
        assert!(Instant::now() < deadline, "not annotated: {:?}", r.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    let me = r.api.node("node-1").unwrap();
    assert_eq!(me.spec, original.spec, "spec untouched");
    assert_eq!(me.status, original.status, "status untouched");
    assert_eq!(
        me.metadata.labels, original.metadata.labels,
        "labels untouched"
    );
    let ann: BTreeMap<String, String> = me.metadata.annotations.unwrap();
    let keys: Vec<&str> = ann.keys().map(String::as_str).collect();
    let mut want = vec![
        "example.com/owner",
        node::FLANNEL_BACKEND_DATA,
        node::FLANNEL_BACKEND_TYPE,
        node::FLANNEL_KUBE_SUBNET_MANAGER,
        node::FLANNEL_PUBLIC_IP,
        node::SLUICE_PUBLIC_IP,
        node::SLUICE_VNI,
        node::SLUICE_VTEP_MAC,
    ];
    want.sort_unstable();
    assert_eq!(keys, want, "only our annotations were added");
    assert_eq!(ann["example.com/owner"], "ops", "another's annotation kept");
    assert_eq!(ann[node::SLUICE_PUBLIC_IP], "192.168.1.1");
    assert_eq!(ann[node::SLUICE_VNI], "1");
    assert_eq!(
        ann.get(node::FLANNEL_BACKEND_DATA).map(String::as_str),
        Some(r#"{"VNI":1,"VtepMAC":"0a:58:00:00:00:01"}"#)
    );
    assert_eq!(
        ann.get(node::FLANNEL_PUBLIC_IP).map(String::as_str),
        Some("192.168.1.1")
    );
    assert_eq!(
        ann.get(node::FLANNEL_BACKEND_TYPE).map(String::as_str),
        Some("vxlan")
    );
    assert_eq!(
        ann.get(node::FLANNEL_KUBE_SUBNET_MANAGER)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        ann.get(node::SLUICE_VTEP_MAC).map(String::as_str),
        Some("0a:58:00:00:00:01")
    );
    // A Flannel node reading it would derive the same peer Sluice uses.
    let peer = node::node_route(
        &r.api.node("node-1").unwrap(),
        AnnotationPolicy { flannel: true },
    )
    .unwrap();
    assert_eq!(peer.vtep_mac, MacAddr([0x0a, 0x58, 0, 0, 0, 1]));
    assert_eq!(r.api.requests().patches, 1);
}

#[test]
fn a_large_cluster_is_listed_in_pages() {
    // 1,200 nodes: the watcher lists 500 per page, following `continue`.
    let mut nodes = vec![sluice_node(1)];
    for i in 0..1200u32 {
        let [_, _, b, c] = (0x0a00_0000u32 + i).to_be_bytes();
        nodes.push(mk(
            &format!("n{i:05}"),
            &format!("172.20.{b}.{c}"),
            Some(&format!("10.{}.{}.0/24", 100 + i / 256, i % 256)),
            &[(
                node::SLUICE_VTEP_MAC,
                &format!("0a:58:00:00:{b:02x}:{c:02x}"),
            )],
        ));
    }
    let r = rig(&nodes, AnnotationPolicy::default(), None);
    r.wait("all listed", |v| v.peers.len() == 1200);
    assert!(r.api.requests().lists >= 3, "{:?}", r.api.requests());
}
