//! deploy/: the manifests parse into the official Kubernetes types
//! (k8s-openapi) with nothing dropped on the way; the ClusterRole grants
//! exactly the verbs the control thread uses against the API server; the
//! binary paths in the Dockerfile, the DaemonSet and its init container
//! are the binaries the build produces; the ConfigMap's daemon
//! configuration and CNI conflist are valid.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest_docs() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/sluice.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).expect("YAML");
            serde_json::to_value(v).expect("JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Parses `v` as `T` and checks nothing was lost: serialized back it is
/// the same document (a misspelled or misplaced field would vanish).
fn typed<T: DeserializeOwned + serde::Serialize>(v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone()).expect("parses as the Kubernetes type");
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(&back, v, "a field did not survive the round trip");
    t
}

fn doc(kind: &str) -> Value {
    manifest_docs()
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes/sluice.yaml"))
}

#[test]
fn manifests_parse_into_the_official_types() {
    let docs = manifest_docs();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
    for d in &docs {
        match d["kind"].as_str().unwrap() {
            "ServiceAccount" => drop(typed::<ServiceAccount>(d)),
            "ClusterRole" => drop(typed::<ClusterRole>(d)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(d)),
            "ConfigMap" => drop(typed::<ConfigMap>(d)),
            "DaemonSet" => drop(typed::<DaemonSet>(d)),
            k => panic!("unexpected kind {k}"),
        }
    }
    let ds: DaemonSet = typed(&doc("DaemonSet"));
    let pod = ds.spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("sluice"));
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_ne!(sc.privileged, Some(true), "not privileged");
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop.unwrap(), ["ALL"]);
    assert_eq!(
        caps.add.unwrap(),
        ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "IPC_LOCK"]
    );
    // Probes on the daemon's own endpoints, where the config serves them.
    let live = c.liveness_probe.clone().unwrap().http_get.unwrap();
    let ready = c.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(
        (live.path.as_deref(), ready.path.as_deref()),
        (Some("/healthz"), Some("/readyz"))
    );
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let cfg = daemon_config();
    for p in [&live, &ready] {
        let at = format!(
            "{}:{}",
            p.host.clone().unwrap_or_default(),
            match &p.port {
                IntOrString::Int(i) => i.to_string(),
                IntOrString::String(s) => s.clone(),
            }
        );
        assert_eq!(
            at,
            cfg.metrics.to_string(),
            "probe hits the metrics listener"
        );
    }
    // Hitless updates (issue 16): the new pod comes first (a surge pod)
    // and takes the node over from the old one (admin.take_over), and the
    // flow tables live on a hostPath that outlives the pod, where the
    // config puts them.
    let ru = ds
        .spec
        .update_strategy
        .clone()
        .unwrap()
        .rolling_update
        .unwrap();
    assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
    assert!(
        cfg.take_over,
        "a surge pod that waits for the lock is never ready: admin.take_over"
    );
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        (5..=60).contains(&grace),
        "terminationGracePeriodSeconds {grace}"
    );
    let run = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| Path::new(&m.mount_path) == cfg.run_dir)
        .unwrap_or_else(|| panic!("admin.run_dir {} is not mounted", cfg.run_dir.display()));
    let vol = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == run.name)
        .unwrap();
    assert_eq!(
        vol.host_path.as_ref().map(|h| h.path.as_str()),
        Some("/run/sluice"),
        "the flow tables outlive the pod on the host's tmpfs"
    );
}

/// The ConfigMap's daemon configuration, as a node would read it.
fn daemon_config() -> dataplane::config::Config {
    let cm: ConfigMap = typed(&doc("ConfigMap"));
    let yaml = cm.data.unwrap()["sluice.yaml"].clone();
    dataplane::config::Config::parse_with_env(&yaml, &|k| match k {
        "NODE_NAME" => Some("worker-1".into()),
        "NODE_IP" => Some("192.0.2.10".into()),
        _ => None,
    })
    .expect("the ConfigMap's sluice.yaml is a valid configuration")
}

