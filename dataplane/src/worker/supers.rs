//! The worker's side of super-packets ([`crate::buf::Gso`]): cutting one
//! for a port that takes none.

use std::time::Duration;

use super::Worker;
use crate::buf::Buf;
use crate::counters::Reason;
use crate::port::gso::Plan;
use crate::port::tso;

impl Worker {
    /// Cuts super-packet `buf` into segments for port `to`, which takes no
    /// super-packets, and queues them (as the kernel's GSO would cut it
    /// for a device without TSO), flushing the port every burst. A segment
    /// without a free buffer is dropped and counted.
    pub(super) fn cut(&mut self, now: Duration, to: usize, buf: Buf, eth: bool) {
        let plan = buf
            .gso()
            .and_then(|g| tso::vnet(buf.data(), eth, g))
            .and_then(|h| {
                if eth {
                    Plan::new(&h, buf.data()).ok()
                } else {
                    Plan::for_ip(&h, buf.data()).ok()
                }
            });
        let Some(plan) = plan else {
            self.counters.drop(Reason::Malformed);
            self.recycle(buf);
            return;
        };
        self.counters.super_cut += 1;
        for i in 0..plan.count() {
            let Some(mut seg) = self.pool.pop() else {
                self.counters.drop(Reason::TxFull);
                continue;
            };
            match plan.segment(buf.data(), i, seg.rx_room()) {
                Some(n) => {
                    seg.set_len(n);
                    self.enqueue(now, to, seg);
                    // A burst's worth at a time: a copy-mode AF_XDP
                    // socket sends what one kick takes (32 frames), so a
                    // 64 KiB burst queued whole would overflow its ring.
                    if (i + 1) % super::BURST == 0 {
                        self.flush(now, to);
                    }
                }
                None => {
                    self.counters.drop(Reason::Malformed);
                    self.pool.push(seg);
                }
            }
        }
        self.recycle(buf);
    }
}
