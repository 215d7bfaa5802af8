//! NetworkPolicy in the daemon: where the policy model comes from (the
//! cluster file, or the API server's NetworkPolicies, Namespaces and Pods
//! through ctrl's policy thread), how it is compiled for this node's pods
//! (those in its pod CIDR; the node's own addresses always allowed in) and
//! published with the next snapshot (a worker sees a whole update or
//! none), and what `sluice policy`, `sluice status` and `/metrics` say.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use policy::{Dir, Tables};

use super::{Attached, Control, Ctx, StatsView};
use crate::enforce::{Hits, PolicyHits};

/// The control state's policy part.
#[derive(Debug, Default)]
pub(super) struct Feed {
    /// What the snapshots carry.
    pub tables: Arc<Tables>,
    /// Ids given to policies (namespace, name): kept while the daemon
    /// runs, so counters by id mean one policy.
    ids: HashMap<(String, String), u32>,
    generation: u32,
    /// When the tables were last compiled, and how long it took.
    pub at: Option<Instant>,
    compile_ms: f64,
    /// Policies and pods in the last model.
    policies: usize,
    pods: usize,
    /// Problems its objects had.
    pub problems: Vec<String>,
    /// The last model's [`policy::Cluster::digest`], set once its tables
    /// are published.
    input: u64,
    /// The last model, kept while some of its pods have no address yet:
    /// compiled again when such a pod is attached here under its name.
    waiting: Option<policy::Cluster>,
    /// A source exists (cluster file or API); the tables are not loaded
    /// until its first model arrives.
    pub expected: bool,
}

impl Feed {
    /// No tables yet; `expected`: a source will send them.
    pub fn expecting(expected: bool) -> Feed {
        Feed {
            expected,
            ..Feed::default()
        }
    }

    /// Compiles `c` for this node (with the addresses of the pods
    /// `attached` here under their names) and keeps it for the next
    /// snapshot.
    fn compile(
        &mut self,
        c: &policy::Cluster,
        attached: &BTreeMap<Ipv4Addr, Attached>,
        pod_cidr: ipnet::Ipv4Net,
        node_ips: &[Ipv4Addr],
    ) {
        let start = Instant::now();
        let c = &*with_attached(c, attached);
        let mut ids = Vec::with_capacity(c.policies.len());
        for p in &c.policies {
            let next = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
            let id = *self
                .ids
                .entry((p.namespace.clone(), p.name.clone()))
                .or_insert(next);
            ids.push(id);
        }
        self.generation = self.generation.wrapping_add(1);
        let t = Tables::build_with_ids(
            c,
            |p| p.ip.is_some_and(|ip| pod_cidr.contains(&ip)),
            node_ips,
            &ids,
        )
        .with_generation(self.generation);
        self.tables = Arc::new(t);
        self.compile_ms = start.elapsed().as_secs_f64() * 1000.0;
        self.at = Some(Instant::now());
        self.policies = c.policies.len();
        self.pods = c.pods.len();
    }
}

/// Starts the policy thread when the model comes from the API server
/// (the cluster file's watcher feeds [`apply`] itself).
pub(super) fn start(ctx: &Arc<Ctx>, cfg: &crate::config::Config) -> std::io::Result<()> {
    if let Some(k) = &cfg.kubernetes {
        let weak = Arc::downgrade(ctx);
        let h = ctrl::policy_sync::spawn(super::sync_config(cfg, k), move |c, problems| {
            apply(&weak, c, problems);
        })?;
        if let Ok(mut s) = ctx.policy_sync.lock() {
            *s = Some(h);
        }
    }
    Ok(())
}

/// `c` with the addresses of its pods that have none yet (kubelet writes
/// status.podIP after the CNI ADD) taken from the pods attached here
/// under their names (sluice-cni passes them): a new pod is known, and
/// its policy enforced, from its first packet.
fn with_attached<'a>(
    c: &'a policy::Cluster,
    attached: &BTreeMap<Ipv4Addr, Attached>,
) -> Cow<'a, policy::Cluster> {
    if c.pods.iter().all(|p| p.ip.is_some()) {
        return Cow::Borrowed(c);
    }
    let named: HashMap<&str, Ipv4Addr> = attached
        .iter()
        .filter_map(|(ip, a)| Some((a.rec.k8s.as_deref()?, *ip)))
        .collect();
    if named.is_empty() {
        return Cow::Borrowed(c);
    }
    let mut c = c.clone();
    for p in c.pods.iter_mut().filter(|p| p.ip.is_none()) {
        if let Some(ip) = named.get(format!("{}/{}", p.namespace, p.name).as_str()) {
            p.ip = Some(*ip);
        }
    }
    Cow::Owned(c)
}

/// Compiles the kept model again (pods attached or detached under their
/// names); false if no model waits for addresses. The caller publishes.
pub(super) fn recompile(ctl: &mut Control) -> bool {
    let Some(model) = ctl.policy.waiting.take() else {
        return false;
    };
    let (cidr, ips) = (ctl.cfg.pod_cidr, [ctl.cfg.ip, ctl.cfg.gateway_ip()]);
    ctl.policy.compile(&model, &ctl.pods, cidr, &ips);
    ctl.policy.waiting = Some(model);
    true
}

