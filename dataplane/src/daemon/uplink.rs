//! The uplink at start-up: the steering program and one AF_XDP socket and
//! worker per receive queue, made in parallel. A restart waits on these
//! (loading and verifying the program; each socket's UMEM; each worker's
//! buffers and tables), so they overlap: the sockets are bound while the
//! program loads, and registered with it once both are ready.

use std::sync::{Arc, OnceLock};

use nat::{ConntrackConfig, SnatConfig};

use crate::config::Config;
use crate::port::Port;
use crate::port::steer::Hook;
use crate::port::tap::{OffloadUplink, Redirect, UplinkTap};
use crate::port::xdp::{Handed, SteerConfig, SteerProgram, XdpPort};
use crate::route::Routes;
use crate::uplink_mode::UplinkMode;
use crate::worker::{Mesh, Role, Waker, Worker};

/// The program, the workers (each with its uplink queue's port), what
/// wakes them, and how the uplink's sockets are bound.
pub(super) type Built = (
    Arc<SteerProgram>,
    Vec<Worker>,
    Vec<Arc<OnceLock<Waker>>>,
    BindMode,
);

/// How the uplink moves frames: the mode chosen and why, and how its
/// AF_XDP sockets are bound.
#[derive(Clone, Debug, Default)]
pub(super) struct BindMode {
    /// `afxdp` or `offload`.
    pub mode: UplinkMode,
    /// Why that mode.
    pub why: String,
    /// Why the sockets copy frames (the driver refused zero-copy); `None`:
    /// zero-copy.
    pub copy_reason: Option<String>,
    /// Received through the offload TAP (the steering program at the
    /// uplink's TCX ingress), not the AF_XDP sockets.
    pub rx_tap: bool,
    /// Sockets the daemon before this one handed over, still bound.
    pub taken_over: usize,
}

impl BindMode {
    /// Lines for `sluice status`.
    pub fn status(&self) -> String {
        format!(
            "uplink_mode {}\nuplink_mode_reason {}\nuplink_receive {}\nuplink_zero_copy {}\n{}uplink_sockets_taken_over {}\n",
            self.mode,
            self.why,
            if self.rx_tap { "tap" } else { "afxdp" },
            self.copy_reason.is_none(),
            self.copy_reason
                .as_ref()
                .map_or(String::new(), |w| format!("uplink_copy_reason {w}\n")),
            self.taken_over
        )
    }

    /// Prometheus lines.
    pub fn metrics(&self) -> String {
        format!(
            "# HELP sluice_uplink_offload Whether the uplink sends through the offload TAP (1: super-packets the kernel segments) or AF_XDP (0).\n# TYPE sluice_uplink_offload gauge\nsluice_uplink_offload {}\n",
            u8::from(self.mode == UplinkMode::Offload)
        ) + &format!(
            "# HELP sluice_uplink_zero_copy Whether the uplink's AF_XDP sockets are bound in zero-copy mode (1) or copy mode (0; `sluice status` says why).\n# TYPE sluice_uplink_zero_copy gauge\nsluice_uplink_zero_copy {}\n",
            u8::from(self.copy_reason.is_none())
        )
    }
}

