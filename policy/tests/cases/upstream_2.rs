// The second half of network_policy.go's cases (from "should allow ingress
// access from updated pod" on, in upstream order), with their helpers.
// Included at the end of upstream.rs, so every file that includes
// upstream.rs runs all of them.

fn to(peers: Vec<policy::Peer>) -> Rule {
    from(peers)
}

fn who(n: &'static str, p: &'static str) -> Who<'static> {
    Who {
        ns: Some(n),
        pod: Some(p),
    }
}

fn port(proto: Proto, n: u16) -> PolicyPort {
    PolicyPort {
        proto,
        port: Port::Range(n, n),
    }
}

fn block(cidr: &str, except: &[&str]) -> policy::Peer {
    policy::Peer::Block {
        cidr: cidr.parse().unwrap(),
        except: except.iter().map(|e| e.parse().unwrap()).collect(),
    }
}

/// Pod `ns`/`pod`'s /32, as the e2e suite reads it from the pod's status.
fn host(ns_i: usize, pod_i: usize) -> String {
    format!("{}/32", ip(ns_i, pod_i))
}

/// `makeLargeCIDRForIP`: the /4 holding the address.
fn large(ns_i: usize, pod_i: usize) -> String {
    let a = u32::from(ip(ns_i, pod_i)) & 0xf000_0000;
    format!("{}/4", std::net::Ipv4Addr::from(a))
}

#[test]
fn should_allow_ingress_access_from_updated_pod() {
    let mut c = cluster();
    let sel = Selector {
        labels: vec![("pod".into(), "b".into()), ("pod2".into(), "updated".into())],
        exprs: vec![],
    };
    c.policies.push(policy(
        "x",
        "allow-client-a-via-pod-selector",
        Selector::label("pod", "a"),
        (true, false),
        vec![from(vec![pods(None, Some(sel))])],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    validate("before the label", &c, Proto::Tcp, 80, &r);
    c.pods[1].labels.insert("pod2".into(), "updated".into());
    r.expect("x/b", "x/a", true);
    validate("after the label", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_deny_ingress_from_pods_on_other_namespaces() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-empty-policy",
        Selector::all(),
        (true, false),
        vec![from(vec![pods(None, Some(Selector::all()))])],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(ns("y"), x(), false);
    r.expect_peer(ns("z"), x(), false);
    validate("other namespaces", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_deny_ingress_access_to_updated_pod() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-ingress-via-label-selector",
        Selector::label("target", "isolated"),
        (true, false),
        vec![],
        vec![],
    ));
    let mut r = Reach::all(true);
    validate("before the label", &c, Proto::Tcp, 80, &r);
    c.pods[0].labels.insert("target".into(), "isolated".into());
    r.expect_all_ingress("x/a", false);
    validate("after the label", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_deny_egress_from_pods_based_on_pod_selector() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-egress-pod-a",
        Selector::label("pod", "a"),
        (false, true),
        vec![],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_egress("x/a", false);
    validate("deny egress x/a", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_deny_egress_from_all_pods_in_a_namespace() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-egress-ns-x",
        Selector::all(),
        (false, true),
        vec![],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(x(), any(), false);
    validate("deny egress x", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_work_with_ingress_egress_specified_together() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-client-a-via-pod-selector",
        Selector::label("pod", "a"),
        (true, true),
        vec![from(vec![pods(None, Some(Selector::label("pod", "b")))])],
        vec![Rule {
            peers: vec![],
            ports: vec![port(Proto::Tcp, 80)],
        }],
    ));
    let mut r80 = Reach::all(true);
    r80.expect_all_ingress("x/a", false);
    r80.expect("x/b", "x/a", true);
    validate("port 80", &c, Proto::Tcp, 80, &r80);
    let mut r81 = Reach::all(true);
    r81.expect_all_ingress("x/a", false);
    r81.expect_all_egress("x/a", false);
    r81.expect("x/b", "x/a", true);
    validate("port 81", &c, Proto::Tcp, 81, &r81);
}

#[test]
fn should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic()
 {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-to-ns-y-pod-a",
        Selector::label("pod", "a"),
        (false, true),
        vec![],
        vec![to(vec![pods(
            Some(ns_is("y")),
            Some(Selector::label("pod", "a")),
        )])],
    ));
    let from_xa = from(vec![pods(
        Some(ns_is("x")),
        Some(Selector::label("pod", "a")),
    )]);
    for (name, p) in [
        ("allow-from-xa-on-ya-match-selector", "a"),
        ("allow-from-xa-on-yb-match-selector", "b"),
    ] {
        c.policies.push(policy(
            "y",
            name,
            Selector::label("pod", p),
            (true, false),
            vec![from_xa.clone()],
            vec![],
        ));
    }
    let mut r = Reach::all(true);
    r.expect_peer(xa(), any(), false);
    r.expect_peer(any(), who("y", "a"), false);
    r.expect_peer(xa(), who("y", "a"), true);
    r.expect_peer(any(), who("y", "b"), false);
    validate("client-side egress", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_pod_selector_and_namespace_selector()
 {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-to-ns-y-pod-a",
        Selector::label("pod", "a"),
        (false, true),
        vec![],
        vec![to(vec![pods(
            Some(ns_is("y")),
            Some(Selector::label("pod", "a")),
        )])],
    ));
    let mut r = Reach::all(true);
    r.expect_all_egress("x/a", false);
    r.expect("x/a", "y/a", true);
    validate("egress to y/a", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-ingress-by-proto",
        Selector::label("pod", "a"),
        (true, false),
        vec![Rule {
            peers: vec![],
            ports: vec![PolicyPort {
                proto: Proto::Tcp,
                port: Port::Any,
            }],
        }],
        vec![],
    ));
    validate("tcp", &c, Proto::Tcp, 80, &Reach::all(true));
    let mut r = Reach::all(true);
    r.expect_peer(any(), xa(), false);
    validate("udp", &c, Proto::Udp, 80, &r);
}

