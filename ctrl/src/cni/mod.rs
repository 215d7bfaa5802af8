//! `sluice-cni`: the CNI plugin that wires a pod to the node's Sluice
//! daemon (CNI spec 1.1.0; also 0.3.0, 0.3.1, 0.4.0 and 1.0.0 configs).
//!
//! ADD reserves an address (Sluice's own IPAM over the node's pod CIDR,
//! [`ipam`], or a delegated IPAM plugin such as `host-local` with
//! `"subnet": "usePodCidr"` filled in, as Calico does), asks the daemon over
//! its admin socket to create the pod's interface in `CNI_NETNS` (TUN by
//! default, veth + AF_XDP with `"mode": "veth"`), with the address, the
//! overlay MTU (uplink - 50) and the default route, and prints the result.
//! The daemon owns the interface (it holds the TUN file descriptor) and
//! records the pod on disk, so a restarted daemon re-attaches it without
//! the kubelet repeating ADD. The pod's namespace and name from CNI_ARGS
//! go with it ([`args`]): the daemon compiles the pod's NetworkPolicy with
//! its address before it answers, so the pod is never unprotected or
//! needlessly held while kubelet has yet to write status.podIP.
//!
//! With the `bandwidth` capability, `runtimeConfig.bandwidth` (the pod's
//! bandwidth annotations) goes to the daemon with the pod, and its workers
//! enforce it (dataplane::shaper); CHECK compares the daemon's limits. A
//! veth pod's result lists the host end first, without a sandbox, as the
//! ptp plugin does.
//!
//! DEL is idempotent: a second DEL, a missing netns or a daemon that is
//! down all succeed once the address is released. CHECK compares the pod's
//! interface, address, MTU and route, the reservation and the daemon's
//! record with what ADD returned. STATUS reports whether the daemon is up
//! and synced (code 50 if not). GC releases every reservation the runtime
//! does not list as a valid attachment and detaches those pods.
//!
//! The network configuration, with its Sluice keys:
//!
//! ```json
//! { "cniVersion": "1.1.0", "name": "sluice", "type": "sluice-cni",
//!   "socket": "/run/sluice/admin.sock", "mode": "tun",
//!   "capabilities": { "bandwidth": true },
//!   "ipam": { "type": "sluice-cni", "subnet": "usePodCidr",
//!             "dataDir": "/var/lib/sluice/ipam" } }
//! ```
//!
//! `ipam` may be left out (the same as above), or name another IPAM plugin,
//! which is then run from `CNI_PATH` (its `subnet`/`ranges` may say
//! `usePodCidr`).

mod args;
mod bandwidth;
mod daemon_pod;
use daemon_pod::DaemonPod;
mod delegate;
pub mod ipam;

use self::bandwidth::Bandwidth;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use rscni_types::error::Error;
use rscni_types::types::{
    CNIResult, CNIResultWithVersion, Cmd, ErrorResult, Interface, IpConfig, NetConf, Route,
};
use rscni_types::version::{PluginInfo, SpecVersion};
use serde_json::Value;

use self::ipam::{Range, Store};

/// The daemon's admin socket when the configuration names none.
pub const DEFAULT_SOCKET: &str = "/run/sluice/admin.sock";
/// Where the built-in IPAM keeps its reservations by default.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/sluice/ipam";
/// The plugin's binary name; as `ipam.type` it selects the built-in IPAM.
pub const PLUGIN: &str = "sluice-cni";

/// What a run printed and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit status: 0, or the error's code.
    pub code: i32,
    /// Standard output (a result, an error result, or nothing).
    pub stdout: String,
}

