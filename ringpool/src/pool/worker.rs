//! A worker thread: builds its engine on itself, then takes jobs from its
//! lane, runs them with the engine, and sleeps when there is nothing to do.

use std::cell::Cell;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::lane::{Exit, Lane, Sleepy};
use super::stats::WorkerBook;
use crate::error::{Error, Result};
use crate::stats::SpinupParts;
use std::sync::atomic::{AtomicU64, Ordering};

/// Starts a worker thread for `lane`; with `wait`, blocks until its engine
/// is ready and returns its spin-up time (thread + ring + table). `None` at
/// the lane's maximum, or after shutdown.
pub(super) fn spawn(lane: &Arc<Lane>, wait: bool) -> Result<Option<Duration>> {
    let Some((id, finished)) = lane.reserve_worker() else { return Ok(None) };
    for t in finished {
        let _ = t.join();
    }
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let l = lane.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("ringpool-{}{id}", lane.cfg.name))
        .spawn(move || run(l, id, started, tx));
    match spawned {
        Ok(h) => lane.file_thread(id, h),
        Err(e) => {
            let err = Error::os("spawn worker", e);
            let why = lane.worker_failed(id, &err);
            lane.worker_exited(why);
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

/// A lane as the helper of the operations its waiting submitters may run.
pub(super) struct LaneHelper {
    pub lane: Arc<Lane>,
    pub caller: Arc<super::local::Caller>,
}

impl crate::handle::Helper for LaneHelper {
    fn kick(&self) {
        grow_if(&self.lane, self.lane.nudge());
    }

    fn withdraw(&self, state: &crate::handle::OpState) {
        self.lane.withdraw(state);
    }

    fn async_here(&self) -> bool {
        self.caller.async_here()
    }

    fn start_async(
        &self,
        op: crate::op::Checked,
        state: &Arc<crate::handle::OpState>,
    ) -> std::result::Result<Arc<dyn crate::handle::Driver>, crate::op::Checked> {
        self.caller.start_async(op, state)
    }

    fn enqueue(&self, state: &Arc<crate::handle::OpState>) {
        let job = super::lane::Job { state: state.clone(), enqueued: std::time::Instant::now(), withdrawn: false };
        grow_if(&self.lane, self.lane.submit(job, false));
    }

    fn waker_panicked(&self) {
        self.lane.counters.waker_panics.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn run_here(&self, op: crate::op::Checked) -> crate::op::Done {
        let done = self.caller.run(op);
        self.lane.counters.helped_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lane.counters.count(done.is_ok());
        done
    }
}

/// Starts a worker if `grow` says the lane should have one more.
pub(super) fn grow_if(lane: &Arc<Lane>, grow: bool) {
    if grow {
        let _ = spawn(lane, false);
    }
}

/// Entry point of a worker thread. Whatever happens (even a panic while
/// recovering from a panic), the worker leaves the books before the thread
/// ends, so that shutdown never waits for it.
fn run(lane: Arc<Lane>, id: usize, started: Instant, ready: Sender<Result<Duration>>) {
    let left = Cell::new(false);
    let served =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve_or_fail(&lane, id, started, ready, &left)));
    let why = match served {
        Ok(why) => why,
        Err(_) if left.get() => Exit::Failed,
        Err(_) => {
            let (why, respawn) = lane.worker_panicked(id);
            grow_if(&lane, respawn);
            why
        }
    };
    lane.worker_exited(why);
}

fn serve_or_fail(
    lane: &Arc<Lane>,
    id: usize,
    started: Instant,
    ready: Sender<Result<Duration>>,
    left: &Cell<bool>,
) -> Exit {
    let thread = started.elapsed();
    let (mut engine, wake, setup) = match lane.factory.build(id, lane.counters.clone()) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(worker = id, lane = lane.cfg.name, "worker could not set up its engine: {e}");
            let why = lane.worker_failed(id, &e);
            let _ = ready.send(Err(e));
            return why;
        }
    };
    let spin = started.elapsed();
    let spinup = SpinupParts { thread, ring: setup.ring, table: setup.table, total: spin };
    lane.record_spinup(spinup);
    let book = Arc::new(WorkerBook {
        id,
        engine: lane.factory.kind(),
        spinup,
        ops: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
    });
    // Leaves the stats with the worker, also when it unwinds.
    let _listed = Listed::new(lane, book.clone());
    let _ = ready.send(Ok(spin));
    let me = Sleepy { id, wake: Arc::new(wake) };
    // The loop runs under catch_unwind with the engine outside it: if
    // anything in it panics (a user waker, a bug), the worker still
    // completes every operation in flight with its buffers and leaves the
    // books before the thread ends.
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(lane, &mut *engine, &me, &book, left)));
    match served {
        Ok(why) => why,
        Err(_) => {
            engine.recover();
            if left.get() {
                return Exit::Failed;
            }
            left.set(true);
            let (why, respawn) = lane.worker_panicked(id);
            grow_if(lane, respawn);
            why
        }
    }
    // Dropping the engine drops its ring: the wake-up read is cancelled and
    // the table unregistered here, now.
}

/// The worker loop: upkeep, reap, take jobs, start them, sleep; until told
/// to exit.
fn serve(lane: &Arc<Lane>, engine: &mut dyn Engine, me: &Sleepy, book: &WorkerBook, left: &Cell<bool>) -> Exit {
    let mut jobs = Vec::new();
    let mut last_busy = Instant::now();
    loop {
        engine.upkeep();
        let mut progressed = engine.reap() > 0;
        let room = engine.room();
        grow_if(lane, lane.take_jobs(room, me, &mut jobs));
        for job in jobs.drain(..) {
            progressed = true;
            // None: the submitter ran it itself while waiting.
            if let Some(op) = job.state.take_op() {
                book.ops.fetch_add(1, Ordering::Relaxed);
                book.bytes.fetch_add(op.op().len() as u64, Ordering::Relaxed);
                engine.start(op, job.state.clone());
            }
        }
        book.in_flight.store(engine.in_flight() as u64, Ordering::Relaxed);
        if progressed {
            last_busy = Instant::now();
            engine.flush();
            continue;
        }
        let idle = engine.in_flight() == 0;
        if idle {
            if let Some(why) = lane.should_exit(me.id, last_busy.elapsed()) {
                left.set(true);
                return why;
            }
        }
        // Busy: sleep until a completion or a signal. Idle: until a signal,
        // or the idle timeout (then the worker may exit above the minimum).
        let timeout = idle.then(|| lane.cfg.idle.saturating_sub(last_busy.elapsed()).max(Duration::from_millis(1)));
        engine.sleep(timeout);
        lane.unsleep(me.id);
    }
}

/// A worker's book in its lane's stats while the worker runs.
struct Listed<'a> {
    lane: &'a Lane,
    id: usize,
}

impl<'a> Listed<'a> {
    fn new(lane: &'a Lane, book: Arc<WorkerBook>) -> Listed<'a> {
        let id = book.id;
        lane.stats_lock().live.push(book);
        Listed { lane, id }
    }
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        let mut st = self.lane.stats_lock();
        let gone: u64 = st.live.iter().filter(|b| b.id == self.id).map(|b| b.bytes.load(Ordering::Relaxed)).sum();
        st.retired_bytes += gone;
        st.live.retain(|b| b.id != self.id);
    }
}
