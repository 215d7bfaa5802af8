//! SNAT port (and ICMP identifier) allocation, as Linux's MASQUERADE
//! picks them (`nf_nat_l4proto_unique_tuple`).

use std::net::Ipv4Addr;

use encap::ip_proto;

use crate::config::PortRange;
use crate::conntrack::Conntrack;
use crate::tuple::Tuple;

impl Conntrack {
    /// Picks the translated port (or ICMP identifier) for `orig`, as Linux's
    /// MASQUERADE does: keep the original if the resulting reply tuple is
    /// free (unless `random_fully`), else probe the range from a random
    /// offset, at most `probes` times. Returns the reply tuple.
    pub(crate) fn allocate(
        &mut self,
        orig: &Tuple,
        addr: Ipv4Addr,
        range: PortRange,
        random_fully: bool,
        probes: u32,
    ) -> Option<Tuple> {
        let reply_for = |p: u16| match orig.proto {
            ip_proto::ICMP => Tuple {
                src: orig.dst,
                dst: addr,
                src_port: p,
                dst_port: 0,
                proto: orig.proto,
            },
            ip_proto::TCP | ip_proto::UDP => Tuple {
                src: orig.dst,
                dst: addr,
                src_port: orig.dst_port,
                dst_port: p,
                proto: orig.proto,
            },
            _ => Tuple {
                src: orig.dst,
                dst: addr,
                src_port: 0,
                dst_port: 0,
                proto: orig.proto,
            },
        };
        if !matches!(orig.proto, ip_proto::ICMP | ip_proto::TCP | ip_proto::UDP) {
            let r = reply_for(0);
            return (!self.index.contains(&self.slots, &r)).then_some(r);
        }
        if !random_fully
            && range.contains(orig.src_port)
            && !self.index.contains(&self.slots, &reply_for(orig.src_port))
        {
            return Some(reply_for(orig.src_port));
        }
        let n = range.len();
        let offset = (self.next_random() % u64::from(n)) as u32;
        for i in 0..probes.min(n) {
            let p = (u32::from(range.min) + (offset + i) % n) as u16;
            let r = reply_for(p);
            if !self.index.contains(&self.slots, &r) {
                return Some(r);
            }
        }
        None
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic from the configured seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
