//! Helpers shared by the kube-proxy truth-table tests.
#![allow(dead_code, unused_imports)]

pub use std::collections::BTreeSet;
pub use std::net::Ipv4Addr;
pub use std::time::Duration;

pub use lb::table::{Lookup, Verdict};
pub use lb::{Endpoint, NodeFacts, PortName, Proto, ServicePort, ServiceTable};

pub const NODE_IP: &str = "192.168.0.2";
pub const NODE_IP_ALT: &str = "192.168.1.2";
pub const EXTERNAL_CLIENT: &str = "203.0.113.2";
pub const EXTERNAL_CLIENT_BLOCKED: &str = "203.0.113.130";
pub const POD: &str = "10.0.0.2";

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn facts(node_ips: &[&str]) -> NodeFacts {
    NodeFacts {
        name: "test-node".into(),
        zone: None,
        node_ips: node_ips.iter().map(|s| ip(s)).collect(),
        cluster_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
    }
}

/// A service port builder in upstream's terms.
pub fn svc(
    ns: &str,
    name: &str,
    port_name: &str,
    proto: Proto,
    cip: &str,
    port: u16,
) -> ServicePort {
    ServicePort::cluster_ip(
        PortName {
            namespace: ns.into(),
            service: name.into(),
            port: port_name.into(),
            proto,
        },
        ip(cip),
        port,
    )
}

/// `(address, port, local)` ready endpoints.
pub fn ready(eps: &[(&str, u16, bool)]) -> Vec<Endpoint> {
    eps.iter()
        .map(|(a, p, l)| Endpoint::ready(ip(a), *p, *l))
        .collect()
}

/// An endpoint with explicit conditions (ready, serving, terminating).
pub fn cond(a: &str, (r, s, t): (bool, bool, bool), local: bool) -> Endpoint {
    Endpoint {
        ready: r,
        serving: s,
        terminating: t,
        ..Endpoint::ready(ip(a), 80, local)
    }
}

pub fn flow(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> lb::Flow {
    lb::Flow {
        src,
        dst,
        proto,
        sport,
        dport,
    }
}

/// (name, source, destination, protocol, port, expected output, masq).
pub type Row = (
    &'static str,
    &'static str,
    &'static str,
    Proto,
    u16,
    &'static str,
    bool,
);

pub fn outcome(
    t: &ServiceTable,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: Proto,
    port: u16,
) -> (String, bool) {
    match t.lookup(src, dst, proto.number(), port) {
        Lookup::NotService => (String::new(), false),
        Lookup::Reject(_) => ("REJECT".into(), false),
        Lookup::Drop(_) => ("DROP".into(), false),
        Lookup::Service(c) => {
            let masq: BTreeSet<bool> = c
                .set
                .backends
                .iter()
                .map(|b| c.masquerade || b.ip == src)
                .collect();
            assert_eq!(masq.len(), 1, "one masquerade answer for every candidate");
            let mut v: Vec<String> = c.set.backends.iter().map(|b| b.to_string()).collect();
            v.sort();
            (v.join(", "), masq.contains(&true))
        }
    }
}

pub fn run(test: &str, t: &ServiceTable, rows: &[Row]) {
    let mut failures = Vec::new();
    for &(name, src, dst, proto, port, want, want_masq) in rows {
        let (src, dst) = (ip(src), ip(dst));
        let (got, masq) = outcome(t, src, dst, proto, port);
        let want_masq = want_masq && !matches!(want, "REJECT" | "DROP" | "");
        if got != want || masq != want_masq {
            failures.push(format!(
                "{name}: want {want:?} masq {want_masq}, got {got:?} masq {masq}"
            ));
            continue;
        }
        // decide(): only candidates, and each of them for some client port.
        let mut seen = BTreeSet::new();
        for sport in 1000..1400u16 {
            match t.decide(&flow(src, dst, proto.number(), sport, port)) {
                Verdict::Dnat {
                    backend,
                    masquerade,
                    ..
                } => {
                    seen.insert(backend.to_string());
                    assert_eq!(masquerade, masq, "{test}/{name}");
                }
                Verdict::Reject(_) => assert_eq!(want, "REJECT", "{test}/{name}"),
                Verdict::Drop(_) => assert_eq!(want, "DROP", "{test}/{name}"),
                Verdict::NotService => assert_eq!(want, "", "{test}/{name}"),
            }
        }
        if !want.is_empty() && !matches!(want, "REJECT" | "DROP") {
            let all: BTreeSet<String> = want.split(", ").map(String::from).collect();
            if seen != all {
                failures.push(format!("{name}: decide reached {seen:?} of {all:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{test}:\n{}", failures.join("\n"));
}

pub const TCP: Proto = Proto::Tcp;
