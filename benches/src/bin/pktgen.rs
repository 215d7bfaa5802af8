//! `pktgen`: send stamped frames from an interface, or count them on one,
//! over AF_XDP (run inside the namespace that holds the interface).
//!
//!     pktgen send --dev eth0 --dst-mac 02:..:02 --src 10.0.0.1 --dst 10.0.0.2 \
//!            --count 1000000 [--size 60] [--flows 100] [--rate 500000]
//!     pktgen recv --dev eth1 --count 1000000 [--flows 100] [--idle-ms 2000]
//!     pktgen loop --tx eth0 --rx eth1 ...    (both in one process: latency)
//!
//! `recv` takes every frame arriving on the device (an XDP program steers
//! all of them to its socket) and prints received, lost, reordered, foreign
//! and latency (latency only in `loop`, where both ends share a clock).

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use dataplane::buf::Buf;
use dataplane::port::xdp::{SteerConfig, SteerProgram, XdpPort};
use encap::MacAddr;
use sluice_benches::pktgen::{Generator, Profile, Sink};

#[derive(Parser, Debug)]
#[command(name = "pktgen", about = "AF_XDP packet generator and sink")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct Gen {
    /// Destination MAC of the frames.
    #[arg(long)]
    dst_mac: String,
    /// Source MAC (default: the device's).
    #[arg(long)]
    src_mac: Option<String>,
    /// Source IPv4 address.
    #[arg(long)]
    src: Ipv4Addr,
    /// Destination IPv4 address.
    #[arg(long)]
    dst: Ipv4Addr,
    /// Frames to send.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Frame size without FCS (60 = a 64-byte frame).
    #[arg(long, default_value_t = 60)]
    size: usize,
    /// Flows (UDP source ports from 20000).
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Frames per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// UDP destination port.
    #[arg(long, default_value_t = 9)]
    dst_port: u16,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send stamped frames.
    Send {
        /// Device to send from.
        #[arg(long)]
        dev: String,
        #[command(flatten)]
        g: Gen,
    },
    /// Count stamped frames.
    Recv {
        /// Device to receive on.
        #[arg(long)]
        dev: String,
        /// Frames expected.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Flows expected.
        #[arg(long, default_value_t = 1)]
        flows: u32,
        /// Stop after this long without a frame.
        #[arg(long, default_value_t = 2000)]
        idle_ms: u64,
    },
    /// Send on one device and count on another, in one process.
    Loop {
        /// Device to send from.
        #[arg(long)]
        tx: String,
        /// Device to receive on.
        #[arg(long)]
        rx: String,
        #[command(flatten)]
        g: Gen,
    },
}

fn device_mac(dev: &str) -> Option<MacAddr> {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/address"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn profile(dev: &str, g: &Gen) -> Result<Profile, String> {
    let dst: MacAddr = g
        .dst_mac
        .parse()
        .map_err(|_| format!("--dst-mac {:?}", g.dst_mac))?;
    let src = match &g.src_mac {
        Some(m) => m.parse().map_err(|_| format!("--src-mac {m:?}"))?,
        None => device_mac(dev).ok_or_else(|| format!("{dev}: no MAC; pass --src-mac"))?,
    };
    Ok(Profile {
        frame_len: g.size,
        flows: g.flows.max(1),
        src_mac: src.0,
        dst_mac: dst.0,
        src_ip: g.src,
        dst_ip: g.dst,
        base_port: 20000,
        dst_port: g.dst_port,
        dst_ports: 1,
        dst_ips: 1,
        vxlan: None,
    })
}

fn send(dev: &str, g: &Gen, epoch: Instant) -> Result<(u64, Duration), String> {
    let mut port = XdpPort::open(dev, 0, None).map_err(|e| format!("{dev}: {e}"))?;
    let mut generator = Generator::new(profile(dev, g)?, epoch);
    let mut bufs: Vec<Buf> = (0..64).map(|_| Buf::new()).collect();
    let took = generator
        .run(&mut port, &mut bufs, g.count, g.rate, None)
        .map_err(|e| e.to_string())?;
    Ok((generator.sent, took))
}

fn sink(dev: &str, count: u64, flows: u32, idle: Duration, epoch: Instant) -> Result<Sink, String> {
    let prog = SteerProgram::attach(dev, SteerConfig::all()).map_err(|e| format!("{dev}: {e}"))?;
    let mut port =
        XdpPort::open(dev, 0, Some(Arc::new(prog))).map_err(|e| format!("{dev}: {e}"))?;
    let mut s = Sink::new(flows, epoch);
    let mut bufs: Vec<Buf> = (0..64).map(|_| Buf::new()).collect();
    s.run(&mut port, &mut bufs, count, idle)
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn report_send(sent: u64, took: Duration) {
    println!(
        "sent {sent} frames in {:.3} s: {:.3} Mpps",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64() / 1e6
    );
}

fn report_sink(s: &mut Sink, with_latency: bool) {
    let st = s.stats();
    println!(
        "received {} lost {} reordered {} foreign {}",
        st.received, st.lost, st.reordered, st.foreign
    );
    if with_latency && let Some((p50, p99, max)) = st.latency {
        println!("latency p50 {p50:?} p99 {p99:?} max {max:?}");
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let epoch = Instant::now();
    match cli.cmd {
        Cmd::Send { dev, g } => {
            let (sent, took) = send(&dev, &g, epoch)?;
            report_send(sent, took);
        }
        Cmd::Recv {
            dev,
            count,
            flows,
            idle_ms,
        } => {
            let mut s = sink(&dev, count, flows, Duration::from_millis(idle_ms), epoch)?;
            report_sink(&mut s, false);
        }
        Cmd::Loop { tx, rx, g } => {
            let (count, flows) = (g.count, g.flows.max(1));
            let r =
                std::thread::spawn(move || sink(&rx, count, flows, Duration::from_secs(2), epoch));
            std::thread::sleep(Duration::from_millis(200));
            let (sent, took) = send(&tx, &g, epoch)?;
            report_send(sent, took);
            let mut s = r.join().map_err(|_| "sink thread panicked".to_string())??;
            report_sink(&mut s, true);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pktgen: {e}");
            ExitCode::FAILURE
        }
    }
}
