//! pktgen: a packet generator and sink of our own (issue 6).
//!
//! The generator builds Ethernet/IPv4/UDP frames from a [`Profile`]
//! (size, flows, addresses). Each payload carries a magic number, the flow,
//! a per-flow sequence number and a send timestamp. It transmits them in
//! bursts through any [`Port`] (AF_XDP in the harness), at a set rate or
//! flat out. The sink reads frames from a port and counts what arrived:
//! per-flow loss and reordering from the sequence numbers, and latency
//! percentiles from the timestamps. Generator and sink share one clock (one
//! process), so latency needs no clock sync.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::buf::Buf;
use dataplane::port::Port;
use encap::checksum::internet_checksum;

/// Payload marker: "SLPG".
pub const MAGIC: u32 = 0x534c_5047;

/// Bytes of the stamp at the start of the UDP payload, all 32-bit: magic,
/// flow, sequence, send time (low 32 bits of ns since the shared epoch;
/// latencies under 4.29 s are exact with wrapping arithmetic).
pub const STAMP_LEN: usize = 16;

/// Smallest frame that carries a stamp: 14 + 20 + 8 + 16 = 58, so the
/// classic 64-byte frame (60 bytes without FCS) fits.
pub const MIN_FRAME: usize = 14 + 20 + 8 + STAMP_LEN;

/// What to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Ethernet frame size in bytes, without the 4-byte FCS (at least
    /// [`MIN_FRAME`]; 60 is a "64-byte" frame).
    pub frame_len: usize,
    /// Distinct flows (UDP source ports `base_port..base_port + flows`).
    pub flows: u32,
    /// Source and destination MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source address.
    pub src_ip: Ipv4Addr,
    /// Destination address.
    pub dst_ip: Ipv4Addr,
    /// First source port.
    pub base_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// How many destination ports the flows spread over: flow `k` goes
    /// to `dst_port + k % dst_ports` from `base_port + k / dst_ports`, so
    /// many flows need not share one destination (a NAT needs a distinct
    /// port per flow towards one destination). 1 or 0: one port.
    pub dst_ports: u16,
    /// How many consecutive destination addresses (from `dst_ip`) the
    /// flows spread over after the ports: flow `k` goes to `dst_ip + (k /
    /// dst_ports) % dst_ips`, from `base_port + k / (dst_ports * dst_ips)`
    /// (a benchmark of many Services). 1 or 0: one address.
    pub dst_ips: u32,
    /// Wrap each frame in VXLAN as a remote node would send it.
    pub vxlan: Option<VxlanOuter>,
}

/// The outer headers of a VXLAN-encapsulated frame (Linux vxlan's shape:
/// IPv4, DF clear, UDP checksum zero, I flag, the VNI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanOuter {
    /// Outer source MAC.
    pub src_mac: [u8; 6],
    /// Outer destination MAC (the node's uplink).
    pub dst_mac: [u8; 6],
    /// Outer source address (the sending node).
    pub src_ip: Ipv4Addr,
    /// Outer destination address (the node under test).
    pub dst_ip: Ipv4Addr,
    /// UDP destination port (8472 for Linux and Flannel, 4789 IANA).
    pub port: u16,
    /// VNI.
    pub vni: u32,
}

/// Bytes VXLAN adds: outer Ethernet, IPv4, UDP, VXLAN.
pub const VXLAN_OVERHEAD: usize = 14 + 20 + 8 + 8;

