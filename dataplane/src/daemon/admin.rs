//! The admin socket: one line in, one reply out (`sluice status`,
//! `stats`, `routes`, `conntrack`, `services`, `policy`, `pods add|del`,
//! `peers add|del`, `shutdown`).

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::metrics::sum_stats;
use super::{
    Cmd, Ctx, PodKind, PodRecord, StatsView, attach_pod, control_status, pods_dir, valid_ifname,
    veth_host_name,
};
use crate::counters::Reason;
use crate::neigh;
use crate::route::PeerSpec;
use crate::shaper::PodLimits;

/// The `pods add` request's form.
const PODS_ADD: &str = "pods add NAME IP NETNS [tun|veth [IFNAME]] [pod=NAMESPACE/NAME] [ingress_rate=BITS/S ingress_burst=BITS] [egress_rate=BITS/S egress_burst=BITS]";

/// One admin request line -> the reply text (first line `ok` or `error:`).
fn admin_request(ctx: &Ctx, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["stats"] => {
            let views: Vec<StatsView> = ctx
                .stats
                .iter()
                .map(|m| m.lock().map(|s| s.clone()).unwrap_or_default())
                .collect();
            let s = sum_stats(&views);
            let mut out = String::from("ok\n");
            for p in &s.ports {
                out += &format!(
                    "port {} rx {} tx {} kernel_dropped {} rate_limited {} shaped {} paused {}\n",
                    p.name, p.rx, p.tx, p.kernel_dropped, p.rate_limited, p.shaped, p.paused
                );
            }
            out += &format!(
                "encapsulated {}\ndecapsulated {}\nnat {}\nservice_flows {}\nservice_translated {}\nicmp_sent {}\narp_replies {}\nhanded_off {}\nsuper_packets_whole {}\nsuper_packets_cut {}\nconntrack_entries {}\nnat_ports {}\nworkers {}\n",
                s.counters.encapsulated,
                s.counters.decapsulated,
                s.counters.nat,
                s.counters.svc_flows,
                s.counters.svc_translated,
                s.counters.icmp_sent,
                s.counters.arp_replies,
                s.counters.handed_off,
                s.counters.super_whole,
                s.counters.super_cut,
                s.conntrack_entries,
                s.nat_ports,
                views.len()
            );
            for (i, v) in views.iter().enumerate() {
                out += &format!(
                    "worker_core_{i} {}\n",
                    v.pinned_core.map_or("unpinned".into(), |c| c.to_string())
                );
            }
            for r in Reason::all() {
                out += &format!("drop {} {}\n", r.name(), s.counters.dropped(r));
            }
            out
        }
        ["policy", rest @ ..] => {
            let views: Vec<StatsView> = ctx
                .stats
                .iter()
                .map(|m| m.lock().map(|s| s.clone()).unwrap_or_default())
                .collect();
            match rest {
                [] => super::netpol::listing(ctx, &views, None),
                ["denied"] => super::netpol::denied(ctx, &views, &Default::default()),
                ["denied", after] => {
                    let mut seen = std::collections::HashMap::new();
                    for p in after.split(',') {
                        let parsed = p
                            .split_once(':')
                            .and_then(|(w, s)| Some((w.parse().ok()?, s.parse().ok()?)));
                        let Some((w, s)) = parsed else {
                            return format!(
                                "error: policy denied: {p:?} is not WORKER:SEQ (as in W:SEQ,W:SEQ)\n"
                            );
                        };
                        seen.insert(w, s);
                    }
                    super::netpol::denied(ctx, &views, &seen)
                }
                [ip] => match ip.parse::<Ipv4Addr>() {
                    Ok(ip) => super::netpol::listing(ctx, &views, Some(ip)),
                    Err(_) => format!(
                        "error: policy: {ip:?} is not a pod IPv4 address (usage: policy [POD_IP] | policy denied)\n"
                    ),
                },
                _ => "error: usage: policy [POD_IP] | policy denied [W:SEQ,...]\n".into(),
            }
        }
        ["services"] => {
            let views: Vec<StatsView> = ctx
                .stats
                .iter()
                .map(|m| m.lock().map(|s| s.clone()).unwrap_or_default())
                .collect();
            super::services::listing(ctx, &views)
        }
        ["status"] => {
            let (ready, text) = control_status(ctx);
            // What the CNI plugin needs: where pod addresses come from, the
            // pods' gateway and MTU.
            let pod = ctx.control.lock().map(|c| {
                format!(
                    "pod_cidr {}\npod_gateway {}\npod_mtu {}\n",
                    c.cfg.pod_cidr,
                    c.cfg.gateway_ip(),
                    c.cfg
                        .uplink_mtu
                        .saturating_sub(encap::vxlan::OVERHEAD as u16)
                )
            });
            format!(
                "ok\nready {ready}\nuptime_s {}\npid {}\n{}{text}",
                ctx.started.elapsed().as_secs(),
                std::process::id(),
                pod.unwrap_or_default()
            )
        }
        ["routes"] => {
            let Ok(ctl) = ctx.control.lock() else {
                return "error: control state poisoned\n".into();
            };
            let snap = ctl.routes.load_full();
            let mut out = format!(
                "ok\nnode {} ip {} pod_cidr {} vtep_mac {} generation {}\n",
                snap.node.name,
                snap.node.ip,
                snap.node.pod_cidr,
                snap.node.vtep_mac,
                snap.generation
            );
            for p in snap.peers() {
                let cidrs: Vec<String> = p.spec.pod_cidrs.iter().map(|c| c.to_string()).collect();
                out += &format!(
                    "peer {} ip {} vtep_mac {} pod_cidrs {} next_hop {}\n",
                    p.spec.name,
                    p.spec.ip,
                    p.spec.vtep_mac,
                    cidrs.join(","),
                    p.next_hop_mac
                        .map_or("unresolved".into(), |m| m.to_string())
                );
            }
            for a in ctl.pods.values() {
                let p = &a.rec;
                out += &format!(
                    "pod {} ip {} netns {} kind {} worker {} ifname {}{}{}{}\n",
                    p.name,
                    p.ip,
                    p.netns.display(),
                    p.kind.as_str(),
                    a.worker,
                    p.ifname,
                    p.k8s
                        .as_ref()
                        .map_or(String::new(), |n| format!(" k8s {n}")),
                    if p.limits.is_unlimited() { "" } else { " " },
                    p.limits
                );
            }
            out
        }
        ["conntrack"] => {
            let mut out = String::from("ok\n");
            for w in 0..ctx.cmds.len() {
                let (rtx, rrx) = crossbeam_channel::bounded(1);
                if ctx.command(w, Cmd::Conntrack { reply: rtx }).is_err() {
                    return "error: worker stopped\n".into();
                }
                match rrx.recv_timeout(Duration::from_secs(2)) {
                    Ok(l) => out += &l,
                    Err(_) => return "error: worker did not answer\n".into(),
                }
            }
            out
        }
        ["pods", "add", name, ip, ns, rest @ ..] => {
            let Ok(ip) = ip.parse() else {
                return format!("error: {ip:?} is not an IPv4 address\n");
            };
            // Positional words, then KEY=VALUE limits.
            let split = rest
                .iter()
                .position(|w| w.contains('='))
                .unwrap_or(rest.len());
            let (rest, kv) = rest.split_at(split);
            let k8s = kv.iter().find_map(|w| w.strip_prefix("pod="));
            if let Some(n) = k8s.filter(|n| !super::pods::valid_k8s_name(n)) {
                return format!("error: pod={n:?}: the pod is NAMESPACE/NAME\n");
            }
            let limits =
                match PodLimits::parse(kv.iter().copied().filter(|w| !w.starts_with("pod="))) {
                    Ok(l) => l,
                    Err(e) => return format!("error: {e}\n"),
                };
            let (kind, ifname) = match rest {
                [] => (Some(PodKind::Tun), "eth0"),
                [k] => (PodKind::parse(k), "eth0"),
                [k, i] => (PodKind::parse(k), *i),
                _ => return format!("error: {PODS_ADD}\n"),
            };
            let Some(kind) = kind else {
                let k = rest.first().copied().unwrap_or_default();
                return format!("error: {k:?}: the pod kind is tun or veth\n");
            };
            if !valid_ifname(ifname) {
                return format!(
                    "error: {ifname:?} is not an interface name (1-15 bytes, no '/', ':' or spaces)\n"
                );
            }
            let rec = PodRecord {
                name: (*name).to_string(),
                ip,
                netns: PathBuf::from(ns),
                kind,
                ifname: ifname.to_string(),
                limits,
                k8s: k8s.map(str::to_string),
            };
            match attach_pod(ctx, &rec, None) {
                Ok(links) => {
                    // The reply waits for the pod's policy: its first
                    // packet after the ADD meets its rules.
                    if rec.k8s.is_some() {
                        super::netpol::pods_changed(ctx);
                    }
                    format!("ok\n{links}")
                }
                Err(e) => format!("error: {e}\n"),
            }
        }
        ["pods", "del", ip] => {
            let Ok(ip) = ip.parse::<Ipv4Addr>() else {
                return format!("error: {ip:?} is not an IPv4 address\n");
            };
            let rec = ctx
                .control
                .lock()
                .ok()
                .and_then(|c| c.pods.get(&ip).map(|a| a.rec.clone()));
            let mut found = false;
            for w in 0..ctx.cmds.len() {
                let (rtx, rrx) = crossbeam_channel::bounded(1);
                let _ = ctx.command(w, Cmd::DelPod { ip, reply: rtx });
                found |= rrx.recv_timeout(Duration::from_secs(2)).unwrap_or(false);
            }
            // A veth pod's pair goes with it (deleting one end deletes both);
            // a TUN pod's device is persistent: deleted in its namespace.
            if let Err(e) = netcfg::Rtnl::new().and_then(|mut nl| nl.link_del(&veth_host_name(ip)))
            {
                tracing::warn!("pod {ip}: {e}");
            }
            if let Some(r) = rec.filter(|r| r.kind == PodKind::Tun)
                && let Err(e) = crate::port::tun::TunPort::remove(&r.netns, &r.ifname)
            {
                tracing::warn!("pod {ip}: removing its TUN device {}: {e}", r.ifname);
            }
            if let Ok(mut ctl) = ctx.control.lock() {
                let named = ctl.pods.remove(&ip).is_some_and(|a| a.rec.k8s.is_some());
                if named {
                    // Its address no longer stands for the pod.
                    super::netpol::recompile(&mut ctl);
                }
                ctl.publish();
                let _ = std::fs::remove_file(pods_dir(&ctl.cfg).join(ip.to_string()));
            }
            // Idempotent, as CNI DEL must be.
            format!("ok\n{}\n", if found { "removed" } else { "absent" })
        }
        ["peers", "add", name, ip, mac, cidrs] => {
            let peer = (|| -> Result<PeerSpec, String> {
                Ok(PeerSpec {
                    name: (*name).to_string(),
                    ip: ip
                        .parse()
                        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?,
                    vtep_mac: mac.parse().map_err(|_| format!("{mac:?} is not a MAC"))?,
                    pod_cidrs: cidrs
                        .split(',')
                        .map(|c| c.parse().map_err(|_| format!("{c:?} is not a CIDR")))
                        .collect::<Result<_, _>>()?,
                })
            })();
            match (peer, ctx.control.lock()) {
                (Ok(p), Ok(mut ctl)) => {
                    neigh::solicit(p.ip);
                    ctl.peers.insert(p.name.clone(), p);
                    ctl.publish();
                    "ok\n".into()
                }
                (Err(e), _) => format!("error: {e}\n"),
                (_, Err(_)) => "error: control state poisoned\n".into(),
            }
        }
        ["peers", "del", name] => match ctx.control.lock() {
            Ok(mut ctl) => {
                let found = ctl.peers.remove(*name).is_some();
                ctl.publish();
                format!("ok\n{}\n", if found { "removed" } else { "absent" })
            }
            Err(_) => "error: control state poisoned\n".into(),
        },
        ["shutdown"] => {
            ctx.request_stop();
            "ok\n".into()
        }
        _ => format!(
            "error: unknown request {line:?}; try stats, status, routes, conntrack, services, {PODS_ADD}, pods del IP, peers add NAME IP MAC CIDR[,CIDR], peers del NAME, shutdown\n"
        ),
    }
}

pub(super) fn admin_main(ctx: &Ctx, l: &UnixListener) {
    while !ctx.stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => serve_admin(ctx, s),
            // Until a client connects or the daemon stops.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ctx.stopped.wait(l.as_raw_fd(), Duration::from_secs(1));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn serve_admin(ctx: &Ctx, s: UnixStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut r = BufReader::new(&s);
    if r.read_line(&mut line).is_ok() {
        let reply = admin_request(ctx, line.trim());
        let mut w = &s;
        let _ = w.write_all(reply.as_bytes());
    }
}