/// Builds the uplink's program and `n` workers, worker `i` on queue `i`
/// with its own slice of the SNAT ports, and its socket: the one `handed`
/// over by the daemon before (still bound) if there is one for its queue,
/// else a new one.
pub(super) fn build(
    cfg: &Config,
    snat: Option<&SnatConfig>,
    ct: &ConntrackConfig,
    routes: &Routes,
    n: usize,
    mut handed: Vec<Handed>,
) -> std::io::Result<Built> {
    // Queue i's socket, if handed; any other (the old daemon had more
    // queues) closes when this returns.
    let mut handed: Vec<Option<Handed>> = (0..n)
        .map(|i| {
            let at = handed.iter().position(|h| h.queue as usize == i)?;
            Some(handed.swap_remove(at))
        })
        .collect();
    let meshes = Mesh::new(n, 4096);
    let wakers = meshes.first().map(Mesh::wakers).unwrap_or_default();
    let panicked = || std::io::Error::other("start-up thread panicked");
    // The offload TAP (unless AF_XDP is forced) is opened alongside: the
    // attempt is the probe (a kernel without UDP-tunnel GSO on TAP refuses
    // it), and a throw-away probe device would cost its unregistration
    // (tens of milliseconds under the RTNL lock) in every restart.
    let t0 = std::time::Instant::now();
    let want_tap = cfg.uplink_mode != UplinkMode::AfXdp;
    let steer = |tap: u32| SteerConfig {
        node_ip: cfg.ip,
        vxlan_port: cfg.vxlan_port,
        ports: cfg.snat_ports,
        idents: cfg.snat_ports,
        all: false,
        tap,
    };
    // Forced offload receives through the TAP: the program goes to the
    // uplink's TCX ingress at once (it drops what is Sluice's until it
    // learns the TAP). Otherwise XDP, moved there if auto picks offload.
    let hook = if cfg.uplink_mode == UplinkMode::Offload {
        Hook::Tcx
    } else {
        Hook::Xdp
    };
    let (prog, parts, tap) = std::thread::scope(|s| {
        let tap = want_tap.then(|| s.spawn(|| offload_tap(&cfg.uplink, n)));
        let prog = s.spawn(|| SteerProgram::attach_at(&cfg.uplink, steer(0), hook));
        let parts: Vec<_> = meshes
            .into_iter()
            .enumerate()
            .map(|(i, mesh)| {
                let snat = snat.cloned().map(|mut s| {
                    s.worker = (i as u16, n as u16);
                    s
                });
                let (ct, routes, up) = (ct.clone(), routes.clone(), &cfg.uplink);
                let given = handed.get_mut(i).and_then(Option::take);
                s.spawn(move || -> std::io::Result<(Worker, XdpPort, bool)> {
                    let (port, adopted) = match given.map(|h| XdpPort::adopt(up, h, None)) {
                        Some(Ok(p)) => {
                            tracing::info!("uplink {up} queue {i}: socket taken over, still bound");
                            (p, true)
                        }
                        Some(Err(e)) => {
                            tracing::warn!(
                                "uplink {up} queue {i}: the handed socket: {e}; binding afresh"
                            );
                            (XdpPort::open(up, i as u32, None)?, false)
                        }
                        None => (XdpPort::open(up, i as u32, None)?, false),
                    };
                    let w = Worker::with_mesh(i as u8, mesh, routes, ct, snat, 4096);
                    Ok((w, port, adopted))
                })
            })
            .collect();
        (
            prog.join().unwrap_or_else(|_| Err(panicked())),
            parts
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
                .collect::<std::io::Result<Vec<_>>>(),
            tap.map(|h| h.join().unwrap_or_else(|_| Err(panicked()))),
        )
    });
    if let Some(Ok(_)) = &tap {
        tracing::debug!("offload TAP ready at +{} ms", t0.elapsed().as_millis());
    }
    let mut prog = prog?;
    let parts = parts?;
    // Every queue of one device binds the same way; the first says how.
    let copy_why = parts
        .first()
        .and_then(|(_, p, _)| p.copy_mode().map(str::to_string));
    match &copy_why {
        Some(why) => tracing::info!(
            "uplink {}: AF_XDP in copy mode ({why}): every frame is copied between the UMEM and the kernel",
            cfg.uplink
        ),
        None => tracing::info!("uplink {}: AF_XDP in zero-copy mode", cfg.uplink),
    }
    let (chosen, why) = cfg
        .uplink_mode
        .choose(copy_why.is_none(), || match &tap {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(std::io::Error::new(e.kind(), e.to_string())),
            None => Err(std::io::Error::other("not tried (uplink_mode: afxdp)")),
        })
        .map_err(std::io::Error::other)?;
    tracing::info!("uplink {}: mode {chosen} ({why})", cfg.uplink);
    let redirect = match tap {
        Some(Ok(t)) if chosen == UplinkMode::Offload => Some(t),
        // Opened for nothing (zero-copy won): closed off the start-up path.
        Some(Ok(t)) => {
            std::thread::spawn(move || drop(t));
            None
        }
        _ => None,
    };
    if redirect.is_some() {
        let tap = netcfg::if_index(OFFLOAD_TAP)?;
        if prog.hook() == Hook::Xdp {
            // Auto chose offload: the program moves to TCX ingress (the XDP
            // one steers until the new one is in place, then goes).
            prog = SteerProgram::attach_at(&cfg.uplink, steer(tap), Hook::Tcx)?;
        }
        prog.configure(steer(tap))?;
    }
    let prog = Arc::new(prog);
    let tap_rx = prog.hook() == Hook::Tcx;
    let mode = BindMode {
        mode: chosen,
        why,
        copy_reason: copy_why,
        rx_tap: tap_rx,
        taken_over: parts.iter().filter(|(_, _, a)| *a).count(),
    };
    let mut taps = redirect.map(|(r, q)| (r, q.into_iter()));
    let mut workers = Vec::with_capacity(n);
    for (i, (mut w, mut port, _)) in parts.into_iter().enumerate() {
        port.steer_with(&prog, i as u32)?;
        let label = if n > 1 {
            format!("{}/q{i}", cfg.uplink)
        } else {
            cfg.uplink.clone()
        };
        let port: Box<dyn Port> = match taps.as_mut() {
            Some((r, queues)) => {
                let q = queues
                    .next()
                    .ok_or_else(|| std::io::Error::other("offload TAP: a queue short"))?;
                Box::new(OffloadUplink::new(port, q, r.clone(), tap_rx))
            }
            None => Box::new(port),
        };
        w.add_port_labelled(port, Role::Uplink, label);
        workers.push(w);
    }
    Ok((prog, workers, wakers, mode))
}

/// The offload TAP's name: one per node (a daemon taking over opens more
/// queues on it).
pub(super) const OFFLOAD_TAP: &str = "sluice-up";

/// Opens `n` queues of the offload TAP, brings it up and redirects it to
/// `uplink`.
fn offload_tap(uplink: &str, n: usize) -> std::io::Result<(Arc<Redirect>, Vec<UplinkTap>)> {
    let queues = (0..n)
        .map(|_| UplinkTap::open(OFFLOAD_TAP))
        .collect::<std::io::Result<Vec<_>>>()?;
    UplinkTap::prepare(OFFLOAD_TAP)?;
    let redirect = Arc::new(Redirect::attach(OFFLOAD_TAP, uplink)?);
    Ok((redirect, queues))
}
