//! `IoPoolBuilder`: the settings of an `IoPool`, checked, and the pool built.

use std::sync::Arc;
use std::time::Duration;

use super::engine::{Counters, EngineFactory};
use super::inline_worker::InlineFactory;
use super::lane::{Lane, LaneConfig};
use super::local::{Caller, LocalRings};
use super::uring_worker::{Generations, RingSource, UringFactory};
use super::worker::LaneHelper;
use super::{Inner, IoPool};
use crate::engine::Runner;
use crate::error::{Error, Result};
use crate::memory::{IoMemory, MemoryOptions};
use crate::plan::PlanRequest;
use crate::probe::{Features, IoUringStatus};
use crate::ring::RingOptions;
use crate::stats::Plan;
use crate::table::{BufferTable, TableOptions};
use crate::types::{Bytes, EngineKind, EnginePolicy, PageKind, PagePolicy, Sharing, TablePath, MAX_RING_ENTRIES};

/// Side threads that serve FUSE files, at most.
const SIDE_THREADS: usize = 4;

/// Configures an [`IoPool`]: its size and its workers, and the options of
/// the pieces it is made of, each given once ([`MemoryOptions`],
/// [`TableOptions`], [`RingOptions`]).
///
/// ```no_run
/// use ringpool::types::{EnginePolicy, PagePolicy};
/// use ringpool::{IoPool, MemoryOptions, RingOptions, TableOptions};
/// let pool = IoPool::builder()
///     .size(4 << 30)
///     .memory(MemoryOptions::new().page(PagePolicy::Huge2M))
///     .table(TableOptions::new().capacity(16 << 30)) // room to grow to 16 GiB
///     .ring(RingOptions::new().entries(257).engine(EnginePolicy::Auto)) // 256 in flight per worker
///     .workers(1, 8)
///     .build()?;
/// # Ok::<(), ringpool::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct IoPoolBuilder {
    size: u64,
    memory: MemoryOptions,
    existing: Option<IoMemory>,
    table: TableOptions,
    ring: RingOptions,
    prefault: bool,
    min_workers: usize,
    max_workers: usize,
    idle_timeout: Duration,
    grow_queue: Option<usize>,
    grow_wait: Duration,
    help_while_waiting: bool,
    /// A ring broker to get worker rings from, and the lease segments to
    /// ask for.
    broker: Option<(std::path::PathBuf, u16)>,
}

impl Default for IoPoolBuilder {
    fn default() -> Self {
        IoPoolBuilder {
            size: 64 << 20,
            memory: MemoryOptions::default(),
            existing: None,
            table: TableOptions::default(),
            // 128 operations in flight, and the wake-up read.
            ring: RingOptions::new().entries(129),
            prefault: true,
            min_workers: 1,
            max_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            idle_timeout: Duration::from_secs(5),
            grow_queue: None,
            grow_wait: Duration::from_micros(500),
            help_while_waiting: true,
            broker: None,
        }
    }
}

/// Entries of a calling thread's ring (`IoPool::run`, `IoPool::with_ring`).
pub(crate) const LOCAL_ENTRIES: u32 = 32;