impl VxlanOuter {
    fn header(&self, inner_len: usize) -> Vec<u8> {
        let mut h = vec![0u8; VXLAN_OVERHEAD];
        h[..6].copy_from_slice(&self.dst_mac);
        h[6..12].copy_from_slice(&self.src_mac);
        h[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip_len = (inner_len + 36) as u16;
        h[14] = 0x45;
        h[16..18].copy_from_slice(&ip_len.to_be_bytes());
        h[22] = 64;
        h[23] = 17;
        h[26..30].copy_from_slice(&self.src_ip.octets());
        h[30..34].copy_from_slice(&self.dst_ip.octets());
        let c = internet_checksum(&h[14..34]);
        h[24..26].copy_from_slice(&c.to_be_bytes());
        h[34..36].copy_from_slice(&49152u16.to_be_bytes());
        h[36..38].copy_from_slice(&self.port.to_be_bytes());
        h[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
        h[42] = 0x08;
        h[46..49].copy_from_slice(&self.vni.to_be_bytes()[1..]);
        h
    }
}

/// One frame's template, stamped per packet.
#[derive(Clone, Debug)]
pub struct Generator {
    profile: Profile,
    template: Vec<u8>,
    /// Where the inner frame starts in the template (0, or the VXLAN
    /// overhead).
    at: usize,
    seqs: Vec<u32>,
    next_flow: u32,
    epoch: Instant,
    /// Frames sent.
    pub sent: u64,
}

/// The stamp's first word for a run tagged `tag`: a sink counts only its
/// own run's frames, so a frame held back from an earlier run (or from
/// another generator) is "foreign", not a latency sample from another
/// clock.
pub fn magic(tag: u16) -> u32 {
    MAGIC ^ u32::from(tag)
}

const UDP_AT: usize = 14 + 20;
const PAYLOAD_AT: usize = UDP_AT + 8;

impl Generator {
    /// A generator for `profile`; timestamps count from `epoch` (shared
    /// with the sink).
    pub fn new(profile: Profile, epoch: Instant) -> Generator {
        Self::tagged(profile, epoch, 0)
    }

    /// [`Generator::new`] for run `tag` (see [`magic`]).
    pub fn tagged(profile: Profile, epoch: Instant, tag: u16) -> Generator {
        let len = profile.frame_len.max(MIN_FRAME);
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&profile.dst_mac);
        f[6..12].copy_from_slice(&profile.src_mac);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip_len = (len - 14) as u16;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[20] = 0x40; // DF
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&profile.src_ip.octets());
        f[30..34].copy_from_slice(&profile.dst_ip.octets());
        let c = internet_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[UDP_AT + 2..UDP_AT + 4].copy_from_slice(&profile.dst_port.to_be_bytes());
        f[UDP_AT + 4..UDP_AT + 6].copy_from_slice(&(ip_len - 20).to_be_bytes());
        // UDP checksum 0 (none): the stamp changes per packet.
        f[PAYLOAD_AT..PAYLOAD_AT + 4].copy_from_slice(&magic(tag).to_be_bytes());
        let flows = profile.flows.max(1);
        let (template, at) = match &profile.vxlan {
            Some(o) => {
                let mut t = o.header(f.len());
                t.extend_from_slice(&f);
                (t, VXLAN_OVERHEAD)
            }
            None => (f, 0),
        };
        Generator {
            template,
            at,
            seqs: vec![0; flows as usize],
            profile,
            next_flow: 0,
            epoch,
            sent: 0,
        }
    }

