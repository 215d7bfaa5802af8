//! Next-hop MACs from the kernel's IPv4 neighbour table (rtnetlink, or
//! /proc/net/arp without the I/O backends), and nudging the kernel to
//! resolve one it does not know yet. The daemon also follows the table's
//! changes as netlink events (`netcfg::NeighbourWatch`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};

use encap::MacAddr;

/// Resolved entries for `dev` (all devices if `None`).
pub fn read(dev: Option<&str>) -> HashMap<Ipv4Addr, MacAddr> {
    #[cfg(feature = "io")]
    if let Ok(m) = read_netlink(dev) {
        return m;
    }
    let text = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    parse(&text, dev)
}

/// [`read`] over rtnetlink (a neighbour dump).
#[cfg(feature = "io")]
fn read_netlink(dev: Option<&str>) -> std::io::Result<HashMap<Ipv4Addr, MacAddr>> {
    let index = dev.map(netcfg::if_index).transpose()?;
    Ok(netcfg::Rtnl::new()?
        .neighbours()?
        .into_iter()
        .filter(|n| index.is_none_or(|i| n.index == i))
        .filter_map(|n| Some((n.ip, MacAddr(n.mac?))))
        .collect())
}

/// Parses the /proc/net/arp format: `IP HWtype Flags HWaddr Mask Device`;
/// flags 0x2 (ATF_COM) marks a complete entry.
pub fn parse(text: &str, dev: Option<&str>) -> HashMap<Ipv4Addr, MacAddr> {
    let mut m = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [ip, _, flags, hw, _, d] = f.as_slice() else {
            continue;
        };
        let complete =
            u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|x| x & 0x2 != 0);
        if !complete || dev.is_some_and(|want| want != *d) {
            continue;
        }
        if let (Ok(ip), Ok(mac)) = (ip.parse(), hw.parse::<MacAddr>())
            && mac != MacAddr([0; 6])
        {
            m.insert(ip, mac);
        }
    }
    m
}

/// Makes the kernel resolve `ip`: a zero-length UDP datagram to the discard
/// port (9) needs the next hop's MAC first. Errors are ignored: the next
/// refresh tries again.
pub fn solicit(ip: Ipv4Addr) {
    if let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        let _ = s.send_to(&[], (ip, 9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_complete_entries_of_one_device() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device
192.168.77.2     0x1         0x2         0a:11:22:33:44:55     *        up-a
192.168.77.3     0x1         0x0         00:00:00:00:00:00     *        up-a
10.0.0.1         0x1         0x2         0a:00:00:00:00:01     *        other
";
        let m = parse(t, Some("up-a"));
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.get(&Ipv4Addr::new(192, 168, 77, 2)),
            Some(&MacAddr([0x0a, 0x11, 0x22, 0x33, 0x44, 0x55]))
        );
        assert_eq!(parse(t, None).len(), 2);
    }
}
