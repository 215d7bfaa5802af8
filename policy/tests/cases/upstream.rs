// The cases of kubernetes test/e2e/network/netpol/network_policy.go, named
// after the upstream case, with their truth tables. Included by
// upstream_e2e.rs (the compiled tables and the independent evaluation)
// and by dataplane/tests/netpol_pipeline.rs (the real worker pipeline on
// two nodes), each with its own `validate`; the second half of the cases
// is in upstream_2.rs, included at the end.

use policy::{PolicyPort, Port, Proto, Requirement, Rule, Selector};

fn ns_is(n: &str) -> Selector {
    Selector::label("kubernetes.io/metadata.name", n)
}

fn x() -> Who<'static> {
    Who {
        ns: Some("x"),
        pod: None,
    }
}

fn xa() -> Who<'static> {
    Who {
        ns: Some("x"),
        pod: Some("a"),
    }
}

fn any() -> Who<'static> {
    Who::default()
}

fn ns(n: &'static str) -> Who<'static> {
    Who {
        ns: Some(n),
        pod: None,
    }
}

fn from(peers: Vec<policy::Peer>) -> Rule {
    Rule {
        peers,
        ports: Vec::new(),
    }
}

#[test]
fn should_support_a_default_deny_ingress_policy() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-ingress",
        Selector::all(),
        (true, false),
        vec![],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(any(), x(), false);
    validate("default-deny-ingress", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_support_a_default_deny_all_policy() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-all",
        Selector::all(),
        (true, true),
        vec![],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(any(), x(), false);
    r.expect_peer(x(), any(), false);
    validate("default-deny-all", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector()
{
    let mut c = cluster();
    let rule = from(vec![pods(None, Some(Selector::label("pod", "b")))]);
    c.policies.push(policy(
        "x",
        "x-a-allows-x-b",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    r.expect("x/b", "x/a", true);
    validate("pod selector", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_to_allow_ingress_traffic_for_a_target() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-all",
        Selector::all(),
        (true, false),
        vec![],
        vec![],
    ));
    let rule = from(vec![pods(Some(Selector::all()), Some(Selector::all()))]);
    c.policies.push(policy(
        "x",
        "allow-all-to-a",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", true);
    r.expect_all_ingress("x/b", false);
    r.expect_all_ingress("x/c", false);
    validate("target", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces() {
    let mut c = cluster();
    let rule = from(vec![pods(Some(Selector::all()), None)]);
    c.policies.push(policy(
        "x",
        "allow-from-another-ns",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    validate("all namespaces", &c, Proto::Tcp, 80, &Reach::all(true));
}

#[test]
fn should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespace_selector()
 {
    let mut c = cluster();
    let rule = from(vec![pods(Some(ns_is("y")), None)]);
    c.policies.push(policy(
        "x",
        "allow-client-a-via-ns-selector",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(x(), xa(), false);
    r.expect_peer(ns("z"), xa(), false);
    validate("namespace selector", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_based_on_pod_selector_with_match_expressions() {
    let mut c = cluster();
    let sel = Selector {
        labels: vec![],
        exprs: vec![Requirement::In("pod".into(), vec!["b".into()])],
    };
    let rule = from(vec![pods(None, Some(sel))]);
    c.policies.push(policy(
        "x",
        "x-a-allows-x-b",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    r.expect("x/b", "x/a", true);
    validate("pod match expressions", &c, Proto::Tcp, 80, &r);
}

fn ns_expr(req: Requirement) -> Selector {
    Selector {
        labels: vec![],
        exprs: vec![req],
    }
}

const NSKEY: &str = "kubernetes.io/metadata.name";

#[test]
fn should_enforce_policy_based_on_namespace_selector_with_match_expressions() {
    let mut c = cluster();
    let sel = ns_expr(Requirement::In(NSKEY.into(), vec!["y".into()]));
    let rule = from(vec![pods(Some(sel), None)]);
    c.policies.push(policy(
        "x",
        "allow-ns-y-match-selector",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(x(), xa(), false);
    r.expect_peer(ns("z"), xa(), false);
    validate("namespace match expressions", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_based_on_pod_selector_or_namespace_selector() {
    let mut c = cluster();
    let not_x = ns_expr(Requirement::NotIn(NSKEY.into(), vec!["x".into()]));
    let rule = from(vec![
        pods(Some(not_x), None),
        pods(None, Some(Selector::label("pod", "b"))),
    ]);
    c.policies.push(policy(
        "x",
        "allow-ns-y-match-selector",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect("x/a", "x/a", false);
    r.expect("x/c", "x/a", false);
    validate("pod or namespace selector", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_based_on_pod_selector_and_namespace_selector() {
    let mut c = cluster();
    let not_x = ns_expr(Requirement::NotIn(NSKEY.into(), vec!["x".into()]));
    let rule = from(vec![pods(Some(not_x), Some(Selector::label("pod", "b")))]);
    c.policies.push(policy(
        "x",
        "allow-ns-y-podselector-and-nsselector",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    r.expect("y/b", "x/a", true);
    r.expect("z/b", "x/a", true);
    validate("pod and namespace selector", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_based_on_multiple_pod_selectors_and_namespace_selectors() {
    let mut c = cluster();
    let not_x = ns_expr(Requirement::NotIn(NSKEY.into(), vec!["x".into()]));
    let b_or_c = ns_expr(Requirement::In("pod".into(), vec!["b".into(), "c".into()]));
    let rule = from(vec![pods(Some(not_x), Some(b_or_c))]);
    c.policies.push(policy(
        "x",
        "allow-ns-y-z-pod-b-c",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(x(), xa(), false);
    r.expect("y/a", "x/a", false);
    r.expect("z/a", "x/a", false);
    validate("multiple selectors", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_based_on_any_pod_selectors() {
    let mut c = cluster();
    let rule = from(vec![
        pods(None, Some(Selector::label("pod", "b"))),
        pods(None, Some(Selector::label("pod", "c"))),
    ]);
    c.policies.push(policy(
        "x",
        "allow-ns-x-pod-b-c",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    r.expect("x/b", "x/a", true);
    r.expect("x/c", "x/a", true);
    validate("any pod selectors", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector()
 {
    let mut c = cluster();
    let rule = from(vec![pods(
        Some(ns_is("y")),
        Some(Selector::label("pod", "a")),
    )]);
    c.policies.push(policy(
        "x",
        "allow-ns-y-pod-a-via-namespace-pod-selector",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    r.expect("y/a", "x/a", true);
    validate("pod in another namespace", &c, Proto::Tcp, 80, &r);
}

/// Ingress to x/a from namespace y on TCP 81 only.
fn port_81_from_y() -> policy::Policy {
    let rule = Rule {
        peers: vec![pods(Some(ns_is("y")), None)],
        ports: vec![tcp(81)],
    };
    policy(
        "x",
        "allow-client-a-via-ns-selector",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    )
}

#[test]
fn should_enforce_policy_based_on_ports() {
    let mut c = cluster();
    c.policies.push(port_81_from_y());
    let mut r = Reach::all(true);
    r.expect_peer(x(), xa(), false);
    r.expect_peer(ns("y"), xa(), true);
    r.expect_peer(ns("z"), xa(), false);
    validate("ports", &c, Proto::Tcp, 81, &r);
}

#[test]
fn should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors() {
    let mut c = cluster();
    c.policies.push(port_81_from_y());
    let mut allow = Reach::all(true);
    allow.expect_peer(x(), xa(), false);
    allow.expect_peer(ns("y"), xa(), true);
    allow.expect_peer(ns("z"), xa(), false);
    validate("stacked, 81", &c, Proto::Tcp, 81, &allow);
    let mut deny = Reach::all(true);
    deny.expect_all_ingress("x/a", false);
    validate("stacked, 80", &c, Proto::Tcp, 80, &deny);
    let rule = Rule {
        peers: vec![pods(Some(ns_is("y")), None)],
        ports: vec![tcp(80)],
    };
    c.policies.push(policy(
        "x",
        "allow-client-a-via-ns-selector-80",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    validate("stacked, 80 unblocked", &c, Proto::Tcp, 80, &allow);
}

#[test]
fn should_support_allow_all_policy() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-all",
        Selector::all(),
        (true, false),
        vec![Rule::default()],
        vec![],
    ));
    for port in [80, 81] {
        validate("allow-all", &c, Proto::Tcp, port, &Reach::all(true));
    }
}

fn named(n: &str, proto: Proto) -> PolicyPort {
    PolicyPort {
        proto,
        port: Port::Named(n.into()),
    }
}

#[test]
fn should_allow_ingress_access_on_one_named_port() {
    let mut c = cluster();
    let rule = Rule {
        peers: vec![],
        ports: vec![named("serve-81-tcp", Proto::Tcp)],
    };
    c.policies.push(policy(
        "x",
        "allow-all",
        Selector::all(),
        (true, false),
        vec![rule],
        vec![],
    ));
    validate("named port, 81", &c, Proto::Tcp, 81, &Reach::all(true));
    let mut r = Reach::all(true);
    r.expect_peer(any(), x(), false);
    validate("named port, 80", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_allow_ingress_access_from_namespace_on_one_named_port() {
    let mut c = cluster();
    let rule = Rule {
        peers: vec![pods(Some(ns_is("y")), None)],
        ports: vec![named("serve-80-tcp", Proto::Tcp)],
    };
    c.policies.push(policy(
        "x",
        "allow-client-a-via-ns-selector-80",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(x(), xa(), false);
    r.expect_peer(ns("z"), xa(), false);
    validate("named port from namespace, 80", &c, Proto::Tcp, 80, &r);
    let mut fail = Reach::all(true);
    fail.expect_all_ingress("x/a", false);
    validate("named port from namespace, 81", &c, Proto::Tcp, 81, &fail);
}

#[test]
fn should_allow_egress_access_on_one_named_port() {
    let mut c = cluster();
    let rule = Rule {
        peers: vec![],
        ports: vec![named("serve-80-tcp", Proto::Tcp)],
    };
    c.policies.push(policy(
        "x",
        "allow-egress",
        Selector::all(),
        (false, true),
        vec![],
        vec![rule],
    ));
    validate(
        "egress named port, 80",
        &c,
        Proto::Tcp,
        80,
        &Reach::all(true),
    );
    let mut r = Reach::all(true);
    r.expect_peer(x(), any(), false);
    validate("egress named port, 81", &c, Proto::Tcp, 81, &r);
}

#[test]
fn should_enforce_updated_policy() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-all-mutate-to-deny-all",
        Selector::all(),
        (true, false),
        vec![Rule::default()],
        vec![],
    ));
    validate("before the update", &c, Proto::Tcp, 81, &Reach::all(true));
    c.policies[0].ingress.clear();
    let mut r = Reach::all(true);
    r.expect_peer(any(), x(), false);
    validate("after the update", &c, Proto::Tcp, 81, &r);
}

#[test]
fn should_allow_ingress_access_from_updated_namespace() {
    let mut c = cluster();
    let rule = from(vec![pods(Some(Selector::label("ns2", "updated")), None)]);
    c.policies.push(policy(
        "x",
        "allow-client-a-via-ns-selector",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    validate("before the label", &c, Proto::Tcp, 80, &r);
    c.namespaces[1]
        .labels
        .insert("ns2".into(), "updated".into());
    r.expect_peer(ns("y"), xa(), true);
    validate("after the label", &c, Proto::Tcp, 80, &r);
}

include!("upstream_2.rs");