    /// Writes the next frame (round-robin over the flows) into `buf`.
    pub fn fill(&mut self, buf: &mut Buf) {
        let flow = self.next_flow;
        self.next_flow = (self.next_flow + 1) % self.profile.flows.max(1);
        let seq = self.seqs[flow as usize];
        self.seqs[flow as usize] = seq.wrapping_add(1);
        buf.fill(&self.template);
        let at = self.at;
        let Some(f) = buf.data_mut().get_mut(at..) else {
            return;
        };
        let spread = u32::from(self.profile.dst_ports.max(1));
        let ips = self.profile.dst_ips.max(1);
        let sport = self
            .profile
            .base_port
            .wrapping_add((flow / spread / ips) as u16);
        let dport = self.profile.dst_port.wrapping_add((flow % spread) as u16);
        if ips > 1 {
            let dst = u32::from(self.profile.dst_ip).wrapping_add(flow / spread % ips);
            f[30..34].copy_from_slice(&dst.to_be_bytes());
            f[24..26].copy_from_slice(&[0, 0]);
            let c = internet_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        f[UDP_AT..UDP_AT + 2].copy_from_slice(&sport.to_be_bytes());
        f[UDP_AT + 2..UDP_AT + 4].copy_from_slice(&dport.to_be_bytes());
        f[PAYLOAD_AT + 4..PAYLOAD_AT + 8].copy_from_slice(&flow.to_be_bytes());
        f[PAYLOAD_AT + 8..PAYLOAD_AT + 12].copy_from_slice(&seq.to_be_bytes());
        let ns = self.epoch.elapsed().as_nanos() as u32;
        f[PAYLOAD_AT + 12..PAYLOAD_AT + 16].copy_from_slice(&ns.to_be_bytes());
    }

    /// Sends `count` frames through `port` in bursts of `bufs.len()`, at
    /// most `rate` frames per second (`None`: flat out), stopping early
    /// once `limit` has passed. Frames the port refuses are retried, so
    /// exactly `count` leave unless the time limit ends the run first.
    /// Returns the time it took.
    pub fn run(
        &mut self,
        port: &mut dyn Port,
        bufs: &mut [Buf],
        count: u64,
        rate: Option<f64>,
        limit: Option<Duration>,
    ) -> std::io::Result<Duration> {
        let start = Instant::now();
        let mut done = 0u64;
        while done < count && limit.is_none_or(|l| start.elapsed() < l) {
            if let Some(r) = rate {
                let due = Duration::from_secs_f64(done as f64 / r);
                while start.elapsed() < due {
                    std::hint::spin_loop();
                }
            }
            let n = ((count - done) as usize).min(bufs.len());
            for b in bufs.iter_mut().take(n) {
                self.fill(b);
            }
            let mut off = 0;
            while off < n {
                let sent = port.send(bufs.get(off..n).unwrap_or_default())?;
                off += sent;
                if sent == 0 {
                    std::thread::yield_now();
                }
            }
            done += n as u64;
            self.sent += n as u64;
        }
        Ok(start.elapsed())
    }
}

/// What [`run_loop`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoopRun {
    /// Frames sent.
    pub sent: u64,
    /// Time from the first frame sent to the last.
    pub sending: Duration,
}

/// Generator and sink in one thread: sends `count` frames (or until
/// `limit`) at `rate` (`None`: flat out) through `tx`, and between bursts
/// drains `rx` into `sink`, so neither end waits on a scheduler that
/// shares their core. Afterwards keeps draining until `drain` passes
/// with nothing received.
#[allow(
    clippy::too_many_arguments,
    reason = "two ports, two ends, three limits"
)]
pub fn run_loop(
    generator: &mut Generator,
    tx: &mut dyn Port,
    sink: &mut Sink,
    rx: &mut dyn Port,
    count: u64,
    rate: Option<f64>,
    limit: Option<Duration>,
    drain: Duration,
) -> std::io::Result<LoopRun> {
    let mut tx_bufs: Vec<Buf> = (0..32).map(|_| Buf::new()).collect();
    let mut rx_bufs: Vec<Buf> = (0..64).map(|_| Buf::new()).collect();
    let mut receive = |rx: &mut dyn Port, sink: &mut Sink| -> std::io::Result<usize> {
        let n = rx.recv(&mut rx_bufs)?;
        for b in rx_bufs.iter().take(n) {
            sink.account(b.data());
        }
        Ok(n)
    };
    let start = Instant::now();
    let mut done = 0u64;
    while done < count && limit.is_none_or(|l| start.elapsed() < l) {
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(done as f64 / r);
            while start.elapsed() < due {
                receive(rx, sink)?;
            }
        }
        let n = ((count - done) as usize).min(tx_bufs.len());
        for b in tx_bufs.iter_mut().take(n) {
            generator.fill(b);
        }
        let mut off = 0;
        while off < n {
            let sent = tx.send(tx_bufs.get(off..n).unwrap_or_default())?;
            off += sent;
            if sent == 0 {
                receive(rx, sink)?;
            }
        }
        done += n as u64;
        generator.sent += n as u64;
        receive(rx, sink)?;
    }
    let sending = start.elapsed();
    let mut last = Instant::now();
    while last.elapsed() < drain {
        if receive(rx, sink)? > 0 {
            last = Instant::now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    Ok(LoopRun {
        sent: done,
        sending,
    })
}

/// What the sink saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinkStats {
    /// Stamped frames received.
    pub received: u64,
    /// Other frames (not ours).
    pub foreign: u64,
    /// Frames whose sequence number was below one already seen on their
    /// flow.
    pub reordered: u64,
    /// Gaps in the per-flow sequences at the end (sent, never seen),
    /// counting up to the highest sequence seen per flow.
    pub lost: u64,
    /// Latency percentiles (p50, p99, max), if any frame arrived.
    pub latency: Option<(Duration, Duration, Duration)>,
}

