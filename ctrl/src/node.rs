//! What Sluice learns from one Kubernetes Node: its pod CIDRs, the address
//! its VTEP listens on, and its VTEP MAC, from Sluice's annotations or, as
//! an option, Flannel's.
//!
//! Flannel's vxlan backend publishes (flannel `pkg/subnet/kube`):
//! `flannel.alpha.coreos.com/backend-data` = `{"VNI":1,"VtepMAC":"..."}`,
//! `flannel.alpha.coreos.com/public-ip`, `.../backend-type` = `vxlan`,
//! `.../kube-subnet-manager` = `true`. Sluice publishes its own keys under
//! `sluice.dev/`, and can write Flannel's too so that both kinds of node
//! share a cluster during a migration.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use encap::MacAddr;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};

/// Sluice's annotation for the node's VTEP MAC.
pub const SLUICE_VTEP_MAC: &str = "sluice.dev/vtep-mac";
/// Sluice's annotation for the node's VTEP (public) IP.
pub const SLUICE_PUBLIC_IP: &str = "sluice.dev/public-ip";
/// Sluice's annotation for the VNI.
pub const SLUICE_VNI: &str = "sluice.dev/vni";
/// Flannel: `{"VNI":1,"VtepMAC":"..."}`.
pub const FLANNEL_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
/// Flannel: the node's public IP (its VTEP address).
pub const FLANNEL_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
/// Flannel: the backend type (`vxlan`).
pub const FLANNEL_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
/// Flannel: set by the kube subnet manager.
pub const FLANNEL_KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// Flannel's backend data for vxlan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlannelBackendData {
    /// The VNI.
    #[serde(rename = "VNI")]
    pub vni: u32,
    /// The VTEP MAC.
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// A node as the routing snapshot needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRoute {
    /// Node name.
    pub name: String,
    /// Its VTEP address (public IP annotation, else InternalIP).
    pub ip: Ipv4Addr,
    /// Its VTEP MAC.
    pub vtep_mac: MacAddr,
    /// The VNI it announced (Flannel's backend data, or Sluice's).
    pub vni: u32,
    /// Its pod CIDRs (IPv4).
    pub pod_cidrs: Vec<Ipv4Net>,
}

/// Why a node is left out of the snapshot. Each names the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeProblem {
    /// No `spec.podCIDRs` / `spec.podCIDR` (yet): the node controller has
    /// not allocated one.
    NoPodCidr {
        /// Node name.
        node: String,
    },
    /// No VTEP MAC annotation (the node's agent has not started yet).
    NoVtep {
        /// Node name.
        node: String,
    },
    /// No usable IPv4 address.
    NoAddress {
        /// Node name.
        node: String,
    },
    /// An annotation or field that does not parse.
    Garbage {
        /// Node name.
        node: String,
        /// The annotation key or field.
        field: String,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

impl NodeProblem {
    /// The node it is about.
    pub fn node(&self) -> &str {
        match self {
            NodeProblem::NoPodCidr { node }
            | NodeProblem::NoVtep { node }
            | NodeProblem::NoAddress { node }
            | NodeProblem::Garbage { node, .. } => node,
        }
    }
}

impl std::fmt::Display for NodeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeProblem::NoPodCidr { node } => write!(f, "node {node}: no pod CIDR, ignored"),
            NodeProblem::NoVtep { node } => {
                write!(f, "node {node}: no VTEP MAC annotation yet, ignored")
            }
            NodeProblem::NoAddress { node } => write!(f, "node {node}: no IPv4 address, ignored"),
            NodeProblem::Garbage {
                node,
                field,
                value,
                reason,
            } => write!(
                f,
                "node {node}: {field} = {value:?}: {reason}; node ignored"
            ),
        }
    }
}

/// Which annotations to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AnnotationPolicy {
    /// Also read Flannel's annotations (for nodes still running Flannel).
    pub flannel: bool,
}

