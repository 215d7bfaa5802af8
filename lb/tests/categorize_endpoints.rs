//! kube-proxy's `TestCategorizeEndpoints` (pkg/proxy/topology_test.go),
//! row by row, against `lb::categorize::categorize`.
//!
//! Rows are named as upstream. Rows that only exist to test switches
//! kube-proxy no longer has are left out, and say so here:
//! - "PTE disabled" rows: ProxyTerminatingEndpoints is GA and always on
//!   (the "PTE enabled" twin of each row is ported);
//! - "hints annotation == disabled / aUto / empty" rows: kube-proxy stopped
//!   reading the `service.kubernetes.io/topology-mode` annotation; the
//!   EndpointSlice controller writes hints only when the service asks for
//!   them, so hints present are honoured (the "auto" rows are ported).

use std::net::Ipv4Addr;

use lb::categorize::categorize;
use lb::{Endpoint, PortName, Proto, ServicePort};

const NODE: &str = "test-node";

#[derive(Clone, Copy, Default)]
struct Svc {
    internal_local: bool,
    external_local: bool,
    node_port: bool,
}

/// An endpoint: address, (ready, serving, terminating), local, zone hints.
struct Ep(
    &'static str,
    (bool, bool, bool),
    bool,
    &'static [&'static str],
);

const R: (bool, bool, bool) = (true, true, false);
const NR: (bool, bool, bool) = (false, false, false);
/// Not ready, serving, terminating.
const ST: (bool, bool, bool) = (false, true, true);
/// Not ready, not serving, terminating.
const NST: (bool, bool, bool) = (false, false, true);

struct Row {
    name: &'static str,
    zone: Option<&'static str>,
    svc: Svc,
    eps: Vec<Ep>,
    cluster: Option<&'static [&'static str]>,
    local: Option<&'static [&'static str]>,
    /// `None`: the one of cluster/local that is set (upstream's rule).
    all: Option<&'static [&'static str]>,
    only_remote: bool,
}

fn port(s: Svc, eps: &[Ep]) -> ServicePort {
    let mut p = ServicePort::cluster_ip(
        PortName {
            namespace: "ns".into(),
            service: "svc".into(),
            port: String::new(),
            proto: Proto::Tcp,
        },
        Ipv4Addr::new(172, 30, 0, 1),
        80,
    );
    p.internal_local = s.internal_local;
    p.external_local = s.external_local;
    p.node_port = s.node_port.then_some(8080);
    p.endpoints = eps
        .iter()
        .map(
            |Ep(ip, (ready, serving, terminating), local, zones)| Endpoint {
                ip: ip.parse().unwrap(),
                port: 80,
                ready: *ready,
                serving: *serving,
                terminating: *terminating,
                local: *local,
                zone_hints: zones.iter().map(|z| z.to_string()).collect(),
                node_hints: Vec::new(),
            },
        )
        .collect();
    p
}

fn names(p: &ServicePort, idx: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = idx
        .iter()
        .map(|&i| format!("{}:80", p.endpoints[i].ip))
        .collect();
    v.sort();
    v
}

fn sorted(s: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
    v.sort();
    v
}

