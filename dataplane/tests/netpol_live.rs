//! NetworkPolicy changes reaching live flows, through the real pipeline
//! on two nodes (`dataplane::policy_rig`): a deny added while a TCP
//! connection and a UDP flow (through a ClusterIP) are live cuts each at
//! its next packet, and removing it lets them through again; a flow
//! already decided by an allowing policy is decided again when the policy
//! changes (no scan: at its next packet); a pod whose labels are not known
//! yet never passes a packet while policies exist, and one selected by a
//! deny-all policy stays isolated from its first packet.

#[path = "../../policy/tests/common/mod.rs"]
mod common;

use std::net::Ipv4Addr;

use common::{cluster, ip, pods, policy};
use dataplane::counters::Reason;
use dataplane::policy_rig::{TwoNodes, cluster_ip, segment};
use policy::{Rule, Selector};

const ACK: u8 = 0x10;

fn addrs() -> Vec<Ipv4Addr> {
    (0..9).map(|i| ip(i / 3, i % 3)).collect()
}

/// Whether one segment (or datagram) from `from` reaches `to` as sent
/// (`dst`: `to` or its ClusterIP).
fn gets_through(
    rig: &mut TwoNodes,
    (from, sport): (Ipv4Addr, u16),
    (to, dst, dport): (Ipv4Addr, Ipv4Addr, u16),
    proto: u8,
) -> bool {
    let got = rig.send(from, to, segment(from, dst, proto, sport, dport, ACK));
    !got.is_empty()
}

fn deny_ingress(ns: &str, pod: &str) -> policy::Policy {
    policy(
        ns,
        &format!("deny-{pod}"),
        Selector::label("pod", pod),
        (true, false),
        vec![],
        vec![],
    )
}

#[test]
fn a_new_deny_cuts_live_flows_at_their_next_packet_and_its_removal_restores_them() {
    let ips = addrs();
    let mut rig = TwoNodes::new(&ips);
    let mut c = cluster();
    rig.set_policy(&c);
    // TCP x/a -> x/b:80 (across nodes); UDP x/c -> y/b's ClusterIP:81.
    let (xa, xb, xc, yb) = (ip(0, 0), ip(0, 1), ip(0, 2), ip(1, 1));
    let tcp_c = (xa, 40000);
    let tcp_s = (xb, xb, 80);
    let udp_c = (xc, 40001);
    let udp_s = (yb, cluster_ip(4), 81);
    for _ in 0..3 {
        assert!(gets_through(&mut rig, tcp_c, tcp_s, 6));
        assert!(gets_through(&mut rig, (xb, 80), (xa, xa, 40000), 6));
        assert!(gets_through(&mut rig, udp_c, udp_s, 17));
    }
    c.policies.push(deny_ingress("x", "b"));
    c.policies.push(deny_ingress("y", "b"));
    rig.set_policy(&c);
    assert!(!gets_through(&mut rig, tcp_c, tcp_s, 6), "TCP cut at once");
    assert!(!gets_through(&mut rig, udp_c, udp_s, 17), "UDP cut at once");
    assert_eq!(rig.dropped(Reason::PolicyIngress), 2);
    // The denied-flow log names the flow and the policy.
    let log = &rig.worker(1).policy.denied;
    assert!(
        log.iter()
            .any(|d| d.key.src == xa && d.key.dst == xb && d.key.dport == 80),
        "{log:?}"
    );
    c.policies.clear();
    rig.set_policy(&c);
    assert!(gets_through(&mut rig, tcp_c, tcp_s, 6), "restored");
    assert!(gets_through(&mut rig, udp_c, udp_s, 17), "restored");
    assert!(rig.no_leak());
}

#[test]
fn a_flow_an_allowing_policy_decided_is_decided_again_when_policy_changes() {
    let ips = addrs();
    let mut rig = TwoNodes::new(&ips);
    let mut c = cluster();
    // x/b accepts x/a only.
    let allow = |c: &mut policy::Cluster| {
        c.policies.clear();
        c.policies.push(policy(
            "x",
            "b-from-a",
            Selector::label("pod", "b"),
            (true, false),
            vec![Rule {
                peers: vec![pods(None, Some(Selector::label("pod", "a")))],
                ports: vec![],
            }],
            vec![],
        ));
    };
    allow(&mut c);
    rig.set_policy(&c);
    let (xa, xb, xc) = (ip(0, 0), ip(0, 1), ip(0, 2));
    for sport in [40000, 40001] {
        assert!(
            rig.probe(xa, xb, xb, 6, sport, 80).back,
            "allowed, replies too"
        );
    }
    assert!(!rig.probe(xc, xb, xb, 6, 40002, 80).there, "x/c is not a");
    let rechecked = rig.worker(1).policy.rechecked;
    // The rule now names c: the live flow from a is cut at its next
    // packet, its reply too; c gets in.
    c.policies[0].ingress[0].peers = vec![pods(None, Some(Selector::label("pod", "c")))];
    rig.set_policy(&c);
    assert!(!gets_through(&mut rig, (xa, 40000), (xb, xb, 80), 6));
    assert!(
        !gets_through(&mut rig, (xb, 80), (xa, xa, 40001), 6),
        "reply cut"
    );
    assert!(rig.worker(1).policy.rechecked >= rechecked + 2);
    assert!(rig.probe(xc, xb, xb, 6, 40003, 80).back);
    // Back as it was: a's flows pass again.
    allow(&mut c);
    rig.set_policy(&c);
    assert!(gets_through(&mut rig, (xa, 40000), (xb, xb, 80), 6));
    assert!(rig.no_leak());
}

#[test]
fn a_pod_is_isolated_before_its_first_packet() {
    let mut ips = addrs();
    // A tenth pod the policy feed has not seen yet.
    let new = Ipv4Addr::new(10, 244, 1, 99);
    ips.push(new);
    let mut rig = TwoNodes::new(&ips);
    let mut c = cluster();
    c.policies.push(policy(
        "x",
        "deny-all",
        Selector::label("app", "locked"),
        (true, true),
        vec![],
        vec![],
    ));
    rig.set_policy(&c);
    let (xa, yb) = (ip(0, 0), ip(1, 1));
    assert!(!rig.probe(new, yb, yb, 6, 40000, 80).there, "unknown: held");
    assert!(
        !rig.probe(xa, new, new, 17, 40001, 80).there,
        "unknown: held"
    );
    assert_eq!(rig.dropped(Reason::PolicyPending), 2);
    // Its labels arrive: selected by the deny-all policy, it stays
    // isolated both ways.
    let mut p = c.pods[0].clone();
    p.name = "new".into();
    p.ip = Some(new);
    p.labels.insert("app".into(), "locked".into());
    c.pods.push(p);
    rig.set_policy(&c);
    assert!(!rig.probe(new, yb, yb, 6, 40002, 80).there);
    assert!(!rig.probe(xa, new, new, 17, 40003, 80).there);
    assert_eq!(rig.dropped(Reason::PolicyEgress), 1);
    assert_eq!(rig.dropped(Reason::PolicyIngress), 1);
    // Unlabelled, it is open.
    c.pods.last_mut().unwrap().labels.remove("app");
    rig.set_policy(&c);
    assert!(rig.probe(new, yb, yb, 6, 40004, 80).back);
    // And without any policy, nothing is checked at all.
    c.policies.clear();
    c.pods.pop();
    rig.set_policy(&c);
    assert!(rig.probe(new, yb, yb, 6, 40005, 80).back);
    assert!(rig.no_leak());
}