/// The UDP payload of an Ethernet/IPv4/UDP frame, and its destination
/// port.
fn udp_payload(frame: &[u8]) -> Option<(&[u8], u16)> {
    let ip = frame.get(14..)?;
    let udp = ip.get(usize::from(ip.first()? & 0x0f) * 4..)?;
    let port = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    Some((udp.get(8..)?, port))
}

/// The stamp of a frame as the generator built it, or of the frame inside
/// VXLAN (port 8472 or 4789) as an encapsulating node sends it.
pub fn stamp_of(frame: &[u8], tag: u16) -> Option<&[u8]> {
    let (payload, port) = udp_payload(frame)?;
    let magic = magic(tag).to_be_bytes();
    if payload.get(..4) == Some(&magic[..]) {
        return payload.get(..STAMP_LEN);
    }
    if port == 8472 || port == 4789 {
        let (inner, _) = udp_payload(payload.get(8..)?)?;
        if inner.get(..4) == Some(&magic[..]) {
            return inner.get(..STAMP_LEN);
        }
    }
    None
}

/// Counts stamped frames from a port.
#[derive(Debug)]
pub struct Sink {
    epoch: Instant,
    tag: u16,
    highest: Vec<Option<u32>>,
    seen: Vec<u64>,
    latencies_ns: Vec<u64>,
    stats: SinkStats,
}

impl Sink {
    /// A sink for up to `flows` flows, sharing the generator's `epoch`.
    pub fn new(flows: u32, epoch: Instant) -> Sink {
        Self::tagged(flows, epoch, 0)
    }

    /// [`Sink::new`] counting only run `tag`'s frames (see [`magic`]).
    pub fn tagged(flows: u32, epoch: Instant, tag: u16) -> Sink {
        Sink {
            epoch,
            tag,
            highest: vec![None; flows.max(1) as usize],
            seen: vec![0; flows.max(1) as usize],
            latencies_ns: Vec::with_capacity(1 << 20),
            stats: SinkStats::default(),
        }
    }

    /// Accounts one received frame (Ethernet, possibly after the dataplane
    /// rewrote its headers: the stamp is found after the UDP header).
    pub fn account(&mut self, frame: &[u8]) {
        let now = self.epoch.elapsed().as_nanos() as u32;
        let Some(stamp) = stamp_of(frame, self.tag) else {
            self.stats.foreign += 1;
            return;
        };
        let be32 = |at: usize| {
            stamp
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, u32::from_be_bytes)
        };

