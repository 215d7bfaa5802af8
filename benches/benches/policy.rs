//! NetworkPolicy verdicts, the first packet's decision alone (what a
//! worker asks once per new flow), with 0, 100 and 10,000 rules selecting
//! the destination pod (issue 18 item 4; goal: <= 200 ns at 10,000):
//! - `policy_decide/allowed/N`: a peer the last rules allow;
//! - `policy_decide/denied/N`: a peer no rule names (every candidate
//!   looked at, the worst case of the index);
//! - `policy_compile/N`: the tables built from the objects (the control
//!   side; 200 peer pods).
//!
//! `cargo bench -p sluice-benches --bench policy`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::Criterion;
use policy::{
    Cluster, Namespace, Peer, Pod, Policy, PolicyPort, Port, Proto, Rule, Selector, Tables,
};

const SIZES: [u32; 3] = [0, 100, 10_000];
const PEERS: u32 = 200;

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 10)) + i)
}

/// One namespace, the target pod and 200 peer pods labelled `id`; `n`
/// rules selecting the target, rule k allowing peer k % 200 on TCP port
/// 1000 + k % 50.
fn cluster(n: u32) -> Cluster {
    let mut c = Cluster::default();
    c.namespaces.push(Namespace {
        name: "bench".into(),
        labels: Default::default(),
    });
    let pod = |name: String, id: String, a: Ipv4Addr| Pod {
        namespace: "bench".into(),
        name,
        labels: [("id".to_string(), id)].into_iter().collect(),
        ip: Some(a),
        host_network: false,
        ports: Vec::new(),
    };
    c.pods.push(pod(
        "target".into(),
        "target".into(),
        Ipv4Addr::new(10, 244, 9, 9),
    ));
    for i in 0..PEERS {
        c.pods.push(pod(format!("peer-{i}"), i.to_string(), ip(i)));
    }
    let rules: Vec<Rule> = (0..n)
        .map(|k| Rule {
            peers: vec![Peer::Pods {
                namespaces: None,
                pods: Some(Selector::label("id", &(k % PEERS).to_string())),
            }],
            ports: vec![PolicyPort {
                proto: Proto::Tcp,
                port: Port::Range(1000 + (k % 50) as u16, 1000 + (k % 50) as u16),
            }],
        })
        .collect();
    if n > 0 {
        c.policies.push(Policy {
            namespace: "bench".into(),
            name: "many".into(),
            select: Selector::label("id", "target"),
            isolates_ingress: true,
            isolates_egress: false,
            ingress: rules,
            egress: Vec::new(),
        });
    }
    c
}

fn benches(c: &mut Criterion) {
    let target = Ipv4Addr::new(10, 244, 9, 9);
    let mut g = c.benchmark_group("policy_decide");
    for n in SIZES {
        let t = Tables::build(&cluster(n), |p| p.name == "target", &[]);
        // The last rule's peer and port: allowed (Open with no policy).
        let k = n.saturating_sub(1);
        let (peer, port) = (ip(k % PEERS), 1000 + (k % 50) as u16);
        assert!(t.decide(peer, target, 6, port).allowed());
        g.bench_function(format!("allowed/{n}"), |b| {
            b.iter(|| black_box(t.decide(black_box(peer), target, 6, port)))
        });
        let stranger = Ipv4Addr::new(10, 244, 200, 1);
        assert_eq!(t.decide(stranger, target, 6, 80).allowed(), n == 0);
        g.bench_function(format!("denied/{n}"), |b| {
            b.iter(|| black_box(t.decide(black_box(stranger), target, 6, 80)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("policy_compile");
    g.sample_size(10);
    for n in SIZES {
        let cl = cluster(n);
        g.bench_function(format!("{n}"), |b| {
            b.iter(|| black_box(Tables::build(&cl, |p| p.name == "target", &[])))
        });
    }
    g.finish();
}

criterion::criterion_group!(policy_benches, benches);
criterion::criterion_main!(policy_benches);
