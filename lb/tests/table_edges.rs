//! What the kube-proxy tables leave out, found by cargo-mutants (its second
//! lb run): which destinations concern the table as ports sharing an
//! address come and go, the table's accessors, the names counters and
//! `sluice services` print, and hairpin under session affinity.

mod common;
use common::*;

use lb::{AffinityTable, Backend, LbDrop, LbReject};

#[test]
fn concerns_follows_frontends_shared_by_two_ports() {
    let f = facts(&[NODE_IP]);
    let t = ServiceTable::new(f.clone(), []);
    assert!(t.is_empty());
    assert_eq!(t.len(), 0);
    // Empty table, but service CIDRs: their addresses still concern it
    // (an unallocated ClusterIP is dropped), nothing else does.
    assert!(t.concerns(ip("172.30.9.9")));
    assert!(!t.concerns(ip(NODE_IP)), "no NodePorts yet");
    assert!(!t.concerns(ip("198.51.100.7")));
    let no_cidrs = ServiceTable::new(
        NodeFacts {
            service_cidrs: Vec::new(),
            ..f.clone()
        },
        [],
    );
    assert!(!no_cidrs.concerns(ip("172.30.9.9")), "nothing at all");

    // Two ports share an externalIP; one has a NodePort.
    let mut a = svc("ns", "a", "", Proto::Tcp, "172.30.0.1", 80);
    a.external_ips = vec![ip("198.51.100.7")];
    a.node_port = Some(30001);
    let mut b = svc("ns", "b", "", Proto::Udp, "172.30.0.2", 53);
    b.external_ips = vec![ip("198.51.100.7")];
    let t = t.update([a.clone(), b.clone()], &[]);
    assert_eq!((t.len(), t.is_empty()), (2, false));
    assert!(t.concerns(ip("198.51.100.7")));
    assert!(t.concerns(ip(NODE_IP)), "NodePorts exist: the node IP");
    assert!(!t.concerns(ip("203.0.113.9")));
    assert!(t.id_of(&a.name).is_some() && t.id_of(&b.name).is_some());
    assert_ne!(t.id_of(&a.name), t.id_of(&b.name));
    assert_eq!(
        t.cluster_ips(),
        [ip("172.30.0.1"), ip("172.30.0.2")].into_iter().collect()
    );
    // Removing one keeps the shared address (counted, not flagged).
    let t = t.update([], std::slice::from_ref(&a.name));
    assert!(t.concerns(ip("198.51.100.7")), "b still holds it");
    assert!(!t.concerns(ip(NODE_IP)), "no NodePort left");
    assert_eq!(t.id_of(&a.name), None);
    assert_eq!(t.cluster_ips(), [ip("172.30.0.2")].into_iter().collect());
    // Without service CIDRs, and with another port left in the table, the
    // last holder's removal takes the address out.
    let other = svc("ns", "other", "", Proto::Tcp, "172.30.0.3", 80);
    let no_cidrs = ServiceTable::new(
        NodeFacts {
            service_cidrs: Vec::new(),
            ..f
        },
        [b.clone(), other],
    );
    let no_cidrs = no_cidrs.update([], std::slice::from_ref(&b.name));
    assert!(
        !no_cidrs.concerns(ip("198.51.100.7")),
        "the last holder gone"
    );
    assert!(no_cidrs.concerns(ip("172.30.0.3")));
    assert_eq!(no_cidrs.len(), 1);
}

