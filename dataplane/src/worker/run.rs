//! The worker's loop: busy polling while frames arrive, sleeping on the
//! ports' descriptors when they stop.
//!
//! How long to keep spinning once frames stop is bounded twice: by a count
//! of empty polls (`idle.spins`) and by time since the last frame
//! (`idle.spin_time`). The time bound is what keeps a node with many pods
//! cheap: one poll reads every port, so with 110 TUN pods an empty poll is
//! 110 system calls, and 2000 of them after each lone packet (a probe, a
//! DNS query) cost ~100 ms of a core. Spinning pays while the next frame
//! comes sooner than a wake-up would take (tens of microseconds); a worker
//! that waits longer than that sleeps, as the kernel path's softirq does.
//!
//! And it is adaptive: the worker keeps an average of the time between
//! polls that found frames (an EWMA, weight 1/8). While frames come further
//! apart than `spin_time` on average (a TCP flow at 1 Gbit/s moving 64 KiB
//! super-packets, a probe now and then), spinning would only burn the core
//! until the next one, so the worker sleeps as soon as a poll finds
//! nothing; under load the average falls within a few dozen polls and it
//! spins again.

#[cfg(feature = "io")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[cfg(feature = "io")]
use super::Worker;

/// When a worker sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Empty polls in a row before sleeping (0: never sleep, pure busy
    /// polling).
    pub spins: u32,
    /// Longest sleep: the worker wakes at least this often for expiry and
    /// commands.
    pub max_sleep: Duration,
    /// Longest spin without a frame before sleeping, whatever `spins`
    /// says (the time from the last frame, or from the wake-up).
    pub spin_time: Duration,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            spins: 2000,
            max_sleep: Duration::from_millis(50),
            spin_time: Duration::from_micros(50),
        }
    }
}

/// The average time between polls that found frames (EWMA, weight 1/8).
/// Only the polling loop (feature `io`) and its tests use it.
#[cfg(any(feature = "io", test))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gaps {
    last: Duration,
    average: Duration,
}

#[cfg(any(feature = "io", test))]
impl Gaps {
    /// No frame yet; the average starts at zero (spin, as before any
    /// evidence).
    pub(crate) fn new(now: Duration) -> Gaps {
        Gaps {
            last: now,
            average: Duration::ZERO,
        }
    }

    /// A poll at `now` found frames.
    pub(crate) fn frame(&mut self, now: Duration) {
        let gap = now.saturating_sub(self.last);
        self.last = now;
        self.average = self.average - self.average / 8 + gap / 8;
    }

    /// The average gap.
    pub(crate) fn average(&self) -> Duration {
        self.average
    }
}

#[cfg(feature = "io")]
impl Worker {
    /// Runs until `stop` is set: busy-polls while frames arrive; after
    /// `idle.spins` empty polls, or `idle.spin_time` without a frame,
    /// sleeps on the ports' descriptors (epoll through mio) until one is
    /// readable or `max_sleep` passes. `clock` gives the time passed to
    /// conntrack.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        idle: IdlePolicy,
        clock: impl Fn() -> Duration,
        mut between: impl FnMut(&mut Worker),
    ) -> std::io::Result<()> {
        use mio::unix::SourceFd;
        use mio::{Events, Interest, Poll, Token};
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(64);
        // Other workers wake this one through an eventfd when they hand it
        // a frame while it sleeps.
        if let Some(m) = self.mesh.as_ref()
            && let Some(slot) = m.wakers.get(usize::from(self.id))
        {
            let waker = mio::Waker::new(poll.registry(), Token(usize::MAX))?;
            let _ = slot.set(Box::new(move || {
                let _ = waker.wake();
            }));
        }
        let mut registered: Vec<std::os::fd::RawFd> = Vec::new();
        let mut empty = 0u32;
        // When the last frame arrived (or the worker woke up).
        let mut last = clock();
        let mut gaps = Gaps::new(last);
        while !stop.load(Ordering::Relaxed) {
            let now = clock();
            let got = self.poll(now);
            if got > 0 {
                empty = 0;
                last = now;
                gaps.frame(now);
                continue;
            }
            empty = empty.saturating_add(1);
            let spin = empty < idle.spins
                && now.saturating_sub(last) < idle.spin_time
                && gaps.average() < idle.spin_time;
            if idle.spins == 0 || spin {
                if empty.is_multiple_of(64) {
                    between(self);
                }
                continue;
            }
            between(self);
            // Register new ports' descriptors (ports change rarely).
            let fds: Vec<_> = self.ports().filter_map(|s| s.port.poll_fd()).collect();
            if fds != registered {
                for fd in &registered {
                    let _ = poll.registry().deregister(&mut SourceFd(fd));
                }
                for (i, fd) in fds.iter().enumerate() {
                    poll.registry()
                        .register(&mut SourceFd(fd), Token(i), Interest::READABLE)?;
                }
                registered = fds;
            }
            for s in self.ports.iter_mut().flatten() {
                s.port.before_sleep();
            }
            let flag = self
                .mesh
                .as_ref()
                .and_then(|m| m.sleeping.get(usize::from(self.id)).cloned());
            if let Some(f) = &flag {
                f.store(true, Ordering::SeqCst);
                if self.mesh.as_ref().is_some_and(|m| !m.inbox.is_empty()) {
                    f.store(false, Ordering::SeqCst);
                    empty = 0;
                    continue;
                }
            }
            // Not past the moment a rate-limited pod may move again.
            let sleep = self
                .shaping_wait(clock())
                .map_or(idle.max_sleep, |w| w.min(idle.max_sleep));
            let slept = poll.poll(&mut events, Some(sleep));
            if let Some(f) = &flag {
                f.store(false, Ordering::SeqCst);
            }
            match slept {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            // Woken by a port: busy-poll again. Woken by the timeout: one
            // more look (expiry, commands) and back to sleep.
            last = clock();
            empty = if events.is_empty() {
                idle.spins.saturating_sub(1)
            } else {
                0
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_average_follows_the_traffic() {
        let us = Duration::from_micros;
        let mut g = Gaps::new(us(0));
        // A 1 Gbit/s TCP flow of super-packets: a frame every ~500 us.
        for i in 1..=40 {
            g.frame(us(500 * i));
        }
        assert!(g.average() > us(400), "{:?}", g.average());
        // Load: a burst every 2 us; within a few dozen polls the worker
        // spins again (average under the default 50 us).
        let t0 = us(20_000);
        let n = (1..=40).find(|&i| {
            g.frame(t0 + us(2 * i));
            g.average() < us(50)
        });
        assert!(n.is_some_and(|n| n <= 25), "{n:?}");
    }
}
