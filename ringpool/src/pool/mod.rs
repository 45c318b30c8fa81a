//! `IoPool`: an elastic set of IO worker threads over the shared table.
//!
//! Each worker owns one [`Ring`](crate::Ring), created on its own thread
//! with the table by clone, so a new worker is ready in microseconds. Any
//! thread submits; operations take the [`IoBuf`] by value and complete with
//! `(result, IoBuf)` through an [`OpHandle`] (blocking `wait()` or `Future`).
//!
//! Submissions go to one queue. A worker that finds the queue empty
//! registers itself as a sleeper (under the queue lock) before it blocks in
//! `io_uring_enter`, with a read of its eventfd always in flight; a
//! submitter that queues work pops one sleeper and writes its eventfd, so
//! the worker wakes at once whether it was idle or waiting for completions.
//! No sleep-polling anywhere.

mod dispatch;
mod handle;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dispatch::{Dispatch, Sleeper};
use handle::OpState;
pub use handle::{IoResult, OpHandle};

use crate::error::{Error, Result};
use crate::file::DirectFile;
use crate::memory::{IoMemory, MemoryOptions, PagePolicy};
use crate::probe::Features;
use crate::ring::{TablePath, MAX_RING_ENTRIES};
use crate::sys::buf::IoBuf;
use crate::table::{BufferTable, Refresh, Sharing, TableOptions};
use crate::AllocStats;

/// Which engine runs the I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring where it can be set up, else blocking (ENOSYS, EPERM); the
    /// choice is reported in [`PoolStats`].
    #[default]
    Auto,
    /// io_uring or fail.
    IoUring,
    /// `pread` / `pwrite` on the worker threads.
    Blocking,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "io_uring" | "io-uring" | "iouring" | "uring" => Ok(Backend::IoUring),
            "blocking" | "sync" => Ok(Backend::Blocking),
            _ => Err(format!("unknown backend {s:?}: expected auto, io_uring or blocking")),
        }
    }
}

/// The engine that actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring rings.
    IoUring,
    /// Blocking syscalls on the workers.
    Blocking,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Blocking => "blocking",
        })
    }
}

/// Configures an [`IoPool`].
#[derive(Debug, Clone)]
pub struct IoPoolBuilder {
    memory: Option<IoMemory>,
    size: u64,
    mem_opts: MemoryOptions,
    prefault: bool,
    min_workers: usize,
    max_workers: usize,
    depth: u32,
    idle_timeout: Duration,
    sharing: Sharing,
    backend: Backend,
    grow_queue: Option<usize>,
    grow_wait: Duration,
    capacity: Option<u64>,
    refresh: Refresh,
}

impl Default for IoPoolBuilder {
    fn default() -> Self {
        IoPoolBuilder {
            memory: None,
            size: 64 << 20,
            mem_opts: MemoryOptions::default(),
            prefault: true,
            min_workers: 1,
            max_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            depth: 128,
            idle_timeout: Duration::from_secs(5),
            sharing: Sharing::Auto,
            backend: Backend::Auto,
            grow_queue: None,
            grow_wait: Duration::from_micros(500),
            capacity: None,
            refresh: Refresh::Auto,
        }
    }
}

