//! Which engine serves an operation, and why: the one place the choice is
//! made. A [`Ring`](crate::Ring) asks it for each operation and obeys the
//! answer (io_uring, or inline: preadv2 / pwritev2 on the calling thread,
//! at any depth or while its queue is shallow); an [`IoPool`](crate::IoPool)
//! asks it which of its lanes serves a file and whether the caller that
//! waits may run the operation itself; both report its reason from
//! `engine_for`. Nothing else decides.
//!
//! The inputs are the policy asked for, what runs the operation (a ring,
//! or a pool whose main workers run io_uring or blocking calls), and what
//! is known of the file's device: FUSE, NOWAIT support, and which engine
//! its own operations measured faster at depth 1 (the device's
//! [`Shallow`](crate::device::Shallow) measurements, which a ring feeds).

mod sync_rings;

pub(crate) use sync_rings::Member as SyncRingMember;

pub(crate) use crate::device::Verdict;
use crate::file::DirectFile;
use crate::types::{EngineKind, EnginePolicy, Nowait};

/// What runs the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runner {
    /// A ring, on its owner's thread.
    Ring,
    /// A pool whose main workers run `main` (io_uring rings, or blocking
    /// calls where io_uring is not used); `help` lets the caller that waits
    /// run an operation no worker has started.
    Pool { main: EngineKind, help: bool },
}

/// Which of a pool's worker sets serves an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneId {
    /// The pool's workers (io_uring, or blocking without it).
    Main,
    /// The side threads (FUSE files).
    Side,
}

/// When an operation runs inline (on the thread that submits it or waits
/// for it) rather than through io_uring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inline {
    /// Never: io_uring.
    Never,
    /// Always.
    Always,
    /// While the ring has fewer than its inline depth of operations
    /// outstanding, and at any depth while as many rings serve devices
    /// without NOWAIT as there are CPUs (io-wq's threads would only take
    /// CPU time from the rings' threads, which keep every CPU busy).
    WhileShallow,
    /// On an idle ring (nothing outstanding), on the engine the device's
    /// depth-1 measurements say is faster in the operation's direction
    /// (alternating while they learn); io_uring deeper.
    Measured,
}

/// What is known of a file's device that the choice weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Device {
    /// The file is on FUSE: io_uring would block a ring on the server and,
    /// on Linux 6.18, duplicate data on short transfers.
    pub fuse: bool,
    /// Whether the device serves non-blocking direct I/O.
    pub nowait: Nowait,
    /// What the depth-1 measurements of reads on it say (writes are
    /// measured apart, and obeyed per operation).
    pub reads_at_depth_1: Verdict,
}

impl Device {
    /// What is known of `file`'s device (the NOWAIT trial runs once per
    /// device, at the first call).
    pub(crate) fn of(file: &DirectFile) -> Device {
        let profile = file.device();
        Device {
            fuse: crate::quirks::fuse_bypasses_io_uring(file),
            nowait: profile.nowait,
            reads_at_depth_1: profile.shallow(false).verdict(),
        }
    }
}

/// The engine chosen, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Choice {
    /// The engine, as reported.
    pub engine: EngineKind,
    /// Why, in words.
    pub reason: &'static str,
    /// The pool lane that serves it.
    pub lane: LaneId,
    /// When it runs inline.
    pub inline: Inline,
    /// The pool's caller that waits may run it itself (on its own ring, or
    /// inline); the submission then wakes no worker while the queue is
    /// empty.
    pub help: bool,
}

impl Choice {
    /// Whether an operation runs inline now, on a ring with `outstanding`
    /// operations (queued, running, or completed and not yet taken) and
    /// inline depth `depth`; `busy` tells whether rings serving devices
    /// without NOWAIT are as many as the CPUs (asked only when it matters).
    pub(crate) fn runs_inline(&self, outstanding: usize, depth: usize, busy: impl FnOnce() -> bool) -> bool {
        match self.inline {
            Inline::Never => false,
            Inline::Always => true,
            Inline::WhileShallow => outstanding < depth || busy(),
            // Decided per operation by the device's measurements (the ring
            // asks them: `Shallow::pick_sync`).
            Inline::Measured => false,
        }
    }
}

const FUSE_RING: &str = "the file is on FUSE: io_uring would block the ring on the server and, on Linux 6.18, \
                         retry short transfers at the same offset (duplicated data): inline (preadv2 / pwritev2) on \
                         the calling thread";
const FUSE_POOL: &str = "the file is on FUSE: io_uring would block its ring on the server and, on Linux 6.18, retry \
                         short transfers at the same offset (duplicated data): side threads run preadv2 / pwritev2";
const BLOCKING_POOL: &str = "the pool runs the blocking engine (io_uring unavailable or not wanted): its workers run \
                             preadv2 / pwritev2";
