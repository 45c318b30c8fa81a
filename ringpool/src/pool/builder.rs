//! `IoPoolBuilder`: the settings of an `IoPool`, checked, and the pool built.

use std::sync::Arc;
use std::time::Duration;

use super::lane::{Lane, LaneConfig};
use super::worker::LaneHelper;
use super::{Backend, Inner, IoPool};
use crate::engine::blocking::BlockingFactory;
use crate::engine::uring::{Generations, RingSource, UringFactory};
use crate::engine::{Counters, EngineFactory, EngineKind, Policy};
use crate::error::{Error, Result};
use crate::memory::{IoMemory, MemoryOptions};
use crate::plan::{plan, Plan, PlanRequest};
use crate::probe::{Features, IoUringStatus};
use crate::ring::MAX_RING_ENTRIES;
use crate::table::{BufferTable, TableOptions};
use crate::types::{EnginePolicy, PageKind, PagePolicy, Refresh, Sharing, MAX_SEGMENTS};
use crate::units::Bytes;

/// Side threads that serve FUSE files, at most.
const SIDE_THREADS: usize = 4;

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
    engine: EnginePolicy,
    help_while_waiting: bool,
    /// A ring broker to get worker rings from, and the lease segments to
    /// ask for.
    broker: Option<(std::path::PathBuf, u16)>,
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
            engine: EnginePolicy::Auto,
            help_while_waiting: true,
            broker: None,
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
    /// Gets every worker's ring from the ring broker at `path`
    /// ([`RingBroker`](crate::RingBroker)) instead of mapping and
    /// registering a pool: the pool is the broker's, mapped here, and this
    /// process leases from `lease_segments` segments the broker sets aside
    /// for it (0: none; I/O with [`IoMemory::region`] only). The memory
    /// settings and [`IoPoolBuilder::memory`] do not apply; the pool cannot
    /// grow from here.
    pub fn broker(mut self, path: impl Into<std::path::PathBuf>, lease_segments: u16) -> Self {
        self.broker = Some((path.into(), lease_segments));
        self
    }
    /// Maps the pool shared, from memfds ([`MemoryOptions::shared`]), so
    /// that rings of its table can be handed to other processes
    /// ([`BufferTable::handover`], [`RingBroker`](crate::RingBroker)).
    pub fn shared(mut self, yes: bool) -> Self {
        self.mem_opts.shared = yes;
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
    /// Which engine serves operations (default [`EnginePolicy::Auto`]:
    /// io_uring, with shallow queues on devices without NOWAIT inline).
    pub fn engine(mut self, e: EnginePolicy) -> Self {
        self.engine = e;
        self
    }
    /// Whether a caller that waits ([`OpHandle::wait`](crate::OpHandle::wait))
    /// on an operation no worker has started runs it itself, for files the
    /// inline engine serves (default `true`). Such an operation, submitted
    /// into an empty queue, wakes no worker: it runs when its submitter
    /// waits, when another submission or a `poll` wakes a worker, or when
    /// its handle is dropped. With `false`, every submission goes to a
    /// worker at once.
    pub fn help_while_waiting(mut self, yes: bool) -> Self {
        self.help_while_waiting = yes;
        self
    }

    fn check(&self) -> Result<()> {
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
        Ok(())
    }

    /// Table slots for the capacity asked for, at least the pool's segments.
    fn capacity_slots(&self, memory: &IoMemory) -> Result<Option<u16>> {
        let Some(bytes) = self.capacity else { return Ok(None) };
        let slots = bytes.div_ceil(memory.segment_size());
        if slots > MAX_SEGMENTS {
            return Err(Error::TooManySegments {
                size: Bytes(bytes),
                segment: Bytes(memory.segment_size()),
                segments: slots,
            });
        }
        // At most 16384 (checked above).
        Ok(Some((slots as u16).max(memory.segment_count())))
    }

    /// Whether to use io_uring, and the note when Auto falls back.
    fn wants_io_uring(&self, notes: &mut Vec<String>) -> Result<bool> {
        let features = Features::get();
        match (self.backend, &features.io_uring) {
            (Backend::Blocking, _) => Ok(false),
            (Backend::IoUring, IoUringStatus::Unavailable { errno, reason }) => Err(Error::IoUringUnavailable {
                reason: reason.clone(),
                source: std::io::Error::from_raw_os_error(*errno),
            }),
            (Backend::Auto, IoUringStatus::Unavailable { reason, .. }) => {
                notes.push(format!("blocking backend: {reason}"));
                Ok(false)
            }
            (_, IoUringStatus::Available) => Ok(true),
        }
    }

    /// The memlock planner's verdict on this pool's table and rings (the
    /// memory is mapped already: huge pages are not in question): an error
    /// carrying the plan when the limit is too low, a note when sharing
    /// Auto picked clone where register-each would not have fit.
    fn check_plan(&self, memory: &IoMemory, notes: &mut Vec<String>) -> Result<()> {
        let page = match memory.page_kind() {
            PageKind::Huge1G => PagePolicy::Huge1G,
            PageKind::Huge2M => PagePolicy::Huge2M,
            PageKind::Transparent => PagePolicy::Transparent,
            PageKind::Base => PagePolicy::Base,
        };
        let rings = u32::try_from(self.max_workers).unwrap_or(u32::MAX);
        let req = PlanRequest {
            pool_bytes: memory.len(),
            rings,
            page,
            sharing: self.sharing,
            entries: self.depth + 1,
            trial: false,
        };
        let fits = |p: &Plan| p.cap_ipc_lock || p.memlock_limit_bytes.is_none_or(|l| p.memlock_needed_bytes <= l);
        let p = plan(&req)?;
        if !fits(&p) {
            return Err(Error::DoesNotFit { plan: Box::new(p) });
        }
        if self.sharing == Sharing::Auto && p.sharing == "clone" {
            let each = plan(&PlanRequest { sharing: Sharing::RegisterEach, ..req })?;
            if !fits(&each) {
                notes.push(format!(
                    "sharing by clone pins {} once; registering in each of {rings} rings would need {} of                      RLIMIT_MEMLOCK, more than the {} limit",
                    Bytes(p.pinned_bytes),
                    Bytes(each.memlock_needed_bytes),
                    each.memlock_limit_bytes.map_or("unlimited".into(), |l| Bytes(l).to_string())
                ));
            }
        }
        Ok(())
    }

    /// The table, or `None` for the blocking backend (also when Auto finds
    /// io_uring refused only now).
    fn table(&self, memory: &IoMemory, capacity: Option<u16>, notes: &mut Vec<String>) -> Result<Option<BufferTable>> {
        if !self.wants_io_uring(notes)? {
            return Ok(None);
        }
        self.check_plan(memory, notes)?;
        let topts = TableOptions { sharing: self.sharing, segments: None, capacity, refresh: self.refresh };
        match BufferTable::register_with(memory, &topts) {
            Ok(t) => {
                notes.extend(t.fallback_reason().map(str::to_string));
                Ok(Some(t))
            }
            Err(Error::IoUringUnavailable { reason, .. }) if self.backend == Backend::Auto => {
                notes.push(format!("blocking backend: {reason}"));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Maps (and prefaults) the memory, registers the table, starts the
    /// minimum number of workers and waits until they are ready.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad setting (min above max, no
    /// workers, depth 0 or above 32767); memory and table errors; a worker's
    /// ring setup error; [`Error::IoUringUnavailable`] with
    /// [`Backend::IoUring`].
    pub fn build(self) -> Result<IoPool> {
        self.check()?;
        let counters = Arc::new(Counters::default());
        let gens = Arc::new(Generations::default());
        let mut notes = Vec::new();
        let (memory, table, capacity, factory): (_, _, _, Box<dyn EngineFactory>) = match &self.broker {
            Some((path, leases)) => {
                // The first ring comes with this process's leases and the
                // pool's layout; it serves the first worker.
                let mut first = crate::handover::RingBroker::request(path, self.depth + 1, *leases)?;
                let memory = first.map_pool()?;
                let source = RingSource::Broker {
                    path: path.clone(),
                    memory: memory.clone(),
                    first: std::sync::Mutex::new(Some(Box::new(first))),
                };
                let factory = UringFactory { source, depth: self.depth, gens: gens.clone(), engine: self.engine };
                tracing::debug!(path = %path.display(), segments = memory.segment_count(), "worker rings from a broker");
                (memory, None, None, Box::new(factory) as Box<dyn EngineFactory>)
            }
            None => {
                let memory = match self.memory.clone() {
                    Some(m) => m,
                    None => IoMemory::map_with(self.size, &self.mem_opts)?,
                };
                if self.prefault && memory.prefault_time().is_none() {
                    memory.prefault(|_| {})?;
                }
                let capacity = self.capacity_slots(&memory)?;
                let table = self.table(&memory, capacity, &mut notes)?.map(Arc::new);
                let factory: Box<dyn EngineFactory> = match &table {
                    Some(t) => Box::new(UringFactory {
                        source: RingSource::Table(t.clone()),
                        depth: self.depth,
                        gens: gens.clone(),
                        engine: self.engine,
                    }),
                    None => Box::new(BlockingFactory { kind: EngineKind::Blocking }),
                };
                (memory, table, capacity, factory)
            }
        };
        for n in &notes {
            tracing::warn!("{n}");
        }
        let main = LaneConfig {
            name: "w",
            min: self.min_workers,
            max: self.max_workers,
            idle: self.idle_timeout,
            grow_queue: self.grow_queue.unwrap_or(self.depth as usize),
            grow_wait: self.grow_wait,
        };
        // FUSE files: a side thread per waiting operation, up to four.
        let side = LaneConfig {
            name: "side",
            min: 0,
            max: SIDE_THREADS,
            idle: self.idle_timeout,
            grow_queue: 1,
            grow_wait: Duration::ZERO,
        };
        let side_factory = Box::new(BlockingFactory { kind: EngineKind::SideThreads });
        let main_kind = factory.kind();
        let main = Arc::new(Lane::new(main, factory, counters.clone()));
        let inner = Arc::new(Inner {
            helper: Arc::new(LaneHelper(main.clone())),
            policy: Policy { main: main_kind, engine: self.engine, help_while_waiting: self.help_while_waiting },
            files: std::sync::Mutex::new(Vec::new()),
            home: crate::home::Home::here("IoPool"),
            main,
            side: Arc::new(Lane::new(side, side_factory, counters.clone())),
            memory,
            table,
            capacity_slots: capacity,
            notes,
            counters,
            gens,
        });
        let pool = IoPool { inner };
        for _ in 0..pool.inner.main.cfg.min {
            pool.add_worker()?;
        }
        Ok(pool)
    }
}
