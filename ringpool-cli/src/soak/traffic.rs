//! The soak's traffic: submitting threads that keep verified random
//! reads and writes in flight through the pool (dropping some handles
//! mid-flight), and the threads that grow and shrink the pool and start and
//! retire workers meanwhile.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringpool::{DirectFile, IoPool, OpHandle};

use crate::verify::{check, stamp, Ledger, SUB, UNCERTAIN};

/// Shared counters of one soak.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ops: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) verified: AtomicU64,
    pub(crate) mismatches: AtomicU64,
    pub(crate) op_errors: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) problems: Mutex<Vec<String>>,
}

impl Tally {
    pub(crate) fn problem(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut p) = self.problems.lock() {
            if p.len() < 10 {
                p.push(what);
            }
        }
    }
}

/// The unit of the file a submitting thread owns.
pub(crate) const REGION: u64 = 1 << 20;

struct Flight {
    write: bool,
    offset: u64,
    len: u64,
    seq: u64,
    /// For reads of this thread's own region: the sequences expected.
    expect: Option<Vec<u64>>,
    handle: OpHandle,
}

/// What every submitting thread shares.
pub(crate) struct Ctx<'a> {
    pub(crate) pool: &'a IoPool,
    pub(crate) file: &'a DirectFile,
    pub(crate) ledger: &'a Ledger,
    pub(crate) seq: &'a AtomicU64,
    pub(crate) tally: &'a Tally,
    pub(crate) size: u64,
    pub(crate) threads: u64,
}

