//! Both demo nodes fed by the fake Kubernetes API server instead of a
//! static file (the issue-5 end-to-end test): the daemons annotate their
//! own Node objects and learn each other from the API; a third node object
//! makes a Flannel-style kernel node reachable and deleting it removes the
//! route; pod traffic keeps flowing while the API server is down.

mod common;
#[path = "../../encap/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{flannel_node_c, pings};
use ctrl::fakeapi::FakeApi;
use dataplane::daemon::request;
use dataplane::demo::Topology;
use k8s_openapi::api::core::v1::Node;
use support::require_root;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn node(name: &str, ip: &str, cidr: &str, ann: &[(&str, &str)]) -> Node {
    ctrl::node::node_object(name, ip, Some(cidr), ann)
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status(t: &Topology, i: usize) -> String {
    request(&t.sockets[i], "status").unwrap_or_default()
}

#[test]
fn nodes_learn_each_other_from_the_api_server() {
    if !require_root("nodes_learn_each_other_from_the_api_server") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sluice-kube-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    // The API server listens in the external host's namespace, where both
    // nodes reach it over the wire.
    let (mut t, api) = Topology::build_kube(std::path::Path::new(SLUICE), |t| {
        let l = dataplane::netns::run_in(&t.ns_path("ext"), || {
            std::net::TcpListener::bind("192.168.77.100:0")
        })?;
        let api = FakeApi::start_on(l)?;
        api.put_node(node("node-a", "192.168.77.1", "10.244.1.0/24", &[]));
        api.put_node(node("node-b", "192.168.77.2", "10.244.2.0/24", &[]));
        api.write_kubeconfig(&kc)?;
        Ok((kc.clone(), api))
    })
    .expect("topology");

    // The configs leave node.pod_cidr out: each daemon read its own from
    // its Node object.
    let routes_a = request(&t.sockets[0], "routes").unwrap();
    assert!(routes_a.contains("pod_cidr 10.244.1.0/24"), "{routes_a}");
    // Each daemon wrote its annotations (Sluice's and Flannel's) and the
    // other learned it as a peer: pods talk across.
    let a = node_annotations(&api, "node-a");
    assert_eq!(
        a.get("flannel.alpha.coreos.com/backend-type")
            .map(String::as_str),
        Some("vxlan")
    );
    assert!(pings(&t, "a1", "10.244.2.2"));
    assert!(pings(&t, "b2", "10.244.1.3"));
    assert!(status(&t, 0).contains("in_sync true"), "{}", status(&t, 0));
    assert!(status(&t, 0).contains("source kubernetes"));

    // A third node (a kernel node configured as Flannel does) appears as a
    // Node object with Flannel's annotations: node-a routes to it.
    flannel_node_c(&mut t);
    api.put_node(node(
        "node-c",
        "192.168.77.3",
        "10.244.3.0/24",
        &[
            (
                "flannel.alpha.coreos.com/backend-data",
                r#"{"VNI":1,"VtepMAC":"0a:5e:00:00:00:03"}"#,
            ),
            ("flannel.alpha.coreos.com/public-ip", "192.168.77.3"),
            ("flannel.alpha.coreos.com/backend-type", "vxlan"),
            ("flannel.alpha.coreos.com/kube-subnet-manager", "true"),
        ],
    ));
    wait("node-c reachable", || pings(&t, "a1", "10.244.3.2"));
    // Deleting the object removes the route.
    api.delete_node("node-c");
    wait("node-c route removed", || {
        !request(&t.sockets[0], "routes")
            .unwrap_or_default()
            .contains("peer node-c")
    });
    assert!(!pings(&t, "a1", "10.244.3.2"));

    // The API server goes down: the last snapshot keeps pods talking, the
    // status says it is out of sync, and it resyncs when it is back.
    api.set_fail(Some(503));
    wait("out of sync noticed", || {
        status(&t, 0).contains("in_sync false")
    });
    assert!(
        pings(&t, "a1", "10.244.2.2"),
        "traffic flows while the API server is down"
    );
    assert!(t.daemon_alive(0) && t.daemon_alive(1));
    api.set_fail(None);
    wait("back in sync", || status(&t, 0).contains("in_sync true"));
    assert!(pings(&t, "a2", "10.244.2.3"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn node_annotations(api: &FakeApi, name: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = Default::default();
    wait("node annotated", || {
        out = api
            .node(name)
            .and_then(|n| n.metadata.annotations)
            .unwrap_or_default();
        out.contains_key("sluice.dev/vtep-mac")
    });
    out
}

fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// Services from the API server, through the real client, into both
/// daemons: a pod on node-a reaches a UDP service whose backend is on
/// node-b; an EndpointSlice update moves new flows to the new backend; a
/// deleted Service is refused.
#[test]
fn services_follow_the_api_server() {
    if !require_root("services_follow_the_api_server") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sluice-kube-svc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    let (t, api) = Topology::build_kube(std::path::Path::new(SLUICE), |t| {
        let l = dataplane::netns::run_in(&t.ns_path("ext"), || {
            std::net::TcpListener::bind("192.168.77.100:0")
        })?;
        let api = FakeApi::start_on(l)?;
        api.put_node(node("node-a", "192.168.77.1", "10.244.1.0/24", &[]));
        api.put_node(node("node-b", "192.168.77.2", "10.244.2.0/24", &[]));
        api.write_kubeconfig(&kc)?;
        Ok((kc.clone(), api))
    })
    .expect("topology");
    let vip = std::net::Ipv4Addr::new(10, 96, 7, 7);
    api.put_service(json(serde_json::json!({
        "metadata": {"namespace": "default", "name": "echo"},
        "spec": {"clusterIP": "10.96.7.7", "ports": [{"name": "u", "protocol": "UDP", "port": 7, "targetPort": 5300}]}
    })));
    let slice = |ip: &str, node: &str| -> k8s_openapi::api::discovery::v1::EndpointSlice {
        json(serde_json::json!({
            "metadata": {"namespace": "default", "name": "echo-1",
                         "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "u", "protocol": "UDP", "port": 5300}],
            "endpoints": [{"addresses": [ip], "nodeName": node}]
        }))
    };
    api.put_endpoint_slice(slice("10.244.2.2", "node-b"));
    let listed = |backend: &str| {
        request(&t.sockets[0], "services")
            .unwrap_or_default()
            .contains(&format!("backend {backend}:5300 "))
    };
    wait("node-a lists the service", || listed("10.244.2.2"));
    let a1 = std::net::Ipv4Addr::new(10, 244, 1, 2);
    let b1 = std::net::Ipv4Addr::new(10, 244, 2, 2);
    let b2 = std::net::Ipv4Addr::new(10, 244, 2, 3);
    let seen = dataplane::demo::udp_via(&t, "a1", "b1", (b1, 5300), (vip, 7)).expect("via b1");
    assert_eq!(seen, a1, "the backend sees the pod");
    // The slice moves to b2: new flows go there.
    api.put_endpoint_slice(slice("10.244.2.3", "node-b"));
    wait("node-a follows the slice", || listed("10.244.2.3"));
    let seen = dataplane::demo::udp_via(&t, "a1", "b2", (b2, 5300), (vip, 7)).expect("via b2");
    assert_eq!(seen, a1);
    // Deleted: refused.
    api.delete_service("default", "echo");
    wait("node-a drops the service", || {
        !request(&t.sockets[0], "services")
            .unwrap_or_default()
            .contains("default/echo")
    });
    let e = dataplane::netns::run_in(&t.ns_path("a1"), move || {
        let c = std::net::UdpSocket::bind("0.0.0.0:0")?;
        c.set_read_timeout(Some(Duration::from_millis(500)))?;
        c.connect((vip, 7))?;
        c.send(b"x")?;
        let mut b = [0u8; 8];
        c.recv(&mut b).map(|_| ())
    });
    // No service any more: 10.96.7.7 is no frontend; without services.cidrs
    // in this config it is routed as any cluster address (dropped: no
    // node owns it), so no answer comes.
    assert!(e.is_err(), "no answer from a deleted service");
    assert!(
        status(&t, 0).contains("services_in_sync true"),
        "{}",
        status(&t, 0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
