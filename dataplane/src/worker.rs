//! A worker: owns its ports, its conntrack table and its buffers; polls in
//! bounded bursts and processes run to completion.

use std::net::Ipv4Addr;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, Sender};
use encap::MacAddr;
use nat::{Conntrack, ConntrackConfig, SnatConfig};

use crate::buf::Buf;
use crate::counters::{Counters, PortCounters, Reason};
use crate::port::{Framing, Port, tso};
use crate::route::{AddrMap, Routes, Snapshot};
use crate::shaper::{PodLimits, TokenBucket};

/// Frames taken from one port per poll (DPDK l3fwd and VPP use 32-256).
pub const BURST: usize = 32;

/// Frames a TX queue holds before it is flushed mid-round.
const TX_QUEUE: usize = 4 * BURST;

/// Frames a rate-limited pod's TX queue holds waiting for tokens (the
/// buffers are the worker's, so this is small); a frame finding it full
/// is dropped.
const SHAPED_QUEUE: usize = 2 * BURST;

/// Free buffers below which frames waiting for a pod's tokens are dropped
/// rather than queued: many flooded, limited pods must not take the
/// buffers the worker needs to receive anything.
const SHAPED_RESERVE: usize = 2 * BURST;

/// Big buffers ([`Buf::big`]) of a worker with a port that moves
/// super-packets: room for a burst read from such a port and those queued
/// for sending (4 MiB). When they run out, such ports read into ordinary
/// buffers and cut what they read, as ports without offload do.
pub const SUPER_BUFFERS: usize = 64;

/// Super-packets read from one port per poll.
const SUPER_BURST: usize = 8;

/// The largest frame a pod port hands over at once (a pod's MTU is at
/// most the uplink's, 1500, plus an Ethernet header).
const MAX_FRAME: usize = 1514;

/// Where the pipeline sends a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    /// Out of this worker's port.
    Port(usize),
    /// To another worker.
    Worker(u8, Handoff),
}

/// What a worker does with a frame another worker handed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// Deliver to the local pod at this address (its port is ours).
    Deliver(Ipv4Addr),
    /// The node's stack sent this to the local pod at this address from
    /// outside the cluster: track it (the pod's replies go back to the
    /// node), then deliver.
    FromHost(Ipv4Addr),
    /// A frame from the uplink answering one of our masqueraded flows:
    /// process it as if our uplink queue had received it.
    Uplink,
    /// A pod's packet answering a service flow we own: to the gateway
    /// address of a flow we masqueraded (the port is from our slice), or
    /// from a Local-policy backend to an outside client whose address
    /// picks us.
    Masqueraded,
}

/// The channels joining a worker to the others: frames handed over
/// (bounded, lock-free) and borrowed buffers going back to their owner.
pub struct Mesh {
    to: Vec<Sender<(Handoff, Buf)>>,
    inbox: Receiver<(Handoff, Buf)>,
    returns: Vec<Sender<Buf>>,
    returned: Receiver<Buf>,
    /// Per worker: whether it is (about to be) asleep on its descriptors.
    sleeping: Vec<Arc<AtomicBool>>,
    /// Per worker: how to wake it (installed by the worker when it starts
    /// sleeping on an epoll set; an eventfd write).
    wakers: Vec<Arc<OnceLock<Waker>>>,
}

/// Wakes a sleeping worker.
pub type Waker = Box<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("workers", &self.to.len())
            .finish()
    }
}

impl Mesh {
    /// What wakes each worker from its sleep (for a stop that should not
    /// wait for the longest sleep).
    pub fn wakers(&self) -> Vec<Arc<OnceLock<Waker>>> {
        self.wakers.clone()
    }

