//! A lane: one queue and the elastic set of workers that serve it with one
//! engine. The pool has a main lane (io_uring, or blocking) and a side lane
//! (blocking, for FUSE files).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) use super::dispatch::Exit;
use super::dispatch::{Dispatch, Sleeper};
use super::engine::{Counters, EngineFactory, Wake};
use super::stats::LaneStats;
use crate::error::Error;
use crate::handle::OpState;
use crate::stats::SpinupParts;

/// How a lane grows and shrinks.
#[derive(Debug, Clone)]
pub(crate) struct LaneConfig {
    pub name: &'static str,
    pub min: usize,
    pub max: usize,
    pub idle: Duration,
    /// Add a worker when a submission finds nobody idle and this many wait...
    pub grow_queue: usize,
    /// ... or the oldest has waited this long.
    pub grow_wait: Duration,
}

/// A queued operation: its state (which holds the operation until a worker
/// takes it) and when it was queued.
pub(crate) struct Job {
    pub state: Arc<OpState>,
    pub enqueued: Instant,
    /// Taken out of the queue by its waiting submitter, who runs it.
    pub withdrawn: bool,
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.withdrawn {
            return;
        }
        // A job dropped before a worker took its operation (a panic between
        // taking and starting it) completes its handle with the buffers.
        self.state
            .fail_unstarted(|| Error::Lost("the worker holding this operation stopped before starting it".into()));
    }
}

/// A worker as the dispatcher sees it.
#[derive(Clone)]
pub(crate) struct Sleepy {
    pub id: usize,
    pub wake: Arc<Wake>,
}

impl Sleeper for Sleepy {
    fn id(&self) -> usize {
        self.id
    }
}

struct Books {
    /// The queue, the sleepers and the live count (see dispatch.rs).
    d: Dispatch<Job, Sleepy>,
    next_id: usize,
    threads: Vec<(usize, JoinHandle<()>)>,
    /// Workers stopped on request whose threads have finished.
    retired_on_request: u64,
    /// Retire requests made (each caller waits for its own ticket).
    retire_tickets: u64,
}

pub(crate) struct Lane {
    pub cfg: LaneConfig,
    pub factory: Box<dyn EngineFactory>,
    pub counters: Arc<Counters>,
    books: Mutex<Books>,
    /// Notified when a worker exits and when a thread handle is filed.
    exited: Condvar,
    stats: Mutex<LaneStats>,
}

