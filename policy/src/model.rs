//! NetworkPolicy objects as the compiler reads them (networking/v1 and the
//! Namespaces and Pods they select), built by `ctrl` from the API objects
//! or a static cluster file. Field for field the API's meaning, with its
//! defaults already applied: a missing `protocol` is TCP, `policyTypes`
//! is filled in, a missing selector is `None`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Labels of a Namespace or Pod.
pub type Labels = BTreeMap<String, String>;

/// The label every Namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A `LabelSelectorRequirement`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key In (values)`: the label is set to one of the values.
    In(String, Vec<String>),
    /// `key NotIn (values)`: the label is absent or set to none of them.
    NotIn(String, Vec<String>),
    /// `key Exists`.
    Exists(String),
    /// `key DoesNotExist`.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A `LabelSelector`: `matchLabels` and `matchExpressions`, ANDed. The
/// empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// `matchLabels`.
    pub labels: Vec<(String, String)>,
    /// `matchExpressions`.
    pub exprs: Vec<Requirement>,
}

impl Selector {
    /// The empty selector (everything).
    pub fn all() -> Selector {
        Selector::default()
    }

    /// `matchLabels` of one pair.
    pub fn label(k: &str, v: &str) -> Selector {
        Selector {
            labels: vec![(k.into(), v.into())],
            exprs: Vec::new(),
        }
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
            && self.exprs.iter().all(|r| r.matches(labels))
    }
}

/// A transport protocol a policy port names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    /// The protocol of IP protocol number `n`, if a policy can name it.
    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// A `NetworkPolicyPort`'s port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Port {
    /// No port: every port of the protocol.
    Any,
    /// `port` (and `endPort`, inclusive): `Range(p, p)` for a single port.
    Range(u16, u16),
    /// A named container port, resolved on each destination pod.
    Named(String),
}

/// A `NetworkPolicyPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyPort {
    /// `protocol` (default TCP).
    pub proto: Proto,
    /// `port` / `endPort`.
    pub port: Port,
}

/// A `NetworkPolicyPeer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector`: pods matching `pods`
    /// (all if `None`) in the namespaces matching `namespaces` (the
    /// policy's own namespace if `None`).
    Pods {
        /// `namespaceSelector`.
        namespaces: Option<Selector>,
        /// `podSelector`.
        pods: Option<Selector>,
    },
    /// `ipBlock`: `cidr` less the `except` ranges (which deny nothing:
    /// another peer may still allow them).
    Block {
        /// `cidr`.
        cidr: Ipv4Net,
        /// `except`.
        except: Vec<Ipv4Net>,
    },
}

impl Peer {
    /// A peer that matches no address: what an unusable peer (an IPv6 or
    /// malformed `ipBlock`, a selector with an unknown operator) becomes,
    /// so that the rule fails closed instead of widening to "any peer".
    pub fn nothing() -> Peer {
        let none = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 32).unwrap_or_default();
        Peer::Block {
            cidr: none,
            except: vec![none],
        }
    }
}

impl PolicyPort {
    /// A port that matches no traffic (a named port no pod can have): what
    /// an unusable port entry becomes, so the rule fails closed.
    pub fn nothing() -> PolicyPort {
        PolicyPort {
            proto: Proto::Tcp,
            port: Port::Named(String::new()),
        }
    }
}

/// An ingress or egress rule: the peers (`from` / `to`; empty: any
/// address) and the ports (empty: any port of any protocol).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `from` or `to`.
    pub peers: Vec<Peer>,
    /// `ports`.
    pub ports: Vec<PolicyPort>,
}

/// A NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `podSelector` (within its namespace).
    pub select: Selector,
    /// `policyTypes` contains Ingress (default: always).
    pub isolates_ingress: bool,
    /// `policyTypes` contains Egress (default: when `egress` is present).
    pub isolates_egress: bool,
    /// `ingress`.
    pub ingress: Vec<Rule>,
    /// `egress`.
    pub egress: Vec<Rule>,
}

/// A Namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Its labels ([`NAMESPACE_NAME_LABEL`] is implied).
    pub labels: Labels,
}

impl Namespace {
    /// The labels a selector sees: the namespace's, and its name under
    /// [`NAMESPACE_NAME_LABEL`] (the API server sets it on every
    /// namespace; a cluster file may omit it).
    pub fn selector_labels(&self) -> Labels {
        let mut l = self.labels.clone();
        l.insert(NAMESPACE_NAME_LABEL.into(), self.name.clone());
        l
    }
}

