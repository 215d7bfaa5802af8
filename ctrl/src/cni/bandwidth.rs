//! A pod's rate limits as the CNI runtime passes them.

use rscni_types::error::Error;
use serde_json::Value;

use super::invalid;

/// The pod's rate limits from `runtimeConfig.bandwidth` (the
/// `kubernetes.io/ingress-bandwidth` and `egress-bandwidth` annotations;
/// rates in bits per second, bursts in bits), which Sluice's workers
/// enforce: the reference `bandwidth` plugin shapes a host-side veth with
/// tc, and Sluice's traffic never passes a qdisc.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Bandwidth {
    /// (rate, burst) towards the pod.
    pub(super) ingress: Option<(u64, u64)>,
    /// (rate, burst) from the pod.
    pub(super) egress: Option<(u64, u64)>,
}

impl Bandwidth {
    /// Reads and checks `runtimeConfig.bandwidth` as the `bandwidth`
    /// plugin does: a rate needs its burst and the reverse, and a burst
    /// is under 4 GiB.
    pub(super) fn from_runtime(rc: Option<&Value>) -> Result<Bandwidth, Error> {
        let Some(bw) = rc.filter(|v| !v.is_null()) else {
            return Ok(Bandwidth::default());
        };
        if !bw.is_object() {
            return Err(invalid(
                "runtimeConfig.bandwidth",
                format!("{bw} is not an object"),
            ));
        }
        let num = |k: &str| -> Result<u64, Error> {
            match bw.get(k) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v.as_u64().ok_or_else(|| {
                    invalid(
                        &format!("runtimeConfig.bandwidth.{k}"),
                        format!("{v} is not a whole number of bits"),
                    )
                }),
            }
        };
        let dir = |d: &str| -> Result<Option<(u64, u64)>, Error> {
            let (rk, bk) = (format!("{d}Rate"), format!("{d}Burst"));
            let (rate, burst) = (num(&rk)?, num(&bk)?);
            let field = |k: &str| format!("runtimeConfig.bandwidth.{k}");
            match (rate, burst) {
                (0, 0) => Ok(None),
                (_, 0) => Err(invalid(&field(&bk), format!("must be set when {rk} is"))),
                (0, _) => Err(invalid(&field(&rk), format!("must be set when {bk} is"))),
                (_, b) if b / 8 >= u64::from(u32::MAX) => {
                    Err(invalid(&field(&bk), "cannot be 4 GiB or more"))
                }
                (r, b) => Ok(Some((r, b))),
            }
        };
        Ok(Bandwidth {
            ingress: dir("ingress")?,
            egress: dir("egress")?,
        })
    }

    /// A burst smaller than one full-size packet would drop every such
    /// packet forever.
    pub(super) fn check_mtu(&self, mtu: u32) -> Result<(), Error> {
        let packet_bits = u64::from(mtu + 14) * 8;
        for (k, d) in [("ingressBurst", self.ingress), ("egressBurst", self.egress)] {
            if let Some((_, b)) = d
                && b < packet_bits
            {
                return Err(invalid(
                    &format!("runtimeConfig.bandwidth.{k}"),
                    format!(
                        "{b} bits is less than one packet at the pod MTU {mtu} ({packet_bits} bits)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The daemon's `pods add` words (as its `routes` shows them).
    pub(super) fn words(&self) -> String {
        let mut w = Vec::new();
        for (d, v) in [("ingress", self.ingress), ("egress", self.egress)] {
            if let Some((r, b)) = v {
                w.push(format!("{d}_rate={r} {d}_burst={b}"));
            }
        }
        w.join(" ")
    }
}