fn garbage(node: &str, field: &str, value: &str, reason: impl Into<String>) -> NodeProblem {
    NodeProblem::Garbage {
        node: node.to_string(),
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Reads the routing facts of `node`.
pub fn node_route(node: &Node, policy: AnnotationPolicy) -> Result<NodeRoute, NodeProblem> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let ann = node.metadata.annotations.as_ref().unwrap_or(&empty);
    let spec = node.spec.as_ref();
    // Pod CIDRs: spec.podCIDRs (dual-stack lists), else spec.podCIDR.
    let mut raw: Vec<&str> = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default();
    if raw.is_empty()
        && let Some(c) = spec.and_then(|s| s.pod_cidr.as_deref())
    {
        raw.push(c);
    }
    let mut pod_cidrs = Vec::new();
    for c in raw {
        if c.contains(':') {
            continue; // IPv6: not routed yet
        }
        let net: Ipv4Net = c
            .parse()
            .map_err(|_| garbage(&name, "spec.podCIDRs", c, "not an IPv4 CIDR"))?;
        pod_cidrs.push(net.trunc());
    }
    if pod_cidrs.is_empty() {
        return Err(NodeProblem::NoPodCidr { node: name });
    }
    // VTEP MAC and VNI: Sluice's annotations first, then Flannel's.
    let flannel_data = if policy.flannel {
        ann.get(FLANNEL_BACKEND_DATA)
            .map(|v| {
                serde_json::from_str::<FlannelBackendData>(v).map_err(|e| {
                    garbage(
                        &name,
                        FLANNEL_BACKEND_DATA,
                        v,
                        format!("not Flannel backend data: {e}"),
                    )
                })
            })
            .transpose()?
    } else {
        None
    };
    let (mac_src, mac_str) = match (ann.get(SLUICE_VTEP_MAC), &flannel_data) {
        (Some(m), _) => (SLUICE_VTEP_MAC, m.as_str()),
        (None, Some(d)) => (FLANNEL_BACKEND_DATA, d.vtep_mac.as_str()),
        (None, None) => return Err(NodeProblem::NoVtep { node: name }),
    };
    let vtep_mac: MacAddr = mac_str
        .parse()
        .map_err(|_| garbage(&name, mac_src, mac_str, "not a MAC address"))?;
    if vtep_mac.is_multicast() || vtep_mac == MacAddr([0; 6]) {
        return Err(garbage(&name, mac_src, mac_str, "not a unicast MAC"));
    }
    let vni = match (ann.get(SLUICE_VNI), &flannel_data) {
        (Some(v), _) => v
            .parse::<u32>()
            .ok()
            .filter(|v| *v <= 0x00ff_ffff)
            .ok_or_else(|| garbage(&name, SLUICE_VNI, v, "not a 24-bit VNI"))?,
        (None, Some(d)) => d.vni,
        (None, None) => 1,
    };
    // Address: public-ip annotations, else the first InternalIP.
    let public = ann
        .get(SLUICE_PUBLIC_IP)
        .map(|v| (SLUICE_PUBLIC_IP, v))
        .or_else(|| {
            policy
                .flannel
                .then(|| ann.get(FLANNEL_PUBLIC_IP).map(|v| (FLANNEL_PUBLIC_IP, v)))
                .flatten()
        });
    let ip = match public {
        Some((key, v)) => v
            .parse()
            .map_err(|_| garbage(&name, key, v, "not an IPv4 address"))?,
        None => node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| {
                a.iter()
                    .filter(|x| x.type_ == "InternalIP")
                    .find_map(|x| x.address.parse::<Ipv4Addr>().ok())
            })
            .ok_or_else(|| NodeProblem::NoAddress { node: name.clone() })?,
    };
    Ok(NodeRoute {
        name,
        ip,
        vtep_mac,
        vni,
        pod_cidrs,
    })
}

/// A Node object with a name, an InternalIP, an optional pod CIDR and
/// annotations: what tests and benchmarks feed the sync and the fake API
/// server.
#[cfg(any(test, feature = "fake-apiserver"))]
pub fn node_object(name: &str, ip: &str, cidr: Option<&str>, ann: &[(&str, &str)]) -> Node {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                ann.iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: cidr.map(String::from),
            pod_cidrs: cidr.map(|c| vec![c.to_string()]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                address: ip.into(),
                type_: "InternalIP".into(),
            }]),
            ..NodeStatus::default()
        }),
    }
}

