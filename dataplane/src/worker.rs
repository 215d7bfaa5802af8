//! A worker: owns its ports, its conntrack table and its buffers; polls in
//! bounded bursts and processes run to completion.

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::MacAddr;
use nat::{Conntrack, ConntrackConfig, SnatConfig};

use crate::buf::Buf;
use crate::counters::{Counters, PortCounters, Reason};
use crate::port::Port;
use crate::route::{AddrMap, Routes, Snapshot};

/// Frames taken from one port per poll (DPDK l3fwd and VPP use 32-256).
pub const BURST: usize = 32;

/// Frames a TX queue holds before it is flushed mid-round.
const TX_QUEUE: usize = 4 * BURST;

/// What a port is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node's uplink NIC.
    Uplink,
    /// A pod's interface.
    Pod {
        /// The pod's address (the only source it may use).
        ip: Ipv4Addr,
        /// The pod's MAC, for Ethernet-framed pod ports.
        mac: Option<MacAddr>,
    },
}

/// A port with its role, TX queue and counters.
pub struct PortSlot {
    pub(crate) port: Box<dyn Port>,
    pub(crate) role: Role,
    tx: Vec<Buf>,
    /// Its counters.
    pub counters: PortCounters,
}

impl std::fmt::Debug for PortSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortSlot")
            .field("port", &self.port.name())
            .field("role", &self.role)
            .finish()
    }
}

/// A worker.
#[derive(Debug)]
pub struct Worker {
    routes: Routes,
    ports: Vec<Option<PortSlot>>,
    uplink: Option<usize>,
    pods: AddrMap<usize>,
    pool: Vec<Buf>,
    rx: Vec<Buf>,
    pub(crate) ct: Conntrack,
    /// Counters.
    pub counters: Counters,
}

impl Worker {
    /// A worker with `buffers` packet buffers (allocated here, once).
    pub fn new(
        routes: Routes,
        ct: ConntrackConfig,
        snat: Option<SnatConfig>,
        buffers: usize,
    ) -> Worker {
        Worker {
            routes,
            ports: Vec::new(),
            uplink: None,
            pods: AddrMap::default(),
            pool: (0..buffers.max(BURST)).map(|_| Buf::new()).collect(),
            rx: Vec::with_capacity(BURST),
            ct: Conntrack::new(ct, snat),
            counters: Counters::default(),
        }
    }

    /// Attaches a port; returns its index. Counters carry the port's name.
    pub fn add_port(&mut self, port: Box<dyn Port>, role: Role) -> usize {
        let label = port.name().to_string();
        self.add_port_labelled(port, role, label)
    }

