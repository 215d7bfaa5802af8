//! The cluster as the dataplane needs it: every other node's routing facts,
//! and what changed from one view to the next (logged at info level).

use std::collections::BTreeMap;

use crate::node::NodeRoute;

/// Every routable node except this one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// By node name.
    pub peers: BTreeMap<String, NodeRoute>,
}

/// One difference between two views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A peer appeared.
    Added(NodeRoute),
    /// A peer went away.
    Removed(String),
    /// A peer's facts changed (new VTEP MAC, IP or pod CIDR).
    Changed {
        /// Before.
        old: NodeRoute,
        /// After.
        new: NodeRoute,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(n) => write!(
                f,
                "peer added: {} ip {} vtep {} cidrs {:?}",
                n.name, n.ip, n.vtep_mac, n.pod_cidrs
            ),
            Change::Removed(n) => write!(f, "peer removed: {n}"),
            Change::Changed { old, new } => write!(
                f,
                "peer changed: {} ip {} -> {}, vtep {} -> {}, cidrs {:?} -> {:?}",
                new.name, old.ip, new.ip, old.vtep_mac, new.vtep_mac, old.pod_cidrs, new.pod_cidrs
            ),
        }
    }
}

impl ClusterView {
    /// What changed from `self` to `new`, by node name.
    pub fn diff(&self, new: &ClusterView) -> Vec<Change> {
        let mut out = Vec::new();
        for (name, n) in &new.peers {
            match self.peers.get(name) {
                None => out.push(Change::Added(n.clone())),
                Some(o) if o != n => out.push(Change::Changed {
                    old: o.clone(),
                    new: n.clone(),
                }),
                Some(_) => {}
            }
        }
        for name in self.peers.keys() {
            if !new.peers.contains_key(name) {
                out.push(Change::Removed(name.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encap::MacAddr;

    fn r(name: &str, last: u8) -> NodeRoute {
        NodeRoute {
            name: name.into(),
            ip: [192, 168, 1, last].into(),
            vtep_mac: MacAddr([2, 0, 0, 0, 0, last]),
            vni: 1,
            pod_cidrs: vec![format!("10.244.{last}.0/24").parse().unwrap()],
        }
    }

    #[test]
    fn diff_names_added_removed_and_changed() {
        let a = ClusterView {
            peers: [("a".into(), r("a", 1)), ("b".into(), r("b", 2))].into(),
        };
        let mut b2 = r("b", 2);
        b2.vtep_mac = MacAddr([2, 0, 0, 0, 0, 9]);
        let b = ClusterView {
            peers: [("b".into(), b2.clone()), ("c".into(), r("c", 3))].into(),
        };
        let d = a.diff(&b);
        assert_eq!(
            d,
            vec![
                Change::Changed {
                    old: r("b", 2),
                    new: b2
                },
                Change::Added(r("c", 3)),
                Change::Removed("a".into()),
            ]
        );
        assert!(a.diff(&a).is_empty());
    }
}