        let (flow, seq, sent) = (be32(4) as usize, be32(8), be32(12));
        self.stats.received += 1;
        if let (Some(h), Some(seen)) = (self.highest.get_mut(flow), self.seen.get_mut(flow)) {
            match *h {
                Some(x) if seq < x => self.stats.reordered += 1,
                _ => *h = Some(seq),
            }
            *seen += 1;
        }
        if self.latencies_ns.len() < self.latencies_ns.capacity() {
            self.latencies_ns.push(u64::from(now.wrapping_sub(sent)));
        }
    }

    /// Reads from `port` until `want` stamped frames arrived or `idle`
    /// passes with nothing received.
    pub fn run(
        &mut self,
        port: &mut dyn Port,
        bufs: &mut [Buf],
        want: u64,
        idle: Duration,
    ) -> std::io::Result<()> {
        let mut last = Instant::now();
        while self.stats.received < want && last.elapsed() < idle {
            let n = port.recv(bufs)?;
            if n == 0 {
                std::hint::spin_loop();
                continue;
            }
            last = Instant::now();
            for b in bufs.iter().take(n) {
                self.account(b.data());
            }
        }
        Ok(())
    }

    /// The counts so far.
    pub fn stats(&mut self) -> SinkStats {
        let mut s = self.stats.clone();
        s.lost = self
            .highest
            .iter()
            .zip(&self.seen)
            .map(|(h, seen)| h.map_or(0, |h| (u64::from(h) + 1).saturating_sub(*seen)))
            .sum();
        if !self.latencies_ns.is_empty() {
            self.latencies_ns.sort_unstable();
            let at = |q: f64| {
                let i = ((self.latencies_ns.len() - 1) as f64 * q) as usize;
                Duration::from_nanos(self.latencies_ns[i])
            };
            s.latency = Some((at(0.5), at(0.99), at(1.0)));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::port::Framing;
    use dataplane::port::fake::FakePort;

    fn profile() -> Profile {
        Profile {
            frame_len: 60,
            flows: 4,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            base_port: 10000,
            dst_port: 9,
            dst_ports: 1,
            dst_ips: 1,
            vxlan: None,
        }
    }

    #[test]
    fn frames_are_valid_and_the_sink_counts_loss_and_reordering() {
        let epoch = Instant::now();
        let mut g = Generator::new(profile(), epoch);
        let mut frames = Vec::new();
        let mut b = Buf::new();
        for _ in 0..40 {
            g.fill(&mut b);
            frames.push(b.data().to_vec());
        }
        assert_eq!(frames[0].len(), 60);
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&frames[0][14..]).unwrap();
        assert_eq!(internet_checksum(ip.slice()), 0, "IPv4 checksum");
        assert_eq!(
            u16::from_be_bytes([frames[1][34], frames[1][35]]),
            10001,
            "flow 1"
        );
        let mut s = Sink::new(4, epoch);
        // Deliver all but two (lost), and swap two of one flow (reordered).
        frames.swap(4, 8); // flow 0, seq 1 and 2
        for (i, f) in frames.iter().enumerate() {
            if i != 13 && i != 22 {
                s.account(f);
            }
        }
        s.account(&[0u8; 60]);
        let st = s.stats();
        assert_eq!(st.received, 38);
        assert_eq!(st.reordered, 1);
        assert_eq!(st.lost, 2);
        assert_eq!(st.foreign, 1);
        assert!(st.latency.is_some());
    }

    #[test]
    fn vxlan_frames_and_spread_flows_are_counted_by_the_sink() {
        let epoch = Instant::now();
        let mut p = profile();
        p.flows = 10;
        p.dst_ports = 4;
        p.vxlan = Some(VxlanOuter {
            src_mac: [2, 0, 0, 0, 1, 1],
            dst_mac: [2, 0, 0, 0, 1, 2],
            src_ip: Ipv4Addr::new(192, 168, 80, 2),
            dst_ip: Ipv4Addr::new(192, 168, 80, 1),
            port: 8472,
            vni: 7,
        });
        let mut g = Generator::new(p, epoch);
        let mut s = Sink::new(10, epoch);
        let mut b = Buf::new();
        let mut ports = std::collections::BTreeSet::new();
        for _ in 0..10 {
            g.fill(&mut b);
            let f = b.data();
            assert_eq!(f.len(), 60 + VXLAN_OVERHEAD);
            assert_eq!(internet_checksum(&f[14..34]), 0, "outer IPv4 checksum");
            let outer = etherparse::SlicedPacket::from_ethernet(f).unwrap();
            let Some(etherparse::TransportSlice::Udp(u)) = outer.transport else {
                panic!("outer UDP");
            };
            assert_eq!(u.destination_port(), 8472);
            assert_eq!(
                &u.payload()[..8],
                &[8, 0, 0, 0, 0, 0, 7, 0],
                "I flag, VNI 7"
            );
            let inner = etherparse::SlicedPacket::from_ethernet(&u.payload()[8..]).unwrap();
            let Some(etherparse::TransportSlice::Udp(iu)) = inner.transport else {
                panic!("inner UDP");
            };
            ports.insert((iu.source_port(), iu.destination_port()));
            s.account(f);
        }
        // Flow k: source port base + k / 4, destination port 9 + k % 4.
        assert_eq!(ports.len(), 10);
        assert!(ports.contains(&(10002, 10)), "{ports:?}");
        let st = s.stats();
        assert_eq!((st.received, st.foreign, st.lost), (10, 0, 0));
    }

    #[test]
    fn flows_spread_over_destination_addresses_with_valid_checksums() {
        let epoch = Instant::now();
        let mut p = profile();
        p.flows = 12;
        p.dst_ips = 3;
        p.dst_ports = 2;
        let mut g = Generator::new(p, epoch);
        let mut b = Buf::new();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..12 {
            g.fill(&mut b);
            let f = b.data();
            assert_eq!(internet_checksum(&f[14..34]), 0, "IPv4 checksum");
            let pkt = etherparse::SlicedPacket::from_ethernet(f).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = &pkt.net else {
                panic!("IPv4")
            };
            let Some(etherparse::TransportSlice::Udp(u)) = &pkt.transport else {
                panic!("UDP")
            };
            seen.insert((
                ip.header().destination_addr(),
                u.destination_port(),
                u.source_port(),
            ));
        }
        // Flow k: port 9 + k % 2, address .2 + (k / 2) % 3, source port
        // base + k / 6: 12 distinct tuples over 3 addresses.
        assert_eq!(seen.len(), 12);
        let addrs: std::collections::BTreeSet<_> = seen.iter().map(|s| s.0).collect();
        assert_eq!(addrs.len(), 3);
        assert!(
            seen.contains(&(Ipv4Addr::new(10, 0, 0, 4), 10, 10001)),
            "{seen:?}"
        );
    }

    #[test]
    fn a_sink_counts_only_its_own_runs_frames() {
        let epoch = Instant::now();
        let mut b = Buf::new();
        let mut s = Sink::tagged(4, epoch, 2);
        Generator::tagged(profile(), epoch, 1).fill(&mut b);
        s.account(b.data());
        Generator::tagged(profile(), epoch, 2).fill(&mut b);
        s.account(b.data());
        let st = s.stats();
        assert_eq!((st.received, st.foreign), (1, 1));
    }

    #[test]
    fn the_generator_sends_exactly_count_through_a_refusing_port() {
        let (mut p, h) = FakePort::new("gen", Framing::Ethernet);
        h.set_tx_room(Some(5));
        let mut bufs: Vec<Buf> = (0..32).map(|_| Buf::new()).collect();
        let mut g = Generator::new(profile(), Instant::now());
        g.run(&mut p, &mut bufs, 100, None, None).unwrap();
        assert_eq!(h.take_sent().len(), 100);
        assert_eq!(g.sent, 100);
    }
}