/// A named container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    /// `name`.
    pub name: String,
    /// `protocol`.
    pub proto: Proto,
    /// `containerPort`.
    pub port: u16,
}

/// A Pod as policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its IP (none yet: selects nothing, matches nothing).
    pub ip: Option<Ipv4Addr>,
    /// Runs in the node's network namespace: its address is the node's,
    /// and no policy isolates it.
    pub host_network: bool,
    /// Its named container ports.
    pub ports: Vec<NamedPort>,
}

impl Pod {
    /// The port number `name` resolves to on this pod for `proto`.
    pub fn named_port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

/// Everything a node's policy depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Every Namespace.
    pub namespaces: Vec<Namespace>,
    /// Every Pod (on every node: peers are pods anywhere).
    pub pods: Vec<Pod>,
    /// Every NetworkPolicy.
    pub policies: Vec<Policy>,
}

impl Cluster {
    /// A digest of the model, independent of the order its objects came
    /// in (list order, watch events, label order in a selector): two nodes
    /// with one digest read the same objects. `sluice status` prints it
    /// as `policy_input`, so nodes' views can be compared, and a test can
    /// tell when a node has read what it wrote. FNV-1a over a canonical
    /// text of every object.
    pub fn digest(&self) -> u64 {
        fn canon(s: &Selector) -> Selector {
            let mut s = s.clone();
            s.labels.sort();
            s
        }
        fn rules(rs: &[Rule]) -> Vec<Rule> {
            let mut rs = rs.to_vec();
            for r in &mut rs {
                for p in &mut r.peers {
                    if let Peer::Pods { namespaces, pods } = p {
                        *namespaces = namespaces.as_ref().map(canon);
                        *pods = pods.as_ref().map(canon);
                    }
                }
            }
            rs
        }
        let mut lines: Vec<String> = Vec::new();
        for n in &self.namespaces {
            lines.push(format!("ns {} {:?}", n.name, n.selector_labels()));
        }
        for p in &self.pods {
            let mut ports: Vec<String> = p.ports.iter().map(|n| format!("{n:?}")).collect();
            ports.sort();
            lines.push(format!(
                "pod {}/{} {:?} {:?} {} {ports:?}",
                p.namespace, p.name, p.labels, p.ip, p.host_network
            ));
        }
        for p in &self.policies {
            let mut p = p.clone();
            p.select = canon(&p.select);
            p.ingress = rules(&p.ingress);
            p.egress = rules(&p.egress);
            lines.push(format!("np {}/{} {p:?}", p.namespace, p.name));
        }
        lines.sort();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for l in &lines {
            for b in l.bytes().chain(std::iter::once(b'\n')) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: "x".into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            host_network: false,
            ports: Vec::new(),
        }
    }

    #[test]
    fn digest_ignores_order_and_sees_every_change() {
        let sel = |l: &[(&str, &str)]| Selector {
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            exprs: Vec::new(),
        };
        let np = |s: Selector| Policy {
            namespace: "x".into(),
            name: "p".into(),
            select: s,
            isolates_ingress: true,
            isolates_egress: false,
            ingress: Vec::new(),
            egress: Vec::new(),
        };
        let a = Cluster {
            namespaces: vec![Namespace {
                name: "x".into(),
                labels: Labels::new(),
            }],
            pods: vec![pod("a", &[("pod", "a")]), pod("b", &[("pod", "b")])],
            policies: vec![np(sel(&[("k", "1"), ("j", "2")]))],
        };
        let mut b = a.clone();
        b.pods.reverse();
        b.policies[0].select = sel(&[("j", "2"), ("k", "1")]);
        // The implied name label, written or not.
        b.namespaces[0]
            .labels
            .insert(NAMESPACE_NAME_LABEL.into(), "x".into());
        assert_eq!(a.digest(), b.digest());
        let mut c = a.clone();
        c.pods[1].labels.insert("pod".into(), "c".into());
        assert_ne!(a.digest(), c.digest(), "a label flip");
        let mut d = a.clone();
        d.pods[0].ip = None;
        assert_ne!(a.digest(), d.digest(), "a pod's address");
        let mut e = a.clone();
        e.policies[0].isolates_egress = true;
        assert_ne!(a.digest(), e.digest(), "a policy's types");
        assert_ne!(a.digest(), Cluster::default().digest());
    }
}
