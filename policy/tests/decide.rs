//! What a verdict says beyond allowed or not: the policy and rule that
//! allowed it (the first in order, whatever the index looks at first), the
//! node's own traffic, open directions, and ipBlock /32 peers found by
//! address.

mod common;

use common::*;
use ipnet::Ipv4Net;
use policy::{Peer, Proto, Rule, RuleId, Selector, Side, Tables};

#[test]
fn the_first_allowing_rule_is_named() {
    let mut c = cluster();
    // Rule 0 allows any peer on TCP 81; rule 1 names x/b on any port;
    // rule 2 names the second node's /24 (the b pods) on any port.
    let rules = vec![
        Rule {
            peers: vec![],
            ports: vec![tcp(81)],
        },
        Rule {
            peers: vec![pods(None, Some(Selector::label("pod", "b")))],
            ports: vec![],
        },
        Rule {
            peers: vec![Peer::Block {
                cidr: Ipv4Net::new(ip(1, 1), 24).unwrap().trunc(),
                except: vec![],
            }],
            ports: vec![],
        },
    ];
    c.policies.push(policy(
        "x",
        "first",
        Selector::label("pod", "a"),
        (true, false),
        rules,
        vec![],
    ));
    let t = Tables::build(&c, |_| true, &[NODE]);
    let (xa, xb, yb) = (ip(0, 0), ip(0, 1), ip(1, 1));
    let rule = |r| Side::Allowed(RuleId { policy: 0, rule: r });
    assert_eq!(
        t.decide(xb, xa, 6, 81).ingress,
        rule(0),
        "rule 0 before rule 1"
    );
    assert_eq!(t.decide(xb, xa, 6, 80).ingress, rule(1));
    assert_eq!(t.decide(yb, xa, 6, 80).ingress, rule(2));
    assert_eq!(t.decide(yb, xa, 6, 81).ingress, rule(0));
    assert_eq!(t.decide(ip(2, 2), xa, 6, 80).ingress, Side::Denied);
    assert_eq!(t.decide(ip(2, 2), xa, 6, 80).egress, Side::Open);
    assert_eq!(t.decide(NODE, xa, 6, 80).ingress, Side::FromNode);
    assert_eq!(t.policy_name(0), Some(("x", "first")));
    assert_eq!(t.pod(xa).map(|p| p.isolated()), Some((true, false)));
    assert_eq!(t.pod(xa).map(|p| p.entries()), Some((3, 0)));
    // ICMP (no ports): only a rule without ports matches it.
    assert_eq!(t.decide(xb, xa, 1, 0).ingress, rule(1));
    assert_eq!(t.decide(ip(2, 2), xa, 1, 0).ingress, Side::Denied);
}

#[test]
fn a_pod_slash_32_with_an_except_of_itself_matches_nothing() {
    let mut c = cluster();
    let one = Ipv4Net::new(ip(1, 1), 32).unwrap();
    let rule = Rule {
        peers: vec![Peer::Block {
            cidr: one,
            except: vec![one],
        }],
        ports: vec![],
    };
    c.policies.push(policy(
        "x",
        "nothing",
        Selector::label("pod", "a"),
        (true, false),
        vec![rule],
        vec![],
    ));
    let mut r = Reach::all(true);
    r.expect_all_ingress("x/a", false);
    validate("/32 less itself", &c, Proto::Tcp, 80, &r);
}