/// A pod was attached under its name: if the model has it without an
/// address, compiled again and published before `pods add` answers.
pub(super) fn pods_changed(ctx: &Ctx) {
    let Ok(mut ctl) = ctx.control.lock() else {
        return;
    };
    if recompile(&mut ctl) {
        ctl.publish();
    }
}

/// A new policy model: compiled, then published with the next snapshot.
pub(super) fn apply(weak: &Weak<Ctx>, c: &policy::Cluster, problems: &[String]) {
    let Some(ctx) = weak.upgrade() else {
        return;
    };
    let Ok(mut ctl) = ctx.control.lock() else {
        return;
    };
    let (cidr, ips) = (ctl.cfg.pod_cidr, [ctl.cfg.ip, ctl.cfg.gateway_ip()]);
    let ctl = &mut *ctl;
    ctl.policy.compile(c, &ctl.pods, cidr, &ips);
    ctl.policy.waiting = c.pods.iter().any(|p| p.ip.is_none()).then(|| c.clone());
    ctl.policy.problems = problems.to_vec();
    tracing::info!(
        "network policy: {} policies over {} pods, {} problems; compiled in {:.1} ms, generation {}",
        c.policies.len(),
        c.pods.len(),
        problems.len(),
        ctl.policy.compile_ms,
        ctl.policy.generation
    );
    for p in problems {
        tracing::warn!("network policy: {p}");
    }
    ctl.publish();
    // After publishing: a node that shows the digest enforces the model.
    ctl.policy.input = c.digest();
}

/// The policy part of `sluice status` and `/readyz`: whether the tables
/// are loaded (`None`: no source) and the text.
pub(super) fn status(ctx: &Ctx) -> (Option<bool>, String) {
    let Ok(ctl) = ctx.control.lock() else {
        return (None, String::new());
    };
    let f = &ctl.policy;
    let mut text = format!(
        "policy_generation {}\npolicies {}\npolicy_pods {}\npolicy_local_pods {}\npolicy_compile_ms {:.1}\npolicy_age_ms {}\npolicy_input {:016x}\n",
        f.generation,
        f.policies,
        f.pods,
        f.tables.pod_ips().len(),
        f.compile_ms,
        f.at.map_or("never".into(), |a| a.elapsed().as_millis().to_string()),
        f.input
    );
    for p in &f.problems {
        let _ = writeln!(text, "policy_problem {p}");
    }
    let ready = f.expected.then_some(f.at.is_some());
    drop(ctl);
    if let Some(s) = ctx
        .policy_sync
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|h| h.status()))
    {
        let _ = write!(
            text,
            "policy_source kubernetes\npolicy_in_sync {}\npolicy_api_errors {}\npolicy_objects {} networkpolicies {} namespaces {} pods\n",
            s.in_sync, s.errors, s.objects.0, s.objects.1, s.objects.2
        );
        if let Some(e) = &s.last_error {
            let _ = writeln!(text, "policy_last_error {}", e.replace('\n', " "));
        }
    }
    (ready, text)
}

/// The compiled tables the workers enforce now.
fn tables(ctx: &Ctx) -> Arc<Tables> {
    ctx.control
        .lock()
        .map(|c| c.policy.tables.clone())
        .unwrap_or_default()
}

/// Each policy's counters, summed over the workers, for the listing and
/// the metrics alike: `f(namespace, name, direction, rule, counters)`,
/// with `rule` `None` for what was denied while the policy isolated the
/// pod.
fn each_hit(
    t: &Tables,
    views: &[StatsView],
    mut f: impl FnMut(&str, &str, Dir, Option<usize>, Hits),
) {
    for (id, h) in sum(views).iter().enumerate() {
        let Some((ns, name)) = u32::try_from(id).ok().and_then(|i| t.policy_name(i)) else {
            continue;
        };
        for (d, rules) in [(Dir::Ingress, &h.ingress), (Dir::Egress, &h.egress)] {
            for (r, x) in rules.iter().enumerate() {
                f(ns, name, d, Some(r), *x);
            }
        }
        for (d, x) in [(Dir::Ingress, h.denied[0]), (Dir::Egress, h.denied[1])] {
            f(ns, name, d, None, x);
        }
    }
}

fn sum(views: &[StatsView]) -> Vec<PolicyHits> {
    let mut out: Vec<PolicyHits> = Vec::new();
    for v in views {
        if out.len() < v.policy.by_policy.len() {
            out.resize(v.policy.by_policy.len(), PolicyHits::default());
        }
        for (a, b) in out.iter_mut().zip(&v.policy.by_policy) {
            for (x, y) in [(&mut a.ingress, &b.ingress), (&mut a.egress, &b.egress)] {
                if x.len() < y.len() {
                    x.resize(y.len(), Hits::default());
                }
                for (h, g) in x.iter_mut().zip(y) {
                    h.flows += g.flows;
                    h.packets += g.packets;
                }
            }
            for (h, g) in a.denied.iter_mut().zip(&b.denied) {
                h.flows += g.flows;
                h.packets += g.packets;
            }
        }
    }
    out
}

