//! `IoPool`: an elastic set of IO worker threads over the shared table
//! (the design is in the type's documentation).

mod builder;
mod dispatch;
mod engine;
mod inline_worker;
mod lane;
mod local;
#[cfg(feature = "tokio")]
mod reactor;
mod stats;
mod uring_worker;
mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use builder::IoPoolBuilder;
use engine::Counters;
use lane::{Job, Lane};
use uring_worker::Generations;

use crate::buf::IoBuf;
use crate::engine::{Choice, Device, LaneId, Runner};
use crate::error::{Error, Result};
use crate::file::DirectFile;
use crate::handle::{OpHandle, OpState};
use crate::home::Home;
use crate::memory::IoMemory;
use crate::op::{Checked, Op};
use crate::stats::{FileEngine, GrowReport, PoolStats, ShrinkReport, WorkerStats};
use crate::table::BufferTable;
use crate::types::{EngineKind, EnginePolicy, TablePath, MAX_SEGMENTS};

pub(crate) struct Inner {
    main: Arc<Lane>,
    side: Arc<Lane>,
    /// The engine policy asked for.
    policy: EnginePolicy,
    /// What runs the operations, for the engine choice.
    runner: Runner,
    /// Each lane as the helper of operations its waiting callers may run:
    /// main, then side.
    helpers: [Arc<dyn crate::handle::Helper>; 2],
    /// How a calling thread runs an operation itself (its own ring).
    caller: Arc<local::Caller>,
    /// The engine chosen for each file this pool served, and why.
    files: std::sync::Mutex<Vec<(usize, FileEngine)>>,
    memory: IoMemory,
    table: Option<Arc<BufferTable>>,
    /// Table slots reserved for growth (None: no room beyond the start).
    capacity_slots: Option<u16>,
    notes: Vec<String>,
    counters: Arc<Counters>,
    gens: Arc<Generations>,
    /// The process that built the pool: its threads, eventfds and rings
    /// exist only there.
    home: Home,
}

impl Inner {
    fn main_engine(&self) -> EngineKind {
        self.main.factory.kind()
    }

    /// The engine choice for `file` in this pool.
    fn choose(&self, file: &DirectFile) -> Choice {
        crate::engine::choose(self.policy, self.runner, Device::of(file))
    }

    /// Logs and records the engine choice for a file new to this pool.
    fn note_file(&self, file: &DirectFile, choice: &Choice) {
        if !file.new_to(self as *const Inner as usize) {
            return;
        }
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.iter().any(|(id, _)| *id == file.id()) {
            return;
        }
        tracing::debug!(path = %file.path().display(), engine = %choice.engine, "engine for this file: {}", choice.reason);
        let fe = FileEngine {
            path: file.path().to_path_buf(),
            engine: choice.engine,
            reason: choice.reason,
            device: file.device_stats(),
        };
        files.push((file.id(), fe));
    }

    fn lane(&self, id: LaneId) -> &Arc<Lane> {
        match id {
            LaneId::Main => &self.main,
            LaneId::Side => &self.side,
        }
    }

    fn helper(&self, id: LaneId) -> &Arc<dyn crate::handle::Helper> {
        &self.helpers[usize::from(id == LaneId::Side)]
    }
}

/// The elastic IO thread pool.
///
/// Each worker runs one engine ([`EngineKind`]): by default a
/// [`Ring`](crate::Ring) created on its own thread with the table by clone,
/// so a new worker is ready in microseconds. Any thread submits; operations
/// take their buffers by value and complete with the result and the buffers
/// through an [`OpHandle`] (blocking `wait()` or `Future`).
///
/// Submissions go to the queue of the workers the engine choice names
/// ([`IoPool::engine_for`]: the main workers, or side threads for FUSE
/// files). A worker that finds the queue empty registers itself as a sleeper
/// (under the queue lock) before it blocks (a ring worker in
/// `io_uring_enter`, with a read of its eventfd always in flight); a
/// submitter that queues work pops one sleeper and signals it, so the worker
/// wakes at once whether it was idle or waiting for completions. Idle
/// workers wait with a timeout, after which they may exit above the
/// minimum.
///
/// ```no_run
/// use ringpool::{DirectFile, IoPool};
/// let pool = IoPool::builder().size(1 << 30).workers(1, 4).build()?;
/// let file = DirectFile::open("/var/tmp/data")?;
/// let mut buf = pool.memory().try_alloc(1 << 20)?;
/// buf.fill(1);
/// let (n, buf) = pool.write_at(&file, 0, buf).wait().into_one();
/// n?;
/// let (n, _buf) = pool.read_at(&file, 0, buf).wait().into_one();
/// assert_eq!(n?, 1 << 20);
/// # Ok::<(), ringpool::Error>(())
/// ```
pub struct IoPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IoPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoPool")
            .field("engine", &self.inner.main_engine())
            .field("path", &self.inner.table.as_ref().map(|t| t.path()))
            .finish()
    }
}

