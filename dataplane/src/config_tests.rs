//! Tests of the configuration's parsing and validation ([`super`]).
use super::*;

const GOOD: &str = "
node:
  name: a
  uplink: eth0
  ip: 192.168.77.1
  pod_cidr: 10.244.1.0/24
  gateway: 192.168.77.100
cluster_cidrs: [10.244.0.0/16, 10.96.0.0/12]
peers:
  - name: b
    ip: 192.168.77.2
    vtep_mac: 0a:58:c0:a8:4d:02
    pod_cidrs: [10.244.2.0/24]
";

#[test]
fn a_good_config_gets_defaults() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.vni, 1);
    assert_eq!(c.vxlan_port, 8472);
    assert_eq!(c.snat_ports, (61000, 65535));
    assert_eq!(c.vtep_mac, MacAddr([0x0a, 0x58, 192, 168, 77, 1]));
    assert_eq!(c.gateway_ip(), Ipv4Addr::new(10, 244, 1, 1));
    assert_eq!(c.peers.len(), 1);
    // Workers poll while frames come and sleep at the first empty poll.
    assert_eq!((c.idle_spin_us, c.idle_spins), (0, 2000));
}

/// Each broken document names the field at fault.
#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("ip: 192.168.77.1", "ip: 192.168.77.300", "node.ip"),
        (
            "pod_cidr: 10.244.1.0/24",
            "pod_cidr: 10.244.1.0/33",
            "node.pod_cidr",
        ),
        (
            "pod_cidr: 10.244.1.0/24",
            "pod_cidr: 10.244.1.7/24",
            "node.pod_cidr",
        ),
        (
            "vtep_mac: 0a:58:c0:a8:4d:02",
            "vtep_mac: 0a:58:c0:a8:4d",
            "peers[0].vtep_mac",
        ),
        (
            "pod_cidrs: [10.244.2.0/24]",
            "pod_cidrs: [10.244.1.0/25]",
            "peers[0].pod_cidrs[0]",
        ),
        (
            "gateway: 192.168.77.100",
            "gateway: nowhere",
            "node.gateway",
        ),
        (
            "[10.244.0.0/16, 10.96.0.0/12]",
            "[10.244.0.0/16, 10.96.0.0/40]",
            "cluster_cidrs[1]",
        ),
        (
            "uplink: eth0",
            "uplink: eth0\n  uplink_mode: xdp",
            "node.uplink_mode",
        ),
    ];
    for (from, to, field) in cases {
        let doc = GOOD.replace(from, to);
        assert_ne!(doc, GOOD, "case {field} did not apply");
        let e = Config::parse(&doc).unwrap_err();
        assert_eq!(&e.field, field, "{e}");
        assert!(e.to_string().contains(field), "{e}");
    }
    let e = Config::parse(&format!(
        "{GOOD}snat:\n  ports: 8000-9000\nvxlan:\n  port: 8472\n"
    ))
    .unwrap_err();
    assert_eq!(e.field, "snat.ports");
    let e = Config::parse(&format!("{GOOD}workers:\n  cores: [999]\n")).unwrap_err();
    assert_eq!(e.field, "workers.cores[0]");
    // Where peers come from: one source only.
    let e = Config::parse(&format!("{GOOD}kubernetes: {{}}\n")).unwrap_err();
    assert_eq!(e.field, "peers");
    let e = Config::parse(&format!("{GOOD}peers_file: /etc/sluice/peers.yaml\n")).unwrap_err();
    assert_eq!(e.field, "peers_file");
    let no_peers = GOOD[..GOOD.find("peers:").unwrap()].to_string();
    let c = Config::parse(&format!(
        "{no_peers}kubernetes: {{watch_timeout_secs: 30}}\n"
    ))
    .unwrap();
    assert_eq!(c.kubernetes.unwrap().node_name, "a");
    let e = Config::parse(&format!(
        "{no_peers}kubernetes: {{watch_timeout_secs: 0}}\n"
    ))
    .unwrap_err();
    assert_eq!(e.field, "kubernetes.watch_timeout_secs");
    // Unknown and missing keys: serde names them.
    let e = Config::parse(&GOOD.replace("pod_cidrs:", "pod_cidr:")).unwrap_err();
    assert!(e.message.contains("pod_cidr"), "{e}");
    let e = Config::parse(&GOOD.replace("  ip: 192.168.77.1\n", "")).unwrap_err();
    assert!(e.message.contains("missing field `ip`"), "{e}");
}

#[test]
fn environment_variables_fill_in_per_node_values() {
    let doc = "node:\n  name: ${NODE_NAME}\n  uplink: auto\n  ip: ${NODE_IP}\n  pod_cidr: 10.244.1.0/24\n";
    let env = |k: &str| match k {
        "NODE_NAME" => Some("worker-3".to_string()),
        "NODE_IP" => Some("192.0.2.7".to_string()),
        _ => None,
    };
    let c = Config::parse_with_env(doc, &env).unwrap();
    assert_eq!(
        (c.name.as_str(), c.ip),
        ("worker-3", "192.0.2.7".parse().unwrap())
    );
    assert_eq!(c.uplink, "auto");
    let e = Config::parse_with_env(doc, &|_| None).unwrap_err();
    assert!(
        e.message.contains("NODE_NAME") && e.message.contains("line 2"),
        "{e}"
    );
    let e = Config::parse_with_env("node:\n  name: ${NODE NAME}\n", &env).unwrap_err();
    assert!(e.message.contains("not a variable name"), "{e}");
}
