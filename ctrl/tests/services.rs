//! Services and EndpointSlices into the service table: kube-proxy's
//! reading of the objects (not proxied, named ports, conditions, IPv4
//! only, bad fields named), the incremental cache, the cluster file, and
//! the Services thread against the fake API server through the real
//! `kube` client (outage, relist with a missed delete).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctrl::fakeapi::FakeApi;
use ctrl::kube_sync::SyncConfig;
use ctrl::node::AnnotationPolicy;
use ctrl::services::{ServiceCache, Update, service_ports};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use lb::{PortName, Proto, ServicePort, ServiceTable};
use serde_json::json;

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

fn dns_service() -> Service {
    svc(json!({
        "metadata": {"namespace": "kube-system", "name": "kube-dns"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::a"],
            "ports": [
                {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
                {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": "dns-tcp"},
                {"name": "metrics", "port": 9153, "targetPort": 9153}
            ]
        }
    }))
}

fn dns_slice(name: &str, eps: serde_json::Value) -> EndpointSlice {
    slice(json!({
        "metadata": {"namespace": "kube-system", "name": name,
                     "labels": {"kubernetes.io/service-name": "kube-dns"}},
        "addressType": "IPv4",
        "ports": [
            {"name": "dns", "protocol": "UDP", "port": 53},
            {"name": "dns-tcp", "protocol": "TCP", "port": 5353},
            {"name": "metrics", "protocol": "TCP", "port": 9153}
        ],
        "endpoints": eps
    }))
}

fn names(ports: &[ServicePort]) -> Vec<String> {
    ports.iter().map(|p| p.name.to_string()).collect()
}

#[test]
fn ports_and_endpoints_are_read_as_kube_proxy_reads_them() {
    let a = dns_slice(
        "kube-dns-a",
        json!([
            // No conditions at all: ready and serving.
            {"addresses": ["10.244.2.5"], "nodeName": "node-2"},
            {"addresses": ["10.244.1.7"], "nodeName": "node-1",
             "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.244.1.8"], "nodeName": "node-1",
             "conditions": {"ready": false, "serving": false, "terminating": true},
             "hints": {"forZones": [{"name": "zone-a"}]}}
        ]),
    );
    // The same endpoint in a second slice is used once; an IPv6 slice is
    // not read.
    let b = dns_slice("kube-dns-b", json!([{"addresses": ["10.244.2.5"]}]));
    let mut v6 = dns_slice("kube-dns-v6", json!([{"addresses": ["fd00::5"]}]));
    v6.address_type = "IPv6".into();
    let (ports, problems) = service_ports(&dns_service(), &[&a, &b, &v6], "node-1");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        names(&ports),
        [
            "kube-system/kube-dns:dns/UDP",
            "kube-system/kube-dns:dns-tcp/TCP",
            "kube-system/kube-dns:metrics/TCP"
        ]
    );
    let udp = &ports[0];
    assert_eq!(udp.cluster_ips, [Ipv4Addr::new(10, 96, 0, 10)], "IPv4 only");
    assert_eq!(udp.port, 53);
    let eps: Vec<(String, u16, bool, bool, bool, bool)> = udp
        .endpoints
        .iter()
        .map(|e| {
            (
                e.ip.to_string(),
                e.port,
                e.ready,
                e.serving,
                e.terminating,
                e.local,
            )
        })
        .collect();
    assert_eq!(
        eps,
        [
            ("10.244.1.7".into(), 53, false, true, true, true),
            ("10.244.1.8".into(), 53, false, false, true, true),
            ("10.244.2.5".into(), 53, true, true, false, false),
        ],
        "sorted, once each, defaults filled"
    );
    assert_eq!(udp.endpoints[1].zone_hints, ["zone-a"]);
    // The named target port arrives resolved from the slice.
    assert!(ports[1].endpoints.iter().all(|e| e.port == 5353));
    assert_eq!(ports[2].name.proto, Proto::Tcp, "protocol defaults to TCP");
}

#[test]
fn services_kube_proxy_does_not_proxy_are_left_out() {
    let base = serde_json::to_value(dns_service()).unwrap();
    let mut headless = base.clone();
    headless["spec"]["clusterIP"] = json!("None");
    headless["spec"]["clusterIPs"] = json!(["None"]);
    let mut external_name = base.clone();
    external_name["spec"]["type"] = json!("ExternalName");
    external_name["spec"]["externalName"] = json!("example.com");
    let mut other_proxy = base.clone();
    other_proxy["metadata"]["labels"] = json!({"service.kubernetes.io/service-proxy-name": "x"});
    let mut v6_only = base;
    v6_only["spec"]["clusterIP"] = json!("fd00::a");
    v6_only["spec"]["clusterIPs"] = json!(["fd00::a"]);
    for (what, s) in [
        ("headless", headless),
        ("ExternalName", external_name),
        ("service-proxy-name", other_proxy),
        ("IPv6 only", v6_only),
    ] {
        let (ports, _) = service_ports(&svc(s), &[], "node-1");
        assert!(ports.is_empty(), "{what} is not proxied");
    }
}