impl IoPoolBuilder {
    /// Size of the IO memory pool to map (default 64 MiB).
    pub fn memory_size(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }
    /// Page policy of the pool (default Auto).
    pub fn page(mut self, page: PagePolicy) -> Self {
        self.mem_opts.page = page;
        self
    }
    /// Segment size of the pool (default: up to 1 GiB).
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.mem_opts.segment_size = Some(bytes);
        self
    }
    /// Lease alignment (default 4096).
    pub fn alignment(mut self, bytes: u64) -> Self {
        self.mem_opts.alignment = bytes;
        self
    }
    /// Use this pool instead of mapping one.
    pub fn memory(mut self, memory: IoMemory) -> Self {
        self.memory = Some(memory);
        self
    }
    /// Prefault the pool before registering it (default true).
    pub fn prefault(mut self, yes: bool) -> Self {
        self.prefault = yes;
        self
    }
    /// Workers: at least `min` always, at most `max` (default 1 to the CPU count).
    pub fn workers(mut self, min: usize, max: usize) -> Self {
        self.min_workers = min;
        self.max_workers = max;
        self
    }
    /// Operations in flight per worker ring (default 128, at most 32767).
    pub fn ring_depth(mut self, depth: u32) -> Self {
        self.depth = depth;
        self
    }
    /// A worker idle this long exits, above the minimum (default 5 s).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
    /// How worker rings get the table (default Auto: clone).
    pub fn sharing(mut self, s: Sharing) -> Self {
        self.sharing = s;
        self
    }
    /// Which engine (default Auto).
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = b;
        self
    }
    /// Add a worker when a submission finds no idle worker and either
    /// `queued` operations wait (default: one ring's depth) or the oldest has
    /// waited `wait` (default 500 µs).
    pub fn grow_threshold(mut self, queued: usize, wait: Duration) -> Self {
        self.grow_queue = Some(queued.max(1));
        self.grow_wait = wait;
        self
    }

    /// Room to grow the pool up to `bytes` in all ([`IoPool::grow`]): the
    /// table reserves slots for it (at most 16384 segments).
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes);
        self
    }
    /// How worker rings pick up growth (default: ranged clone where it works).
    pub fn refresh(mut self, r: Refresh) -> Self {
        self.refresh = r;
        self
    }

    /// Maps (and prefaults) the memory, registers the table, starts the
    /// minimum number of workers and waits until their rings are ready.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad setting (min above max, no
    /// workers, depth 0 or above 32767); memory and table errors; a worker's
    /// ring setup error; [`Error::IoUringUnavailable`] with
    /// [`Backend::IoUring`].
    pub fn build(self) -> Result<IoPool> {
        if self.max_workers == 0 || self.max_workers > 1024 {
            return Err(Error::invalid("max workers", self.max_workers, "it must be from 1 to 1024"));
        }
        if self.min_workers > self.max_workers {
            return Err(Error::invalid(
                "min workers",
                self.min_workers,
                format!("it is above max workers ({})", self.max_workers),
            ));
        }
        if self.depth == 0 || self.depth >= MAX_RING_ENTRIES {
            return Err(Error::invalid(
                "ring depth",
                self.depth,
                "it must be from 1 to 32767 (one entry is the pool's own)",
            ));
        }
        let memory = match self.memory.clone() {
            Some(m) => m,
            None => IoMemory::map_with(self.size, &self.mem_opts)?,
        };
        if self.prefault && memory.prefault_time().is_none() {
            memory.prefault(|_| {})?;
        }
        let mut notes = Vec::new();
        let features = Features::get();
        let want_uring = match self.backend {
            Backend::Blocking => false,
            Backend::IoUring => {
                if let crate::probe::IoUringStatus::Unavailable { errno, reason } = &features.io_uring {
                    return Err(Error::IoUringUnavailable {
                        reason: reason.clone(),
                        source: std::io::Error::from_raw_os_error(*errno),
                    });
                }
                true
            }
            Backend::Auto => match &features.io_uring {
                crate::probe::IoUringStatus::Available => true,
                crate::probe::IoUringStatus::Unavailable { reason, .. } => {
                    notes.push(format!("blocking backend: {reason}"));
                    false
                }
            },
        };
        let capacity = match self.capacity {
            None => None,
            Some(bytes) => {
                let slots = bytes.div_ceil(memory.segment_size());
                if slots > crate::memory::MAX_SEGMENTS {
                    return Err(Error::TooManySegments {
                        size: crate::units::Bytes(bytes),
                        segment: crate::units::Bytes(memory.segment_size()),
                        segments: slots,
                    });
                }
                Some((slots as u16).max(memory.segment_count()))
            }
        };
        let topts = TableOptions { sharing: self.sharing, segments: None, capacity, refresh: self.refresh };
        let table = if want_uring {
            match BufferTable::register_with(&memory, &topts) {
                Ok(t) => {
                    if let Some(f) = t.fallback_reason() {
                        notes.push(f.to_string());
                    }
                    Some(t)
                }
                Err(Error::IoUringUnavailable { reason, .. }) if self.backend == Backend::Auto => {
                    notes.push(format!("blocking backend: {reason}"));
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        for n in &notes {
            tracing::warn!("{n}");
        }
        let backend = if table.is_some() { BackendKind::IoUring } else { BackendKind::Blocking };
        let path = table.as_ref().map(|t| t.path());
        let inner = Arc::new(Inner {
            cfg: Config {
                min: self.min_workers,
                max: self.max_workers,
                depth: self.depth,
                idle: self.idle_timeout,
                grow_queue: self.grow_queue.unwrap_or(self.depth as usize),
                grow_wait: self.grow_wait,
            },
            memory,
            table,
            backend,
            path,
            notes,
            shared: Mutex::new(Shared { d: Dispatch::new(), next_id: 0, threads: Vec::new(), retired_on_request: 0 }),
            exited: Condvar::new(),
            stats: Mutex::new(StatsInner::default()),
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            capacity_segments: capacity,
            gens: Mutex::new(std::collections::HashMap::new()),
            gen_changed: Condvar::new(),
            side: Mutex::new(Side { running: true, ..Side::default() }),
            side_cv: Condvar::new(),
        });
        let pool = IoPool { inner };
        for _ in 0..pool.inner.cfg.min {
            pool.add_worker()?;
        }
        Ok(pool)
    }
}

#[derive(Debug)]
struct Config {
    min: usize,
    max: usize,
    depth: u32,
    idle: Duration,
    grow_queue: usize,
    grow_wait: Duration,
}

/// Why a worker exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Idle past the timeout, or the pool shut down.
    Idle,
    /// `retire_worker` asked for it.
    Requested,
    /// Its ring could not be set up.
    Failed,
}

/// How to wake a sleeping worker.
pub(crate) struct Wake {
    id: usize,
    eventfd: Option<Arc<std::os::fd::OwnedFd>>,
    thread: std::thread::Thread,
}

impl Sleeper for Arc<Wake> {
    fn id(&self) -> usize {
        self.id
    }
}

impl Wake {
    fn wake(&self) {
        match &self.eventfd {
            Some(fd) => crate::sys::os::eventfd_signal(std::os::fd::AsFd::as_fd(&**fd)),
            None => self.thread.unpark(),
        }
    }
}

struct Shared {
    /// The queue, the sleepers and the worker books (see dispatch.rs).
    d: Dispatch<Job, Arc<Wake>>,
    next_id: usize,
    threads: Vec<(usize, JoinHandle<()>)>,
    /// Workers stopped on request whose threads have finished (ring dropped).
    retired_on_request: u64,
}

/// Where one worker's spin-up time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpinupParts {
    /// From the spawn call to the first instruction of the worker thread.
    pub thread: Duration,
    /// `io_uring_setup` of its ring.
    pub ring: Duration,
    /// Getting the table (clone or register).
    pub table: Duration,
    /// Everything, until the worker is ready for work.
    pub total: Duration,
}