fn finish(c: &Ctx<'_>, f: Flight) {
    let (r, buf) = f.handle.wait().into_one();
    let n = match r {
        Ok(n) => n as u64,
        Err(e) => {
            c.tally.problem(
                &c.tally.op_errors,
                format!("{} at {}: {e}", if f.write { "write" } else { "read" }, f.offset),
            );
            return;
        }
    };
    c.tally.ops.fetch_add(1, Ordering::Relaxed);
    c.tally.bytes.fetch_add(n, Ordering::Relaxed);
    if n != f.len {
        c.tally.problem(&c.tally.op_errors, format!("short transfer at {}: {n} of {}", f.offset, f.len));
        return;
    }
    if f.write {
        c.ledger.record(f.offset, f.len, f.seq);
        return;
    }
    for (i, sub) in buf.chunks(SUB).enumerate() {
        let off = f.offset + (i * SUB) as u64;
        match check(sub, off) {
            Err(e) => c.tally.problem(&c.tally.mismatches, e),
            Ok(seq) => {
                let issued = c.seq.load(Ordering::Relaxed);
                let exact = f.expect.as_ref().map(|v| v[i]).filter(|&s| s != UNCERTAIN);
                if seq > issued {
                    c.tally.problem(&c.tally.mismatches, format!("offset {off}: sequence {seq} was never issued"));
                } else if exact.is_some_and(|want| want != seq) {
                    c.tally.problem(
                        &c.tally.mismatches,
                        format!("offset {off}: holds sequence {seq}, the last write there was {}", exact.unwrap_or(0)),
                    );
                } else {
                    c.tally.verified.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Submitting thread `t`: `depth` operations in flight until `deadline`.
pub(crate) fn submitter(c: &Ctx<'_>, t: u64, depth: usize, deadline: Instant) {
    let mut rng = fastrand::Rng::with_seed(0x50a6 ^ t);
    let mut flights: VecDeque<Flight> = VecDeque::new();
    let regions = c.size / REGION;
    let overlaps = |flights: &VecDeque<Flight>, off: u64, len: u64| {
        flights.iter().any(|f| off < f.offset + f.len && f.offset < off + len)
    };
    while Instant::now() < deadline {
        if flights.len() >= depth {
            if let Some(f) = flights.pop_front() {
                finish(c, f);
            }
        }
        let len = rng.u64(1..=64) * SUB as u64;
        let write = rng.u32(0..10) < 4;
        let (offset, own) = if write {
            // Writes stay inside this thread's regions.
            let mine = (regions / c.threads).max(1);
            let region = (rng.u64(0..mine) * c.threads + t) % regions;
            let off = region * REGION + rng.u64(0..(REGION - len) / SUB as u64 + 1) * SUB as u64;
            (off, true)
        } else {
            let off = rng.u64(0..(c.size - len) / SUB as u64 + 1) * SUB as u64;
            let region_first = off / REGION;
            let region_last = (off + len - 1) / REGION;
            (off, region_first == region_last && region_first % c.threads == t)
        };
        // Never two of this thread's operations on the same bytes at once, so
        // that the last completed write of its regions is well defined.
        if own && overlaps(&flights, offset, len) {
            continue;
        }
        let mut buf = match c.pool.memory().alloc_timeout(len as usize, Duration::from_secs(30)) {
            Ok(b) => b,
            Err(e) => {
                c.tally.problem(&c.tally.op_errors, format!("alloc {len}: {e}"));
                continue;
            }
        };
        let drop_it = rng.u32(0..100) < 5;
        if write {
            let seq = c.seq.fetch_add(1, Ordering::Relaxed) + 1;
            for (i, sub) in buf.chunks_mut(SUB).enumerate() {
                stamp(sub, offset + (i * SUB) as u64, seq);
            }
            let handle = c.pool.write_at(c.file, offset, buf);
            if drop_it {
                // Its completion will never be seen: whatever version of
                // these blocks ends up on disk is acceptable, if it is whole.
                c.ledger.record(offset, len, UNCERTAIN);
                c.tally.dropped.fetch_add(1, Ordering::Relaxed);
                drop(handle);
            } else {
                flights.push_back(Flight { write, offset, len, seq, expect: None, handle });
            }
        } else {
            let expect = own.then(|| {
                (0..len / SUB as u64)
                    .map(|i| c.ledger.seq[((offset / SUB as u64) + i) as usize].load(Ordering::Relaxed))
                    .collect()
            });
            let handle = c.pool.read_at(c.file, offset, buf);
            if drop_it {
                c.tally.dropped.fetch_add(1, Ordering::Relaxed);
                drop(handle);
            } else {
                flights.push_back(Flight { write, offset, len, seq: 0, expect, handle });
            }
        }
    }
    for f in flights {
        finish(c, f);
    }
}

/// Growths, shrinks and the timeouts of shrinks, counted.
#[derive(Default)]
pub(crate) struct Cycles {
    pub(crate) grown: AtomicU64,
    pub(crate) shrunk: AtomicU64,
    pub(crate) shrink_timeouts: AtomicU64,
}

/// Grows the pool by `step` and shrinks it back, over and over, until
/// `stop`.
pub(crate) fn grow_and_shrink(pool: &IoPool, step: u64, stop: &AtomicBool, tally: &Tally, cycles: &Cycles) {
    let mut rng = fastrand::Rng::with_seed(7);
    while !stop.load(Ordering::Relaxed) {
        match pool.grow(step) {
            Ok(_) => cycles.grown.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tally.problem(&tally.op_errors, format!("grow: {e}"));
                return;
            }
        };
        std::thread::sleep(Duration::from_millis(rng.u64(1..30)));
        // Leases in the grown segment come back within the operations'
        // time; the shrink waits for them.
        match pool.shrink(step, Duration::from_secs(10)) {
            Ok(_) => {
                cycles.shrunk.fetch_add(1, Ordering::Relaxed);
            }
            Err(ringpool::Error::ShrinkTimeout { .. }) => {
                cycles.shrink_timeouts.fetch_add(1, Ordering::Relaxed);
                let _ = pool.shrink(step, Duration::from_secs(60));
            }
            Err(e) => {
                tally.problem(&tally.op_errors, format!("shrink: {e}"));
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(1..30)));
    }
}

/// Starts and retires workers at random, beside the pool's own scaling,
/// until `stop`.
pub(crate) fn churn_workers(pool: &IoPool, stop: &AtomicBool) {
    let mut rng = fastrand::Rng::with_seed(42);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.u64(2..20)));
        if rng.bool() {
            let _ = pool.add_worker();
        } else if pool.stats().workers > 1 {
            pool.retire_worker();
        }
    }
}
