//! Pods: how they are recorded on disk, created (veth pairs) and attached
//! to a worker.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use encap::MacAddr;

use super::{Attached, Cmd, Ctx};
use crate::config::Config;
use crate::netns;
use crate::port::Port;
use crate::port::tun::TunPort;
use crate::port::xdp::{SteerConfig, SteerProgram, XdpPort};
use crate::shaper::PodLimits;

/// How a pod is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodKind {
    /// A TUN device in the pod (IP packets, no ARP).
    Tun,
    /// A veth pair; Sluice reads the host end through AF_XDP and answers
    /// the pod's ARP.
    Veth,
}

impl PodKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PodKind::Tun => "tun",
            PodKind::Veth => "veth",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<PodKind> {
        match s {
            "tun" => Some(PodKind::Tun),
            "veth" => Some(PodKind::Veth),
            _ => None,
        }
    }
}

/// A pod as recorded on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    /// Name.
    pub name: String,
    /// Address.
    pub ip: Ipv4Addr,
    /// Its network namespace path.
    pub netns: PathBuf,
    /// How it is attached.
    pub kind: PodKind,
    /// The interface's name inside the pod (CNI_IFNAME; default eth0).
    pub ifname: String,
    /// Its rate limits (the bandwidth annotations).
    pub limits: PodLimits,
    /// The Kubernetes pod it is, `NAMESPACE/NAME` (`pod=` from sluice-cni,
    /// which reads CNI_ARGS): NetworkPolicy knows the pod's address from
    /// the moment it is attached, before kubelet writes status.podIP.
    pub k8s: Option<String>,
}

/// Whether `s` is `NAMESPACE/NAME` with two non-empty names of at most
/// 253 bytes, without spaces or another '/'.
pub(super) fn valid_k8s_name(s: &str) -> bool {
    let ok = |n: &str| (1..=253).contains(&n.len()) && !n.contains(char::is_whitespace);
    s.split_once('/')
        .is_some_and(|(ns, name)| ok(ns) && ok(name) && !name.contains('/'))
}

/// Whether Linux accepts `s` as an interface name (`dev_valid_name`).
pub(super) fn valid_ifname(s: &str) -> bool {
    (1..16).contains(&s.len())
        && s != "."
        && s != ".."
        && !s
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

/// The host end of a veth pod's pair.
pub(super) fn veth_host_name(ip: Ipv4Addr) -> String {
    let [_, _, c, d] = ip.octets();
    format!("slp-{c}-{d}")
}

/// Creates a veth pod: the pair, the pod end as `eth0` with `ip/32`, the
/// MTU and a default route via the gateway; the host end steered entirely
/// to an AF_XDP socket. Returns the port and the pod's MAC.
pub(super) fn create_veth_pod(
    p: &PodRecord,
    gateway: Ipv4Addr,
    mtu: u16,
) -> std::io::Result<(XdpPort, MacAddr)> {
    let host = veth_host_name(p.ip);
    let tmp = format!("{host}p");
    let ns = std::fs::File::open(&p.netns)
        .map_err(|e| std::io::Error::new(e.kind(), format!("netns {}: {e}", p.netns.display())))?;
    let mut nl = netcfg::Rtnl::new()?;
    nl.link_del(&host)?;
    nl.veth_add(&host, &tmp, u32::from(mtu))?;
    nl.link_set_netns(&tmp, std::os::fd::AsRawFd::as_raw_fd(&ns))?;
    nl.link_up(&host)?;
    drop(ns);
    let (ip, gw, ifname) = (p.ip, gateway, p.ifname.clone());
    let mac = netns::run_in(&p.netns, move || {
        let dev = ifname.as_str();
        let mut nl = netcfg::Rtnl::new()?;
        nl.link_rename(&tmp, dev)?;
        nl.addr_add(dev, ipnet::Ipv4Net::from(ip))?;
        nl.link_up("lo")?;
        nl.link_up(dev)?;
        nl.route_replace(ipnet::Ipv4Net::default(), dev, Some(gw), true)?;
        // Frames reach AF_XDP (copy mode) as the pod's kernel left them: a
        // TCP/UDP checksum left for offload would never be finished.
        netcfg::ethtool::set_tx_checksum(dev, false)?;
        netcfg::ethtool::set_gro(dev, true)?;
        nl.link_mac(dev).map(MacAddr)
    })?;
    let prog = SteerProgram::attach(&host, SteerConfig::all())?;
    let port = XdpPort::open(&host, 0, Some(Arc::new(prog)))?;
    Ok((port, mac))
}

pub(super) fn pods_dir(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("pods")
}

/// Records pod `p`, attached to `worker` (line 7: a restarted daemon puts
/// it back on the same worker, which holds its flows; line 8: its
/// Kubernetes name, if known; records without it read as unknown).
pub(super) fn save_pod(cfg: &Config, p: &PodRecord, worker: u8) {
    let dir = pods_dir(cfg);
    let _ = std::fs::create_dir_all(&dir);
    let tmp = dir.join(format!(".{}", p.ip));
    let body = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{worker}\n{}\n",
        p.name,
        p.ip,
        p.netns.display(),
        p.kind.as_str(),
        p.ifname,
        p.limits,
        p.k8s.as_deref().unwrap_or("")
    );
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(p.ip.to_string()));
    }
}