    /// [`Worker::add_port`] with the name counters use (a pod's name rather
    /// than its interface's, which is `eth0` in every pod).
    pub fn add_port_labelled(&mut self, port: Box<dyn Port>, role: Role, label: String) -> usize {
        let slot = PortSlot {
            counters: PortCounters {
                name: label,
                ..PortCounters::default()
            },
            port,
            role,
            tx: Vec::with_capacity(TX_QUEUE),
        };
        let i = match self.ports.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.ports.push(None);
                self.ports.len() - 1
            }
        };
        match role {
            Role::Uplink => self.uplink = Some(i),
            Role::Pod { ip, .. } => {
                self.pods.insert(ip.to_bits(), i);
            }
        }
        if let Some(s) = self.ports.get_mut(i) {
            *s = Some(slot);
        }
        i
    }

    /// Detaches the port of pod `ip` (frames queued for it are dropped and
    /// counted); returns it.
    pub fn remove_pod(&mut self, ip: Ipv4Addr) -> Option<Box<dyn Port>> {
        let i = self.pods.remove(&ip.to_bits())?;
        let slot = self.ports.get_mut(i)?.take()?;
        for b in slot.tx {
            self.counters.drop(Reason::NoSuchPod);
            self.pool.push(b);
        }
        Some(slot.port)
    }

    pub(crate) fn port(&self, i: usize) -> Option<&PortSlot> {
        self.ports.get(i)?.as_ref()
    }

    /// Every attached port.
    pub fn ports(&self) -> impl Iterator<Item = &PortSlot> {
        self.ports.iter().flatten()
    }

    pub(crate) fn pod_port(&self, ip: Ipv4Addr) -> Option<usize> {
        self.pods.get(&ip.to_bits()).copied()
    }

    pub(crate) fn uplink(&self) -> Option<usize> {
        self.uplink
    }

    /// The conntrack table (for listings).
    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    /// Polls every port once (one burst each), processes what arrived and
    /// flushes the TX queues; runs bounded conntrack expiry. Returns the
    /// number of frames received. `now` is the worker's clock.
    pub fn poll(&mut self, now: Duration) -> usize {
        let snap = self.routes.load_full();
        let mut got = 0;
        for i in 0..self.ports.len() {
            got += self.poll_port(&snap, now, i);
        }
        self.flush_all();
        self.ct.handle_timeout(now);
        got
    }

    fn poll_port(&mut self, snap: &Snapshot, now: Duration, i: usize) -> usize {
        while self.rx.len() < BURST {
            match self.pool.pop() {
                Some(b) => self.rx.push(b),
                None => break,
            }
        }
        let mut rx = std::mem::take(&mut self.rx);
        let n = match self.ports.get_mut(i).and_then(Option::as_mut) {
            Some(slot) => match slot.port.recv(&mut rx) {
                Ok(n) => n.min(rx.len()),
                Err(_) => 0,
            },
            None => 0,
        };
        if let Some(slot) = self.ports.get_mut(i).and_then(Option::as_mut) {
            slot.counters.rx += n as u64;
        }
        for mut buf in rx.drain(..n) {
            match self.handle(snap, now, i, &mut buf) {
                Ok(to) => self.enqueue(to, buf),
                Err(r) => {
                    self.counters.drop(r);
                    self.pool.push(buf);
                }
            }
        }
        self.rx = rx;
        n
    }

    fn enqueue(&mut self, to: usize, buf: Buf) {
        let full = match self.ports.get_mut(to).and_then(Option::as_mut) {
            Some(slot) => {
                slot.tx.push(buf);
                slot.tx.len() >= TX_QUEUE
            }
            None => {
                self.counters.drop(Reason::NoSuchPod);
                self.pool.push(buf);
                false
            }
        };
        if full {
            self.flush(to);
        }
    }

    fn flush_all(&mut self) {
        for i in 0..self.ports.len() {
            self.flush(i);
        }
    }

    fn flush(&mut self, i: usize) {
        let Some(slot) = self.ports.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if slot.tx.is_empty() {
            return;
        }
        let (sent, reason) = match slot.port.send(&slot.tx) {
            Ok(n) => (n.min(slot.tx.len()), Reason::TxFull),
            Err(_) => (0, Reason::TxError),
        };
        slot.counters.tx += sent as u64;
        let unsent = slot.tx.len() - sent;
        for b in slot.tx.drain(..) {
            self.pool.push(b);
        }
        for _ in 0..unsent {
            self.counters.drop(reason);
        }
    }

    /// Buffers in the free pool (all of them when idle: none leak).
    pub fn free_buffers(&self) -> usize {
        self.pool.len() + self.rx.len()
    }
}

/// When a worker sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Empty polls in a row before sleeping (0: never sleep, pure busy
    /// polling).
    pub spins: u32,
    /// Longest sleep: the worker wakes at least this often for expiry and
    /// commands.
    pub max_sleep: Duration,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            spins: 2000,
            max_sleep: Duration::from_millis(50),
        }
    }
}

#[cfg(feature = "io")]
impl Worker {
    /// Runs until `stop` is set: busy-polls while frames arrive; after
    /// `idle.spins` empty polls sleeps on the ports' descriptors (epoll
    /// through mio) until one is readable or `max_sleep` passes. `clock`
    /// gives the time passed to conntrack.
    pub fn run(
        &mut self,
        stop: &std::sync::atomic::AtomicBool,
        idle: IdlePolicy,
        clock: impl Fn() -> Duration,
        mut between: impl FnMut(&mut Worker),
    ) -> std::io::Result<()> {
        use mio::unix::SourceFd;
        use mio::{Events, Interest, Poll, Token};
        use std::sync::atomic::Ordering;

        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(64);
        let mut registered: Vec<std::os::fd::RawFd> = Vec::new();
        let mut empty = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let got = self.poll(clock());
            if got > 0 {
                empty = 0;
                continue;
            }
            empty = empty.saturating_add(1);
            if idle.spins == 0 || empty < idle.spins {
                if empty.is_multiple_of(64) {
                    between(self);
                }
                continue;
            }
            between(self);
            // Register new ports' descriptors (ports change rarely).
            let fds: Vec<_> = self.ports().filter_map(|s| s.port.poll_fd()).collect();
            if fds != registered {
                for fd in &registered {
                    let _ = poll.registry().deregister(&mut SourceFd(fd));
                }
                for (i, fd) in fds.iter().enumerate() {
                    poll.registry()
                        .register(&mut SourceFd(fd), Token(i), Interest::READABLE)?;
                }
                registered = fds;
            }
            for s in self.ports.iter_mut().flatten() {
                s.port.before_sleep();
            }
            match poll.poll(&mut events, Some(idle.max_sleep)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            // Woken by a port: busy-poll again. Woken by the timeout: one
            // more look (expiry, commands) and back to sleep.
            empty = if events.is_empty() {
                idle.spins.saturating_sub(1)
            } else {
                0
            };
        }
        Ok(())
    }
}