impl IoPoolBuilder {
    /// Size of the IO memory pool to map (default 64 MiB).
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }
    /// How to map the pool: page policy, segment size, lease alignment,
    /// shared (default [`MemoryOptions::default`]).
    pub fn memory(mut self, opts: MemoryOptions) -> Self {
        self.memory = opts;
        self
    }
    /// Uses this pool instead of mapping one (the memory options and the
    /// size do not apply).
    pub fn existing_memory(mut self, memory: IoMemory) -> Self {
        self.existing = Some(memory);
        self
    }
    /// How the table is registered and shared: sharing, room to grow
    /// ([`IoPool::grow`]), refresh (default [`TableOptions::default`]).
    pub fn table(mut self, opts: TableOptions) -> Self {
        self.table = opts;
        self
    }
    /// The options of every worker's ring: its entries (operations in
    /// flight per worker, plus one for the pool's wake-up read; default
    /// 129), its engine policy ([`EnginePolicy::Blocking`]: no io_uring at
    /// all), its task-run mode.
    pub fn ring(mut self, opts: RingOptions) -> Self {
        self.ring = opts;
        self
    }
    /// Gets every worker's ring from the ring broker at `path`
    /// ([`RingBroker`](crate::handover::RingBroker)) instead of mapping and
    /// registering a pool: the pool is the broker's, mapped here, and this
    /// process leases from `lease_segments` segments the broker sets aside
    /// for it (0: none; I/O with [`IoMemory::region`] only). The memory and
    /// table options do not apply; the pool cannot grow from here.
    pub fn broker(mut self, path: impl Into<std::path::PathBuf>, lease_segments: u16) -> Self {
        self.broker = Some((path.into(), lease_segments));
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
    /// A worker idle this long exits, above the minimum (default 5 s).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
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

    /// Operations in flight per worker ring.
    fn depth(&self) -> u32 {
        self.ring.entries.saturating_sub(1)
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
        if self.ring.entries < 2 || self.ring.entries > MAX_RING_ENTRIES {
            return Err(Error::invalid(
                "worker ring entries",
                self.ring.entries,
                "it must be from 2 to 32768 (one entry is the pool's own wake-up read)",
            ));
        }
        Ok(())
    }

    /// Whether to use io_uring, and the note when Auto falls back.
    fn wants_io_uring(&self, notes: &mut Vec<String>) -> Result<bool> {
        let features = Features::get();
        match (self.ring.engine, &features.io_uring) {
            (EnginePolicy::Blocking, _) => Ok(false),
            (EnginePolicy::IoUring, IoUringStatus::Unavailable { errno, reason }) => Err(Error::IoUringUnavailable {
                reason: reason.clone(),
                source: std::io::Error::from_raw_os_error(*errno),
            }),
            (_, IoUringStatus::Unavailable { reason, .. }) => {
                notes.push(format!("blocking engine: {reason}"));
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
        let sharing = self.table.sharing;
        let req =
            PlanRequest { pool_bytes: memory.len(), rings, page, sharing, entries: self.ring.entries, trial: false };
        let fits = |p: &Plan| p.cap_ipc_lock || p.memlock_limit_bytes.is_none_or(|l| p.memlock_needed_bytes <= l);
        let p = req.plan()?;
        if !fits(&p) {
            return Err(Error::DoesNotFit { plan: Box::new(p) });
        }
        if sharing == Sharing::Auto && p.sharing == TablePath::Cloned {
            let each = PlanRequest { sharing: Sharing::RegisterEach, ..req }.plan()?;
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
    fn register_table(&self, memory: &IoMemory, notes: &mut Vec<String>) -> Result<Option<BufferTable>> {
        if !self.wants_io_uring(notes)? {
            return Ok(None);
        }
        self.check_plan(memory, notes)?;
        match BufferTable::register_with(memory, &self.table) {
            Ok(t) => {
                notes.extend(t.fallback_reason().map(str::to_string));
                Ok(Some(t))
            }
            Err(Error::IoUringUnavailable { reason, .. }) if self.ring.engine != EnginePolicy::IoUring => {
                notes.push(format!("blocking engine: {reason}"));
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
    /// [`EnginePolicy::IoUring`](crate::types::EnginePolicy::IoUring).
    pub fn build(self) -> Result<IoPool> {
        self.check()?;
        let gens = Arc::new(Generations::default());
        let mut notes = Vec::new();
        let (memory, table, capacity, factory) = match &self.broker {
            Some((path, leases)) => self.parts_from_broker(path, *leases, &gens)?,
            None => self.parts_from_memory(&gens, &mut notes)?,
        };
        for n in &notes {
            tracing::warn!("{n}");
        }
        let counters = Arc::new(Counters::default());
        let main = LaneConfig {
            name: "w",
            min: self.min_workers,
            max: self.max_workers,
            idle: self.idle_timeout,
            grow_queue: self.grow_queue.unwrap_or(self.depth() as usize),
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
        let side_factory = Box::new(InlineFactory { kind: EngineKind::SideThreads });
        let runner = Runner::Pool { main: factory.kind(), help: self.help_while_waiting };
        let main = Arc::new(Lane::new(main, factory, counters.clone()));
        let side = Arc::new(Lane::new(side, side_factory, counters.clone()));
        // Calling threads' rings: the workers' options, without the
        // wake-up read's entry, and not SINGLE_ISSUER (a shrink catches them
        // up from its own thread): COOP_TASKRUN instead of DEFER_TASKRUN.
        // A blocking caller runs one operation at a time: a ring of at most
        // LOCAL_ENTRIES is set up faster (about 5 µs less than 128 here),
        // which is most of a short-lived thread's first call.
        let local_opts = RingOptions {
            entries: self.depth().clamp(1, LOCAL_ENTRIES),
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: true,
            ..self.ring.clone()
        };
        let local = table.clone().map(|t| Arc::new(LocalRings::new(t, local_opts.clone())));
        // Runtime threads' rings: as the calling threads', without
        // COOP_TASKRUN, so that completions are posted (and the eventfd
        // signalled) while the thread sleeps in the reactor.
        #[cfg(feature = "tokio")]
        let asyncs = table.clone().map(|t| {
            // Many operations in flight at once: the workers' depth.
            let opts = RingOptions { coop_taskrun: false, entries: self.depth().max(1), ..local_opts.clone() };
            Arc::new(super::reactor::AsyncRings::new(t, opts))
        });
        let caller = Arc::new(Caller {
            local,
            policy: local_opts.engine,
            #[cfg(feature = "tokio")]
            asyncs,
            counters: counters.clone(),
        });
        let helper = |lane: &Arc<Lane>| -> Arc<dyn crate::handle::Helper> {
            Arc::new(LaneHelper { lane: lane.clone(), caller: caller.clone() })
        };
        let inner = Arc::new(Inner {
            helpers: [helper(&main), helper(&side)],
            caller: caller.clone(),
            policy: self.ring.engine,
            runner,
            files: std::sync::Mutex::new(Vec::new()),
            home: crate::home::Home::here("IoPool"),
            main,
            side,
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

    /// The memory, table, table slots and worker factory of a pool whose
    /// rings come from the broker at `path`: the first ring comes with this
    /// process's leases and the pool's layout, and serves the first worker.
    fn parts_from_broker(&self, path: &std::path::Path, leases: u16, gens: &Arc<Generations>) -> Result<Parts> {
        let mut first = crate::handover::RingBroker::request(path, self.ring.entries, leases)?;
        let memory = first.map_pool()?;
        let source = RingSource::Broker {
            path: path.to_path_buf(),
            memory: memory.clone(),
            first: std::sync::Mutex::new(Some(Box::new(first))),
        };
        let factory = UringFactory { source, ring: self.ring.clone(), gens: gens.clone() };
        tracing::debug!(path = %path.display(), segments = memory.segment_count(), "worker rings from a broker");
        Ok((memory, None, None, Box::new(factory)))
    }

    /// The memory (mapped and prefaulted, or the one given), its table
    /// (none for the blocking engine), table slots and worker factory.
    fn parts_from_memory(&self, gens: &Arc<Generations>, notes: &mut Vec<String>) -> Result<Parts> {
        let memory = match self.existing.clone() {
            Some(m) => m,
            None => IoMemory::map_with(self.size, &self.memory)?,
        };
        if self.prefault && memory.prefault_time().is_none() {
            memory.prefault(|_| {})?;
        }
        let capacity = match self.table.capacity {
            Some(_) => Some(self.table.slots(&memory, memory.segment_count())?),
            None => None,
        };
        let table = self.register_table(&memory, notes)?.map(Arc::new);
        let factory: Box<dyn EngineFactory> = match &table {
            Some(t) => Box::new(UringFactory {
                source: RingSource::Table(t.clone()),
                ring: self.ring.clone(),
                gens: gens.clone(),
            }),
            None => Box::new(InlineFactory { kind: EngineKind::Blocking }),
        };
        Ok((memory, table, capacity, factory))
    }
}

/// What a pool is built over: its memory, its table, the table's slots, and
/// what builds its workers' engines.
type Parts = (IoMemory, Option<Arc<BufferTable>>, Option<u16>, Box<dyn EngineFactory>);
