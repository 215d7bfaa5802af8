//! NetworkPolicy through the real worker pipeline on two nodes
//! (`dataplane::policy_rig`: one worker per node over fake ports, VXLAN
//! between their uplinks, a ClusterIP per pod): the 48 upstream cases of
//! network_policy.go (TCP, UDP and SCTP) and the 300 generated
//! cyclonus-style cases, the same
//! files the policy crate runs on its compiled tables, each probed from
//! every pod to every other over its protocol and port, through the pod
//! IP and through the pod's ClusterIP (DNAT on the client's node, the
//! verdict for the backend; SCTP through the pod IP only, as Sluice does
//! not balance SCTP). A probe is a flow's first packet and, when it
//! arrives, the reply: an allowed flow must get both through, a denied one
//! neither. The expected tables come from the upstream cases or from the
//! independent evaluation (`policy::harness::allows`), never from the
//! compiler.

#[path = "../../policy/tests/common/mod.rs"]
mod common;

use std::net::Ipv4Addr;

use dataplane::policy_rig::{TwoNodes, cluster_ip};

/// The nine pods' addresses, in `common`'s order.
fn addrs() -> Vec<Ipv4Addr> {
    (0..9).map(|i| common::ip(i / 3, i % 3)).collect()
}

/// Probes every pair (but a pod to itself, which never leaves the pod)
/// through the pipeline and compares with `want`.
fn through_pipeline(
    case: &str,
    c: &policy::Cluster,
    proto: policy::Proto,
    port: u16,
    want: &common::Reach,
) {
    let ips = addrs();
    let mut rig = TwoNodes::new(&ips);
    rig.set_policy(c);
    let mut wrong = Vec::new();
    let mut sport = 20000u16;
    for f in 0..9 {
        for t in 0..9 {
            if f == t {
                continue;
            }
            // SCTP is not balanced (conntrack tracks TCP and UDP ports
            // only): through the pod IP alone.
            let vias: &[(&str, Ipv4Addr)] = if proto == policy::Proto::Sctp {
                &[("pod IP", ips[t])]
            } else {
                &[("pod IP", ips[t]), ("ClusterIP", cluster_ip(t))]
            };
            for &(via, dst) in vias {
                sport += 1;
                let p = rig.probe(ips[f], ips[t], dst, proto.number(), sport, port);
                let w = want.0[f][t];
                if p.there != w || p.back != w {
                    wrong.push(format!(
                        "{} -> {} via {via}: {p:?} (want {w})",
                        common::name(f),
                        common::name(t)
                    ));
                }
            }
        }
    }
    assert!(rig.no_leak(), "{case}: a buffer leaked");
    assert!(
        wrong.is_empty(),
        "{case}, {proto:?}/{port}, pipeline: {} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

mod upstream {
    use super::common::*;
    #[allow(unused_imports)]
    use super::through_pipeline as validate;

    include!("../../policy/tests/cases/upstream.rs");
}

mod generated {
    use super::common::*;
    #[allow(unused_imports)]
    use super::through_pipeline as validate;

    include!("../../policy/tests/cases/generated.rs");
}
