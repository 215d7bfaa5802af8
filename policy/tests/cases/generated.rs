// Generated cases in cyclonus's categories; see generated.rs. Included by
// generated.rs (the compiled tables) and by
// dataplane/tests/netpol_pipeline.rs (the real worker pipeline on two
// nodes), each with its own `validate`.

use ipnet::Ipv4Net;
use policy::{Cluster, Peer, PolicyPort, Port, Proto, Requirement, Rule, Selector};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn pick<'a, T>(rng: &mut StdRng, v: &'a [T]) -> &'a T {
    &v[rng.random_range(0..v.len())]
}

fn selector(rng: &mut StdRng, key: &str, values: &[&str]) -> Selector {
    let v = pick(rng, values).to_string();
    let w = pick(rng, values).to_string();
    match rng.random_range(0..7) {
        0 => Selector::all(),
        1 | 2 => Selector::label(key, &v),
        3 => Selector {
            labels: vec![],
            exprs: vec![Requirement::In(key.into(), vec![v, w])],
        },
        4 => Selector {
            labels: vec![],
            exprs: vec![Requirement::NotIn(key.into(), vec![v])],
        },
        5 => Selector {
            labels: vec![],
            exprs: vec![Requirement::Exists("team".into())],
        },
        _ => Selector {
            labels: vec![],
            exprs: vec![Requirement::DoesNotExist("team".into())],
        },
    }
}

fn peer(rng: &mut StdRng) -> Peer {
    match rng.random_range(0..5) {
        0 => pods(None, Some(selector(rng, "pod", &PODS))),
        1 => pods(Some(selector(rng, "ns", &NS)), None),
        2 => pods(
            Some(selector(rng, "ns", &NS)),
            Some(selector(rng, "pod", &PODS)),
        ),
        3 => {
            // A pod's /32, or a node's pod CIDR less one pod.
            let (n, p) = (rng.random_range(0..3), rng.random_range(0..3));
            Peer::Block {
                cidr: Ipv4Net::new(ip(n, p), 32).unwrap(),
                except: vec![],
            }
        }
        _ => {
            let (n, p) = (rng.random_range(0..3), rng.random_range(0..3));
            Peer::Block {
                cidr: Ipv4Net::new(ip(n, 0), 24).unwrap(),
                except: vec![Ipv4Net::new(ip(n, p), 32).unwrap()],
            }
        }
    }
}

fn port(rng: &mut StdRng) -> PolicyPort {
    let proto = *pick(rng, &[Proto::Tcp, Proto::Tcp, Proto::Udp]);
    let port = match rng.random_range(0..6) {
        0 => Port::Any,
        1 => Port::Range(80, 80),
        2 => Port::Range(81, 81),
        3 => Port::Range(79, 80),
        4 => Port::Named(format!(
            "serve-{}-{}",
            pick(rng, &[80, 81]),
            pick(rng, &["tcp", "udp"])
        )),
        _ => Port::Range(81, 90),
    };
    PolicyPort { proto, port }
}

fn rule(rng: &mut StdRng) -> Rule {
    let peers = (0..rng.random_range(0..3)).map(|_| peer(rng)).collect();
    let ports = (0..rng.random_range(0..3)).map(|_| port(rng)).collect();
    Rule { peers, ports }
}

fn random_policy(rng: &mut StdRng, i: usize) -> policy::Policy {
    let types = *pick(rng, &[(true, false), (false, true), (true, true)]);
    let rules = |on: bool, rng: &mut StdRng| {
        if on {
            (0..rng.random_range(0..3)).map(|_| rule(rng)).collect()
        } else {
            Vec::new()
        }
    };
    let ingress = rules(types.0, rng);
    let egress = rules(types.1, rng);
    let ns = *pick(rng, &NS);
    policy(
        ns,
        &format!("p{i}"),
        selector(rng, "pod", &PODS),
        types,
        ingress,
        egress,
    )
}

/// Flips a label on a random pod or namespace (cyclonus's "action"
/// category).
fn flip(rng: &mut StdRng, c: &mut Cluster) {
    if rng.random_bool(0.5) {
        let i = rng.random_range(0..c.pods.len());
        let p = &mut c.pods[i];
        if p.labels.remove("team").is_none() {
            p.labels.insert("team".into(), "red".into());
        }
        if rng.random_bool(0.3) {
            let to = pick(rng, &PODS).to_string();
            p.labels.insert("pod".into(), to);
        }
    } else {
        let i = rng.random_range(0..c.namespaces.len());
        let to = pick(rng, &NS).to_string();
        c.namespaces[i].labels.insert("ns".into(), to);
    }
}

#[test]
fn generated_cases_match_the_independent_model() {
    let mut rng = StdRng::seed_from_u64(18);
    let mut isolating = 0;
    let mut some_denied = 0;
    for case in 0..300 {
        let mut c = cluster();
        for i in 0..rng.random_range(1..4) {
            let p = random_policy(&mut rng, i);
            c.policies.push(p);
        }
        for _ in 0..rng.random_range(0..3) {
            flip(&mut rng, &mut c);
        }
        if rng.random_bool(0.2) {
            // An update: one policy's rules replaced.
            let i = rng.random_range(0..c.policies.len());
            c.policies[i].ingress = vec![rule(&mut rng)];
        }
        isolating += usize::from(!c.policies.is_empty());
        for proto in [Proto::Tcp, Proto::Udp] {
            for port in [80, 81] {
                let want = model(&c, proto, port);
                some_denied += usize::from(want.0.iter().flatten().any(|v| !v));
                validate(&format!("case {case}: {c:?}"), &c, proto, port, &want);
            }
        }
    }
    // The generator reaches denials and allowances alike.
    assert_eq!(isolating, 300);
    assert!(some_denied > 600, "{some_denied}");
}

/// The except of an ipBlock is not a deny: a second peer allowing the
/// excepted pod wins (bug 1 of ../shared/NETPOL.md).
#[test]
fn an_except_is_not_a_deny() {
    let mut c = cluster();
    // The whole pod network less y/b, or y/b by selector.
    let rule = Rule {
        peers: vec![
            Peer::Block {
                cidr: "10.244.0.0/16".parse().unwrap(),
                except: vec![Ipv4Net::new(ip(1, 1), 32).unwrap()],
            },
            pods(
                Some(Selector::label("ns", "y")),
                Some(Selector::label("pod", "b")),
            ),
        ],
        ports: vec![],
    };
    c.policies.push(policy(
        "x",
        "cidr-except",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    validate("except", &c, Proto::Tcp, 80, &r);
    // Without the second peer, y/b is excepted.
    c.policies[0].ingress[0].peers.pop();
    r.expect("y/b", "x/a", false);
    validate("except alone", &c, Proto::Tcp, 80, &r);
}

/// A UDP-only rule admits no TCP, yet isolates the pod; endPort is
/// inclusive.
#[test]
fn protocols_and_port_ranges_are_exact() {
    let mut c = cluster();
    let rule = Rule {
        peers: vec![],
        ports: vec![PolicyPort {
            proto: Proto::Udp,
            port: Port::Range(70, 80),
        }],
    };
    c.policies.push(policy(
        "x",
        "udp-70-80",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut deny = Reach::all(true);
    deny.expect_all_ingress("x/a", false);
    validate("udp rule, tcp 80", &c, Proto::Tcp, 80, &deny);
    validate("udp rule, udp 80", &c, Proto::Udp, 80, &Reach::all(true));
    validate("udp rule, udp 81", &c, Proto::Udp, 81, &deny);
}
