//! What the CNI plugin reads back from the daemon: its `routes` pod lines
//! (CHECK, GC and the bandwidth comparison).

use std::net::Ipv4Addr;

/// A pod line of the daemon's `routes`.
#[derive(Debug)]
pub(super) struct DaemonPod {
    pub(super) name: String,
    pub(super) ip: Ipv4Addr,
    /// Its rate limits, as `pods add` words (empty: none).
    pub(super) limits: String,
}

impl DaemonPod {
    pub(super) fn parse(line: &str) -> Option<DaemonPod> {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["pod", name, "ip", ip, rest @ ..] => Some(DaemonPod {
                name: (*name).to_string(),
                ip: ip.parse().ok()?,
                limits: rest
                    .iter()
                    .filter(|w| w.contains('='))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" "),
            }),
            _ => None,
        }
    }
}
