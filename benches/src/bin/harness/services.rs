//! Services in the harness: a pod sending to N Services' ClusterIPs (one
//! address each, UDP port 80, one endpoint each on the remote node), DNAT
//! and VXLAN out of up0 to the remote sink. Three nodes under test, the
//! same topology and traffic:
//!
//! - the kernel path (Flannel's vxlan + MASQUERADE) with kube-proxy's
//!   iptables-mode rules for the N services (`iptables-restore`, through
//!   the host's iptables, nf_tables-backed on Debian as on most current
//!   distributions): KUBE-SERVICES, one KUBE-SVC and one KUBE-SEP chain per
//!   service, the masquerade mark, KUBE-POSTROUTING, and the filter hooks;
//! - the kernel path with kube-proxy's nftables-mode ruleset
//!   (pkg/proxy/nftables/proxier.go): the `service-ips` verdict map, a
//!   service and an endpoint chain per service, `cluster-ips` and the
//!   filter-side checks;
//! - Sluice reading the same Services from a cluster file.
//!
//! Flows are established (every flow sent once before the measurement) or
//! new (every packet a new flow: kube-proxy's rules are walked for each,
//! Sluice's table looked up once). Flow k goes to service k % N.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use dataplane::demo::{Svc, cluster_yaml_with};
use sluice_benches::netbench::sh;
use sluice_benches::report;

use crate::bench::{Bench, Dataplane, Direction, Measure, Scenario};

/// The service CIDR the ClusterIPs come from.
pub(crate) const SERVICE_CIDR: &str = "10.96.0.0/12";
/// Service i's ClusterIP is this + i.
pub(crate) const FIRST_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 0);
/// Every service's port (UDP).
pub(crate) const SERVICE_PORT: u16 = 80;
/// Every endpoint's port.
const TARGET_PORT: u16 = 5353;
/// The service counts measured.
const COUNTS: [u32; 3] = [10, 1_000, 10_000];

/// Who proxies Services on the node under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proxy {
    /// kube-proxy, iptables mode, on the kernel path.
    Iptables,
    /// kube-proxy, nftables mode, on the kernel path.
    Nftables,
    /// Sluice.
    Sluice,
}

impl Proxy {
    const ALL: [Proxy; 3] = [Proxy::Iptables, Proxy::Nftables, Proxy::Sluice];

    fn label(self) -> &'static str {
        match self {
            Proxy::Iptables => "kube-proxy iptables",
            Proxy::Nftables => "kube-proxy nftables",
            Proxy::Sluice => "Sluice",
        }
    }

    fn dataplane(self) -> Dataplane {
        match self {
            Proxy::Sluice => Dataplane::Sluice,
            Proxy::Iptables | Proxy::Nftables => Dataplane::Kernel,
        }
    }
}

fn cluster_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FIRST_CLUSTER_IP) + i)
}

/// Service i's endpoint: a pod on the remote node.
fn endpoint(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 2, 2 + (i % 250) as u8)
}

/// The scenarios: established and new flows for each service count.
pub(crate) fn scenarios(smoke: bool) -> Vec<Scenario> {
    let counts: &[u32] = if smoke { &[10, 1_000] } else { &COUNTS };
    let new = if smoke { 5_000 } else { 100_000 };
    let mut v = Vec::new();
    for &n in counts {
        v.push(Scenario {
            name: format!("pod->ClusterIP (DNAT+encap), 64 B, {n} services, established"),
            dir: Direction::Service,
            frame: 60,
            // At least 1,000 flows, a whole number per service.
            flows: n * 1_000u32.div_ceil(n),
            new_flows: false,
            services: n,
        });
        v.push(Scenario {
            name: format!("pod->ClusterIP (DNAT+encap), 64 B, {n} services, new flows ({new})"),
            dir: Direction::Service,
            frame: 60,
            flows: new,
            new_flows: true,
            services: n,
        });
    }
    v
}

/// The cluster file Sluice reads: the remote Node and `n` Services with
/// their EndpointSlices.
pub(crate) fn cluster_file(dir: &Path, n: u32) -> Result<PathBuf, String> {
    let services: Vec<Svc> = (0..n)
        .map(|i| Svc {
            namespace: "bench",
            // Leaked once per run of the harness: Svc holds static names.
            name: Box::leak(format!("svc-{i}").into_boxed_str()),
            ip: cluster_ip(i),
            ports: vec![("p80", "UDP", SERVICE_PORT, TARGET_PORT)],
            endpoints: vec![(endpoint(i), "remote", true, true, false)],
            ..Svc::default()
        })
        .collect();
    let nodes = [("remote".to_string(), "192.168.80.2", "10.244.2.0/24")];
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, cluster_yaml_with(&nodes, &services)).map_err(|e| e.to_string())?;
    Ok(path)
}

