//! The policy thread against the fake API server through the real `kube`
//! client: nothing published until NetworkPolicies, Namespaces and Pods
//! are all listed; then the whole model; each change (a pod's label, a
//! policy added or removed) republished; an outage keeps the last model
//! and says so; a delete missed while the history was compacted applies
//! at the relist; a policy with a field it cannot use is reported naming
//! it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctrl::fakeapi::FakeApi;
use ctrl::kube_sync::SyncConfig;
use ctrl::node::AnnotationPolicy;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

fn ns(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"team": name}}})).unwrap()
}

fn pod(name: &str, role: &str, ip: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": "shop", "name": name, "labels": {"role": role}},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "db", "containerPort": 6379}]}]},
        "status": {"phase": "Running", "podIP": ip}
    }))
    .unwrap()
}

fn db_policy(port: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"namespace": "shop", "name": "database"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "database"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}],
                         "ports": [{"protocol": "TCP", "port": port}]}]
        }
    }))
    .unwrap()
}

type Seen = Arc<Mutex<Vec<(policy::Cluster, Vec<String>)>>>;

#[test]
fn the_policy_thread_follows_the_api_server() {
    let api = FakeApi::start().unwrap();
    api.put_namespace(ns("shop"));
    api.put_pod(pod("web", "frontend", "10.244.1.5"));
    api.put_pod(pod("db", "database", "10.244.2.6"));
    api.put_network_policy(db_policy(json!(6379)));
    let dir = std::env::temp_dir().join(format!("sluice-policy-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    api.write_kubeconfig(&kc).unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let h = ctrl::policy_sync::spawn(
        SyncConfig {
            kubeconfig: Some(kc),
            node_name: "node-1".into(),
            policy: AnnotationPolicy::default(),
            own: None,
            watch_timeout_secs: 2,
        },
        move |c, p| s.lock().unwrap().push((c.clone(), p.to_vec())),
    )
    .unwrap();
    let wait = |what: &str, cond: &dyn Fn(&policy::Cluster, &[String]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((c, p)) = seen.lock().unwrap().last()
                && cond(c, p)
            {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {:?}", h.status());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("the whole model", &|c, p| {
        c.policies.len() == 1 && c.pods.len() == 2 && c.namespaces.len() == 1 && p.is_empty()
    });
    // Published once all three were listed: never a model with the policy
    // and without the pods.
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|(c, _)| c.pods.len() == 2 && c.namespaces.len() == 1),
        "a partial model was published"
    );
    let first = seen.lock().unwrap().last().unwrap().0.clone();
    let db = first.pods.iter().find(|p| p.name == "db").unwrap();
    assert_eq!(db.named_port("db", policy::Proto::Tcp), Some(6379));
    // A label flip reaches the model.
    let t0 = Instant::now();
    api.put_pod(pod("web", "other", "10.244.1.5"));
    wait("the label flip", &|c, _| {
        c.pods
            .iter()
            .any(|p| p.name == "web" && p.labels.get("role").map(String::as_str) == Some("other"))
    });
    println!("label change published after {:?} (printed)", t0.elapsed());
    // A port the model cannot use is named, and fails closed.
    api.put_network_policy(db_policy(json!(70000)));
    wait("the problem named", &|_, p| {
        p.iter()
            .any(|x| x.contains("NetworkPolicy shop/database") && x.contains("ports[0]"))
    });
    // Outage: the last model stays, the status says so.
    let published = seen.lock().unwrap().len();
    api.set_fail(Some(500));
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.status().in_sync {
        assert!(Instant::now() < deadline, "outage never noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        published,
        "nothing published during the outage"
    );
    // A delete missed while history was compacted applies at the relist.
    api.delete_network_policy("shop", "database");
    api.compact();
    api.set_fail(None);
    wait("the missed delete", &|c, _| c.policies.is_empty());
    assert!(h.status().in_sync);
    let _ = std::fs::remove_dir_all(&dir);
}
