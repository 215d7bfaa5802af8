//! The uplink at start-up: the steering program and one AF_XDP socket and
//! worker per receive queue, made in parallel. A restart waits on these
//! (loading and verifying the program; each socket's UMEM; each worker's
//! buffers and tables), so they overlap: the sockets are bound while the
//! program loads, and registered with it once both are ready.

use std::sync::{Arc, OnceLock};

use nat::{ConntrackConfig, SnatConfig};

use crate::config::Config;
use crate::port::xdp::{SteerConfig, SteerProgram, XdpPort};
use crate::route::Routes;
use crate::worker::{Mesh, Role, Waker, Worker};

/// The program, the workers (each with its uplink queue's port), what
/// wakes them, and how the uplink's sockets are bound.
pub(super) type Built = (
    Arc<SteerProgram>,
    Vec<Worker>,
    Vec<Arc<OnceLock<Waker>>>,
    BindMode,
);

/// How the uplink's AF_XDP sockets are bound.
#[derive(Clone, Debug, Default)]
pub(super) struct BindMode {
    /// Why they copy frames (the driver refused zero-copy); `None`:
    /// zero-copy.
    pub copy_reason: Option<String>,
}

impl BindMode {
    /// Lines for `sluice status`.
    pub fn status(&self) -> String {
        format!(
            "uplink_mode afxdp\nuplink_zero_copy {}\n{}",
            self.copy_reason.is_none(),
            self.copy_reason
                .as_ref()
                .map_or(String::new(), |w| format!("uplink_copy_reason {w}\n"))
        )
    }

    /// Prometheus lines.
    pub fn metrics(&self) -> String {
        format!(
            "# HELP sluice_uplink_zero_copy Whether the uplink's AF_XDP sockets are bound in zero-copy mode (1) or copy mode (0; `sluice status` says why).\n# TYPE sluice_uplink_zero_copy gauge\nsluice_uplink_zero_copy {}\n",
            u8::from(self.copy_reason.is_none())
        )
    }
}

/// Builds the uplink's program and `n` workers, worker `i` on queue `i`
/// with its own slice of the SNAT ports.
pub(super) fn build(
    cfg: &Config,
    snat: Option<&SnatConfig>,
    ct: &ConntrackConfig,
    routes: &Routes,
    n: usize,
) -> std::io::Result<Built> {
    let meshes = Mesh::new(n, 4096);
    let wakers = meshes.first().map(Mesh::wakers).unwrap_or_default();
    let panicked = || std::io::Error::other("start-up thread panicked");
    let (prog, parts) = std::thread::scope(|s| {
        let prog = s.spawn(|| {
            SteerProgram::attach(
                &cfg.uplink,
                SteerConfig {
                    node_ip: cfg.ip,
                    vxlan_port: cfg.vxlan_port,
                    ports: cfg.snat_ports,
                    idents: cfg.snat_ports,
                    all: false,
                },
            )
        });
        let parts: Vec<_> = meshes
            .into_iter()
            .enumerate()
            .map(|(i, mesh)| {
                let snat = snat.cloned().map(|mut s| {
                    s.worker = (i as u16, n as u16);
                    s
                });
                let (ct, routes, up) = (ct.clone(), routes.clone(), &cfg.uplink);
                s.spawn(move || -> std::io::Result<(Worker, XdpPort)> {
                    let port = XdpPort::open(up, i as u32, None)?;
                    let w = Worker::with_mesh(i as u8, mesh, routes, ct, snat, 4096);
                    Ok((w, port))
                })
            })
            .collect();
        (
            prog.join().unwrap_or_else(|_| Err(panicked())),
            parts
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
                .collect::<std::io::Result<Vec<_>>>(),
        )
    });
    let prog = Arc::new(prog?);
    let parts = parts?;
    // Every queue of one device binds the same way; the first says how.
    let copy_why = parts
        .first()
        .and_then(|(_, p)| p.copy_mode().map(str::to_string));
    match &copy_why {
        Some(why) => tracing::info!(
            "uplink {}: AF_XDP in copy mode ({why}): every frame is copied between the UMEM and the kernel",
            cfg.uplink
        ),
        None => tracing::info!("uplink {}: AF_XDP in zero-copy mode", cfg.uplink),
    }
    let mode = BindMode {
        copy_reason: copy_why,
    };
    let mut workers = Vec::with_capacity(n);
    for (i, (mut w, mut port)) in parts.into_iter().enumerate() {
        port.steer_with(&prog, i as u32)?;
        let label = if n > 1 {
            format!("{}/q{i}", cfg.uplink)
        } else {
            cfg.uplink.clone()
        };
        w.add_port_labelled(Box::new(port), Role::Uplink, label);
        workers.push(w);
    }
    Ok((prog, workers, wakers, mode))
}
