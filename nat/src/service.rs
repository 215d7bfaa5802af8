//! Service NAT hooks: how conntrack asks the service load balancer about a
//! new flow, and about an old one whose service changed.
//!
//! Conntrack stays ignorant of Services: a worker passes an implementation
//! of [`Services`] to [`crate::Conntrack::process_with`]. It is consulted
//! only when a packet creates an entry (the DNAT target and masquerade are
//! recorded in the entry, so replies are reverse-translated and later
//! packets never ask again), and for a UDP entry made under an older
//! service generation (its backend may have stopped serving: kube-proxy's
//! conntrack cleanup, pkg/proxy/conntrack/cleanup.go, as a lookup instead
//! of a table walk).
//!
//! Both directions of a new entry are inserted together before the packet
//! leaves, so two datagrams of one socket racing to create it (kubernetes
//! #56903, the DNS five-second timeouts) meet one entry: there is no
//! unconfirmed state.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::tuple::Tuple;

/// What a new flow's entry translates, besides SNAT policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat {
    /// Rewrite the destination to this address and port (service DNAT).
    pub dnat: Option<(Ipv4Addr, u16)>,
    /// Masquerade the source to this address, whatever the SNAT policy
    /// says (a service's masquerade: hairpin, external traffic). Without
    /// it the SNAT policy decides on the translated destination.
    pub masquerade: Option<Ipv4Addr>,
    /// Recorded in the entry ([`crate::Entry::service`]): which service
    /// port the flow belongs to (0: none).
    pub service: u32,
}

/// The service load balancer as conntrack sees it.
pub trait Services {
    /// The service table's generation. An entry made under another one is
    /// revalidated on its next packet ([`Services::still_serves`]), UDP only.
    fn generation(&self) -> u32;

    /// The translation for a new flow with tuple `t` (as the packet
    /// carries it), or `None` to refuse it: the packet gets
    /// [`crate::Verdict::Refused`] and the implementation knows why.
    fn new_flow(&mut self, now: Duration, t: &Tuple) -> Option<Nat>;

    /// Whether `backend` (address, port) still serves service port
    /// `service` ([`Nat::service`]). If not, the UDP entry is removed and
    /// the packet is a new flow.
    fn still_serves(&mut self, service: u32, backend: (Ipv4Addr, u16)) -> bool;

    /// The service port ([`Nat::service`]) a flow with original tuple `t`
    /// was balanced to, from its frontend, or 0: how an entry restored
    /// after a restart finds its service port again.
    fn service_of(&mut self, _t: &Tuple) -> u32 {
        0
    }
}

/// No services: every new flow is tracked with SNAT policy only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoServices;

impl Services for NoServices {
    fn generation(&self) -> u32 {
        0
    }

    fn new_flow(&mut self, _now: Duration, _t: &Tuple) -> Option<Nat> {
        Some(Nat::default())
    }

    fn still_serves(&mut self, _service: u32, _backend: (Ipv4Addr, u16)) -> bool {
        true
    }
}