/// The recorded pods, each with the worker it was on (if recorded).
pub(super) fn load_pods(cfg: &Config) -> Vec<(PodRecord, Option<u8>)> {
    let Ok(rd) = std::fs::read_dir(pods_dir(cfg)) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let t = std::fs::read_to_string(e.path()).ok()?;
            let mut l = t.lines();
            let rec = PodRecord {
                name: l.next()?.to_string(),
                ip: l.next()?.parse().ok()?,
                netns: PathBuf::from(l.next()?),
                kind: l.next().and_then(PodKind::parse).unwrap_or(PodKind::Tun),
                ifname: l.next().unwrap_or("eth0").to_string(),
                // A record that cannot be read back is not re-attached
                // unlimited.
                limits: PodLimits::parse(l.next().unwrap_or("").split_whitespace()).ok()?,
                k8s: None,
            };
            let worker = l.next().and_then(|w| w.parse().ok());
            let k8s = l.next().filter(|n| valid_k8s_name(n)).map(str::to_string);
            Some((PodRecord { k8s, ..rec }, worker))
        })
        .collect()
}

/// Attaches pod `p` (or finds it attached), to worker `prefer` if it
/// exists (a pod re-attached after a restart goes back to the worker whose
/// table holds its flows), else to the least loaded; returns what
/// `pods add` answers about its links.
pub(super) fn attach_pod(ctx: &Ctx, p: &PodRecord, prefer: Option<u8>) -> Result<String, String> {
    let (mtu, cidr, cfg) = {
        let ctl = ctx.control.lock().map_err(|_| "control state poisoned")?;
        (
            ctl.cfg
                .uplink_mtu
                .saturating_sub(encap::vxlan::OVERHEAD as u16),
            ctl.cfg.pod_cidr,
            ctl.cfg.clone(),
        )
    };
    if !cidr.contains(&p.ip) || p.ip == cfg.gateway_ip() || p.ip == cidr.network() {
        return Err(format!("{} is not a pod address in {cidr}", p.ip));
    }
    // One address, one pod: a second ADD for the same pod is a no-op, and
    // an address another pod holds is refused (whatever the IPAM said).
    if let Some(held) = ctx
        .control
        .lock()
        .map_err(|_| "control state poisoned")?
        .pods
        .get(&p.ip)
    {
        if held.rec == *p {
            return Ok(held.links.clone());
        }
        return Err(if held.rec.name == p.name {
            format!(
                "pod {} is already attached at {} with other settings; delete it first",
                p.name, p.ip
            )
        } else {
            format!("{} is already attached to pod {}", p.ip, held.rec.name)
        });
    }
    let (port, mac): (Box<dyn Port>, Option<MacAddr>) = match p.kind {
        PodKind::Tun => (
            Box::new(
                TunPort::create(&p.netns, &p.ifname, p.ip, mtu, cfg.tun_offload).map_err(|e| {
                    format!(
                        "creating TUN device {} in {}: {e}",
                        p.ifname,
                        p.netns.display()
                    )
                })?,
            ),
            None,
        ),
        PodKind::Veth => {
            let (port, mac) = create_veth_pod(p, cfg.gateway_ip(), mtu)
                .map_err(|e| format!("creating veth {} in {}: {e}", p.ifname, p.netns.display()))?;
            (Box::new(port), Some(mac))
        }
    };
    let links = match (mac, port.mac()) {
        (Some(pod), Some(host)) => format!(
            "mac {pod}\nhost_interface {} {host}\n",
            veth_host_name(p.ip)
        ),
        _ => String::new(),
    };
    // Spread pods over the workers: the one with the fewest.
    let worker = if let Some(w) = prefer.filter(|w| usize::from(*w) < ctx.cmds.len()) {
        w
    } else {
        let ctl = ctx.control.lock().map_err(|_| "control state poisoned")?;
        let mut load = vec![0usize; ctx.cmds.len()];
        for (ip, a) in &ctl.pods {
            if *ip != p.ip
                && let Some(l) = load.get_mut(usize::from(a.worker))
            {
                *l += 1;
            }
        }
        load.iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .map_or(0, |(i, _)| i as u8)
    };
    // A pod attached again (restart, repeated ADD) leaves its old worker.
    for i in 0..ctx.cmds.len() {
        if i != usize::from(worker) {
            let (rtx, _rrx) = crossbeam_channel::bounded(1);
            let _ = ctx.command(
                i,
                Cmd::DelPod {
                    ip: p.ip,
                    reply: rtx,
                },
            );
        }
    }
    ctx.command(
        usize::from(worker),
        Cmd::AddPod {
            name: p.name.clone(),
            ip: p.ip,
            mac,
            port,
            limits: p.limits,
        },
    )
    .map_err(|()| "worker stopped")?;
    save_pod(&cfg, p, worker);
    if let Ok(mut ctl) = ctx.control.lock() {
        ctl.pods.insert(
            p.ip,
            Attached {
                rec: p.clone(),
                worker,
                links: links.clone(),
            },
        );
        ctl.publish();
    }
    Ok(links)
}