#[test]
fn should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-ingress-port-80",
        Selector::all(),
        (true, false),
        vec![Rule {
            peers: vec![],
            ports: vec![tcp(80)],
        }],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(any(), x(), false);
    validate("port 80 only", &c, Proto::Tcp, 81, &r);
    c.policies.push(policy(
        "x",
        "allow-ingress",
        Selector::all(),
        (true, false),
        vec![Rule::default()],
        vec![],
    ));
    validate("allow-all wins", &c, Proto::Tcp, 81, &Reach::all(true));
}

#[test]
fn should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-egress-port-80",
        Selector::all(),
        (false, true),
        vec![],
        vec![Rule {
            peers: vec![],
            ports: vec![tcp(80)],
        }],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(x(), any(), false);
    validate("port 80 only", &c, Proto::Tcp, 81, &r);
    c.policies.push(policy(
        "x",
        "allow-egress",
        Selector::all(),
        (false, true),
        vec![],
        vec![Rule::default()],
    ));
    validate("allow-all wins", &c, Proto::Tcp, 81, &Reach::all(true));
}

#[test]
fn should_stop_enforcing_policies_after_they_are_deleted() {
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
    r.expect_peer(x(), any(), false);
    r.expect_peer(any(), x(), false);
    validate("deny-all", &c, Proto::Tcp, 80, &r);
    c.policies.clear();
    validate("deleted", &c, Proto::Tcp, 80, &Reach::all(true));
}