/// The annotations this node publishes about itself: Sluice's, and
/// Flannel's when `flannel` is set (exactly what flanneld writes for its
/// vxlan backend).
pub fn own_annotations(
    ip: Ipv4Addr,
    vtep_mac: MacAddr,
    vni: u32,
    flannel: bool,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(SLUICE_VTEP_MAC.to_string(), vtep_mac.to_string());
    m.insert(SLUICE_PUBLIC_IP.to_string(), ip.to_string());
    m.insert(SLUICE_VNI.to_string(), vni.to_string());
    if flannel {
        let data = FlannelBackendData {
            vni,
            vtep_mac: vtep_mac.to_string(),
        };
        m.insert(
            FLANNEL_BACKEND_DATA.to_string(),
            serde_json::to_string(&data).unwrap_or_default(),
        );
        m.insert(FLANNEL_PUBLIC_IP.to_string(), ip.to_string());
        m.insert(FLANNEL_BACKEND_TYPE.to_string(), "vxlan".to_string());
        m.insert(FLANNEL_KUBE_SUBNET_MANAGER.to_string(), "true".to_string());
    }
    m
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn node(name: &str, ip: &str, cidr: Option<&str>, ann: &[(&str, &str)]) -> Node {
        node_object(name, ip, cidr, ann)
    }

    #[test]
    fn sluice_annotations_and_internal_ip() {
        let n = node(
            "n1",
            "192.168.1.5",
            Some("10.244.3.0/24"),
            &[(SLUICE_VTEP_MAC, "0a:58:00:00:00:05")],
        );
        let r = node_route(&n, AnnotationPolicy::default()).unwrap();
        assert_eq!(r.ip, Ipv4Addr::new(192, 168, 1, 5));
        assert_eq!(r.vtep_mac, MacAddr([0x0a, 0x58, 0, 0, 0, 5]));
        assert_eq!(r.vni, 1);
        assert_eq!(
            r.pod_cidrs,
            vec!["10.244.3.0/24".parse::<Ipv4Net>().unwrap()]
        );
    }

    #[test]
    fn flannel_annotations_only_when_enabled() {
        let ann = [
            (
                FLANNEL_BACKEND_DATA,
                r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}"#,
            ),
            (FLANNEL_PUBLIC_IP, "172.16.0.9"),
            (FLANNEL_BACKEND_TYPE, "vxlan"),
        ];
        let n = node("f1", "192.168.1.9", Some("10.244.9.0/24"), &ann);
        assert_eq!(
            node_route(&n, AnnotationPolicy::default()),
            Err(NodeProblem::NoVtep { node: "f1".into() })
        );
        let r = node_route(&n, AnnotationPolicy { flannel: true }).unwrap();
        assert_eq!(r.ip, Ipv4Addr::new(172, 16, 0, 9), "public-ip wins");
        assert_eq!(r.vtep_mac, MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 1]));
        // What Sluice writes with the Flannel option reads back the same.
        let own = own_annotations(r.ip, r.vtep_mac, 1, true);
        let pairs: Vec<(&str, &str)> = own.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut flannel_only = node("f2", "192.168.1.9", Some("10.244.9.0/24"), &pairs);
        flannel_only
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .retain(|k, _| k.starts_with("flannel."));
        let back = node_route(&flannel_only, AnnotationPolicy { flannel: true }).unwrap();
        assert_eq!((back.ip, back.vtep_mac, back.vni), (r.ip, r.vtep_mac, 1));
        assert_eq!(
            own.get(FLANNEL_BACKEND_DATA).map(String::as_str),
            Some(r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}"#)
        );
    }

    #[test]
    fn problems_name_the_node_and_field() {
        let n = node(
            "bare",
            "192.168.1.5",
            None,
            &[(SLUICE_VTEP_MAC, "0a:58:00:00:00:05")],
        );
        assert_eq!(
            node_route(&n, AnnotationPolicy::default()),
            Err(NodeProblem::NoPodCidr {
                node: "bare".into()
            })
        );
        let n = node(
            "junk",
            "192.168.1.5",
            Some("10.244.3.0/24"),
            &[(SLUICE_VTEP_MAC, "zz")],
        );
        let e = node_route(&n, AnnotationPolicy::default()).unwrap_err();
        assert!(
            e.to_string().contains("junk") && e.to_string().contains(SLUICE_VTEP_MAC),
            "{e}"
        );
        let n = node(
            "junk2",
            "192.168.1.5",
            Some("10.244.3.0/24"),
            &[(FLANNEL_BACKEND_DATA, "{not json")],
        );
        let e = node_route(&n, AnnotationPolicy { flannel: true }).unwrap_err();
        assert!(
            matches!(&e, NodeProblem::Garbage { node, field, .. } if node == "junk2" && field == FLANNEL_BACKEND_DATA)
        );
        let n = node(
            "v6",
            "fd00::1",
            Some("10.244.3.0/24"),
            &[(SLUICE_VTEP_MAC, "0a:58:00:00:00:05")],
        );
        assert_eq!(
            node_route(&n, AnnotationPolicy::default()),
            Err(NodeProblem::NoAddress { node: "v6".into() })
        );
    }
}