fn dir_name(d: Dir) -> &'static str {
    match d {
        Dir::Egress => "egress",
        Dir::Ingress => "ingress",
    }
}

/// `sluice policy [POD_IP]`: each local pod's isolation and compiled
/// rules (or one pod's), and the counters of each policy and rule.
pub(super) fn listing(ctx: &Ctx, views: &[StatsView], only: Option<Ipv4Addr>) -> String {
    let t = tables(ctx);
    let mut out = format!(
        "ok\ngeneration {} enforcing {}\n",
        t.generation(),
        t.enforcing()
    );
    for ip in t.pod_ips() {
        if only.is_some_and(|o| o != ip) {
            continue;
        }
        let Some(p) = t.pod(ip) else { continue };
        let (i, e) = p.isolated();
        let _ = writeln!(out, "pod {ip} isolated_ingress {i} isolated_egress {e}");
        for egress in [false, true] {
            for (id, peers, ports) in p.describe(egress) {
                let (ns, name) = t.policy_name(id.policy).unwrap_or(("?", "?"));
                let _ = writeln!(
                    out,
                    "  {} {ns}/{name} rule {} peers {peers} ports {ports}",
                    if egress { "egress" } else { "ingress" },
                    id.rule
                );
            }
        }
    }
    if only.is_some_and(|o| !t.knows(o)) {
        let _ = writeln!(
            out,
            "pod {} unknown (not a local pod the policy source has listed)",
            only.unwrap_or(Ipv4Addr::UNSPECIFIED)
        );
    }
    each_hit(&t, views, |ns, name, d, rule, x| {
        let _ = match rule {
            Some(r) => writeln!(
                out,
                "hits {ns}/{name} {} rule {r} allowed_flows {} allowed_packets {}",
                dir_name(d),
                x.flows,
                x.packets
            ),
            None if x.packets > 0 => writeln!(
                out,
                "hits {ns}/{name} {} denied_flows {} denied_packets {}",
                dir_name(d),
                x.flows,
                x.packets
            ),
            None => Ok(()),
        };
    });
    let (decided, rechecked, evicted) = views.iter().fold((0, 0, 0), |a, v| {
        (
            a.0 + v.policy.decided,
            a.1 + v.policy.rechecked,
            a.2 + v.policy.evicted,
        )
    });
    let _ = writeln!(
        out,
        "flows_decided {decided}\nflows_rechecked {rechecked}\nflows_evicted {evicted}"
    );
    out
}

/// `sluice policy denied [AFTER]`: the sampled denied flows each worker
/// logged, oldest first, as `denied SEQ worker W ...` lines (`AFTER`:
/// only those with a larger `SEQ` than given for that worker, as
/// `W:SEQ,...`, which `--follow` passes back).
pub(super) fn denied(ctx: &Ctx, views: &[StatsView], after: &HashMap<usize, u64>) -> String {
    let t = tables(ctx);
    let mut out = String::from("ok\n");
    for (w, v) in views.iter().enumerate() {
        let mut log: Vec<_> = v.policy.denied.clone();
        log.sort_by_key(|d| d.seq);
        for d in log {
            if after.get(&w).is_some_and(|&a| d.seq <= a) {
                continue;
            }
            let policy = d
                .policy
                .and_then(|p| t.policy_name(p))
                .map_or("-".to_string(), |(n, p)| format!("{n}/{p}"));
            let _ = writeln!(
                out,
                "denied {} worker {w} at_ms {} {} proto {} {}:{} -> {}:{} policy {policy}",
                d.seq,
                d.at_ms,
                dir_name(d.dir),
                d.key.proto,
                d.key.src,
                d.key.sport,
                d.key.dst,
                d.key.dport
            );
        }
    }
    out
}

/// The policy part of `/metrics`.
pub(super) fn metrics(ctx: &Ctx, views: &[StatsView]) -> String {
    let t = tables(ctx);
    let mut out = String::from(
        "# HELP sluice_policy_rule_packets Packets a NetworkPolicy rule allowed (flows: decided by it).\n# TYPE sluice_policy_rule_packets counter\n",
    );
    let mut denied = String::from(
        "# HELP sluice_policy_denied_packets Packets denied while this policy isolated the pod.\n# TYPE sluice_policy_denied_packets counter\n",
    );
    each_hit(&t, views, |ns, name, d, rule, x| {
        let _ = match rule {
            Some(r) => writeln!(
                out,
                "sluice_policy_rule_packets{{namespace=\"{ns}\",policy=\"{name}\",direction=\"{}\",rule=\"{r}\"}} {}",
                dir_name(d),
                x.packets
            ),
            None => writeln!(
                denied,
                "sluice_policy_denied_packets{{namespace=\"{ns}\",policy=\"{name}\",direction=\"{}\"}} {}",
                dir_name(d),
                x.packets
            ),
        };
    });
    out + &denied
}
