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

/// The program, the workers (each with its uplink queue's port) and what
/// wakes them.
pub(super) type Built = (Arc<SteerProgram>, Vec<Worker>, Vec<Arc<OnceLock<Waker>>>);

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
    let mut workers = Vec::with_capacity(n);
    for (i, (mut w, mut port)) in parts?.into_iter().enumerate() {
        port.steer_with(&prog, i as u32)?;
        let label = if n > 1 {
            format!("{}/q{i}", cfg.uplink)
        } else {
            cfg.uplink.clone()
        };
        w.add_port_labelled(Box::new(port), Role::Uplink, label);
        workers.push(w);
    }
    Ok((prog, workers, wakers))
}