const INLINE_ASKED_RING: &str = "inline, as asked: preadv2 / pwritev2 on the calling thread, at any depth";
const INLINE_ASKED_POOL: &str =
    "inline, as asked: the caller that waits runs the operation (preadv2 / pwritev2), or a \
                                 worker does, at any depth";
const INLINE_ASKED_POOL_NO_HELP: &str = "inline, as asked: the workers run preadv2 / pwritev2, at any depth";
const URING_ASKED: &str = "io_uring, as asked (whatever the device)";
const MEASURED_LEARNING: &str = "the device serves non-blocking I/O: io_uring with the registered table; at depth \
                                 1 the synchronous path and io_uring alternate until this device's operations show \
                                 which is faster (reads and writes apart)";
const MEASURED_URING: &str = "the device serves non-blocking I/O: io_uring with the registered table, measured as \
                              fast as the synchronous path at depth 1 on this device (writes are measured apart)";
const MEASURED_SYNC: &str = "preadv2 / pwritev2 measured faster than io_uring at depth 1 on this device: an idle \
                             ring runs them inline, deeper queues go to io_uring (writes are measured apart)";
const SHALLOW_RING: &str = "the device has no NOWAIT support (io_uring would hand every request to an io-wq thread): \
                            inline while the queue is shallow, io_uring beyond the inline depth";
const SHALLOW_POOL: &str =
    "the device has no NOWAIT support, so io_uring would hand every request to an io-wq thread: \
                            the caller that waits runs the operation itself (preadv2 / pwritev2), a worker runs \
                            shallow queues inline and deeper ones through io_uring";
const SHALLOW_POOL_NO_HELP: &str = "the device has no NOWAIT support: workers run shallow queues inline (preadv2 / \
                                    pwritev2) and deeper ones through io_uring";

/// Decides which engine serves an operation on `device` under `policy`,
/// run by `runner`: the one place the choice is made.
pub(crate) fn choose(policy: EnginePolicy, runner: Runner, device: Device) -> Choice {
    let main = |engine, reason, inline, help| Choice { engine, reason, lane: LaneId::Main, inline, help };
    match runner {
        Runner::Ring => {
            if device.fuse {
                return main(EngineKind::Inline, FUSE_RING, Inline::Always, false);
            }
            match policy {
                EnginePolicy::Inline | EnginePolicy::Blocking => {
                    main(EngineKind::Inline, INLINE_ASKED_RING, Inline::Always, false)
                }
                EnginePolicy::IoUring => main(EngineKind::IoUring, URING_ASKED, Inline::Never, false),
                EnginePolicy::Auto if device.nowait == Nowait::Unsupported => {
                    main(EngineKind::Inline, SHALLOW_RING, Inline::WhileShallow, false)
                }
                EnginePolicy::Auto => measured(device, false),
            }
        }
        Runner::Pool { main: workers, help } => {
            // The caller that waits may run any operation itself (on its
            // own ring, which obeys the same choice, or inline).
            if workers != EngineKind::IoUring {
                return main(EngineKind::Blocking, BLOCKING_POOL, Inline::Always, help);
            }
            if device.fuse {
                let side = Choice {
                    engine: EngineKind::SideThreads,
                    reason: FUSE_POOL,
                    lane: LaneId::Side,
                    inline: Inline::Always,
                    help,
                };
                return side;
            }
            match policy {
                EnginePolicy::Inline | EnginePolicy::Blocking => {
                    let reason = if help { INLINE_ASKED_POOL } else { INLINE_ASKED_POOL_NO_HELP };
                    main(EngineKind::Inline, reason, Inline::Always, help)
                }
                EnginePolicy::IoUring => main(EngineKind::IoUring, URING_ASKED, Inline::Never, help),
                EnginePolicy::Auto if device.nowait == Nowait::Unsupported => {
                    let reason = if help { SHALLOW_POOL } else { SHALLOW_POOL_NO_HELP };
                    main(EngineKind::Inline, reason, Inline::WhileShallow, help)
                }
                EnginePolicy::Auto => measured(device, help),
            }
        }
    }
}

