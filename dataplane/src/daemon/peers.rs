//! Peers: from the Kubernetes API (the control thread's node watch) or
//! the peers file, each new view becomes the peer set and the snapshot is
//! rebuilt and published.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::Ctx;
use crate::config::Config;
use crate::neigh;
use crate::route::PeerSpec;

/// The control thread's settings for `cfg` (public for the test that
/// compares the RBAC manifest with what the control thread does).
pub fn sync_config(cfg: &Config, k: &crate::config::KubeConfig) -> ctrl::kube_sync::SyncConfig {
    ctrl::kube_sync::SyncConfig {
        kubeconfig: k.kubeconfig.clone(),
        node_name: k.node_name.clone(),
        policy: ctrl::node::AnnotationPolicy {
            flannel: k.flannel_annotations,
        },
        own: Some(ctrl::kube_sync::OwnNode {
            ip: cfg.ip,
            vtep_mac: cfg.vtep_mac,
            vni: cfg.vni,
            flannel: k.flannel_annotations,
        }),
        watch_timeout_secs: k.watch_timeout_secs,
    }
}

/// Peers from Kubernetes: the control thread publishes each new view into
/// the control state, which rebuilds and publishes the snapshot. It holds
/// only a weak reference, so stopping the daemon is not kept waiting.
pub(super) fn start_kube_sync(
    ctx: &Arc<Ctx>,
    cfg: &Config,
    k: &crate::config::KubeConfig,
) -> std::io::Result<ctrl::kube_sync::SyncHandle> {
    let weak = Arc::downgrade(ctx);
    let (vni, own_ip) = (cfg.vni, cfg.ip);
    ctrl::kube_sync::spawn(
        sync_config(cfg, k),
        // ctrl logs each change at info level.
        move |view, _changes| apply_view(&weak, view, vni, own_ip),
    )
}

/// A new cluster view (from the API server or the peers file) becomes the
/// peer set; the snapshot is rebuilt and published.
pub(super) fn apply_view(
    weak: &std::sync::Weak<Ctx>,
    view: &ctrl::view::ClusterView,
    vni: u32,
    own_ip: Ipv4Addr,
) {
    let Some(ctx) = weak.upgrade() else {
        return;
    };
    let Ok(mut ctl) = ctx.control.lock() else {
        return;
    };
    let mut peers = BTreeMap::new();
    for (name, r) in &view.peers {
        if r.vni != vni {
            tracing::warn!(
                "node {name} announces VNI {} (this overlay: {vni}); not a peer",
                r.vni
            );
            continue;
        }
        if r.ip == own_ip {
            continue;
        }
        if !ctl.neigh.contains_key(&r.ip) {
            neigh::solicit(r.ip);
        }
        peers.insert(
            name.clone(),
            PeerSpec {
                name: name.clone(),
                ip: r.ip,
                vtep_mac: r.vtep_mac,
                pod_cidrs: r.pod_cidrs.clone(),
            },
        );
    }
    ctl.peers = peers;
    ctl.publish();
}