impl Lane {
    pub(crate) fn new(cfg: LaneConfig, factory: Box<dyn EngineFactory>, counters: Arc<Counters>) -> Lane {
        Lane {
            cfg,
            factory,
            counters,
            books: Mutex::new(Books {
                d: Dispatch::new(),
                next_id: 0,
                threads: Vec::new(),
                retired_on_request: 0,
                retire_tickets: 0,
            }),
            exited: Condvar::new(),
            stats: Mutex::new(LaneStats::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stats_lock(&self) -> MutexGuard<'_, LaneStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_running(&self) -> bool {
        self.lock().d.running
    }

    /// (workers live, jobs queued).
    pub(crate) fn load(&self) -> (usize, usize) {
        let b = self.lock();
        (b.d.live, b.d.queue.len())
    }

    /// Queues a job and wakes a sleeping worker (with `quiet`, not when the
    /// queue was empty: its waiting submitter runs it, see
    /// `OpHandle::wait`). Returns whether the lane should grow (the caller
    /// starts a worker: see `worker::spawn`).
    pub(crate) fn submit(&self, job: Job, quiet: bool) -> bool {
        let (sleeper, grow) = {
            let mut b = self.lock();
            if !b.d.running {
                drop(b);
                job.state.fail_unstarted(|| Error::ShutDown);
                return false;
            }
            self.counters.submitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (sleeper, quietly) = if quiet { b.d.push_quiet(job) } else { (b.d.push(job), false) };
            let grow = !quietly && sleeper.is_none() && self.should_grow(&b);
            (sleeper, grow)
        };
        if let Some(w) = sleeper {
            w.wake.wake();
        }
        grow
    }

    fn should_grow(&self, b: &Books) -> bool {
        if b.d.live >= self.cfg.max {
            return false;
        }
        if b.d.live == 0 {
            return true;
        }
        b.d.queue.len() >= self.cfg.grow_queue
            || b.d.queue.front().is_some_and(|j| j.enqueued.elapsed() >= self.cfg.grow_wait)
    }

    /// Takes up to `room` jobs. With room but nothing queued, registers
    /// `me` as a sleeper before the caller blocks. Returns whether the lane
    /// should grow (busy, work still waiting, nobody idle).
    pub(crate) fn take_jobs(&self, room: usize, me: &Sleepy, out: &mut Vec<Job>) -> bool {
        let mut b = self.lock();
        b.d.take(room, me, out);
        !out.is_empty() && !b.d.queue.is_empty() && b.d.sleepers.is_empty() && self.should_grow(&b)
    }

    pub(crate) fn unsleep(&self, id: usize) {
        self.lock().d.unsleep(id);
    }

    /// Whether a worker with nothing in flight should exit now: the lane is
    /// draining and the queue is empty, or it idled past the timeout above
    /// the minimum. Decided under the queue lock, so no job queued for it
    /// is stranded.
    pub(crate) fn should_exit(&self, id: usize, idle_for: Duration) -> Option<Exit> {
        let mut b = self.lock();
        let running = b.d.running;
        let why = b.d.try_exit(id, idle_for >= self.cfg.idle, self.cfg.min)?;
        if running {
            self.stats_lock().retired += 1;
        }
        Some(why)
    }

    /// A worker could not set up its engine. When no worker is left to
    /// serve the queue, the queued jobs fail with the cause instead of
    /// waiting for a worker that will not come.
    pub(crate) fn worker_failed(&self, id: usize, e: &Error) -> Exit {
        let (why, stranded) = {
            let mut b = self.lock();
            let why = b.d.leave(id, Exit::Failed);
            let stranded: Vec<Job> = if b.d.live == 0 { b.d.queue.drain(..).collect() } else { Vec::new() };
            (why, stranded)
        };
        {
            let mut st = self.stats_lock();
            st.spawn_failures += 1;
            st.last_spawn_error = Some(e.to_string());
        }
        for j in stranded {
            if j.state.fail_unstarted(|| Error::Lost(format!("no {} worker could start: {e}", self.cfg.name))) {
                self.counters.count(false);
            }
        }
        self.exited.notify_all();
        why
    }

    /// A worker unwound from a panic (a user waker, a bug) after completing
    /// what it held: it leaves. Returns why, and whether a replacement
    /// should start (the lane is below its minimum, or work is queued with
    /// nobody to take it).
    pub(crate) fn worker_panicked(&self, id: usize) -> (Exit, bool) {
        let (why, respawn) = {
            let mut b = self.lock();
            let why = b.d.leave(id, Exit::Failed);
            (why, b.d.running && (b.d.live < self.cfg.min || (b.d.live == 0 && !b.d.queue.is_empty())))
        };
        self.stats_lock().panics += 1;
        self.exited.notify_all();
        (why, respawn)
    }

    pub(crate) fn worker_exited(&self, why: Exit) {
        if why == Exit::Requested {
            self.lock().retired_on_request += 1;
        }
        self.exited.notify_all();
    }

    /// Takes the job of `state` out of the queue, if it is still there.
    pub(crate) fn withdraw(&self, state: &OpState) {
        let job = self.lock().d.withdraw(|j| std::ptr::eq(Arc::as_ptr(&j.state), state));
        if let Some(mut j) = job {
            // Its op is taken by the caller, not failed: defuse the drop.
            j.withdrawn = true;
        }
    }

    /// Wakes one sleeping worker to take what is queued; `true` when none
    /// sleeps and the lane should grow.
    pub(crate) fn nudge(&self) -> bool {
        let (sleeper, grow) = {
            let mut b = self.lock();
            let s = b.d.sleepers.pop();
            let grow = s.is_none() && !b.d.queue.is_empty() && b.d.running && b.d.live < self.cfg.max;
            (s, grow && (b.d.live == 0 || self.should_grow(&b)))
        };
        if let Some(w) = sleeper {
            w.wake.wake();
        }
        grow
    }

    /// Wakes every sleeping worker (to pick up table growth).
    pub(crate) fn wake_all(&self) {
        let sleepers = std::mem::take(&mut self.lock().d.sleepers);
        for w in sleepers {
            w.wake.wake();
        }
    }

    pub(crate) fn record_spinup(&self, parts: SpinupParts) {
        let mut st = self.stats_lock();
        st.parts.push(parts);
        st.started += 1;
    }

    /// Books a new worker: its id, and the threads of exited workers to
    /// join; `None` at the maximum or after shutdown.
    pub(crate) fn reserve_worker(&self) -> Option<(usize, Vec<JoinHandle<()>>)> {
        let mut b = self.lock();
        if b.d.live >= self.cfg.max || !b.d.running {
            return None;
        }
        b.d.live += 1;
        b.next_id += 1;
        let (done, running): (Vec<_>, Vec<_>) = b.threads.drain(..).partition(|(_, t)| t.is_finished());
        b.threads = running;
        Some((b.next_id, done.into_iter().map(|(_, t)| t).collect()))
    }

    /// Files the thread of worker `id` (shutdown joins it).
    pub(crate) fn file_thread(&self, id: usize, t: JoinHandle<()>) {
        self.lock().threads.push((id, t));
        self.exited.notify_all();
    }

    /// Stops one idle worker (even below the minimum) and waits until its
    /// thread has dropped its engine. Returns `false` when no worker runs.
    pub(crate) fn retire_one(&self) -> bool {
        let (target, sleepers) = {
            let mut b = self.lock();
            if b.d.live <= b.d.retire {
                return false;
            }
            b.d.retire += 1;
            // Every request ends in exactly one exit counted as Requested:
            // the n-th request is served once n such exits happened.
            b.retire_tickets += 1;
            (b.retire_tickets, std::mem::take(&mut b.d.sleepers))
        };
        for w in sleepers {
            w.wake.wake();
        }
        let mut b = self.lock();
        while b.retired_on_request < target {
            b = self.exited.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        true
    }

    /// Stops accepting jobs, lets the workers finish everything queued and
    /// in flight, and joins them. Jobs that no worker could take fail with
    /// [`Error::ShutDown`].
    pub(crate) fn shutdown(&self) {
        let sleepers = {
            let mut b = self.lock();
            b.d.running = false;
            std::mem::take(&mut b.d.sleepers)
        };
        for w in sleepers {
            w.wake.wake();
        }
        loop {
            let threads = std::mem::take(&mut self.lock().threads);
            for (_, t) in threads {
                if t.join().is_err() {
                    tracing::error!(lane = self.cfg.name, "a worker thread panicked");
                }
            }
            let mut b = self.lock();
            if b.d.live == 0 && b.threads.is_empty() {
                // Jobs that found no worker (all failed to start) fail now.
                let orphans: Vec<Job> = b.d.queue.drain(..).collect();
                drop(b);
                for j in orphans {
                    if j.state.fail_unstarted(|| Error::ShutDown) {
                        self.counters.count(false);
                    }
                }
                return;
            }
            if b.threads.is_empty() {
                // A worker being spawned has not filed its thread yet: wait
                // for it to be filed or to exit (both notify).
                drop(self.exited.wait(b).unwrap_or_else(|p| p.into_inner()));
            }
        }
    }
}