impl IoPool {
    /// A builder with default settings.
    pub fn builder() -> IoPoolBuilder {
        IoPoolBuilder::default()
    }

    /// The pool's memory (lease buffers from it).
    pub fn memory(&self) -> &IoMemory {
        &self.inner.memory
    }

    /// The table, for thread-per-core rings beside the pool (`None` with the
    /// blocking backend).
    pub fn table(&self) -> Option<&BufferTable> {
        self.inner.table.as_deref()
    }

    /// Submits `op`: checked once (see [`Op::check`]; its buffers must be
    /// this pool's leases), then queued for the engine the engine choice
    /// names for its file ([`IoPool::engine_for`]). The handle completes
    /// with the count or the error, and every buffer.
    pub fn submit(&self, op: Op) -> OpHandle {
        // In a forked child, before anything the parent's threads may hold.
        if let Err(e) = self.inner.home.check() {
            return OpHandle::ready(op.fail(e));
        }
        let checked = match Checked::new(op, Some(&self.inner.memory)) {
            Ok(c) => c,
            Err((e, op)) => return OpHandle::ready(op.fail(e)),
        };
        let choice = self.inner.choose(checked.op().file());
        self.inner.note_file(checked.op().file(), &choice);
        let helper = choice.help.then(|| self.inner.helper(choice.lane).clone());
        // On a runtime thread with its own asynchronous ring: started there
        // now, no hand-off (the workers take it if that fails).
        let on_runtime = choice.help && choice.lane == LaneId::Main && self.inner.caller.async_here();
        let state = OpState::new(checked, helper, self.inner.home, !on_runtime);
        if on_runtime {
            self.inner.counters.submitted.fetch_add(1, Ordering::Relaxed);
            state.start_async();
            return OpHandle::new(state);
        }
        let lane = self.inner.lane(choice.lane);
        worker::grow_if(
            lane,
            lane.submit(Job { state: state.clone(), enqueued: Instant::now(), withdrawn: false }, choice.help),
        );
        OpHandle::new(state)
    }

    /// Which engine serves `file` in this pool, and why (the one engine
    /// choice, for this pool's policy and workers).
    pub fn engine_for(&self, file: &DirectFile) -> (EngineKind, &'static str) {
        let c = self.inner.choose(file);
        (c.engine, c.reason)
    }

    /// Runs `op` on the calling thread and returns when it completed: on
    /// the thread's own ring (cloned from the table at the thread's first
    /// call, in microseconds; released when the thread exits or the pool
    /// is dropped), which submits and reaps it there, or inline where the
    /// engine choice says so (devices without NOWAIT, FUSE files, depth 1
    /// where the device measured the synchronous path faster). No queue,
    /// no wake-up, no worker. Checked first (see [`Op::check`]).
    ///
    /// A pool without io_uring (the blocking engine) or whose rings come
    /// from a broker runs it inline.
    pub fn run(&self, op: Op) -> crate::op::Done {
        if let Err(e) = self.inner.home.check() {
            return op.fail(e);
        }
        let checked = match Checked::new(op, Some(&self.inner.memory)) {
            Ok(c) => c,
            Err((e, op)) => return op.fail(e),
        };
        let c = &self.inner.counters;
        c.submitted.fetch_add(1, Ordering::Relaxed);
        let done = self.inner.caller.run(checked);
        c.count(done.is_ok());
        done
    }

    /// Runs `f` with the calling thread's own ring for this pool (the
    /// ring [`IoPool::run`] uses: made at the thread's first call, by
    /// clone), for code that drives a [`Ring`](crate::Ring) itself (many
    /// operations in flight, its own completions). It holds up to 32
    /// operations in flight, or the pool's ring depth if that is smaller
    /// (a push beyond fails with [`Error::RingFull`]). Operations still in
    /// flight when `f` returns stay on it for the next call; such a ring is
    /// released with its thread, not with the pool.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a pool without its own table (the
    /// blocking engine, rings from a broker), or for a call from inside `f`;
    /// the ring's setup errors; [`Error::Forked`].
    pub fn with_ring<R>(&self, f: impl FnOnce(&mut crate::ring::Ring) -> R) -> Result<R> {
        self.inner.home.check()?;
        let Some(local) = &self.inner.caller.local else {
            return Err(Error::invalid("pool", "without a table", "it has no rings for calling threads"));
        };
        local.with(f)
    }