    /// Channels for `n` workers; worker `i` takes element `i`. `buffers`
    /// is each worker's pool size (a return channel holds a whole pool).
    pub fn new(n: usize, buffers: usize) -> Vec<Mesh> {
        // Room for a few rounds of every port's bursts: a TCP stream
        // between pods on two workers crosses in bursts.
        let inboxes: Vec<_> = (0..n).map(|_| crossbeam_channel::bounded(1024)).collect();
        let returns: Vec<_> = (0..n)
            .map(|_| crossbeam_channel::bounded(buffers.max(BURST) + SUPER_BUFFERS))
            .collect();
        let sleeping: Vec<Arc<AtomicBool>> =
            (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect();
        let wakers: Vec<Arc<OnceLock<Waker>>> = (0..n).map(|_| Arc::new(OnceLock::new())).collect();
        inboxes
            .iter()
            .zip(&returns)
            .map(|((_, inbox), (_, returned))| Mesh {
                to: inboxes.iter().map(|(t, _)| t.clone()).collect(),
                inbox: inbox.clone(),
                returns: returns.iter().map(|(t, _)| t.clone()).collect(),
                returned: returned.clone(),
                sleeping: sleeping.clone(),
                wakers: wakers.clone(),
            })
            .collect()
    }
}

/// What a port is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node's uplink NIC.
    Uplink,
    /// The node's own network stack, through a TUN device in the node's
    /// namespace (`sluice0`): the node reaches pods (kubelet probes,
    /// traffic DNATed by the node) and pods reach the node. It answers for
    /// the pods' gateway address (the device's own) and the node IP.
    Host {
        /// The pods' gateway address, held by the host device.
        gateway: Ipv4Addr,
        /// The node IP.
        node: Ipv4Addr,
    },
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
    /// Shapes frames to the port (a pod's ingress limit).
    ingress: Option<TokenBucket>,
    /// Shapes frames from the port (a pod's egress limit).
    egress: Option<TokenBucket>,
    /// Frames read from a port that would lose unread ones (AF_XDP),
    /// waiting for egress tokens.
    held: Vec<Buf>,
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
    id: u8,
    mesh: Option<Mesh>,
    snat: Option<SnatConfig>,
    routes: Routes,
    ports: Vec<Option<PortSlot>>,
    uplink: Option<usize>,
    pods: AddrMap<usize>,
    pool: Vec<Buf>,
    rx: Vec<Buf>,
    /// Big buffers ([`SUPER_BUFFERS`], allocated when the first port that
    /// moves super-packets is attached) and the burst such ports read into.
    big: Vec<Buf>,
    rx_big: Vec<Buf>,
    pub(crate) ct: Conntrack,
    /// Session affinity bindings of the service flows started here.
    pub(crate) affinity: lb::AffinityTable,
    /// Flows, packets and bytes by service port ([`lb::PortId`]); grows
    /// when a new port index first appears, not per packet.
    pub svc: Vec<crate::counters::SvcStats>,
    /// Verdicts of this worker's pods' flows (NetworkPolicy).
    pub(crate) policy_flows: policy::FlowTable,
    /// NetworkPolicy counters and the denied log.
    pub policy: crate::enforce::PolicyView,
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
            id: 0,
            mesh: None,
            snat: snat.clone(),
            routes,
            ports: Vec::new(),
            uplink: None,
            pods: AddrMap::default(),
            pool: (0..buffers.max(BURST)).map(|_| Buf::new()).collect(),
            rx: Vec::with_capacity(BURST),
            big: Vec::new(),
            rx_big: Vec::new(),
            ct: Conntrack::new(ct, snat),
            affinity: lb::AffinityTable::new(crate::services::AFFINITY_ENTRIES),
            svc: Vec::new(),
            policy_flows: policy::FlowTable::new(crate::enforce::FLOW_ENTRIES),
            policy: crate::enforce::PolicyView::default(),
            counters: Counters::default(),
        }
    }

    /// Worker `id` of several, joined to the others by `mesh`
    /// ([`Mesh::new`]). `snat.worker` must be `(id, count)`, so each worker
    /// allocates ports from its own slice.
    pub fn with_mesh(
        id: u8,
        mesh: Mesh,
        routes: Routes,
        ct: ConntrackConfig,
        snat: Option<SnatConfig>,
        buffers: usize,
    ) -> Worker {
        let mut w = Worker::new(routes, ct, snat, 0);
        w.id = id;
        w.mesh = Some(mesh);
        w.pool = (0..buffers.max(BURST)).map(|_| Buf::owned_by(id)).collect();
        w
    }

    /// This worker's index.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// How many workers share the node (1 without a mesh).
    pub(crate) fn workers(&self) -> usize {
        self.mesh.as_ref().map_or(1, |m| m.to.len())
    }

    /// The routing snapshots it loads (for tests and benchmarks that
    /// publish a new one).
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    pub(crate) fn snat(&self) -> Option<&SnatConfig> {
        self.snat.as_ref()
    }

    /// Returns a buffer to its owner's pool.
    fn recycle(&mut self, buf: Buf) {
        if buf.owner() == self.id {
            self.take_back(buf);
        } else if let Some(tx) = self
            .mesh
            .as_ref()
            .and_then(|m| m.returns.get(usize::from(buf.owner())))
        {
            // The channel holds a whole pool: it cannot be full.
            let _ = tx.try_send(buf);
        }
    }

    /// Puts one of our buffers back in its pool (big or ordinary).
    fn take_back(&mut self, mut buf: Buf) {
        buf.set_gso(None);
        if buf.is_big() {
            self.big.push(buf);
        } else {
            self.pool.push(buf);
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
        if port.takes_gso() && self.big.is_empty() && self.rx_big.is_empty() {
            self.big = (0..SUPER_BUFFERS).map(|_| Buf::big(self.id)).collect();
            self.rx_big.reserve(BURST);
        }
        let slot = PortSlot {
            counters: PortCounters {
                name: label,
                ..PortCounters::default()
            },
            port,
            role,
            tx: Vec::with_capacity(TX_QUEUE),
            ingress: None,
            egress: None,
            held: Vec::new(),
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
            Role::Host { gateway, node } => {
                self.pods.insert(gateway.to_bits(), i);
                self.pods.insert(node.to_bits(), i);
            }
            Role::Pod { ip, .. } => {
                self.pods.insert(ip.to_bits(), i);
            }
        }
        if let Some(s) = self.ports.get_mut(i) {
            *s = Some(slot);
        }
        i
    }

    /// Sets pod `ip`'s rate limits (fresh, full buckets); false if the pod
    /// is not attached here.
    pub fn limit_pod(&mut self, ip: Ipv4Addr, limits: PodLimits) -> bool {
        let Some(slot) = self
            .pod_port(ip)
            .and_then(|i| self.ports.get_mut(i))
            .and_then(Option::as_mut)
        else {
            return false;
        };
        slot.ingress = limits.ingress.map(TokenBucket::new);
        slot.egress = limits.egress.map(TokenBucket::new);
        // Room for frames waiting for egress tokens, allocated now rather
        // than on a packet.
        if slot.egress.is_some() && !slot.port.holds_unread() {
            slot.held.reserve(SHAPED_QUEUE);
        }
        true
    }

    /// Detaches the port of pod `ip` (frames queued for it are dropped and
    /// counted); returns it.
    pub fn remove_pod(&mut self, ip: Ipv4Addr) -> Option<Box<dyn Port>> {
        let i = self.pods.remove(&ip.to_bits())?;
        let slot = self.ports.get_mut(i)?.take()?;
        for b in slot.tx.into_iter().chain(slot.held) {
            self.counters.drop(Reason::NoSuchPod);
            self.recycle(b);
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

    /// The uplink's port, if attached.
    pub fn uplink_port_mut(&mut self) -> Option<&mut dyn Port> {
        let i = self.uplink?;
        Some(self.ports.get_mut(i)?.as_mut()?.port.as_mut())
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
        let mut got = self.poll_mesh(&snap, now);
        for i in 0..self.ports.len() {
            got += self.poll_port(&snap, now, i);
        }
        self.flush_all(now);
        self.ct.handle_timeout(now);
        got
    }

    /// How long until a rate-limited port may move again: frames waiting
    /// for ingress tokens, or a pod not read while its egress bucket is in
    /// debt. `None` when nothing waits on a bucket. The idle policy sleeps
    /// no longer than this.
    pub fn shaping_wait(&mut self, now: Duration) -> Option<Duration> {
        let mut wait: Option<Duration> = None;
        for s in self.ports.iter_mut().flatten() {
            let holds_unread = s.port.holds_unread();
            let mut w = |b: &mut TokenBucket| {
                let d = b.wait(now);
                if d > Duration::ZERO {
                    wait = Some(wait.map_or(d, |x| x.min(d)));
                }
            };
            if let Some(b) = s.ingress.as_mut().filter(|_| !s.tx.is_empty()) {
                w(b);
            }
            if let Some(b) = s
                .egress
                .as_mut()
                .filter(|_| holds_unread || !s.held.is_empty())
            {
                w(b);
            }
        }
        wait
    }

    /// Takes back returned buffers and processes frames other workers
    /// handed over (at most a few bursts per poll).
    fn poll_mesh(&mut self, snap: &Snapshot, now: Duration) -> usize {
        if self.mesh.is_none() {
            return 0;
        }
        while let Some(Ok(b)) = self.mesh.as_ref().map(|m| m.returned.try_recv()) {
            self.take_back(b);
        }
        let mut n = 0;
        while n < 16 * BURST {
            let Some(Ok((kind, mut buf))) = self.mesh.as_ref().map(|m| m.inbox.try_recv()) else {
                break;
            };
            n += 1;
            self.counters.handed_in += 1;
            let r = self.handed(snap, now, kind, &mut buf);
            self.dispatch(now, r, buf);
        }
        n
    }

    /// Wakes worker `w` if it sleeps (after handing it a frame). Its flag
    /// is set before it checks its inbox one last time, so a frame sent
    /// after that check always finds the flag set.
    fn wake(&self, w: u8) {
        let Some(m) = self.mesh.as_ref() else {
            return;
        };
        let w = usize::from(w);
        if m.sleeping.get(w).is_some_and(|f| f.load(Ordering::SeqCst))
            && let Some(wake) = m.wakers.get(w).and_then(|x| x.get())
        {
            wake();
        }
    }

    /// Sends a processed frame where the pipeline said, or counts its drop.
    fn dispatch(&mut self, now: Duration, r: Result<Out, Reason>, buf: Buf) {
        match r {
            Ok(Out::Port(to)) => self.enqueue(now, to, buf),
            Ok(Out::Worker(w, kind)) => {
                let res: Result<(), Buf> =
                    match self.mesh.as_ref().and_then(|m| m.to.get(usize::from(w))) {
                        Some(t) => t.try_send((kind, buf)).map_err(|e| e.into_inner().1),
                        None => Err(buf),
                    };
                match res {
                    Ok(()) => {
                        self.counters.handed_off += 1;
                        self.wake(w);
                    }
                    Err(b) => {
                        self.counters.drop(Reason::HandoffFull);
                        self.recycle(b);
                    }
                }
            }
            Err(r) => {
                self.counters.drop(r);
                self.recycle(buf);
            }
        }
    }

    fn poll_port(&mut self, snap: &Snapshot, now: Duration, i: usize) -> usize {
        // A pod over its egress limit whose unread frames wait (and push
        // back) is not read; one whose unread frames would be lost is read,
        // and its frames wait in a short queue of ours.
        let (mut shaped, mut queued, mut room) = (false, false, BURST);
        if let Some(slot) = self.ports.get_mut(i).and_then(Option::as_mut)
            && let Some(b) = slot.egress.as_mut()
        {
            if slot.port.holds_unread() {
                if !b.conforms(now) {
                    slot.counters.paused += 1;
                    return 0;
                }
                // Read no more than the tokens cover (plus one frame).
                room = b.affordable(MAX_FRAME).min(BURST);
                shaped = true;
            } else {
                queued = true;
            }
        }
        self.release_held(snap, now, i);
        // A port that moves super-packets reads into big buffers while
        // there are some.
        let supers = self
            .ports
            .get(i)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.port.takes_gso());
        let mut rx = if supers {
            let mut rx = std::mem::take(&mut self.rx_big);
            while rx.len() < BURST {
                match self.big.pop().or_else(|| self.pool.pop()) {
                    Some(b) => rx.push(b),
                    None => break,
                }
            }
            rx
        } else {
            while self.rx.len() < BURST {
                match self.pool.pop() {
                    Some(b) => self.rx.push(b),
                    None => break,
                }
            }
            std::mem::take(&mut self.rx)
        };
        // A few super-packets per poll (each up to ~45 segments, all cut
        // in this poll for a port that takes none): the other ports get
        // their turn, as they would after one burst of frames.
        let room = if supers {
            room.min(rx.len()).min(SUPER_BURST)
        } else {
            room.min(rx.len())
        };
        let n = match self.ports.get_mut(i).and_then(Option::as_mut) {
            Some(slot) => match slot.port.recv(rx.get_mut(..room).unwrap_or_default()) {
                Ok(n) => n.min(room),
                Err(_) => 0,
            },
            None => 0,
        };
        if let Some(slot) = self.ports.get_mut(i).and_then(Option::as_mut) {
            slot.counters.rx += n as u64;
            for _ in 0..slot.port.take_rx_errors() {
                self.counters.drop(Reason::RxError);
            }
            if shaped && let Some(b) = slot.egress.as_mut() {
                for buf in rx.iter().take(n) {
                    b.charge(buf.len());
                }
            }
        }
        for mut buf in rx.drain(..n) {
            if queued {
                match self.hold(now, i, buf) {
                    Some(b) => buf = b,
                    None => continue,
                }
            }
            let r = self.handle(snap, now, i, &mut buf);
            self.dispatch(now, r, buf);
        }
        if supers {
            self.rx_big = rx;
        } else {
            self.rx = rx;
        }
        n
    }

    /// A frame read from port `i`, which has an egress limit and loses
    /// unread frames: returned if it may go now (nothing waits before it
    /// and the bucket conforms), else queued behind the others, or dropped
    /// and counted when the queue is full or buffers run short.
    fn hold(&mut self, now: Duration, i: usize, buf: Buf) -> Option<Buf> {
        let reserve = self.pool.len() < SHAPED_RESERVE;
        let slot = self.ports.get_mut(i).and_then(Option::as_mut)?;
        let Some(b) = slot.egress.as_mut() else {
            return Some(buf);
        };
        if slot.held.is_empty() && b.conforms(now) {
            b.charge(buf.len());
            return Some(buf);
        }
        if slot.held.len() < SHAPED_QUEUE && !reserve {
            slot.held.push(buf);
            slot.counters.shaped += 1;
            return None;
        }
        slot.counters.rate_limited += 1;
        self.counters.drop(Reason::PodEgressRate);
        self.recycle(buf);
        None
    }

    /// Processes the frames port `i` holds for egress tokens, as far as
    /// the bucket allows now (all of them if the limit was lifted).
    fn release_held(&mut self, snap: &Snapshot, now: Duration, i: usize) {
        let Some(slot) = self.ports.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if slot.held.is_empty() {
            return;
        }
        let mut k = 0;
        for f in &slot.held {
            if let Some(b) = slot.egress.as_mut() {
                if !b.conforms(now) {
                    break;
                }
                b.charge(f.len());
            }
            k += 1;
        }
        let mut held = std::mem::take(&mut slot.held);
        for mut buf in held.drain(..k) {
            let r = self.handle(snap, now, i, &mut buf);
            self.dispatch(now, r, buf);
        }
        if let Some(slot) = self.ports.get_mut(i).and_then(Option::as_mut) {
            slot.held = held;
        }
    }

    /// Whether port `to` has an ingress limit and its queue is full even
    /// after sending what the bucket allows; counts the port's drop if so.
    fn shaped_queue_full(&mut self, now: Duration, to: usize) -> bool {
        let full = |w: &Worker| {
            w.port(to).is_some_and(|s| {
                s.ingress.is_some() && (s.tx.len() >= SHAPED_QUEUE || w.pool.len() < SHAPED_RESERVE)
            })
        };
        if !full(self) {
            return false;
        }
        self.flush(now, to);
        if !full(self) {
            return false;
        }
        if let Some(s) = self.ports.get_mut(to).and_then(Option::as_mut) {
            s.counters.rate_limited += 1;
        }
        true
    }

    fn enqueue(&mut self, now: Duration, to: usize, mut buf: Buf) {
        if buf.gso().is_some() {
            let (takes, eth) = self.port(to).map_or((false, false), |s| {
                (s.port.takes_gso(), s.port.framing() == Framing::Ethernet)
            });
            if !(takes && tso::finish(&mut buf, eth)) {
                self.cut(now, to, buf, eth);
                return;
            }
            if buf.gso().is_some() {
                self.counters.super_whole += 1;
            }
        }
        if self.shaped_queue_full(now, to) {
            self.counters.drop(Reason::PodIngressRate);
            self.recycle(buf);
            return;
        }
        let full = match self.ports.get_mut(to).and_then(Option::as_mut) {
            Some(slot) => {
                if slot.ingress.as_mut().is_some_and(|b| !b.conforms(now)) {
                    slot.counters.shaped += 1;
                }
                slot.tx.push(buf);
                slot.tx.len() >= TX_QUEUE
            }
            None => {
                self.counters.drop(Reason::NoSuchPod);
                self.recycle(buf);
                false
            }
        };
        if full {
            self.flush(now, to);
        }
    }

    fn flush_all(&mut self, now: Duration) {
        for i in 0..self.ports.len() {
            self.flush(now, i);
        }
    }

    /// Sends port `i`'s queue; a rate-limited one only the frames its
    /// bucket allows now (the rest wait).
    fn flush(&mut self, now: Duration, i: usize) {
        let Some(slot) = self.ports.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let k = match slot.ingress.as_mut() {
            None => slot.tx.len(),
            Some(b) => {
                let mut k = 0;
                for f in &slot.tx {
                    if !b.conforms(now) {
                        break;
                    }
                    b.charge(f.len());
                    k += 1;
                }
                k
            }
        };
        if k == 0 {
            return;
        }
        let batch = slot.tx.get(..k).unwrap_or_default();
        let (sent, reason) = match slot.port.send(batch) {
            Ok(n) => (n.min(k), Reason::TxFull),
            Err(_) => (0, Reason::TxError),
        };
        slot.counters.tx += sent as u64;
        let unsent = k - sent;
        let mut sent_bufs = std::mem::take(&mut slot.tx);
        for b in sent_bufs.drain(..k) {
            self.recycle(b);
        }
        if let Some(slot) = self.ports.get_mut(i).and_then(Option::as_mut) {
            slot.tx = sent_bufs;
        }
        for _ in 0..unsent {
            self.counters.drop(reason);
        }
    }

    /// Buffers in the free pool (all of them when idle: none leak).
    pub fn free_buffers(&self) -> usize {
        let small = self.rx.iter().chain(&self.rx_big).filter(|b| !b.is_big());
        self.pool.len() + small.count()
    }

    /// Big buffers free (all of them when idle: none leak).
    pub fn free_big_buffers(&self) -> usize {
        let big = self.rx.iter().chain(&self.rx_big).filter(|b| b.is_big());
        self.big.len() + big.count()
    }
}

mod run;
mod supers;
pub use run::IdlePolicy;