/// Auto on a device that serves non-blocking I/O: io_uring, and at depth 1
/// the engine the device's measurements name.
fn measured(device: Device, help: bool) -> Choice {
    let (engine, reason) = match device.reads_at_depth_1 {
        Verdict::Learning => (EngineKind::IoUring, MEASURED_LEARNING),
        Verdict::IoUring => (EngineKind::IoUring, MEASURED_URING),
        Verdict::Sync => (EngineKind::Inline, MEASURED_SYNC),
    };
    Choice { engine, reason, lane: LaneId::Main, inline: Inline::Measured, help }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOWAIT: Device = Device { fuse: false, nowait: Nowait::Supported, reads_at_depth_1: Verdict::Learning };
    const NO_NOWAIT: Device = Device { fuse: false, nowait: Nowait::Unsupported, reads_at_depth_1: Verdict::Learning };
    const UNKNOWN: Device = Device { fuse: false, nowait: Nowait::Unknown, reads_at_depth_1: Verdict::Learning };
    const FUSE: Device = Device { fuse: true, nowait: Nowait::Supported, reads_at_depth_1: Verdict::Learning };
    const POOL: Runner = Runner::Pool { main: EngineKind::IoUring, help: true };
    const POOL_NO_HELP: Runner = Runner::Pool { main: EngineKind::IoUring, help: false };
    const BLOCKING: Runner = Runner::Pool { main: EngineKind::Blocking, help: true };

    #[test]
    fn auto_follows_the_device() {
        for runner in [Runner::Ring, POOL] {
            let c = choose(EnginePolicy::Auto, runner, NOWAIT);
            assert_eq!((c.engine, c.inline, c.lane), (EngineKind::IoUring, Inline::Measured, LaneId::Main));
            assert!(c.reason.contains("alternate"), "{}", c.reason);
            let sync = Device { reads_at_depth_1: Verdict::Sync, ..NOWAIT };
            let c = choose(EnginePolicy::Auto, runner, sync);
            assert_eq!((c.engine, c.inline), (EngineKind::Inline, Inline::Measured));
            assert!(c.reason.contains("measured faster"), "{}", c.reason);
            let uring = Device { reads_at_depth_1: Verdict::IoUring, ..NOWAIT };
            assert_eq!(choose(EnginePolicy::Auto, runner, uring).engine, EngineKind::IoUring);
            assert_eq!(choose(EnginePolicy::Auto, runner, UNKNOWN).engine, EngineKind::IoUring, "untested: io_uring");
            let c = choose(EnginePolicy::Auto, runner, NO_NOWAIT);
            assert_eq!((c.engine, c.inline), (EngineKind::Inline, Inline::WhileShallow));
            assert!(c.reason.contains("no NOWAIT"), "{}", c.reason);
        }
        assert!(choose(EnginePolicy::Auto, POOL, NO_NOWAIT).help);
        assert!(!choose(EnginePolicy::Auto, POOL_NO_HELP, NO_NOWAIT).help);
        assert!(choose(EnginePolicy::Auto, POOL, NOWAIT).help, "the waiter runs it on its own ring");
        assert!(!choose(EnginePolicy::Auto, POOL_NO_HELP, NOWAIT).help);
    }

    #[test]
    fn a_forced_policy_is_obeyed_and_its_reason_says_so() {
        for runner in [Runner::Ring, POOL, POOL_NO_HELP] {
            for device in [NOWAIT, NO_NOWAIT, UNKNOWN] {
                let c = choose(EnginePolicy::IoUring, runner, device);
                assert_eq!((c.engine, c.inline), (EngineKind::IoUring, Inline::Never));
                assert!(c.reason.contains("as asked") && !c.reason.contains("serves non-blocking"), "{}", c.reason);
                for inline in [EnginePolicy::Inline, EnginePolicy::Blocking] {
                    let c = choose(inline, runner, device);
                    assert_eq!((c.engine, c.inline), (EngineKind::Inline, Inline::Always));
                    assert!(c.reason.contains("as asked") && !c.reason.contains("io_uring beyond"), "{}", c.reason);
                }
            }
        }
    }

    #[test]
    fn fuse_files_never_reach_io_uring() {
        for policy in [EnginePolicy::Auto, EnginePolicy::IoUring, EnginePolicy::Inline] {
            let c = choose(policy, POOL, FUSE);
            assert_eq!((c.engine, c.lane), (EngineKind::SideThreads, LaneId::Side));
            let c = choose(policy, Runner::Ring, FUSE);
            assert_eq!((c.engine, c.inline), (EngineKind::Inline, Inline::Always));
        }
    }

    #[test]
    fn a_blocking_pool_runs_everything_on_its_workers() {
        for device in [NOWAIT, NO_NOWAIT, FUSE] {
            let c = choose(EnginePolicy::Auto, BLOCKING, device);
            assert_eq!((c.engine, c.lane), (EngineKind::Blocking, LaneId::Main));
        }
    }

    #[test]
    fn shallow_queues_run_inline_until_the_depth_or_while_cpus_are_busy() {
        let c = choose(EnginePolicy::Auto, Runner::Ring, NO_NOWAIT);
        assert!(c.runs_inline(0, 12, || false));
        assert!(c.runs_inline(11, 12, || false));
        assert!(!c.runs_inline(12, 12, || false));
        assert!(c.runs_inline(100, 12, || true));
        let never = choose(EnginePolicy::IoUring, Runner::Ring, NOWAIT);
        assert!(!never.runs_inline(0, 12, || panic!("not asked")));
        let always = choose(EnginePolicy::Inline, Runner::Ring, NOWAIT);
        assert!(always.runs_inline(1000, 12, || panic!("not asked")));
    }
}
