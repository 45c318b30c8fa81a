//! How many rings of this process serve devices without NOWAIT support,
//! against the CPUs: when there are as many such rings as CPUs, their
//! threads keep every CPU busy with synchronous system calls, and handing
//! requests to io-wq threads only adds hand-offs (measured: 2 workers on 2
//! vCPUs, zram, BENCHMARKS.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static RINGS: AtomicUsize = AtomicUsize::new(0);

fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A ring's membership: joins at its first operation on such a device,
/// leaves when the ring is dropped.
#[derive(Debug, Default)]
pub(crate) struct Member {
    joined: bool,
}

impl Member {
    /// Counts the ring (once).
    pub(crate) fn join(&mut self) {
        if !self.joined {
            self.joined = true;
            RINGS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether such rings are at least as many as the CPUs.
    pub(crate) fn cpus_busy(&self) -> bool {
        RINGS.load(Ordering::Relaxed) >= cpus()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.joined {
            RINGS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