#[test]
fn external_fields_policies_and_affinity() {
    let s = svc(json!({
        "metadata": {"namespace": "web", "name": "shop"},
        "spec": {
            "type": "LoadBalancer", "clusterIP": "10.96.5.5",
            "externalIPs": ["192.168.99.11", "not-an-ip", "2001:db8::1"],
            "loadBalancerSourceRanges": [" 203.0.113.0/25", "bad/99"],
            "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
            "healthCheckNodePort": 30000,
            "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": 80, "nodePort": 31080}]
        },
        "status": {"loadBalancer": {"ingress": [
            {"ip": "1.2.3.4"}, {"ip": "5.6.7.8", "ipMode": "Proxy"}, {"hostname": "lb.example"}
        ]}}
    }));
    let (ports, problems) = service_ports(&s, &[], "node-1");
    let p = &ports[0];
    assert_eq!(p.external_ips, [Ipv4Addr::new(192, 168, 99, 11)]);
    assert_eq!(
        p.load_balancer_ips,
        [Ipv4Addr::new(1, 2, 3, 4)],
        "ipMode Proxy is not captured"
    );
    assert_eq!(
        p.source_ranges,
        ["203.0.113.0/25".parse().unwrap()],
        "whitespace tolerated"
    );
    assert_eq!(p.node_port, Some(31080));
    assert_eq!(p.health_check_node_port, Some(30000));
    assert!(p.external_local && p.internal_local);
    assert_eq!(
        p.affinity,
        Some(Duration::from_secs(10800)),
        "kube-proxy's default"
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("Service web/shop: spec.externalIPs[1]"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("spec.loadBalancerSourceRanges[1]"),
        "{problems:?}"
    );
    let mut t = serde_json::to_value(&s).unwrap();
    t["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
    let (ports, _) = service_ports(&svc(t), &[], "node-1");
    assert_eq!(ports[0].affinity, Some(Duration::from_secs(60)));
}

/// The cache recomputes one service per event and says what to upsert
/// and remove; applied to a ServiceTable it tracks the objects.
#[test]
fn the_cache_updates_only_what_changed() {
    let mut c = ServiceCache::new("node-1");
    let mut table = ServiceTable::default();
    let apply = |t: &mut ServiceTable, u: Update| *t = t.update(u.upserts, &u.removes);
    let u = c.apply_service(dns_service());
    assert_eq!(u.upserts.len(), 3);
    apply(&mut table, u);
    let u = c.apply_slice(dns_slice("a", json!([{"addresses": ["10.244.2.5"]}])));
    assert_eq!(u.upserts.len(), 3, "only kube-dns's ports");
    apply(&mut table, u);
    let other = svc(json!({
        "metadata": {"namespace": "web", "name": "shop"},
        "spec": {"clusterIP": "10.96.5.5", "ports": [{"port": 80}]}
    }));
    let u = c.apply_service(other);
    assert_eq!(names(&u.upserts), ["web/shop/TCP"]);
    apply(&mut table, u);
    assert_eq!(table.len(), 4);
    // Renaming a port removes the old one.
    let mut renamed = serde_json::to_value(dns_service()).unwrap();
    renamed["spec"]["ports"][2]["name"] = json!("prometheus");
    let u = c.apply_service(svc(renamed));
    assert_eq!(
        u.removes,
        [PortName {
            namespace: "kube-system".into(),
            service: "kube-dns".into(),
            port: "metrics".into(),
            proto: Proto::Tcp
        }]
    );
    apply(&mut table, u);
    assert_eq!(table.len(), 4);
    // Deleting the slice leaves the ports with no endpoints.
    let u = c.delete_slice(&("kube-system".into(), "a".into()));
    assert!(u.upserts.iter().all(|p| p.endpoints.is_empty()));
    apply(&mut table, u);
    let u = c.delete_service(&("web".into(), "shop".into()));
    assert_eq!(u.upserts.len(), 0);
    assert_eq!(u.removes.len(), 1);
    apply(&mut table, u);
    assert_eq!(table.len(), 3);
}

const CLUSTER_FILE: &str = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: kube-dns, namespace: kube-system}
  spec:
    clusterIP: 10.96.0.10
    ports: [{name: dns, port: 53, protocol: UDP}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: kube-dns-x
    namespace: kube-system
    labels: {kubernetes.io/service-name: kube-dns}
  addressType: IPv4
  ports: [{name: dns, port: 53, protocol: UDP}]
  endpoints: [{addresses: [10.244.2.5], nodeName: node-2}]
- apiVersion: v1
  kind: Node
  metadata:
    name: node-2
    annotations: {sluice.dev/vtep-mac: "0a:58:00:00:00:02"}
  spec: {podCIDR: 10.244.2.0/24}
  status: {addresses: [{type: InternalIP, address: 192.168.1.2}]}
"#;

#[test]
fn the_cluster_file_is_what_kubectl_prints_and_errors_name_the_item() {
    let objs = ctrl::cluster_file::parse(CLUSTER_FILE).unwrap();
    assert_eq!(
        (objs.services.len(), objs.slices.len(), objs.nodes.len()),
        (1, 1, 1)
    );
    let mut c = ServiceCache::new("node-1");
    let u = c.replace(objs.services, objs.slices);
    assert_eq!(u.upserts.len(), 1);
    assert_eq!(u.upserts[0].endpoints.len(), 1);
    for (text, field) in [
        (CLUSTER_FILE.replace("kind: List", "kind: Service"), "kind"),
        (
            CLUSTER_FILE.replace("kind: Node", "kind: ConfigMap"),
            "items[2].kind",
        ),
        (
            CLUSTER_FILE.replace("addressType: IPv4", "addressType: [1]"),
            "items[1] (EndpointSlice kube-dns-x)",
        ),
        ("".to_string(), "items"),
        ("kind: List\n".to_string(), "items"),
    ] {
        let e = ctrl::cluster_file::parse(&text).unwrap_err();
        assert_eq!(e.field, field, "{e}");
    }
}

/// The Services thread against the fake API server: the whole table once
/// both kinds are listed, then each change; an outage keeps the table and
/// says so; a delete missed during a compaction applies at the relist.
#[test]
fn the_services_thread_follows_the_api_server() {
    let api = FakeApi::start().unwrap();
    api.put_service(dns_service());
    api.put_endpoint_slice(dns_slice(
        "kube-dns-a",
        json!([{"addresses": ["10.244.2.5"]}]),
    ));
    let dir = std::env::temp_dir().join(format!("sluice-svc-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    api.write_kubeconfig(&kc).unwrap();
    let table = Arc::new(Mutex::new(ServiceTable::default()));
    let t = table.clone();
    let h = ctrl::service_sync::spawn(
        SyncConfig {
            kubeconfig: Some(kc),
            node_name: "node-1".into(),
            policy: AnnotationPolicy::default(),
            own: None,
            watch_timeout_secs: 2,
        },
        move |u| {
            let mut g = t.lock().unwrap();
            *g = g.update(u.upserts.clone(), &u.removes);
        },
    )
    .unwrap();
    let wait = |what: &str, cond: &dyn Fn(&ServiceTable) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond(&table.lock().unwrap()) {
            assert!(Instant::now() < deadline, "{what}: {:?}", h.status());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let backends = |t: &ServiceTable| -> Vec<Ipv4Addr> {
        t.ports()
            .find(|(_, p)| p.spec.name.port == "dns")
            .map(|(_, p)| p.cluster.backends.iter().map(|b| b.ip).collect())
            .unwrap_or_default()
    };
    wait("the first table", &|t| {
        backends(t) == [Ipv4Addr::new(10, 244, 2, 5)]
    });
    assert_eq!(table.lock().unwrap().len(), 3);
    // One endpoint change, seen within the bound the issue asks (50 ms is
    // for the workers; here the watch round trip is included).
    let t0 = Instant::now();
    api.put_endpoint_slice(dns_slice(
        "kube-dns-a",
        json!([{"addresses": ["10.244.2.5"]}, {"addresses": ["10.244.3.9"]}]),
    ));
    wait("the new endpoint", &|t| backends(t).len() == 2);
    println!("endpoint change visible after {:?} (printed)", t0.elapsed());
    // Outage: the table stays, the status says so.
    api.set_fail(Some(500));
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.status().in_sync {
        assert!(Instant::now() < deadline, "outage never noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(backends(&table.lock().unwrap()).len(), 2);
    // A delete missed while history was compacted applies at the relist.
    api.delete_service("kube-system", "kube-dns");
    api.compact();
    api.set_fail(None);
    wait("the missed delete", &|t| t.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