    /// Reads `buf.len()` bytes at `offset`: [`IoPool::submit`] of
    /// [`Op::read`].
    pub fn read_at(&self, file: &DirectFile, offset: u64, buf: IoBuf) -> OpHandle {
        self.submit(Op::read(file, offset, buf))
    }

    /// Writes `buf.len()` bytes at `offset`.
    pub fn write_at(&self, file: &DirectFile, offset: u64, buf: IoBuf) -> OpHandle {
        self.submit(Op::write(file, offset, buf))
    }

    /// Reads into `bufs` from `offset` on: one READV_FIXED where the
    /// buffers lie in one segment ([`IoMemory::try_alloc_vec`]), one SQE
    /// per segment otherwise; preadv2 on the blocking engines.
    pub fn readv_at(&self, file: &DirectFile, offset: u64, bufs: Vec<IoBuf>) -> OpHandle {
        self.submit(Op::readv(file, offset, bufs))
    }

    /// Writes `bufs` from `offset` on (WRITEV_FIXED, or pwritev2).
    pub fn writev_at(&self, file: &DirectFile, offset: u64, bufs: Vec<IoBuf>) -> OpHandle {
        self.submit(Op::writev(file, offset, bufs))
    }

    /// fsync (`datasync`: fdatasync) through the pool.
    pub fn sync(&self, file: &DirectFile, datasync: bool) -> OpHandle {
        self.submit(Op::sync(file, datasync))
    }

    /// Starts one more worker (up to the maximum) and waits until its engine
    /// is ready; returns its spin-up time, or `None` at the maximum.
    ///
    /// # Errors
    /// The worker's ring setup error; [`Error::ShutDown`].
    pub fn add_worker(&self) -> Result<Option<Duration>> {
        self.inner.home.check()?;
        if !self.inner.main.is_running() {
            return Err(Error::ShutDown);
        }
        worker::spawn(&self.inner.main, true)
    }

    /// Adds `bytes` of memory under the pool's page policy: mapped,
    /// prefaulted, registered into free slots of the template (with the
    /// io_uring backend), then leasable; on failure the pool is as before.
    /// Leases from it can be used at once from any worker: a worker's ring
    /// picks the new slots up (a ranged clone of just them) before it runs
    /// an operation that needs them, and idle workers are woken to do it
    /// soon.
    ///
    /// # Errors
    /// [`Error::CapacityExhausted`] past the table's capacity ([`TableOptions::capacity`](crate::TableOptions::capacity));
    /// [`Error::TooManySegments`]; memory and registration errors.
    pub fn grow(&self, bytes: u64) -> Result<GrowReport> {
        self.inner.home.check()?;
        let report = match &self.inner.table {
            Some(t) => t.grow(bytes)?,
            None => {
                let slots = self.inner.capacity_slots.map_or(MAX_SEGMENTS, u64::from);
                self.inner.memory.grow_with(bytes, slots, |_| Ok(()), |_| Ok(0))?
            }
        };
        self.inner.main.wake_all();
        Ok(report)
    }

    /// Releases the pool's trailing segments holding at least `bytes`
    /// (whole segments) while I/O runs: they stop leasing at once; the
    /// shrink waits up to `timeout` for their leases to come back (else
    /// [`Error::ShrinkTimeout`], and the pool is as before); their slots
    /// become holes in the template and then in every worker's ring (the
    /// shrink wakes the workers and waits for them, so that the pages are
    /// unpinned when it returns); then the memory is unmapped. Register-each
    /// rings and the blocking backend shrink too.
    ///
    /// # Errors
    /// As [`IoMemory::shrink`]; [`Error::Forked`].
    pub fn shrink(&self, bytes: u64, timeout: Duration) -> Result<ShrinkReport> {
        self.inner.home.check()?;
        let Some(t) = &self.inner.table else { return self.inner.memory.shrink(bytes, timeout) };
        // Once the template dropped the segments, every ring catches up:
        // the calling threads' rings from here, the workers' on their own
        // threads (the shrink wakes them and waits for them), so that the
        // pages are unpinned when it returns.
        t.shrink_then(bytes, timeout, |generation, deadline| {
            self.inner.caller.catch_up_all();
            self.inner.main.wake_all();
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = self.inner.gens.wait_all_at(generation, left.max(Duration::from_millis(100))) {
                // Unmapping is safe all the same (no lease reaches the
                // segments; the kernel keeps pages it pinned): only the
                // pinned memory falls later, when they catch up.
                tracing::warn!("shrink: worker rings still hold the released segments: {e}");
            }
        })
    }