fn rows() -> Vec<Row> {
    let a = &["zone-a"][..];
    let b = &["zone-b"][..];
    let c = &["zone-c"][..];
    let etp_local = Svc {
        external_local: true,
        node_port: true,
        ..Svc::default()
    };
    let itp_local = Svc {
        internal_local: true,
        ..Svc::default()
    };
    let four = |h: [&'static [&'static str]; 4], r: [(bool, bool, bool); 4], l: [bool; 4]| {
        ["10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"]
            .into_iter()
            .enumerate()
            .map(|(i, ip)| Ep(ip, r[i], l[i], h[i]))
            .collect::<Vec<_>>()
    };
    let no = [false; 4];
    vec![
        Row {
            name: "hints enabled, hints annotation == auto",
            zone: Some("zone-a"),
            svc: Svc::default(),
            eps: four([a, b, c, a], [R; 4], no),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "externalTrafficPolicy: Local, topology ignored for Local endpoints",
            zone: Some("zone-a"),
            svc: etp_local,
            eps: four([a, b, c, a], [R; 4], [true, true, false, false]),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            only_remote: false,
        },
        Row {
            name: "internalTrafficPolicy: Local, topology ignored for Local endpoints",
            zone: Some("zone-a"),
            svc: Svc {
                internal_local: true,
                node_port: true,
                ..Svc::default()
            },
            eps: four([a, b, c, a], [R; 4], [true, true, false, false]),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            only_remote: false,
        },
        Row {
            name: "empty node labels",
            zone: None,
            svc: Svc::default(),
            eps: vec![Ep("10.1.2.3", R, false, a)],
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "empty zone label",
            zone: Some(""),
            svc: Svc::default(),
            eps: vec![Ep("10.1.2.3", R, false, a)],
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "node in different zone, no endpoint filtering",
            zone: Some("zone-b"),
            svc: Svc::default(),
            eps: vec![Ep("10.1.2.3", R, false, a)],
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "normal endpoint filtering, auto annotation",
            zone: Some("zone-a"),
            svc: Svc::default(),
            eps: four([a, b, c, a], [R; 4], no),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "unready endpoint",
            zone: Some("zone-a"),
            svc: Svc::default(),
            eps: four([a, b, c, a], [R, R, R, NR], no),
            cluster: Some(&["10.1.2.3:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "only unready endpoints in same zone (should not filter)",
            zone: Some("zone-a"),
            svc: Svc::default(),
            eps: four([a, b, c, a], [NR, R, R, NR], no),
            cluster: Some(&["10.1.2.4:80", "10.1.2.5:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "missing hints, no filtering applied",
            zone: Some("zone-a"),
            svc: Svc::default(),
            eps: four([a, b, &[], a], [R; 4], no),
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "multiple hints per endpoint, filtering includes any endpoint with zone included",
            zone: Some("zone-c"),
            svc: Svc::default(),
            eps: four(
                [
                    &["zone-a", "zone-b", "zone-c"],
                    &["zone-b", "zone-c"],
                    &["zone-b", "zone-d"],
                    c,
                ],
                [R; 4],
                no,
            ),
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "conflicting topology and localness require merging allEndpoints",
            zone: Some("zone-a"),
            svc: etp_local,
            eps: vec![
                Ep("10.0.0.0", R, true, a),
                Ep("10.0.0.1", R, true, b),
                Ep("10.0.0.2", R, false, a),
                Ep("10.0.0.3", R, false, b),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]),
            only_remote: false,
        },
        Row {
            name: "internalTrafficPolicy: Local, with empty endpoints",
            zone: None,
            svc: itp_local,
            eps: vec![],
            cluster: None,
            local: Some(&[]),
            all: None,
            only_remote: false,
        },
        Row {
            name: "internalTrafficPolicy: Local, but all endpoints are remote",
            zone: None,
            svc: itp_local,
            eps: vec![Ep("10.0.0.0", R, false, &[]), Ep("10.0.0.1", R, false, &[])],
            cluster: None,
            local: Some(&[]),
            all: None,
            only_remote: true,
        },
        Row {
            name: "internalTrafficPolicy: Local, all endpoints are local",
            zone: None,
            svc: itp_local,
            eps: vec![Ep("10.0.0.0", R, true, &[]), Ep("10.0.0.1", R, true, &[])],
            cluster: None,
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            all: None,
            only_remote: false,
        },
        Row {
            name: "internalTrafficPolicy: Local, some endpoints are local",
            zone: None,
            svc: itp_local,
            eps: vec![Ep("10.0.0.0", R, true, &[]), Ep("10.0.0.1", R, false, &[])],
            cluster: None,
            local: Some(&["10.0.0.0:80"]),
            all: None,
            only_remote: false,
        },
        Row {
            name: "Cluster traffic policy, endpoints not Ready",
            zone: None,
            svc: Svc::default(),
            eps: vec![
                Ep("10.0.0.0", NR, false, &[]),
                Ep("10.0.0.1", NR, false, &[]),
            ],
            cluster: Some(&[]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "Cluster traffic policy, some endpoints are Ready",
            zone: None,
            svc: Svc::default(),
            eps: vec![
                Ep("10.0.0.0", NR, false, &[]),
                Ep("10.0.0.1", R, false, &[]),
            ],
            cluster: Some(&["10.0.0.1:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "Cluster traffic policy, PTE enabled, all endpoints are terminating",
            zone: None,
            svc: Svc::default(),
            eps: vec![
                Ep("10.0.0.0", ST, true, &[]),
                Ep("10.0.0.1", ST, false, &[]),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: None,
            all: None,
            only_remote: false,
        },
        Row {
            name: "iTP: Local, eTP: Cluster, some endpoints local",
            zone: None,
            svc: Svc {
                internal_local: true,
                node_port: true,
                ..Svc::default()
            },
            eps: vec![Ep("10.0.0.0", R, true, &[]), Ep("10.0.0.1", R, false, &[])],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Row {
            name: "iTP: Cluster, eTP: Local, some endpoints local",
            zone: None,
            svc: etp_local,
            eps: vec![Ep("10.0.0.0", R, true, &[]), Ep("10.0.0.1", R, false, &[])],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Row {
            name: "iTP: Local, eTP: Local, some endpoints local",
            zone: None,
            svc: Svc {
                internal_local: true,
                external_local: true,
                node_port: true,
            },
            eps: vec![Ep("10.0.0.0", R, true, &[]), Ep("10.0.0.1", R, false, &[])],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Row {
            name: "iTP: Local, eTP: Local, all endpoints remote",
            zone: None,
            svc: Svc {
                internal_local: true,
                external_local: true,
                node_port: true,
            },
            eps: vec![Ep("10.0.0.0", R, false, &[]), Ep("10.0.0.1", R, false, &[])],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Row {
            name: "iTP: Local, eTP: Local, PTE enabled, all endpoints remote and terminating",
            zone: None,
            svc: Svc {
                internal_local: true,
                external_local: true,
                node_port: true,
            },
            eps: vec![
                Ep("10.0.0.0", ST, false, &[]),
                Ep("10.0.0.1", ST, false, &[]),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: true,
        },
        Row {
            name: "iTP: Cluster, eTP: Local, PTE enabled, with terminating endpoints",
            zone: None,
            svc: etp_local,
            eps: vec![
                Ep("10.0.0.0", R, false, &[]),
                Ep("10.0.0.1", NR, true, &[]),
                Ep("10.0.0.2", ST, true, &[]),
                Ep("10.0.0.3", ST, false, &[]),
            ],
            cluster: Some(&["10.0.0.0:80"]),
            local: Some(&["10.0.0.2:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            only_remote: false,
        },
        Row {
            name: "externalTrafficPolicy ignored if not externally accessible",
            zone: None,
            svc: Svc {
                external_local: true,
                ..Svc::default()
            },
            eps: vec![Ep("10.0.0.0", R, false, &[]), Ep("10.0.0.1", R, true, &[])],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: None,
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: false,
        },
        Row {
            name: "no cluster endpoints for iTP:Local internal-only service",
            zone: None,
            svc: itp_local,
            eps: vec![Ep("10.0.0.0", R, false, &[]), Ep("10.0.0.1", R, true, &[])],
            cluster: None,
            local: Some(&["10.0.0.1:80"]),
            all: Some(&["10.0.0.1:80"]),
            only_remote: false,
        },
        // Not upstream: a not-serving terminating endpoint is never used,
        // even as the last one (KEP-1669).
        Row {
            name: "sluice: not serving is never used",
            zone: None,
            svc: etp_local,
            eps: vec![
                Ep("10.0.0.0", NST, true, &[]),
                Ep("10.0.0.1", NST, false, &[]),
            ],
            cluster: Some(&[]),
            local: Some(&[]),
            all: Some(&[]),
            only_remote: false,
        },
    ]
}

#[test]
fn test_categorize_endpoints() {
    let rows = rows();
    assert!(rows.len() >= 27, "every ported row is here");
    let mut failures = Vec::new();
    for r in &rows {
        let p = port(r.svc, &r.eps);
        let got = categorize(&p, NODE, r.zone);
        let check = |what: &str, want: Option<&[&str]>, got: &Option<Vec<usize>>| match (want, got)
        {
            (None, Some(g)) => Some(format!("{what}: want none, got {:?}", names(&p, g))),
            (Some(w), g) => {
                let g = names(&p, g.as_deref().unwrap_or(&[]));
                (g != sorted(w)).then(|| format!("{what}: want {w:?}, got {g:?}"))
            }
            (None, None) => None,
        };
        let want_all = match (r.all, r.cluster, r.local) {
            (Some(a), _, _) => a,
            (None, Some(c), None) => c,
            (None, None, Some(l)) => l,
            _ => &[],
        };
        let problems: Vec<String> = [
            check("cluster", r.cluster, &got.cluster),
            check("local", r.local, &got.local),
            check("all", Some(want_all), &Some(got.all.clone())),
            (got.has_any != (!want_all.is_empty() || r.only_remote))
                .then(|| format!("hasAnyEndpoints {}", got.has_any)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            failures.push(format!("{}: {}", r.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// kube-proxy's PreferSameNode (`trafficDistribution: PreferSameNode`, the
/// EndpointSlice controller's node hints): the cluster set narrows to the
/// endpoints hinted for this node when every ready endpoint has a node
/// hint and one names this node; a ready endpoint without one, or no hint
/// for this node, leaves every ready endpoint in (upstream has no row for
/// it: these are Sluice's, from topology.go).
#[test]
fn node_hints_prefer_this_node() {
    let ep = |ip: &str, node_hint: Option<&str>, ready: bool| Endpoint {
        node_hints: node_hint.map(String::from).into_iter().collect(),
        ready,
        serving: ready,
        ..Endpoint::ready(ip.parse().unwrap(), 80, false)
    };
    let cluster = |eps: Vec<Endpoint>| -> Vec<String> {
        let mut p = port(Svc::default(), &[]);
        p.endpoints = eps;
        let c = categorize(&p, NODE, Some("zone-a"));
        names(&p, c.cluster.as_deref().unwrap())
    };
    let mine = Some(NODE);
    assert_eq!(
        cluster(vec![
            ep("10.0.0.1", mine, true),
            ep("10.0.0.2", Some("other"), true)
        ]),
        ["10.0.0.1:80"]
    );
    // One ready endpoint without a node hint: no narrowing.
    assert_eq!(
        cluster(vec![ep("10.0.0.1", mine, true), ep("10.0.0.2", None, true)]).len(),
        2
    );
    // An unready endpoint without a hint does not count.
    assert_eq!(
        cluster(vec![
            ep("10.0.0.1", mine, true),
            ep("10.0.0.2", None, false)
        ]),
        ["10.0.0.1:80"]
    );
    // No hint names this node: no narrowing.
    assert_eq!(
        cluster(vec![
            ep("10.0.0.1", Some("x"), true),
            ep("10.0.0.2", Some("y"), true)
        ])
        .len(),
        2
    );
}