/// Two ports claiming the very same frontend (externalIPs are not kept
/// unique by the API server): removing one leaves the other serving it.
#[test]
fn a_frontend_two_ports_claim_survives_one_removal() {
    let f = NodeFacts {
        service_cidrs: Vec::new(),
        ..facts(&[NODE_IP])
    };
    let claim = |name: &str, cip: &str| {
        let mut s = svc("ns", name, "", Proto::Tcp, cip, 80);
        s.external_ips = vec![ip("198.51.100.8")];
        s.endpoints = ready(&[(POD, 8080, true)]);
        s
    };
    let (a, b) = (claim("a", "172.30.0.1"), claim("b", "172.30.0.2"));
    let t = ServiceTable::new(f, [a.clone(), b.clone()]);
    let t = t.update([], std::slice::from_ref(&a.name));
    assert!(t.concerns(ip("198.51.100.8")), "b still claims it");
    assert!(t.is_frontend(ip("198.51.100.8"), 6, 80));
    match t.lookup(ip(EXTERNAL_CLIENT), ip("198.51.100.8"), 6, 80) {
        Lookup::Service(c) => assert_eq!(c.port.spec.name, b.name),
        other => panic!("{other:?}"),
    }
}

#[test]
fn generations_count_updates_and_facts_are_kept() {
    let f = facts(&[NODE_IP]);
    let t = ServiceTable::new(f.clone(), []);
    let g = t.generation();
    let t = t.update([svc("ns", "a", "", Proto::Tcp, "172.30.0.1", 80)], &[]);
    let t = t.update([svc("ns", "b", "", Proto::Tcp, "172.30.0.2", 80)], &[]);
    assert_eq!(t.generation(), g + 2);
    assert_eq!(t.facts(), &f);
}

#[test]
fn names_as_counters_and_listings_print_them() {
    assert_eq!(Proto::from_number(6), Some(Proto::Tcp));
    assert_eq!(Proto::from_number(17), Some(Proto::Udp));
    assert_eq!(Proto::from_number(132), Some(Proto::Sctp));
    assert_eq!(Proto::from_number(1), None);
    for p in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
        assert_eq!(Proto::from_number(p.number()), Some(p));
    }
    assert_eq!(
        [Proto::Tcp.name(), Proto::Udp.name(), Proto::Sctp.name()],
        ["TCP", "UDP", "SCTP"]
    );
    let named = PortName {
        namespace: "kube-system".into(),
        service: "kube-dns".into(),
        port: "dns-tcp".into(),
        proto: Proto::Tcp,
    };
    assert_eq!(named.to_string(), "kube-system/kube-dns:dns-tcp/TCP");
    let unnamed = PortName {
        port: String::new(),
        ..named
    };
    assert_eq!(unnamed.to_string(), "kube-system/kube-dns/TCP");
    let drops: Vec<&str> = LbDrop::ALL.iter().map(|d| d.name()).collect();
    assert_eq!(
        drops,
        [
            "svc_no_local_endpoints",
            "svc_source_range",
            "svc_unallocated_cluster_ip"
        ]
    );
    let rejects: Vec<&str> = LbReject::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(
        rejects,
        ["svc_reject_no_endpoints", "svc_reject_unserved_port"]
    );
}

/// A pod reaching itself through its Service is masqueraded (kube-proxy's
/// hairpin rule), also when session affinity brings it back to itself.
#[test]
fn hairpin_under_session_affinity_is_masqueraded() {
    let mut s = svc("ns", "self", "", Proto::Tcp, "172.30.0.5", 80);
    s.endpoints = ready(&[(POD, 8080, true)]);
    s.affinity = Some(Duration::from_secs(60));
    let t = ServiceTable::new(facts(&[NODE_IP]), [s]);
    let mut aff = AffinityTable::new(64);
    for (i, sport) in [40000u16, 40001, 40002].into_iter().enumerate() {
        let v = t.decide_with_affinity(
            &mut aff,
            Duration::from_secs(1 + i as u64),
            &flow(ip(POD), ip("172.30.0.5"), 6, sport, 80),
        );
        match v {
            Verdict::Dnat {
                backend,
                masquerade,
                ..
            } => {
                assert_eq!(
                    backend,
                    Backend {
                        ip: ip(POD),
                        port: 8080
                    }
                );
                assert!(masquerade, "flow {i}: hairpin is masqueraded");
            }
            other => panic!("flow {i}: {other:?}"),
        }
    }
    assert!(!aff.is_empty());
}