    /// Waits until every running worker's ring has table generation `gen`
    /// (or later); returns the moment the last one got there.
    ///
    /// # Errors
    /// [`Error::Timeout`].
    pub fn wait_rings_at(&self, gen: u64, timeout: Duration) -> Result<Instant> {
        self.inner.home.check()?;
        self.inner.gens.wait_all_at(gen, timeout)
    }

    /// Stops one idle worker (even below the minimum) and waits until its
    /// thread has dropped its engine. Returns `false` when no worker runs.
    pub fn retire_worker(&self) -> bool {
        self.inner.home.is_here() && self.inner.main.retire_one()
    }

    /// Statistics now (in a forked child: the counters the parent had at
    /// the fork, with no workers).
    pub fn stats(&self) -> PoolStats {
        let here = self.inner.home.is_here();
        let (workers, queued) = if here { self.inner.main.load() } else { (0, 0) };
        let (side_threads, _) = if here { self.inner.side.load() } else { (0, 0) };
        let default = stats::LaneStats::default();
        let guard = if here { Some(self.inner.main.stats_lock()) } else { None };
        let st = guard.as_deref().unwrap_or(&default);
        let c = &self.inner.counters;
        let engine = self.inner.main_engine();
        let local = self.inner.caller.counts();
        PoolStats {
            engine,
            path: self.inner.table.as_ref().map(|t| t.path()),
            fallbacks: self.inner.notes.clone(),
            workers,
            side_threads,
            workers_started: st.started,
            workers_retired: st.retired,
            spawn_failures: st.spawn_failures,
            last_spawn_error: st.last_spawn_error.clone(),
            worker_panics: st.panics,
            waker_panics: c.waker_panics.load(Ordering::Relaxed),
            spinups: st.parts.iter().map(|p| p.total).collect(),
            spinup_parts: st.parts.clone(),
            submitted: c.submitted.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            split_ops: c.split_ops.load(Ordering::Relaxed),
            inline_ops: c.inline_ops.load(Ordering::Relaxed),
            helped_ops: c.helped_ops.load(Ordering::Relaxed),
            local_rings: local.0,
            local_rings_made: local.1,
            local_ops: local.2,
            files: if here {
                self.inner.files.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, f)| f.clone()).collect()
            } else {
                Vec::new()
            },
            queued,
            alloc: self.inner.memory.stats(),
            register_time: self.inner.table.as_ref().map(|t| t.register_time()),
            per_worker: st
                .live
                .iter()
                .map(|b| WorkerStats {
                    id: b.id,
                    engine: b.engine,
                    ops: b.ops.load(Ordering::Relaxed),
                    bytes: b.bytes.load(Ordering::Relaxed),
                    in_flight: b.in_flight.load(Ordering::Relaxed),
                    table_generation: self.inner.gens.get(b.id),
                    spinup: b.spinup,
                })
                .collect(),
            segments: self.inner.memory.segment_stats(),
            pool_bytes: self.inner.memory.len(),
            pinned_bytes: self.pinned_bytes(workers + local.0),
            process_pinned_bytes: crate::sys::os::vm_pinned_kb(std::process::id()).ok().map(|kb| kb * 1024),
            bytes_moved: st.live.iter().map(|b| b.bytes.load(Ordering::Relaxed)).sum::<u64>() + st.retired_bytes,
        }
    }

    /// What the pool's tables pin by ringpool's accounting (`rings`: the
    /// workers' and the calling threads').
    fn pinned_bytes(&self, rings: usize) -> u64 {
        let Some(t) = &self.inner.table else { return 0 };
        let registered = t.registered_bytes();
        match t.path() {
            TablePath::Cloned => registered,
            // Every ring and the template.
            TablePath::Registered => registered.saturating_mul(rings as u64 + 1),
            _ => 0,
        }
    }

    /// Stops accepting operations, lets the workers finish everything
    /// queued and in flight, and joins them. Idempotent; `Drop` calls it.
    pub fn shutdown(&self) {
        if !self.inner.home.is_here() {
            // A forked child has none of the pool's threads to stop.
            return;
        }
        self.inner.side.shutdown();
        self.inner.main.shutdown();
        self.inner.caller.release_idle();
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        if !self.inner.home.is_here() {
            // A forked child: the pool's threads, queues and locks are the
            // parent's; a lock held by one of its threads at the fork is
            // held for ever here. Nothing of it is touched: the child's copy
            // is left as it is.
            std::mem::forget(self.inner.clone());
            return;
        }
        self.shutdown();
    }
}
