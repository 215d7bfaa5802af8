//! Tests of the plugin's commands ([`super`]).
use super::*;

fn run_with(vars: &[(&str, &str)], stdin: &str) -> Outcome {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    run(&|k| m.get(k).cloned(), stdin.as_bytes())
}

/// The error result's code (after checking it parses as the spec's
/// error type).
fn error_of(o: &Outcome) -> u64 {
    let _: ErrorResult = serde_json::from_str(&o.stdout).expect("an error result");
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    v["code"].as_u64().unwrap()
}

#[test]
fn version_lists_every_supported_spec() {
    let o = run_with(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(o.code, 0);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    let s: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(s, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
}

#[test]
fn bad_input_gets_the_spec_codes_with_a_message_naming_the_problem() {
    let conf = r#"{"cniVersion":"1.0.0","name":"sluice","type":"sluice-cni","socket":"/nonexistent.sock"}"#;
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u64, &'a str);
    let cases: [Case; 7] = [
        (&[], conf, 4, "CNI_COMMAND"),
        (&[("CNI_COMMAND", "ADD")], "{not json", 6, "stdin"),
        (
            &[("CNI_COMMAND", "ADD")],
            r#"{"cniVersion":"9.9.9","name":"n","type":"sluice-cni"}"#,
            1,
            "9.9.9",
        ),
        (
            &[("CNI_COMMAND", "ADD")],
            r#"{"cniVersion":"1.0.0","name":"n","type":"sluice-cni","mode":"tap"}"#,
            7,
            "mode",
        ),
        (
            &[("CNI_COMMAND", "ADD")],
            r#"{"cniVersion":"1.0.0","name":"n","type":"sluice-cni","ipam":{"type":"sluice-cni","subnet":"10.0.0.0/99"}}"#,
            7,
            "ipam.subnet",
        ),
        (
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_NETNS", "/proc/self/ns/net"),
                ("CNI_IFNAME", "eth0"),
            ],
            conf,
            4,
            "CNI_CONTAINERID",
        ),
        (
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_NETNS", "/proc/self/ns/net"),
                ("CNI_IFNAME", "eth0"),
            ],
            conf,
            11,
            "/nonexistent.sock",
        ),
    ];
    for (vars, stdin, code, needle) in cases {
        let o = run_with(vars, stdin);
        let e = error_of(&o);
        assert_eq!(
            (o.code as u64, e),
            (code, code),
            "{vars:?} {stdin}: {}",
            o.stdout
        );
        assert!(o.stdout.contains(needle), "{}: want {needle:?}", o.stdout);
    }
    // STATUS and GC need 1.1.0; CHECK 0.4.0.
    let o = run_with(&[("CNI_COMMAND", "STATUS")], conf);
    assert_eq!(o.code, 1);
    let o = run_with(
        &[("CNI_COMMAND", "CHECK")],
        r#"{"cniVersion":"0.3.1","name":"n","type":"sluice-cni"}"#,
    );
    assert_eq!(o.code, 1);
    // STATUS with the daemon down: 50.
    let o = run_with(
        &[("CNI_COMMAND", "STATUS")],
        r#"{"cniVersion":"1.1.0","name":"n","type":"sluice-cni","socket":"/nonexistent.sock"}"#,
    );
    assert_eq!((o.code, error_of(&o)), (50, 50), "{}", o.stdout);
}

#[test]
fn bandwidth_from_the_runtime_is_checked_as_the_bandwidth_plugin_does() {
    let parse = |v: Value| Bandwidth::from_runtime(Some(&v));
    // What containerd sends for the two annotations (burst u32::MAX).
    let b = parse(serde_json::json!({
        "ingressRate": 10_000_000u64, "ingressBurst": 4_294_967_295u64,
        "egressRate": 1_000_000u64, "egressBurst": 800_000u64,
    }))
    .unwrap();
    assert_eq!(
        b.words(),
        "ingress_rate=10000000 ingress_burst=4294967295 egress_rate=1000000 egress_burst=800000"
    );
    assert!(b.check_mtu(1450).is_ok());
    assert_eq!(Bandwidth::from_runtime(None).unwrap().words(), "");
    assert_eq!(parse(serde_json::json!({})).unwrap(), Bandwidth::default());
    let e = parse(serde_json::json!({"egressRate": 5u64, "egressBurst": 100u64}))
        .unwrap()
        .check_mtu(1450)
        .unwrap_err();
    assert_eq!(u32::from(&e), 7);
    assert!(
        e.details().contains("runtimeConfig.bandwidth.egressBurst"),
        "{e:?}"
    );
    for (v, field) in [
        (serde_json::json!({"ingressRate": 5}), "ingressBurst"),
        (serde_json::json!({"egressBurst": 50000}), "egressRate"),
        (serde_json::json!({"ingressRate": -1}), "ingressRate"),
        (serde_json::json!({"ingressRate": "10M"}), "ingressRate"),
        (
            serde_json::json!({"ingressRate": 1, "ingressBurst": 40_000_000_000u64}),
            "ingressBurst",
        ),
        (serde_json::json!([1]), "runtimeConfig.bandwidth"),
    ] {
        let e = parse(v.clone()).unwrap_err();
        assert_eq!(u32::from(&e), 7, "{v}");
        assert!(e.details().contains(field), "{v}: {e:?}");
    }
}

#[test]
fn use_pod_cidr_is_filled_in_for_host_local() {
    let mut v: Value = serde_json::from_str(
        r#"{"type":"host-local","ranges":[[{"subnet":"usePodCidr"}],[{"subnet":"10.9.0.0/24"}]]}"#,
    )
    .unwrap();
    fill_pod_cidr(&mut v, "10.244.3.0/24".parse().unwrap());
    assert_eq!(v["ranges"][0][0]["subnet"], "10.244.3.0/24");
    assert_eq!(v["ranges"][1][0]["subnet"], "10.9.0.0/24");
    let mut v: Value =
        serde_json::from_str(r#"{"type":"host-local","subnet":"usePodCidr"}"#).unwrap();
    fill_pod_cidr(&mut v, "10.244.3.0/24".parse().unwrap());
    assert_eq!(v["subnet"], "10.244.3.0/24");
}
