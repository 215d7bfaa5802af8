//! How the uplink moves frames (`node.uplink_mode`): AF_XDP both ways, or
//! AF_XDP for receiving and the offload TAP for sending
//! ([`crate::port::tap`]), or chosen at start-up (`auto`).

use std::fmt;
use std::str::FromStr;

/// `node.uplink_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UplinkMode {
    /// Zero-copy AF_XDP where the driver has it; otherwise the offload TAP
    /// where the kernel has UDP-tunnel GSO on TAP (6.17); otherwise
    /// copy-mode AF_XDP.
    Auto,
    /// AF_XDP both ways (zero-copy where the driver has it). The default
    /// for now: the offload TAP's set-up and tear-down (its TCX link, its
    /// device) lengthen a restart's forwarding gap from ~40 to ~100 ms
    /// (benches/RESULTS.md), past issue 16's goal.
    #[default]
    AfXdp,
    /// Sends through the offload TAP: super-packets the kernel segments
    /// late. Start-up fails if the kernel cannot.
    Offload,
}

impl UplinkMode {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            UplinkMode::Auto => "auto",
            UplinkMode::AfXdp => "afxdp",
            UplinkMode::Offload => "offload",
        }
    }

    /// What `auto` (or a forced mode) comes to, with the reason: `zero_copy`
    /// is whether the AF_XDP bind got zero-copy, `tunnel_gso` the offload
    /// TAP probe's result.
    pub fn choose(
        self,
        zero_copy: bool,
        tunnel_gso: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(UplinkMode, String), String> {
        match self {
            UplinkMode::AfXdp => Ok((UplinkMode::AfXdp, "uplink_mode: afxdp".into())),
            UplinkMode::Offload => match tunnel_gso() {
                Ok(()) => Ok((UplinkMode::Offload, "uplink_mode: offload".into())),
                Err(e) => Err(format!("uplink_mode: offload: {e}")),
            },
            UplinkMode::Auto if zero_copy => Ok((
                UplinkMode::AfXdp,
                "auto: the driver has zero-copy AF_XDP".into(),
            )),
            UplinkMode::Auto => match tunnel_gso() {
                Ok(()) => Ok((
                    UplinkMode::Offload,
                    "auto: no zero-copy AF_XDP; the kernel segments UDP-tunnel super-packets from a TAP".into(),
                )),
                Err(e) => Ok((
                    UplinkMode::AfXdp,
                    format!("auto: no zero-copy AF_XDP and no offload TAP ({e}): copy-mode AF_XDP"),
                )),
            },
        }
    }
}

impl fmt::Display for UplinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UplinkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(UplinkMode::Auto),
            "afxdp" => Ok(UplinkMode::AfXdp),
            "offload" => Ok(UplinkMode::Offload),
            _ => Err(format!("{s:?} is not one of auto, afxdp, offload")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> std::io::Result<()> {
        Err(std::io::Error::other("EINVAL"))
    }

    #[test]
    fn auto_prefers_zero_copy_then_the_offload_tap_then_copy() {
        let (m, why) = UplinkMode::Auto.choose(true, || Ok(())).unwrap();
        assert_eq!(m, UplinkMode::AfXdp, "{why}");
        let (m, why) = UplinkMode::Auto.choose(false, || Ok(())).unwrap();
        assert_eq!(m, UplinkMode::Offload, "{why}");
        let (m, why) = UplinkMode::Auto.choose(false, refused).unwrap();
        assert_eq!(m, UplinkMode::AfXdp);
        assert!(why.contains("EINVAL"), "{why}");
    }

    #[test]
    fn forced_modes_hold_and_offload_fails_loudly_where_it_cannot_run() {
        assert_eq!(
            UplinkMode::AfXdp.choose(false, || Ok(())).unwrap().0,
            UplinkMode::AfXdp
        );
        assert_eq!(
            UplinkMode::Offload.choose(true, || Ok(())).unwrap().0,
            UplinkMode::Offload
        );
        let e = UplinkMode::Offload.choose(false, refused).unwrap_err();
        assert!(
            e.contains("uplink_mode: offload") && e.contains("EINVAL"),
            "{e}"
        );
    }

    #[test]
    fn config_values_round_trip_and_others_are_named() {
        for m in [UplinkMode::Auto, UplinkMode::AfXdp, UplinkMode::Offload] {
            assert_eq!(m.as_str().parse::<UplinkMode>(), Ok(m));
        }
        assert!(
            "xdp"
                .parse::<UplinkMode>()
                .unwrap_err()
                .contains("auto, afxdp, offload")
        );
    }
}
