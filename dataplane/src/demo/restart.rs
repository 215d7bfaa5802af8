//! Stopping and starting a topology's daemons as a node's life does:
//! crashes (SIGKILL), restarts, and graceful hand-overs (SIGTERM), with the
//! next daemon started after the old one exits or before.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::{NODES, Topology, spawn_daemon};
use crate::daemon;

impl Topology {
    /// Process id of node `i`'s daemon (0: node-a, 1: node-b).
    pub fn daemon_pid(&self, i: usize) -> Option<u32> {
        self.daemons.get(i).map(Child::id)
    }

    /// Kills node `i`'s daemon with SIGKILL (no cleanup runs: a crash)
    /// and reaps it.
    pub fn kill_daemon(&mut self, i: usize) -> io::Result<()> {
        let d = self
            .daemons
            .get_mut(i)
            .ok_or_else(|| io::Error::other("no such daemon"))?;
        d.kill()?;
        d.wait().map(|_| ())
    }

    /// Sends node `i`'s daemon SIGKILL and starts the next one at once,
    /// before the old one is gone (what `kill -9; sluice run` in a shell,
    /// or a restarting container runtime, does); reaps the old one, then
    /// waits for the new one's admin socket.
    pub fn kill_and_restart_at_once(&mut self, i: usize, sluice: &Path) -> io::Result<()> {
        self.daemons
            .get_mut(i)
            .ok_or_else(|| io::Error::other("no such daemon"))?
            .kill()?;
        let next = spawn_daemon(self, i, sluice)?;
        if let Some(d) = self.daemons.get_mut(i) {
            std::mem::replace(d, next).wait()?;
        }
        self.wait_admin(i)
    }

    /// Starts node `i`'s daemon again (after [`Topology::kill_daemon`]) and
    /// waits for its admin socket.
    pub fn restart_daemon(&mut self, i: usize, sluice: &Path) -> io::Result<()> {
        let child = spawn_daemon(self, i, sluice)?;
        if let Some(d) = self.daemons.get_mut(i) {
            *d = child;
        }
        self.wait_admin(i)
    }