/// kube-proxy's iptables-mode rules for `n` services (what
/// `iptables-save` shows on a node with one endpoint per service; the
/// filter table's hooks with their empty chains, as for services that all
/// have endpoints).
fn iptables_rules(n: u32) -> String {
    let mut nat = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-NODEPORTS - [0:0]\n",
    );
    let mut rules = String::from(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    for i in 0..n {
        let (vip, ep) = (cluster_ip(i), endpoint(i));
        let _ = writeln!(nat, ":KUBE-SVC-{i:08} - [0:0]\n:KUBE-SEP-{i:08} - [0:0]");
        let _ = write!(
            rules,
            "-A KUBE-SERVICES -d {vip}/32 -p udp -m comment --comment \"bench/svc-{i}:p80 cluster IP\" -m udp --dport {SERVICE_PORT} -j KUBE-SVC-{i:08}\n\
             -A KUBE-SVC-{i:08} ! -s 10.244.0.0/16 -d {vip}/32 -p udp -m udp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ\n\
             -A KUBE-SVC-{i:08} -m comment --comment \"bench/svc-{i}:p80 -> {ep}:{TARGET_PORT}\" -j KUBE-SEP-{i:08}\n\
             -A KUBE-SEP-{i:08} -s {ep}/32 -j KUBE-MARK-MASQ\n\
             -A KUBE-SEP-{i:08} -p udp -m udp -j DNAT --to-destination {ep}:{TARGET_PORT}\n"
        );
    }
    rules += "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";
    format!(
        "{nat}{rules}COMMIT\n*filter\n:KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\n:KUBE-FORWARD - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
         -A INPUT -m conntrack --ctstate NEW -j KUBE-PROXY-FIREWALL\n\
         -A INPUT -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES\n\
         -A INPUT -j KUBE-NODEPORTS\n\
         -A FORWARD -m conntrack --ctstate NEW -j KUBE-PROXY-FIREWALL\n\
         -A FORWARD -j KUBE-FORWARD\n\
         -A FORWARD -m conntrack --ctstate NEW -j KUBE-SERVICES\n\
         -A FORWARD -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES\n\
         -A OUTPUT -m conntrack --ctstate NEW -j KUBE-PROXY-FIREWALL\n\
         -A OUTPUT -m conntrack --ctstate NEW -j KUBE-SERVICES\n\
         -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
         -A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         COMMIT\n"
    )
}

/// kube-proxy's nftables-mode ruleset for `n` services (the shape
/// pkg/proxy/nftables/proxier.go writes: table `ip kube-proxy`).
fn nftables_rules(n: u32) -> String {
    let mut t = String::from(
        "table ip kube-proxy {\n\
         \tchain mark-for-masquerade { meta mark set meta mark | 0x4000; }\n\
         \tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark ^ 0x4000\n\t\tmasquerade fully-random\n\t}\n\
         \tset cluster-ips { type ipv4_addr; }\n\
         \tset nodeport-ips { type ipv4_addr; }\n\
         \tmap no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; }\n\
         \tmap firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict; }\n\
         \tmap service-nodeports { type inet_proto . inet_service : verdict; }\n\
         \tchain firewall-check { ip daddr . meta l4proto . th dport vmap @firewall-ips; }\n\
         \tchain service-endpoints-check { ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }\n",
    );
    let _ = writeln!(
        t,
        "\tchain cluster-ips-check {{\n\t\tip daddr @cluster-ips reject\n\t\tip daddr {SERVICE_CIDR} drop\n\t}}"
    );
    let mut elements = Vec::new();
    for i in 0..n {
        let (vip, ep) = (cluster_ip(i), endpoint(i));
        let _ = writeln!(
            t,
            "\tchain service-{i:08}-bench/svc-{i}/udp/p80 {{\n\t\tip daddr {vip} udp dport {SERVICE_PORT} ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n\t\tnumgen random mod 1 vmap {{ 0 : goto endpoint-{i:08}-bench/svc-{i}/udp/p80__{ep}/{TARGET_PORT} }}\n\t}}\n\
             \tchain endpoint-{i:08}-bench/svc-{i}/udp/p80__{ep}/{TARGET_PORT} {{\n\t\tip saddr {ep} jump mark-for-masquerade\n\t\tmeta l4proto udp dnat to {ep}:{TARGET_PORT}\n\t}}"
        );
        elements.push(format!(
            "{vip} . udp . {SERVICE_PORT} : goto service-{i:08}-bench/svc-{i}/udp/p80"
        ));
    }
    let ips: Vec<String> = (0..n).map(|i| cluster_ip(i).to_string()).collect();
    let _ = writeln!(
        t,
        "\tmap service-ips {{\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\telements = {{ {} }}\n\t}}\n\
         \tchain services {{\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t\tip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports\n\t}}\n\
         \tchain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}\n\
         \tchain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}\n\
         \tchain nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept; jump masquerading; }}\n\
         \tchain filter-prerouting {{ type filter hook prerouting priority dstnat - 10; policy accept; ct state new jump firewall-check; }}\n\
         \tchain filter-forward {{ type filter hook forward priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump cluster-ips-check; }}\n\
         \tchain filter-output {{ type filter hook output priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump firewall-check; }}\n}}\n\
         add element ip kube-proxy cluster-ips {{ {} }}",
        elements.join(", "),
        ips.join(", ")
    );
    t
}