/// Runs one plugin invocation: `env` reads the environment (`CNI_*`,
/// `PATH`), `stdin` is the network configuration.
pub fn run(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let cmd = match Cmd::from_str(&env("CNI_COMMAND").unwrap_or_default()) {
        Ok(c) => c,
        Err(e) => return fail(SpecVersion::CURRENT, &e),
    };
    let info = PluginInfo::default();
    if cmd == Cmd::Version {
        let declared = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string));
        let v = declared
            .and_then(|s| SpecVersion::from_str(&s).ok())
            .unwrap_or(SpecVersion::CURRENT);
        let out = serde_json::json!({
            "cniVersion": v.to_string(),
            "supportedVersions": info.supported_versions().iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        return Outcome {
            code: 0,
            stdout: out.to_string(),
        };
    }
    let conf: NetConf = match serde_json::from_slice(stdin) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                SpecVersion::CURRENT,
                &Error::FailedToDecode(format!("network configuration on stdin: {e}")),
            );
        }
    };
    let version = match info.negotiate(&conf, cmd) {
        Ok(v) => v,
        Err(e) => return fail(conf.version().unwrap_or(SpecVersion::CURRENT), &e),
    };
    let r = Plugin::new(env, conf, version).and_then(|p| match cmd {
        Cmd::Add => p.add(),
        Cmd::Del => p.del().map(|()| String::new()),
        Cmd::Check => p.check().map(|()| String::new()),
        Cmd::Status => p.status().map(|()| String::new()),
        Cmd::Gc => p.gc().map(|()| String::new()),
        Cmd::Version => Ok(String::new()),
    });
    match r {
        Ok(stdout) => Outcome { code: 0, stdout },
        Err(e) => fail(version, &e),
    }
}

fn fail(version: SpecVersion, e: &Error) -> Outcome {
    Outcome {
        code: i32::try_from(u32::from(e)).unwrap_or(999),
        stdout: serde_json::to_string(&ErrorResult::new(version, e)).unwrap_or_default(),
    }
}

/// How the pod's interface is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Tun,
    Veth,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Tun => "tun",
            Mode::Veth => "veth",
        }
    }
}

/// The IPAM side.
#[derive(Debug)]
enum Ipam {
    /// Built in: subnet (None: the pod CIDR), range, store location.
    Own {
        subnet: Option<Ipv4Net>,
        start: Option<Ipv4Addr>,
        end: Option<Ipv4Addr>,
        data_dir: PathBuf,
    },
    /// Another plugin (run with the network configuration).
    Delegate { plugin: String },
}

/// What the daemon says about itself (`status`).
#[derive(Debug, Clone)]
struct Node {
    ready: bool,
    pod_cidr: Ipv4Net,
    gateway: Ipv4Addr,
    mtu: u32,
}

struct Plugin<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    conf: NetConf,
    version: SpecVersion,
    socket: PathBuf,
    mode: Mode,
    ipam: Ipam,
    bandwidth: Bandwidth,
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::InvalidNetworkConfig(format!("{field}: {msg}"))
}

fn parse_addr(field: &str, v: Option<&Value>) -> Result<Option<Ipv4Addr>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(field, format!("{s:?} is not an IPv4 address"))),
        Some(other) => Err(invalid(field, format!("{other} is not a string"))),
    }
}