    /// Waits up to 15 s for node `i`'s admin socket to answer.
    fn wait_admin(&self, i: usize) -> io::Result<()> {
        let s = self
            .sockets
            .get(i)
            .cloned()
            .ok_or_else(|| io::Error::other("no such daemon"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while daemon::request(&s, "status").is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other("daemon did not come back"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Whether node `i`'s daemon is still running.
    pub fn daemon_alive(&mut self, i: usize) -> bool {
        self.daemons
            .get_mut(i)
            .is_some_and(|d| matches!(d.try_wait(), Ok(None)))
    }

    /// Node `i`'s daemon log so far (every run's lines).
    pub fn daemon_log(&self, i: usize) -> String {
        let tag = NODES.get(i).map_or("a", |n| n.0);
        std::fs::read_to_string(self.dir.join(format!("{tag}.log"))).unwrap_or_default()
    }

    /// Node `i`'s configuration file.
    pub fn config_path(&self, i: usize) -> PathBuf {
        let tag = NODES.get(i).map_or("a", |n| n.0);
        self.dir.join(format!("{tag}.yaml"))
    }

    /// Node `i`'s `admin.run_dir` (its flow tables).
    pub fn run_dir(&self, i: usize) -> PathBuf {
        let tag = NODES.get(i).map_or("a", |n| n.0);
        self.dir.join(format!("run-{tag}"))
    }

    /// A graceful restart of node `i`'s daemon, as a rolling update does
    /// it: SIGTERM (the daemon hands the node over and exits), and the next
    /// daemon started after the old one exits or, with `new_first`, before
    /// (it waits for the node lock, and takes over the moment the old one
    /// releases it). Waits for the new one's admin socket.
    pub fn graceful_restart(&mut self, i: usize, sluice: &Path, new_first: bool) -> io::Result<()> {
        let pid = self
            .daemons
            .get(i)
            .map(Child::id)
            .ok_or_else(|| io::Error::other("no such daemon"))?;
        let term = || {
            // SAFETY: kill(2) on our own child's pid (`ip netns exec`
            // execs the daemon: the child is the daemon).
            if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        let next = if new_first {
            let next = spawn_daemon(self, i, sluice)?;
            // Let it reach the lock before the old one goes.
            std::thread::sleep(Duration::from_millis(300));
            term()?;
            next
        } else {
            term()?;
            if let Some(d) = self.daemons.get_mut(i) {
                wait_exit(d, Duration::from_secs(10))?;
            }
            spawn_daemon(self, i, sluice)?
        };
        if let Some(d) = self.daemons.get_mut(i) {
            let mut old = std::mem::replace(d, next);
            wait_exit(&mut old, Duration::from_secs(10))?;
        }
        self.wait_admin(i)
    }
}

impl Topology {
    /// A rolling update with a surge pod: the next daemon starts with
    /// `admin.take_over: true` and asks the running one for the node,
    /// which it hands over at once (no signal) and then waits, not
    /// forwarding, for its SIGTERM; sent once the new one serves. Waits
    /// for the new one's admin socket.
    pub fn take_over_restart(&mut self, i: usize, sluice: &Path) -> io::Result<()> {
        let tag = NODES.get(i).map_or("a", |n| n.0);
        let base = std::fs::read_to_string(self.config_path(i))?;
        let cfg = self.dir.join(format!("{tag}-take-over.yaml"));
        // `admin:` is the config's last section.
        std::fs::write(&cfg, format!("{base}  take_over: true\n"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{tag}.log")))?;
        let mut next = super::spawn_sluice_with(
            &self.ns(tag),
            sluice,
            &cfg,
            log,
            self.daemon_path.as_deref(),
        )?;
        // The new one answers once the old one has handed over.
        let socket = self
            .sockets
            .get(i)
            .cloned()
            .ok_or_else(|| io::Error::other("no such daemon"))?;
        let want = format!("\npid {}\n", next.id());
        let deadline = Instant::now() + Duration::from_secs(15);
        while !daemon::request(&socket, "status").is_ok_and(|s| s.contains(&want)) {
            if Instant::now() > deadline || !matches!(next.try_wait(), Ok(None)) {
                let _ = next.kill();
                let _ = next.wait();
                return Err(io::Error::other("the daemon taking over did not come up"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let Some(d) = self.daemons.get_mut(i) else {
            return Err(io::Error::other("no such daemon"));
        };
        let mut old = std::mem::replace(d, next);
        if !matches!(old.try_wait(), Ok(None)) {
            return Err(io::Error::other(
                "the daemon that handed over exited before its SIGTERM",
            ));
        }
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(old.id() as i32, libc::SIGTERM) } != 0 {
            return Err(io::Error::last_os_error());
        }
        wait_exit(&mut old, Duration::from_secs(10))
    }
}

/// Waits up to `limit` for `child` to exit (it was asked to).
fn wait_exit(child: &mut Child, limit: Duration) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("the daemon did not exit on SIGTERM"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// How the demo restarts node-a's daemon.
#[derive(Clone, Copy)]
enum How {
    Kill9,
    Graceful,
    TakeOver,
}

/// The demo's restart checks: a 50 MB TCP transfer from pod a1 through SNAT
/// to the external host while node-a's daemon is killed (SIGKILL) and
/// started again at once, while it is restarted gracefully (SIGTERM, then
/// start), and while the next daemon takes the node over as a DaemonSet's
/// surge pod does (`admin.take_over`: the uplink sockets pass to it still
/// bound); each must arrive intact over the same connection.
pub fn restart_checks(t: &mut Topology, exe: &Path, s: &mut super::Summary) {
    for (port, how) in [
        (5301u16, How::Kill9),
        (5302, How::Graceful),
        (5303, How::TakeOver),
    ] {
        let label = match how {
            How::Kill9 => "kill -9, started at once",
            How::Graceful => "SIGTERM (hand-over), then start",
            How::TakeOver => "the next daemon takes over, as a rolling update's surge pod",
        };
        match transfer_across_restart(t, exe, port, how) {
            Ok((restored, taken)) => s.check(
                !matches!(how, How::TakeOver) || taken > 0,
                format!(
                    "tcp 50 MB a1 -> external (SNAT) across a restart of node-a's daemon ({label}): intact, {restored} flows carried on{}",
                    if matches!(how, How::TakeOver) {
                        format!(", {taken} uplink sockets taken over still bound")
                    } else {
                        String::new()
                    }
                ),
            ),
            Err(e) => s.check(false, format!("tcp a1 -> external across a restart ({label}): {e}")),
        }
    }
}

fn transfer_across_restart(
    t: &mut Topology,
    exe: &Path,
    port: u16,
    how: How,
) -> io::Result<(u64, u64)> {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const TOTAL: usize = 50 << 20;
    let byte = |i: usize| (i.wrapping_mul(31) ^ (i >> 13)) as u8;
    let ext = super::EXT;
    let l = crate::netns::run_in(&t.ns_path("ext"), move || {
        std::net::TcpListener::bind((ext, port))
    })?;
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let server = std::thread::spawn(move || -> io::Result<bool> {
        let (mut c, _) = l.accept()?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        let (mut buf, mut off, mut intact) = (vec![0u8; 64 << 10], 0usize, true);
        loop {
            let n = c.read(&mut buf)?;
            if n == 0 {
                return Ok(intact && off == TOTAL);
            }
            intact &= buf
                .iter()
                .take(n)
                .enumerate()
                .all(|(k, b)| *b == byte(off + k));
            off += n;
            g.store(off as u64, Ordering::Relaxed);
        }
    });
    let mut c = crate::netns::run_in(&t.ns_path("a1"), move || {
        std::net::TcpStream::connect_timeout(&(ext, port).into(), Duration::from_secs(5))
    })?;
    let client = std::thread::spawn(move || -> io::Result<()> {
        c.set_write_timeout(Some(Duration::from_secs(30)))?;
        let data: Vec<u8> = (0..TOTAL).map(byte).collect();
        for chunk in data.chunks(64 << 10) {
            c.write_all(chunk)?;
            // Paced, so the restart lands mid-transfer.
            std::thread::sleep(Duration::from_millis(2));
        }
        c.shutdown(std::net::Shutdown::Write)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.load(Ordering::Relaxed) < (TOTAL / 4) as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    match how {
        How::Kill9 => t.kill_and_restart_at_once(0, exe)?,
        How::Graceful => t.graceful_restart(0, exe, false)?,
        How::TakeOver => t.take_over_restart(0, exe)?,
    }
    let status = t
        .sockets
        .first()
        .and_then(|s| daemon::request(s, "status").ok())
        .unwrap_or_default();
    let value = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let (restored, taken) = (
        value("flows_restored "),
        value("uplink_sockets_taken_over "),
    );
    client
        .join()
        .map_err(|_| io::Error::other("client panicked"))??;
    let intact = server
        .join()
        .map_err(|_| io::Error::other("server panicked"))??;
    if !intact {
        return Err(io::Error::other("the bytes differ or fall short"));
    }
    Ok((restored, taken))
}