#[test]
fn the_config_map_holds_a_valid_daemon_config_and_conflist() {
    let cfg = daemon_config();
    assert_eq!(cfg.name, "worker-1");
    assert!(cfg.kubernetes.is_some(), "peers from the API server");
    assert!(cfg.pod_cidr_from_api, "pod CIDR from the Node object");
    let cm: ConfigMap = typed(&doc("ConfigMap"));
    let conflist: Value =
        serde_json::from_str(&cm.data.unwrap()["10-sluice.conflist"]).expect("conflist JSON");
    let list: rscni_types::types::NetConfList =
        serde_json::from_value(conflist.clone()).expect("a CNI network configuration list");
    let types: Vec<&str> = conflist["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(types, ["sluice-cni", "portmap"]);
    // The bandwidth annotations reach sluice-cni, whose daemon polices
    // them (tests/cni.rs shows the reference plugin failing on TUN pods).
    let with_bandwidth: Vec<&str> = conflist["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["capabilities"]["bandwidth"] == true)
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(with_bandwidth, ["sluice-cni"]);
    assert!(list.version().is_ok());
    // The plugin talks to the socket the daemon listens on, and keeps
    // its reservations under the daemon's state directory's volume.
    assert_eq!(
        conflist["plugins"][0]["socket"].as_str().map(PathBuf::from),
        Some(cfg.socket.clone())
    );
    assert_eq!(conflist["plugins"][0]["ipam"]["subnet"], "usePodCidr");
}

/// `COPY --from=build SRC DST` lines of the Dockerfile: (SRC, DST).
fn docker_copies() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["COPY", "--from=build", src, dst] => {
                    Some(((*src).to_string(), (*dst).to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn binary_paths_agree_between_build_image_and_manifests() {
    // What the build produces: the package's [[bin]] targets, built by
    // this very test run.
    let built: BTreeSet<String> = [
        env!("CARGO_BIN_EXE_sluice"),
        env!("CARGO_BIN_EXE_sluice-cni"),
    ]
    .iter()
    .map(|p| {
        Path::new(p)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    })
    .collect();
    let copies = docker_copies();
    let copied: BTreeSet<String> = copies
        .iter()
        .map(|(src, _)| {
            let p = Path::new(src);
            assert!(
                src.starts_with("/src/target/release/"),
                "{src}: the release build's output"
            );
            p.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(copied, built, "the image holds exactly the binaries built");
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    for b in &built {
        assert!(
            dockerfile.contains(&format!("--bin {b}")),
            "the Dockerfile builds {b}"
        );
    }
    let installed = |name: &str| {
        copies
            .iter()
            .find(|(src, _)| src.ends_with(&format!("/{name}")))
            .map(|(_, dst)| dst.clone())
            .unwrap()
    };
    let ds: DaemonSet = typed(&doc("DaemonSet"));
    let pod = ds.spec.template.spec.unwrap();
    // The daemon container runs the installed daemon.
    let cmd = pod.containers[0].command.clone().unwrap();
    assert_eq!(cmd[0], installed("sluice"));
    assert_eq!(&cmd[1..3], ["run", "--config"]);
    // The init container copies the installed plugin into the host's CNI
    // bin directory under the name the conflist's "type" uses.
    let init = &pod.init_containers.unwrap()[0];
    let script = init.command.clone().unwrap().join(" ");
    assert!(script.contains(&installed("sluice-cni")), "{script}");
    assert!(script.contains("/host/opt/cni/bin/sluice-cni"), "{script}");
    let mounts: Vec<String> = init
        .volume_mounts
        .clone()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.clone())
        .collect();
    assert!(mounts.contains(&"/host/opt/cni/bin".to_string()));
    assert!(mounts.contains(&"/host/etc/cni/net.d".to_string()));
    // The config the command names is where the ConfigMap is mounted.
    let cfg_mount = pod.containers[0]
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .find(|m| m.name == "config")
        .unwrap();
    assert!(cmd[3].starts_with(&cfg_mount.mount_path));
}

#[test]
fn the_cluster_role_grants_exactly_what_the_control_plane_uses() {
    use ctrl::fakeapi::FakeApi;
    use ctrl::kube_sync::{fetch_pod_cidr, spawn};
    // What the manifest grants.
    let role: ClusterRole = typed(&doc("ClusterRole"));
    let rules = role.rules.unwrap();
    assert_eq!(
        rules.len(),
        3,
        "three rules: nodes, services, endpointslices"
    );
    let grant = |group: &str, resource: &str| -> BTreeSet<String> {
        let r = rules
            .iter()
            .find(|r| r.resources.clone().unwrap_or_default() == [resource])
            .unwrap_or_else(|| panic!("no rule for {resource}"));
        assert_eq!(r.api_groups.clone().unwrap(), [group], "{resource}");
        r.verbs.iter().cloned().collect()
    };
    let granted = grant("", "nodes");

    // What the control thread does, with every feature the ConfigMap turns
    // on (pod CIDR from the Node, Flannel annotations read and written),
    // against the fake API server over HTTP.
    let api = FakeApi::start().unwrap();
    let mut node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "worker-1"},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]}
    }))
    .unwrap();
    api.put_node(node.clone());
    node.metadata.name = Some("worker-2".into());
    api.put_node(node);
    let dir = std::env::temp_dir().join(format!("sluice-rbac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    api.write_kubeconfig(&kc).unwrap();
    // The daemon's own settings from the ConfigMap, pointed at the fake.
    let daemon = daemon_config();
    let mut k = daemon.kubernetes.clone().expect("kubernetes section");
    k.kubeconfig = Some(kc);
    let cfg = dataplane::daemon::sync_config(&daemon, &k);
    assert!(
        cfg.own.is_some() && cfg.policy.flannel,
        "annotations read and written"
    );
    fetch_pod_cidr(&cfg, Duration::from_secs(10)).expect("pod CIDR from the Node");
    let sync = spawn(cfg.clone(), |_, _| {}).expect("sync");
    let services = ctrl::service_sync::spawn(cfg, |_| {}).expect("services");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = api.requests();
        if r.patches > 0 && r.watches > 0 && sync.status().in_sync && services.status().in_sync {
            break;
        }
        assert!(Instant::now() < deadline, "sync never settled: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sync);
    drop(services);
    // Services and EndpointSlices: listed and watched, nothing else.
    for (group, resource) in [("", "services"), ("discovery.k8s.io", "endpointslices")] {
        let (lists, watches) = api.requests_for(resource);
        let used: BTreeSet<String> = [("list", lists), ("watch", watches)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(v, _)| v.to_string())
            .collect();
        assert_eq!(used, grant(group, resource), "{resource}");
    }
    let r = api.requests();
    let (node_lists, node_watches) = api.requests_for("nodes");
    let mut used = BTreeSet::new();
    for (verb, n) in [
        ("get", r.gets),
        ("list", node_lists),
        ("watch", node_watches),
        ("patch", r.patches),
    ] {
        if n > 0 {
            used.insert(verb.to_string());
        }
    }
    assert_eq!(
        used, granted,
        "ClusterRole verbs vs the requests made: {r:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
