//! CNI_ARGS: the `KEY=VALUE;...` pairs the runtime passes. Kubelet's
//! runtimes (containerd, CRI-O) put the pod's identity there
//! (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_INFRA_CONTAINER_ID`,
//! `K8S_POD_UID`), as Calico's and Cilium's plugins read it.

/// The pod's `NAMESPACE/NAME` from CNI_ARGS, if both are there and are
/// Kubernetes names (lowercase letters, digits, '-' and '.', 1-253
/// bytes). The daemon enforces the pod's NetworkPolicy from its first
/// packet with it, instead of waiting for status.podIP; without it the
/// pod is still attached (and, while policies exist, passes nothing until
/// the API shows its address).
pub(super) fn k8s_pod(args: &str) -> Option<String> {
    let get = |key: &str| {
        args.split(';')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .filter(|v| {
                (1..=253).contains(&v.len())
                    && v.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    })
            })
    };
    Some(format!(
        "{}/{}",
        get("K8S_POD_NAMESPACE")?,
        get("K8S_POD_NAME")?
    ))
}

#[cfg(test)]
mod tests {
    use super::k8s_pod;

    #[test]
    fn the_pod_is_read_from_what_kubelet_passes() {
        assert_eq!(
            k8s_pod(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-7d4b9c-x2x;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1-2"
            )
            .as_deref(),
            Some("shop/web-7d4b9c-x2x")
        );
        // Order does not matter; a key that only starts like ours is not it.
        assert_eq!(
            k8s_pod("K8S_POD_NAME_X=no;K8S_POD_NAME=a;K8S_POD_NAMESPACE=b").as_deref(),
            Some("b/a")
        );
        for bad in [
            "",
            "K8S_POD_NAMESPACE=shop",
            "K8S_POD_NAME=a",
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=",
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a b",
            "K8S_POD_NAMESPACE=Shop;K8S_POD_NAME=a",
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a/b",
        ] {
            assert_eq!(k8s_pod(bad), None, "{bad:?}");
        }
        let long = "a".repeat(254);
        assert_eq!(
            k8s_pod(&format!("K8S_POD_NAMESPACE=x;K8S_POD_NAME={long}")),
            None
        );
    }
}