#[derive(Default)]
struct StatsInner {
    parts: Vec<SpinupParts>,
    started: u64,
    retired: u64,
    spawn_failures: u64,
    last_spawn_error: Option<String>,
    panics: u64,
}

pub(crate) struct Inner {
    cfg: Config,
    memory: IoMemory,
    table: Option<BufferTable>,
    backend: BackendKind,
    path: Option<TablePath>,
    notes: Vec<String>,
    shared: Mutex<Shared>,
    exited: Condvar,
    stats: Mutex<StatsInner>,
    submitted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    /// Table slots reserved for growth (None: no room beyond the start).
    capacity_segments: Option<u16>,
    /// The table generation each live ring worker has, and since when.
    gens: Mutex<std::collections::HashMap<usize, (u64, Instant)>>,
    gen_changed: Condvar,
    /// Side threads serving FUSE files with pread / pwrite.
    side: Mutex<Side>,
    side_cv: Condvar,
}

/// Operations that must not go through io_uring (FUSE files, see
/// `DirectFile::is_forced_async`), on up to `SIDE_THREADS` threads.
#[derive(Default)]
struct Side {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    running: bool,
    handles: Vec<JoinHandle<()>>,
}

const SIDE_THREADS: usize = 4;

pub(crate) enum JobKind {
    Rw { write: bool, buf: Option<IoBuf>, done: Arc<OpState<IoResult>> },
    Sync { datasync: bool, done: Option<Arc<OpState<Result<()>>>> },
}