#[test]
fn should_allow_egress_access_to_server_in_cidr_block() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        Selector::label("pod", "a"),
        (false, true),
        vec![],
        vec![to(vec![block(&host(1, 1), &[])])],
    ));
    let mut r = Reach::all(true);
    r.expect_all_egress("x/a", false);
    r.expect("x/a", "y/b", true);
    validate("egress to y/b's /32", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_except_clause_while_egress_access_to_server_in_cidr_block() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        Selector::label("pod", "a"),
        (false, true),
        vec![],
        vec![to(vec![block(&large(0, 1), &[&host(0, 1)])])],
    ));
    let mut r = Reach::all(true);
    r.expect("x/a", "x/b", false);
    validate("except x/b", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_ensure_an_ip_overlapping_both_ipblock_cidr_and_ipblock_except_is_allowed() {
    let mut c = cluster();
    let name = "allow-client-a-via-cidr-egress-rule";
    c.policies.push(policy(
        "x",
        name,
        Selector::label("pod", "a"),
        (false, true),
        vec![],
        vec![to(vec![block(&large(0, 1), &[&host(0, 1)])])],
    ));
    let mut r = Reach::all(true);
    r.expect("x/a", "x/b", false);
    validate("except x/b", &c, Proto::Tcp, 80, &r);
    // The same policy updated: x/b's /32 only.
    c.policies[0].egress = vec![to(vec![block(&host(0, 1), &[])])];
    let mut allow = Reach::all(true);
    allow.expect_all_egress("x/a", false);
    allow.expect("x/a", "x/b", true);
    validate("updated to x/b", &c, Proto::Tcp, 80, &allow);
}

#[test]
fn should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_pod_selector()
 {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-egress-for-target",
        Selector::label("pod", "a"),
        (false, true),
        vec![],
        vec![Rule::default()],
    ));
    validate("egress allowed", &c, Proto::Tcp, 80, &Reach::all(true));
    c.policies.push(policy(
        "x",
        "deny-ingress-via-label-selector",
        Selector::label("pod", "a"),
        (true, false),
        vec![],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    validate("ingress denied", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-ingress",
        Selector::all(),
        (true, false),
        vec![],
        vec![],
    ));
    c.policies.push(policy(
        "x",
        "allow-only-sctp-ingress-on-port-81",
        Selector::label("pod", "a"),
        (true, false),
        vec![Rule {
            peers: vec![],
            ports: vec![port(Proto::Sctp, 81)],
        }],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(any(), x(), false);
    validate("tcp 81 blocked", &c, Proto::Tcp, 81, &r);
}

#[test]
fn should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp()
 {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-only-sctp-ingress-on-port-80",
        Selector::label("pod", "a"),
        (true, false),
        vec![Rule {
            peers: vec![],
            ports: vec![port(Proto::Sctp, 80)],
        }],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    validate("tcp 81 isolated", &c, Proto::Tcp, 81, &r);
}

#[test]
fn should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp() {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-only-udp-ingress-on-port-81",
        Selector::label("pod", "a"),
        (true, false),
        vec![Rule {
            peers: vec![],
            ports: vec![port(Proto::Udp, 81)],
        }],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    validate("tcp 81 blocked", &c, Proto::Tcp, 81, &r);
}

#[test]
fn should_enforce_policy_to_allow_traffic_based_on_namespace_selector_with_match_labels_using_default_ns_label()
 {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-client-a-via-ns-selector-for-immutable-ns-label",
        Selector::label("pod", "a"),
        (true, false),
        vec![from(vec![pods(Some(ns_is("y")), None)])],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(x(), xa(), false);
    r.expect_peer(ns("z"), xa(), false);
    validate("default ns label", &c, Proto::Tcp, 80, &r);
}

#[test]
fn should_enforce_policy_based_on_namespace_selector_with_match_expressions_using_default_ns_label()
 {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-ns-y-match-selector-for-immutable-ns-label",
        Selector::label("pod", "a"),
        (false, true),
        vec![],
        vec![to(vec![pods(
            Some(ns_expr(Requirement::NotIn(NSKEY.into(), vec!["y".into()]))),
            None,
        )])],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(xa(), ns("y"), false);
    validate("NotIn y", &c, Proto::Tcp, 80, &r);
}

/// The UDP and SCTP contexts' cases (upstream names them as the TCP ones,
/// under "NetworkPolicy between server and client using UDP" / "SCTP").
fn default_deny_ingress(proto: Proto) {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-all",
        Selector::all(),
        (true, false),
        vec![],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(any(), x(), false);
    validate("default-deny-ingress", &c, proto, 80, &r);
}

fn policy_based_on_ports(proto: Proto) {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-ingress-on-port-81-ns-x",
        Selector::label("pod", "a"),
        (true, false),
        vec![Rule {
            peers: vec![pods(Some(ns_is("y")), None)],
            ports: vec![port(proto, 81)],
        }],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_peer(x(), xa(), false);
    r.expect_peer(ns("z"), xa(), false);
    validate("port 81 from y", &c, proto, 81, &r);
}

fn only_from_a_pod_in_a_different_namespace(proto: Proto) {
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "allow-ns-y-pod-a-via-namespace-pod-selector",
        Selector::label("pod", "a"),
        (true, false),
        vec![from(vec![pods(
            Some(ns_is("y")),
            Some(Selector::label("pod", "a")),
        )])],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    r.expect("y/a", "x/a", true);
    validate("from y/a", &c, proto, 80, &r);
}

#[test]
fn udp_should_support_a_default_deny_ingress_policy() {
    default_deny_ingress(Proto::Udp);
}

#[test]
fn udp_should_enforce_policy_based_on_ports() {
    policy_based_on_ports(Proto::Udp);
}

#[test]
fn udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector()
 {
    only_from_a_pod_in_a_different_namespace(Proto::Udp);
}

#[test]
fn sctp_should_support_a_default_deny_ingress_policy() {
    default_deny_ingress(Proto::Sctp);
}

#[test]
fn sctp_should_enforce_policy_based_on_ports() {
    policy_based_on_ports(Proto::Sctp);
}

#[test]
fn sctp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector()
 {
    only_from_a_pod_in_a_different_namespace(Proto::Sctp);
}