impl<'a> Plugin<'a> {
    fn new(
        env: &'a dyn Fn(&str) -> Option<String>,
        conf: NetConf,
        version: SpecVersion,
    ) -> Result<Plugin<'a>, Error> {
        conf.validate_name()?;
        let socket = match conf.custom.get("socket") {
            None => PathBuf::from(DEFAULT_SOCKET),
            Some(Value::String(s)) if s.starts_with('/') => PathBuf::from(s),
            Some(v) => return Err(invalid("socket", format!("{v} is not an absolute path"))),
        };
        let mode = match conf.custom.get("mode").and_then(Value::as_str) {
            None | Some("tun") => Mode::Tun,
            Some("veth") => Mode::Veth,
            Some(m) => {
                return Err(invalid(
                    "mode",
                    format!("{m:?} is neither \"tun\" nor \"veth\""),
                ));
            }
        };
        if let Some(v) = conf.custom.get("mode")
            && !v.is_string()
        {
            return Err(invalid("mode", format!("{v} is not a string")));
        }
        let ipam = match &conf.ipam {
            None => Ipam::Own {
                subnet: None,
                start: None,
                end: None,
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            },
            Some(i) if i.r#type == PLUGIN => {
                let subnet = match i.custom.get("subnet") {
                    None => None,
                    Some(Value::String(s)) if s == "usePodCidr" => None,
                    Some(Value::String(s)) => Some(s.parse::<Ipv4Net>().map_err(|_| {
                        invalid(
                            "ipam.subnet",
                            format!("{s:?} is neither \"usePodCidr\" nor an IPv4 CIDR"),
                        )
                    })?),
                    Some(v) => return Err(invalid("ipam.subnet", format!("{v} is not a string"))),
                };
                let data_dir = match i.custom.get("dataDir") {
                    None => PathBuf::from(DEFAULT_DATA_DIR),
                    Some(Value::String(s)) if s.starts_with('/') => PathBuf::from(s),
                    Some(v) => {
                        return Err(invalid(
                            "ipam.dataDir",
                            format!("{v} is not an absolute path"),
                        ));
                    }
                };
                Ipam::Own {
                    subnet,
                    start: parse_addr("ipam.rangeStart", i.custom.get("rangeStart"))?,
                    end: parse_addr("ipam.rangeEnd", i.custom.get("rangeEnd"))?,
                    data_dir,
                }
            }
            Some(i) => {
                if i.r#type.is_empty() || i.r#type.contains('/') {
                    return Err(invalid(
                        "ipam.type",
                        format!("{:?} is not a plugin name", i.r#type),
                    ));
                }
                Ipam::Delegate {
                    plugin: i.r#type.clone(),
                }
            }
        };
        let bandwidth = Bandwidth::from_runtime(
            conf.runtime_config
                .as_ref()
                .and_then(|rc| rc.custom.get("bandwidth")),
        )?;
        Ok(Plugin {
            env,
            conf,
            version,
            socket,
            mode,
            ipam,
            bandwidth,
        })
    }

    fn var(&self, name: &str) -> Result<String, Error> {
        match (self.env)(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Error::InvalidEnvValue(format!("{name} is not set"))),
        }
    }

    fn container_id(&self) -> Result<String, Error> {
        let id = self.var("CNI_CONTAINERID")?;
        let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(Error::InvalidEnvValue(format!(
                "CNI_CONTAINERID {id:?}: letters, digits, '_', '.' and '-' only, starting with a letter or digit"
            )));
        }
        Ok(id)
    }

    fn ifname(&self) -> Result<String, Error> {
        let n = self.var("CNI_IFNAME")?;
        let ok = (1..16).contains(&n.len())
            && n != "."
            && n != ".."
            && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !ok {
            return Err(Error::InvalidEnvValue(format!(
                "CNI_IFNAME {n:?} is not an interface name (1-15 bytes, no '/', ':' or spaces)"
            )));
        }
        Ok(n)
    }

    fn netns(&self) -> Result<PathBuf, Error> {
        let p = PathBuf::from(self.var("CNI_NETNS")?);
        if !p.is_absolute() || !p.exists() {
            return Err(Error::InvalidNetNS(format!(
                "CNI_NETNS {}: no such network namespace",
                p.display()
            )));
        }
        Ok(p)
    }

    /// The daemon's name for the attachment: unique per container and
    /// interface, and what DEL and GC find it by.
    fn pod_name(id: &str, ifname: &str) -> String {
        format!("{id}/{ifname}")
    }

    fn daemon(&self, line: &str) -> Result<String, Error> {
        let down = |e: std::io::Error| {
            Error::TryAgainLater(format!(
                "the Sluice daemon does not answer on {} ({e}); is the sluice pod running on this node?",
                self.socket.display()
            ))
        };
        let mut s = UnixStream::connect(&self.socket).map_err(down)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(down)?;
        s.write_all(format!("{line}\n").as_bytes()).map_err(down)?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(down)?;
        match out
            .strip_prefix("ok\n")
            .or(if out == "ok" { Some("") } else { None })
        {
            Some(rest) => Ok(rest.to_string()),
            None => Err(Error::Custom(
                100,
                "the Sluice daemon refused".into(),
                out.trim().trim_start_matches("error: ").to_string(),
            )),
        }
    }

    fn node(&self) -> Result<Node, Error> {
        let text = self.daemon("status")?;
        let kv: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once(' ')).collect();
        let get = |k: &str| {
            kv.get(k).copied().ok_or_else(|| {
                Error::Custom(
                    101,
                    "the Sluice daemon is too old".into(),
                    format!("its status has no {k}; upgrade the DaemonSet"),
                )
            })
        };
        let bad = |k: &str| {
            Error::Custom(
                101,
                "the Sluice daemon's status does not parse".into(),
                k.into(),
            )
        };
        Ok(Node {
            ready: get("ready")? == "true",
            pod_cidr: get("pod_cidr")?.parse().map_err(|_| bad("pod_cidr"))?,
            gateway: get("pod_gateway")?
                .parse()
                .map_err(|_| bad("pod_gateway"))?,
            mtu: get("pod_mtu")?.parse().map_err(|_| bad("pod_mtu"))?,
        })
    }

    fn store(&self) -> Result<Option<Store>, Error> {
        match &self.ipam {
            Ipam::Own { data_dir, .. } => Store::open(data_dir, &self.conf.name)
                .map(Some)
                .map_err(|e| Error::IOFailure(e.to_string())),
            Ipam::Delegate { .. } => Ok(None),
        }
    }

    /// Reserves the pod's address.
    fn reserve(&self, node: &Node, id: &str, ifname: &str) -> Result<Ipv4Addr, Error> {
        match &self.ipam {
            Ipam::Own {
                subnet, start, end, ..
            } => {
                let subnet = subnet.unwrap_or(node.pod_cidr);
                if !node.pod_cidr.contains(&subnet) {
                    return Err(invalid(
                        "ipam.subnet",
                        format!("{subnet} is outside this node's pod CIDR {}", node.pod_cidr),
                    ));
                }
                let range = Range::new(subnet, node.gateway, *start, *end)
                    .map_err(|e| invalid("ipam", e))?;
                let store = self
                    .store()?
                    .ok_or_else(|| Error::IOFailure("no store".into()))?;
                store.allocate(&range, id, ifname).map_err(|e| match e {
                    ipam::IpamError::Exhausted(_) => {
                        Error::Custom(102, "no free pod address".into(), e.to_string())
                    }
                    ipam::IpamError::Io(..) => Error::IOFailure(e.to_string()),
                })
            }
            Ipam::Delegate { plugin, .. } => {
                let out = self.delegate(plugin, Cmd::Add, Some(node))?;
                let v: Value = serde_json::from_str(&out)
                    .map_err(|e| Error::FailedToDecode(format!("{plugin}'s ADD result: {e}")))?;
                v.get("ips")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|ip| ip.get("address")?.as_str()?.parse::<IpNet>().ok())
                    .find_map(|n| match n.addr() {
                        IpAddr::V4(a) => Some(a),
                        IpAddr::V6(_) => None,
                    })
                    .ok_or_else(|| {
                        Error::Custom(
                            103,
                            format!("{plugin} returned no IPv4 address"),
                            out.clone(),
                        )
                    })
            }
        }
    }

    /// Releases what `(id, ifname)` holds; the address if known.
    fn unreserve(&self, id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, Error> {
        match &self.ipam {
            Ipam::Own { .. } => {
                let store = self
                    .store()?
                    .ok_or_else(|| Error::IOFailure("no store".into()))?;
                store
                    .release(id, ifname)
                    .map_err(|e| Error::IOFailure(e.to_string()))
            }
            Ipam::Delegate { plugin, .. } => {
                // DEL may run without the daemon: usePodCidr then cannot be
                // filled in, which host-local does not need to release.
                let node = self.node().ok();
                self.delegate(plugin, Cmd::Del, node.as_ref())?;
                Ok(None)
            }
        }
    }

    fn add(&self) -> Result<String, Error> {
        let id = self.container_id()?;
        let ifname = self.ifname()?;
        let netns = self.netns()?;
        let node = self.node()?;
        if !node.ready {
            return Err(Error::TryAgainLater(
                "the Sluice daemon is not ready yet (no routing table from the Kubernetes API); retry".into(),
            ));
        }
        // The admin protocol splits on whitespace.
        if netns.to_string_lossy().contains(char::is_whitespace) {
            return Err(Error::InvalidNetNS(format!(
                "CNI_NETNS {}: a path with spaces cannot be passed to the daemon",
                netns.display()
            )));
        }
        self.bandwidth.check_mtu(node.mtu)?;
        let ip = self.reserve(&node, &id, &ifname)?;
        let attach = format!(
            "pods add {} {ip} {} {} {ifname} {}{}",
            Self::pod_name(&id, &ifname),
            netns.display(),
            self.mode.as_str(),
            (self.env)("CNI_ARGS")
                .as_deref()
                .and_then(args::k8s_pod)
                .map_or(String::new(), |p| format!("pod={p} ")),
            self.bandwidth.words()
        );
        let links = match self.daemon(attach.trim_end()) {
            Ok(l) => l,
            Err(e) => {
                // Nothing half-created: the address goes back.
                let _ = self.unreserve(&id, &ifname);
                return Err(e);
            }
        };
        let gateway = (self.mode == Mode::Veth).then_some(IpAddr::V4(node.gateway));
        // A veth pod's host end is listed first, without a sandbox, as the
        // ptp and bridge plugins do: chained plugins such as `bandwidth`
        // look for it there.
        let mut interfaces = Vec::new();
        let mut pod_mac = String::new();
        for l in links.lines() {
            match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["mac", m] => pod_mac = (*m).to_string(),
                ["host_interface", name, m] => interfaces.push(Interface {
                    name: (*name).to_string(),
                    mac: (*m).to_string(),
                    mtu: Some(node.mtu),
                    sandbox: None,
                    socket_path: None,
                    pci_id: None,
                }),
                _ => {}
            }
        }
        interfaces.push(Interface {
            name: ifname,
            mac: pod_mac,
            mtu: Some(node.mtu),
            sandbox: Some(netns.display().to_string()),
            socket_path: None,
            pci_id: None,
        });
        let pod_if = u32::try_from(interfaces.len() - 1).unwrap_or(0);
        let result = CNIResult {
            interfaces,
            ips: vec![IpConfig {
                interface: Some(pod_if),
                address: IpNet::V4(
                    Ipv4Net::new(ip, 32).map_err(|e| Error::IOFailure(e.to_string()))?,
                ),
                gateway,
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0"
                    .parse()
                    .map_err(|_| Error::IOFailure("route".into()))?,
                gw: gateway,
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            }],
            dns: self.conf.dns.clone(),
        };
        let out = if self.version.is_legacy() {
            serde_json::to_string(&rscni_types::legacy::CNIResult::new(self.version, result))
        } else {
            serde_json::to_string(&CNIResultWithVersion::new(self.version, result))
        };
        out.map_err(|e| Error::IOFailure(e.to_string()))
    }

    fn del(&self) -> Result<(), Error> {
        let id = self.container_id()?;
        let ifname = self.ifname()?;
        let released = self.unreserve(&id, &ifname)?;
        // The daemon's record, by name (delegated IPAM does not say which
        // address it released). A daemon that is down has nothing to
        // detach now; its record of a pod whose netns is gone is skipped
        // when it starts.
        let name = Self::pod_name(&id, &ifname);
        let ip = match released {
            Some(ip) => Some(ip),
            None => self
                .daemon_pods()
                .ok()
                .and_then(|pods| pods.into_iter().find(|p| p.name == name).map(|p| p.ip)),
        };
        if let Some(ip) = ip {
            match self.daemon(&format!("pods del {ip}")) {
                Ok(_) | Err(Error::TryAgainLater(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn daemon_pods(&self) -> Result<Vec<DaemonPod>, Error> {
        Ok(self
            .daemon("routes")?
            .lines()
            .filter_map(DaemonPod::parse)
            .collect())
    }

    fn check(&self) -> Result<(), Error> {
        let id = self.container_id()?;
        let ifname = self.ifname()?;
        let netns = self.netns()?;
        let prev =
            self.conf.prev_result.as_ref().ok_or_else(|| {
                invalid("prevResult", "CHECK needs the result of ADD (prevResult)")
            })?;
        let want = prev
            .ips
            .iter()
            .find_map(|c| match c.address {
                IpNet::V4(n) => Some(n.addr()),
                IpNet::V6(_) => None,
            })
            .ok_or_else(|| invalid("prevResult.ips", "no IPv4 address"))?;
        let node = self.node()?;
        let mismatch = |what: String| {
            Error::Custom(110, "the pod's network is not what ADD set up".into(), what)
        };
        if let Some(store) = self.store()? {
            let held = store
                .find(&id, &ifname)
                .map_err(|e| Error::IOFailure(e.to_string()))?;
            if held != Some(want) {
                return Err(mismatch(format!(
                    "IPAM holds {held:?} for {id}/{ifname}, ADD returned {want}"
                )));
            }
        }
        let name = Self::pod_name(&id, &ifname);
        let pods = self.daemon_pods()?;
        let Some(pod) = pods.iter().find(|p| p.name == name && p.ip == want) else {
            return Err(mismatch(format!("the daemon has no pod {name} at {want}")));
        };
        if pod.limits != self.bandwidth.words() {
            return Err(mismatch(format!(
                "the daemon limits pod {name} to {:?}, runtimeConfig.bandwidth asks for {:?}",
                pod.limits,
                self.bandwidth.words()
            )));
        }
        // Inside the pod: the interface with the address, the MTU, the
        // default route through it (read over rtnetlink in the pod's
        // namespace: the host may have no `ip`).
        let dev = ifname.clone();
        let seen = netcfg::netns::run_in(&netns, move || {
            let index = netcfg::if_index(&dev)?;
            let mut nl = netcfg::Rtnl::new()?;
            let mtu = nl.link_mtu(&dev)?;
            let addrs: Vec<Ipv4Addr> = nl
                .addrs()?
                .into_iter()
                .filter(|a| a.index == index)
                .map(|a| a.net.addr())
                .collect();
            let default_via_dev = nl
                .routes()?
                .iter()
                .any(|r| r.dst.prefix_len() == 0 && r.oif == Some(index));
            Ok((mtu, addrs, default_via_dev))
        });
        let (mtu, addrs, default_via_dev) = match seen {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(mismatch(format!(
                    "no interface {ifname} in {}: {e}",
                    netns.display()
                )));
            }
            Err(e) => {
                return Err(Error::IOFailure(format!(
                    "reading {}: {e}",
                    netns.display()
                )));
            }
        };
        if mtu != node.mtu {
            return Err(mismatch(format!(
                "{ifname} has MTU {mtu}, the overlay's is {}",
                node.mtu
            )));
        }
        if !addrs.contains(&want) {
            return Err(mismatch(format!("{ifname} does not have {want}")));
        }
        if !default_via_dev {
            return Err(mismatch(format!("no default route through {ifname}")));
        }
        Ok(())
    }

    fn status(&self) -> Result<(), Error> {
        match self.node() {
            Ok(n) if n.ready => Ok(()),
            Ok(_) => Err(Error::PluginNotAvailable(
                "the Sluice daemon runs but has no routing table yet (waiting for the Kubernetes API)".into(),
            )),
            Err(e) => Err(Error::PluginNotAvailable(e.details().to_string())),
        }
    }

    fn gc(&self) -> Result<(), Error> {
        let valid: Vec<(String, String)> = self
            .conf
            .valid_attachments
            .iter()
            .flatten()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        match &self.ipam {
            Ipam::Own { .. } => {
                let store = self
                    .store()?
                    .ok_or_else(|| Error::IOFailure("no store".into()))?;
                let gone = store
                    .retain(&valid)
                    .map_err(|e| Error::IOFailure(e.to_string()))?;
                for r in gone {
                    match self.daemon(&format!("pods del {}", r.ip)) {
                        Ok(_) | Err(Error::TryAgainLater(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Ipam::Delegate { plugin, .. } => {
                // Delegated stores are the delegate's to collect, when it
                // speaks GC (spec 1.1.0); older ones keep theirs.
                let exe = self.find_plugin(plugin)?;
                if self
                    .plugin_versions(&exe)?
                    .contains(&SpecVersion::new(1, 1, 0))
                {
                    self.delegate(plugin, Cmd::Gc, None)?;
                }
                Ok(())
            }
        }
    }
}

/// Replaces `"usePodCidr"` in an IPAM object's `subnet` and in its
/// `ranges` (host-local's layout) with the node's pod CIDR, as Calico's
/// plugin does before it runs host-local.
pub fn fill_pod_cidr(ipam: &mut Value, cidr: Ipv4Net) {
    let c = Value::String(cidr.to_string());
    let fill = |o: &mut Value| {
        if o.get("subnet").and_then(Value::as_str) == Some("usePodCidr")
            && let Some(o) = o.as_object_mut()
        {
            o.insert("subnet".into(), c.clone());
        }
    };
    fill(ipam);
    if let Some(ranges) = ipam.get_mut("ranges").and_then(Value::as_array_mut) {
        for set in ranges.iter_mut().filter_map(Value::as_array_mut) {
            for r in set {
                fill(r);
            }
        }
    }
}

#[cfg(test)]
mod tests;