/// Programs kube-proxy's rules for `n` services in namespace `ns`.
pub(crate) fn program_kube_proxy(ns: &str, dir: &Path, n: u32, proxy: Proxy) -> Result<(), String> {
    match proxy {
        Proxy::Iptables => {
            let path = dir.join("kube-proxy.iptables");
            std::fs::write(&path, iptables_rules(n)).map_err(|e| e.to_string())?;
            let p = path.to_string_lossy().into_owned();
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                &format!("iptables-restore --noflush < {p}"),
            ])?;
        }
        Proxy::Nftables => {
            let path = dir.join("kube-proxy.nft");
            std::fs::write(&path, nftables_rules(n)).map_err(|e| e.to_string())?;
            let p = path.to_string_lossy().into_owned();
            sh(&["ip", "netns", "exec", ns, "nft", "-f", &p])?;
        }
        Proxy::Sluice => {}
    }
    Ok(())
}

/// Runs every service scenario `runs` times on the three proxies
/// (alternating within each run) and returns the table for RESULTS.md.
pub(crate) fn run(
    sluice: &Path,
    runs: usize,
    secs: f64,
    smoke: bool,
    only: Option<&str>,
) -> Result<String, String> {
    let mut list = scenarios(smoke);
    if let Some(o) = only {
        list.retain(|s| s.name.contains(o));
    }
    if list.is_empty() {
        return Ok(String::new());
    }
    if sh(&["nft", "--version"]).is_err() {
        return Err("nft not found (the nftables kube-proxy reference; Debian: nftables)".into());
    }
    let mut rows: Vec<[Vec<Measure>; 3]> = list.iter().map(|_| Default::default()).collect();
    for run in 0..runs {
        for (i, sc) in list.iter().enumerate() {
            for (j, proxy) in Proxy::ALL.into_iter().enumerate() {
                let mut b =
                    Bench::build_with(proxy.dataplane(), sluice, Some((sc.services, proxy)))?;
                let m = b.measure(sc, secs)?;
                eprintln!(
                    "run {} {:<70} {:<20} {:.3} Mpps sent {} got {} cpu {:.3} s/Mpkt{}",
                    run + 1,
                    sc.name,
                    proxy.label(),
                    m.pps / 1e6,
                    m.sent,
                    m.received,
                    m.cpu_per_mpkt,
                    m.accounting.map_or(String::new(), |a| format!(
                        " [sluice rx {} kernel_dropped {} dropped {} tx {}]",
                        a.rx, a.kernel_dropped, a.dropped, a.tx
                    ))
                );
                report::require_delivery(
                    &format!("run {} {} {}", run + 1, sc.name, proxy.label()),
                    m.received,
                )?;
                if let Some(r) = rows.get_mut(i).and_then(|r| r.get_mut(j)) {
                    r.push(m);
                }
            }
        }
    }
    let mut out = String::from(
        "| scenario | kube-proxy iptables: Mpps, core-s per Mpkt | kube-proxy nftables: Mpps, core-s per Mpkt | Sluice: Mpps, core-s per Mpkt | Sluice / iptables pps (per-run) | Sluice / nftables pps (per-run) |\n|---|---|---|---|---|---|\n",
    );
    for (sc, [ipt, nft, sl]) in list.iter().zip(&rows) {
        let cell = |r: &[Measure]| {
            format!(
                "{}, {}",
                report::fmt_spread(median_of(r, |m| m.pps), 1e-6, 3),
                report::fmt_median(median_of(r, |m| m.cpu_per_mpkt), 2)
            )
        };
        let pps = |r: &[Measure]| r.iter().map(|m| m.pps).collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | **{}** | **{}** |",
            sc.name,
            cell(ipt),
            cell(nft),
            cell(sl),
            report::fmt_spread(report::paired_ratio(&pps(sl), &pps(ipt)), 1.0, 2),
            report::fmt_spread(report::paired_ratio(&pps(sl), &pps(nft)), 1.0, 2),
        );
    }
    Ok(out)
}

fn median_of(
    r: &[Measure],
    f: impl Fn(&Measure) -> f64,
) -> Option<sluice_benches::netbench::Spread> {
    sluice_benches::netbench::median(r.iter().map(f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_sets_name_every_service_once() {
        let ipt = iptables_rules(3);
        assert_eq!(ipt.matches("-A KUBE-SERVICES -d ").count(), 3);
        assert!(ipt.contains("-d 10.96.1.2/32 -p udp"));
        assert!(ipt.contains("--to-destination 10.244.2.4:5353"));
        let nft = nftables_rules(3);
        assert_eq!(nft.matches(" : goto service-").count(), 3);
        assert!(nft.contains("dnat to 10.244.2.4:5353"));
    }
}