/// A queued operation. If it is dropped before a worker consumed it (a bug,
/// or a panic between taking and submitting it), it completes its handle
/// with [`Error::Lost`] and its buffer.
pub(crate) struct Job {
    kind: JobKind,
    file: DirectFile,
    offset: u64,
    enqueued: Instant,
}

impl Job {
    fn fail(mut self, e: Error) {
        self.complete_with(|| e);
    }

    /// Completes the handle with an error (and the buffer), unless a worker
    /// already took the operation over.
    fn complete_with(&mut self, e: impl FnOnce() -> Error) {
        match &mut self.kind {
            JobKind::Rw { buf, done, .. } => {
                if let Some(b) = buf.take() {
                    done.complete((Err(e()), b));
                }
            }
            JobKind::Sync { done, .. } => {
                if let Some(d) = done.take() {
                    d.complete(Err(e()));
                }
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.complete_with(|| Error::Lost("the worker holding this operation stopped before submitting it".into()));
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats_lock(&self) -> MutexGuard<'_, StatsInner> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn side_lock(&self) -> MutexGuard<'_, Side> {
        self.side.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job for the side threads, starting one if none is idle.
    fn submit_side(self: &Arc<Self>, job: Job) {
        let mut side = self.side_lock();
        if !side.running {
            drop(side);
            job.fail(Error::ShutDown);
            return;
        }
        self.submitted.fetch_add(1, Ordering::Relaxed);
        side.queue.push_back(job);
        if side.idle == 0 && side.threads < SIDE_THREADS {
            side.threads += 1;
            let inner = self.clone();
            match std::thread::Builder::new().name("ringpool-side".into()).spawn(move || inner.side_thread()) {
                Ok(h) => side.handles.push(h),
                Err(e) => {
                    side.threads -= 1;
                    tracing::warn!("cannot start a side thread: {e}");
                }
            }
        }
        drop(side);
        self.side_cv.notify_one();
    }

    fn side_thread(self: Arc<Self>) {
        loop {
            let job = {
                let mut side = self.side_lock();
                loop {
                    if let Some(j) = side.queue.pop_front() {
                        break Some(j);
                    }
                    if !side.running {
                        break None;
                    }
                    side.idle += 1;
                    let (s, t) = self.side_cv.wait_timeout(side, self.cfg.idle).unwrap_or_else(|p| p.into_inner());
                    side = s;
                    side.idle -= 1;
                    if t.timed_out() && side.queue.is_empty() {
                        break None;
                    }
                }
            };
            match job {
                Some(j) => worker::run_blocking(&self, j),
                None => {
                    self.side_lock().threads -= 1;
                    return;
                }
            }
        }
    }

    /// Stops the side threads after they drained their queue.
    fn shutdown_side(&self) {
        let handles = {
            let mut side = self.side_lock();
            side.running = false;
            std::mem::take(&mut side.handles)
        };
        self.side_cv.notify_all();
        for h in handles {
            let _ = h.join();
        }
    }

    /// Queues a job and wakes a sleeping worker, or grows the pool.
    fn submit(self: &Arc<Self>, job: Job) {
        if self.backend == BackendKind::IoUring && job.file.is_forced_async() {
            return self.submit_side(job);
        }
        let (sleeper, grow) = {
            let mut s = self.lock();
            if !s.d.running {
                drop(s);
                job.fail(Error::ShutDown);
                return;
            }
            self.submitted.fetch_add(1, Ordering::Relaxed);
            let sleeper = s.d.push(job);
            let grow = sleeper.is_none() && self.should_grow(&s);
            (sleeper, grow)
        };
        if let Some(w) = sleeper {
            w.wake();
        }
        if grow {
            self.spawn_worker(false).ok();
        }
    }

    fn should_grow(&self, s: &Shared) -> bool {
        if s.d.live >= self.cfg.max {
            return false;
        }
        if s.d.live == 0 {
            return true;
        }
        s.d.queue.len() >= self.cfg.grow_queue
            || s.d.queue.front().is_some_and(|j| j.enqueued.elapsed() >= self.cfg.grow_wait)
    }

    /// Takes up to `room` jobs. With room but nothing queued, registers
    /// `wake` as a sleeper before the caller blocks.
    fn take_jobs(self: &Arc<Self>, room: usize, wake: &Arc<Wake>, out: &mut Vec<Job>) {
        let grow = {
            let mut s = self.lock();
            s.d.take(room, wake, out);
            // Busy with work still waiting and nobody idle: maybe add a worker.
            !out.is_empty() && !s.d.queue.is_empty() && s.d.sleepers.is_empty() && self.should_grow(&s)
        };
        if grow {
            self.spawn_worker(false).ok();
        }
    }

    fn unsleep(&self, wake: &Wake) {
        self.lock().d.unsleep(wake.id);
    }

    /// Whether a worker with nothing in flight should exit now: the pool is
    /// draining and the queue is empty, or it idled past the timeout above
    /// the minimum. Decided under the queue lock, so no job queued for it
    /// is stranded.
    fn should_exit(&self, wake: &Wake, idle_for: Duration) -> Option<Exit> {
        let mut s = self.lock();
        let running = s.d.running;
        let why = s.d.try_exit(wake.id, idle_for >= self.cfg.idle, self.cfg.min)?;
        if running {
            self.stats_lock().retired += 1;
        }
        Some(why)
    }

    /// A worker could not set up its ring (or panicked before leaving).
    /// When no worker is left to serve the queue, the queued jobs fail with
    /// the cause instead of waiting for a worker that will not come.
    fn worker_failed(&self, id: usize, e: &Error) -> Exit {
        let (why, stranded) = {
            let mut s = self.lock();
            let why = s.d.leave(id, Exit::Failed);
            let stranded: Vec<Job> = if s.d.live == 0 { s.d.queue.drain(..).collect() } else { Vec::new() };
            (why, stranded)
        };
        {
            let mut st = self.stats_lock();
            st.spawn_failures += 1;
            st.last_spawn_error = Some(e.to_string());
        }
        for j in stranded {
            self.count(false);
            j.fail(Error::Lost(format!("no IoPool worker could start: {e}")));
        }
        self.exited.notify_all();
        why
    }

    /// A worker unwound from a panic (a user waker, a bug) after completing
    /// what it held: it leaves, and a replacement starts when the pool is
    /// below its minimum or work is queued with nobody to take it.
    fn worker_panicked(self: &Arc<Self>, id: usize) -> Exit {
        let (why, respawn) = {
            let mut s = self.lock();
            let why = s.d.leave(id, Exit::Failed);
            (why, s.d.running && (s.d.live < self.cfg.min || (s.d.live == 0 && !s.d.queue.is_empty())))
        };
        self.stats_lock().panics += 1;
        self.exited.notify_all();
        if respawn {
            let _ = self.spawn_worker(false);
        }
        why
    }

    /// Counts one completed operation.
    fn count(&self, ok: bool) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn worker_exited(&self, why: Exit) {
        if why == Exit::Requested {
            self.lock().retired_on_request += 1;
        }
        self.exited.notify_all();
    }

    /// A worker's ring now has table generation `gen` (None: it left).
    pub(crate) fn ring_at(&self, id: usize, gen: Option<u64>) {
        let mut g = self.gens.lock().unwrap_or_else(|p| p.into_inner());
        match gen {
            Some(gen) => {
                g.insert(id, (gen, Instant::now()));
            }
            None => {
                g.remove(&id);
            }
        }
        drop(g);
        self.gen_changed.notify_all();
    }

    /// Wakes every sleeping worker (to pick up table growth).
    fn wake_all(&self) {
        let sleepers = std::mem::take(&mut self.lock().d.sleepers);
        for w in sleepers {
            w.wake();
        }
    }

    fn record_spinup(&self, parts: SpinupParts) {
        let mut st = self.stats_lock();
        st.parts.push(parts);
        st.started += 1;
    }

    /// Starts a worker thread; with `wait`, blocks until its ring is ready
    /// and returns its spin-up time (thread + ring + table).
    fn spawn_worker(self: &Arc<Self>, wait: bool) -> Result<Option<Duration>> {
        let (id, finished) = {
            let mut s = self.lock();
            if s.d.live >= self.cfg.max || !s.d.running {
                return Ok(None);
            }
            s.d.live += 1;
            s.next_id += 1;
            // Reap threads of retired workers that have finished (no blocking join).
            let mut finished = Vec::new();
            let mut i = 0;
            while i < s.threads.len() {
                if s.threads[i].1.is_finished() {
                    finished.push(s.threads.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
            (s.next_id, finished)
        };
        for t in finished {
            let _ = t.join();
        }
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ringpool-w{id}"))
            .spawn(move || worker::run(inner, id, started, tx));
        match spawned {
            Ok(h) => self.lock().threads.push((id, h)),
            Err(e) => {
                let err = Error::os("spawn worker", e);
                let why = self.worker_failed(id, &err);
                self.worker_exited(why);
                return Err(err);
            }
        }
        if !wait {
            return Ok(None);
        }
        match rx.recv() {
            Ok(Ok(d)) => Ok(Some(d)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Lost("the worker thread exited during setup".into())),
        }
    }
}

/// Statistics of an [`IoPool`].
#[derive(Debug, Clone)]
pub struct PoolStats {
    /// The engine that runs.
    pub backend: BackendKind,
    /// How worker rings get the table (`None` for the blocking backend).
    pub path: Option<TablePath>,
    /// Every fallback taken, in words.
    pub fallbacks: Vec<String>,
    /// Workers running now.
    pub workers: usize,
    /// Workers started since the pool was built.
    pub workers_started: u64,
    /// Workers that exited after idling.
    pub workers_retired: u64,
    /// Workers that failed to start.
    pub spawn_failures: u64,
    /// The last start failure.
    pub last_spawn_error: Option<String>,
    /// Workers that unwound from a panic (and were replaced).
    pub worker_panics: u64,
    /// Spin-up time (thread + ring + table) of every worker started.
    pub spinups: Vec<Duration>,
    /// The same, broken down.
    pub spinup_parts: Vec<SpinupParts>,
    /// Operations accepted.
    pub submitted: u64,
    /// Operations completed (successfully or not).
    pub completed: u64,
    /// Operations that completed with an error.
    pub failed: u64,
    /// Operations waiting in the queue now.
    pub queued: usize,
    /// The allocator.
    pub alloc: AllocStats,
    /// Time to register the table once.
    pub register_time: Option<Duration>,
}

/// The elastic IO thread pool. See the [module docs](self).
///
/// ```no_run
/// use ringpool::{DirectFile, IoPool};
/// let pool = IoPool::builder().memory_size(1 << 30).workers(1, 4).build()?;
/// let file = DirectFile::open("/var/tmp/data")?;
/// let mut buf = pool.memory().try_alloc(1 << 20)?;
/// buf.fill(1);
/// let (n, buf) = pool.write_at(&file, 0, buf).wait();
/// n?;
/// let (n, _buf) = pool.read_at(&file, 0, buf).wait();
/// assert_eq!(n?, 1 << 20);
/// # Ok::<(), ringpool::Error>(())
/// ```
pub struct IoPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IoPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoPool").field("backend", &self.inner.backend).field("path", &self.inner.path).finish()
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
        self.inner.table.as_ref()
    }

    fn rw(&self, write: bool, file: &DirectFile, offset: u64, buf: IoBuf) -> OpHandle<IoResult> {
        if let Err(e) = file.check_io(write, offset, &buf) {
            return OpHandle::ready((Err(e), buf));
        }
        if !self.inner.memory.same_pool(buf.pool()) {
            let op = if write { "write" } else { "read" };
            let e =
                Error::ForeignBuffer { op, reason: "the buffer belongs to another IoMemory than this pool's".into() };
            return OpHandle::ready((Err(e), buf));
        }
        let done = OpState::new();
        let job = Job {
            kind: JobKind::Rw { write, buf: Some(buf), done: done.clone() },
            file: file.clone(),
            offset,
            enqueued: Instant::now(),
        };
        self.inner.submit(job);
        OpHandle::new(done)
    }

    /// Reads `buf.len()` bytes at `offset`. Checked before it is queued
    /// (see [`DirectFile::check_io`]); the handle completes with the count
    /// (short at end of file) or the error, and the buffer.
    pub fn read_at(&self, file: &DirectFile, offset: u64, buf: IoBuf) -> OpHandle<IoResult> {
        self.rw(false, file, offset, buf)
    }

    /// Writes `buf.len()` bytes at `offset`.
    pub fn write_at(&self, file: &DirectFile, offset: u64, buf: IoBuf) -> OpHandle<IoResult> {
        self.rw(true, file, offset, buf)
    }

    fn sync(&self, file: &DirectFile, datasync: bool) -> OpHandle<Result<()>> {
        if file.is_closed() {
            return OpHandle::ready(Err(Error::FileClosed { op: "sync", path: file.path().to_path_buf() }));
        }
        let done = OpState::new();
        let job = Job {
            kind: JobKind::Sync { datasync, done: Some(done.clone()) },
            file: file.clone(),
            offset: 0,
            enqueued: Instant::now(),
        };
        self.inner.submit(job);
        OpHandle::new(done)
    }

    /// fsync through a worker.
    pub fn sync_all(&self, file: &DirectFile) -> OpHandle<Result<()>> {
        self.sync(file, false)
    }

    /// fdatasync through a worker.
    pub fn sync_data(&self, file: &DirectFile) -> OpHandle<Result<()>> {
        self.sync(file, true)
    }

    /// Starts one more worker (up to the maximum) and waits until its ring
    /// is ready; returns its spin-up time, or `None` at the maximum.
    ///
    /// # Errors
    /// The worker's ring setup error; [`Error::ShutDown`].
    pub fn add_worker(&self) -> Result<Option<Duration>> {
        if !self.inner.lock().d.running {
            return Err(Error::ShutDown);
        }
        self.inner.spawn_worker(true)
    }

    /// Adds `bytes` of memory under the pool's page policy: mapped,
    /// prefaulted, registered into free slots of the template, then
    /// leasable. Leases from it can be used at once from any worker: a
    /// worker's ring picks the new slots up (a ranged clone of just them)
    /// before it runs an operation that needs them, and idle workers are
    /// woken to do it soon.
    ///
    /// # Errors
    /// [`Error::CapacityExhausted`] past [`IoPoolBuilder::capacity`]; memory
    /// and registration errors.
    pub fn grow(&self, bytes: u64) -> Result<crate::table::GrowReport> {
        let report = match &self.inner.table {
            Some(t) => t.grow(bytes)?,
            None => {
                // Blocking backend: no table to fill.
                let t = Instant::now();
                let used = self.inner.memory.segment_count();
                let needed = bytes.div_ceil(self.inner.memory.segment_size()) as u16;
                if let Some(cap) = self.inner.capacity_segments {
                    if used + needed > cap {
                        return Err(Error::CapacityExhausted {
                            capacity: cap,
                            used,
                            needed,
                            bytes: crate::units::Bytes(bytes),
                        });
                    }
                }
                let segments = self.inner.memory.grow(bytes)?;
                let added = self.inner.memory.segments()[segments.start as usize..segments.end as usize]
                    .iter()
                    .map(|s| s.len)
                    .sum();
                crate::table::GrowReport {
                    segments,
                    bytes: added,
                    generation: 0,
                    map_time: t.elapsed(),
                    prefault_time: Duration::ZERO,
                    register_time: Duration::ZERO,
                    register_started: t,
                }
            }
        };
        self.inner.wake_all();
        Ok(report)
    }

    /// Waits until every running worker's ring has table generation `gen`
    /// (or later); returns the moment the last one got there.
    ///
    /// # Errors
    /// [`Error::Timeout`].
    pub fn wait_rings_at(&self, gen: u64, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.gens.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if g.values().all(|&(have, _)| have >= gen) {
                return Ok(g.values().map(|&(_, at)| at).max().unwrap_or_else(Instant::now));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout { what: format!("every ring at table generation {gen}"), waited: timeout });
            }
            g = self.inner.gen_changed.wait_timeout(g, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Stops one idle worker (even below the minimum) and waits until its
    /// thread has dropped its ring. Returns `false` when no worker runs.
    pub fn retire_worker(&self) -> bool {
        let (target, sleepers) = {
            let mut s = self.inner.lock();
            if s.d.live <= s.d.retire {
                return false;
            }
            s.d.retire += 1;
            (s.retired_on_request + s.d.retire as u64, std::mem::take(&mut s.d.sleepers))
        };
        for w in sleepers {
            w.wake();
        }
        let mut s = self.inner.lock();
        while s.retired_on_request < target {
            s = self.inner.exited.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        true
    }

    /// Statistics now.
    pub fn stats(&self) -> PoolStats {
        let (workers, queued) = {
            let s = self.inner.lock();
            (s.d.live, s.d.queue.len())
        };
        let st = self.inner.stats_lock();
        PoolStats {
            backend: self.inner.backend,
            path: self.inner.path,
            fallbacks: self.inner.notes.clone(),
            workers,
            workers_started: st.started,
            workers_retired: st.retired,
            spawn_failures: st.spawn_failures,
            last_spawn_error: st.last_spawn_error.clone(),
            worker_panics: st.panics,
            spinups: st.parts.iter().map(|p| p.total).collect(),
            spinup_parts: st.parts.clone(),
            submitted: self.inner.submitted.load(Ordering::Relaxed),
            completed: self.inner.completed.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
            queued,
            alloc: self.inner.memory.stats(),
            register_time: self.inner.table.as_ref().map(|t| t.register_time()),
        }
    }

    /// Stops accepting operations, lets the workers finish everything
    /// queued and in flight, and joins them. Idempotent; `Drop` calls it.
    pub fn shutdown(&self) {
        self.inner.shutdown_side();
        let sleepers = {
            let mut s = self.inner.lock();
            s.d.running = false;
            std::mem::take(&mut s.d.sleepers)
        };
        for w in sleepers {
            w.wake();
        }
        loop {
            let threads = std::mem::take(&mut self.inner.lock().threads);
            for (_, t) in threads {
                if t.join().is_err() {
                    tracing::error!("an IoPool worker panicked");
                }
            }
            let mut s = self.inner.lock();
            if s.d.live == 0 && s.threads.is_empty() {
                // Jobs that found no worker (all failed to start) fail now.
                let orphans: Vec<Job> = s.d.queue.drain(..).collect();
                drop(s);
                for j in orphans {
                    self.inner.count(false);
                    j.fail(Error::ShutDown);
                }
                return;
            }
            if s.threads.is_empty() {
                s = self.inner.exited.wait_timeout(s, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
            }
            drop(s);
        }
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
