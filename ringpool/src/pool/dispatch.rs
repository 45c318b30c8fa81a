//! The hand-off between submitters and workers, as pure state: the queue,
//! the sleeping workers, and the books of live workers. The pool keeps one
//! `Dispatch` under its lock; every transition below runs under that lock,
//! which is what makes a wake-up impossible to lose:
//!
//! - a worker that finds the queue empty registers as a sleeper in the same
//!   critical section, and only then blocks (on its eventfd);
//! - a submitter queues a job and pops a sleeper in one critical section,
//!   then signals it; a signal sent before the worker blocks is kept by the
//!   eventfd (or the model's semaphore) and ends the block at once;
//! - a worker decides to exit only with the queue empty, under the lock.
//!
//! The loom models at the bottom check these rules under every interleaving.

use std::collections::VecDeque;

/// Why a worker exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Idle past the timeout, or the pool shut down.
    Idle,
    /// `retire_worker` asked for it.
    Requested,
    /// Its engine could not be set up, or it panicked.
    Failed,
}

/// A worker as the dispatcher sees it.
pub(crate) trait Sleeper: Clone {
    fn id(&self) -> usize;
}

pub(crate) struct Dispatch<J, W> {
    pub(crate) running: bool,
    pub(crate) queue: VecDeque<J>,
    pub(crate) sleepers: Vec<W>,
    /// Workers started and not yet exited.
    pub(crate) live: usize,
    /// Workers asked to stop by `retire_worker`, not yet stopped.
    pub(crate) retire: usize,
}

impl<J, W: Sleeper> Dispatch<J, W> {
    pub(crate) fn new() -> Self {
        Dispatch { running: true, queue: VecDeque::new(), sleepers: Vec::new(), live: 0, retire: 0 }
    }

    /// Queues a job; returns the sleeping worker to signal, if any.
    pub(crate) fn push(&mut self, job: J) -> Option<W> {
        self.queue.push_back(job);
        self.sleepers.pop()
    }

    /// Queues a job its submitter will run itself if no worker has taken it
    /// when it waits: into an empty queue, no worker is signalled; behind
    /// other jobs, as [`Dispatch::push`]. Returns the sleeper to signal and
    /// whether the job went in quietly.
    pub(crate) fn push_quiet(&mut self, job: J) -> (Option<W>, bool) {
        let quiet = self.queue.is_empty();
        self.queue.push_back(job);
        if quiet {
            (None, true)
        } else {
            (self.sleepers.pop(), false)
        }
    }

    /// Takes up to `room` jobs for `me`. With room but nothing queued,
    /// registers `me` as a sleeper (the caller then blocks); busy (full, or
    /// handed work), `me` is no sleeper, since a signal would be wasted on it.
    pub(crate) fn take(&mut self, room: usize, me: &W, out: &mut Vec<J>) {
        let n = room.min(self.queue.len());
        out.extend(self.queue.drain(..n));
        if room > 0 && out.is_empty() {
            if !self.sleepers.iter().any(|w| w.id() == me.id()) {
                self.sleepers.push(me.clone());
            }
        } else {
            self.unsleep(me.id());
        }
    }

    /// Removes the first queued job `is` picks, looking from the back (a
    /// job withdrawn by its waiting submitter is almost always the last).
    pub(crate) fn withdraw(&mut self, is: impl Fn(&J) -> bool) -> Option<J> {
        let at = self.queue.iter().rposition(is)?;
        self.queue.remove(at)
    }

    pub(crate) fn unsleep(&mut self, id: usize) {
        self.sleepers.retain(|w| w.id() != id);
    }

    /// Whether an idle worker (nothing in flight) exits now: never while
    /// work is queued; when the pool stops, when asked to retire, or when it
    /// idled past the timeout above the minimum (`idle_expired`, `min`).
    pub(crate) fn try_exit(&mut self, id: usize, idle_expired: bool, min: usize) -> Option<Exit> {
        if !self.queue.is_empty() {
            return None;
        }
        if !self.running || self.retire > 0 || (idle_expired && self.live > min) {
            return Some(self.leave(id, Exit::Idle));
        }
        None
    }

    /// Takes a worker out of the books. A pending retire request is
    /// consumed by whichever worker leaves first.
    pub(crate) fn leave(&mut self, id: usize, why: Exit) -> Exit {
        self.unsleep(id);
        self.live -= 1;
        if self.retire > 0 {
            self.retire -= 1;
            return Exit::Requested;
        }
        why
    }
}

#[cfg(all(test, ringpool_loom))]
mod loom_models {
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    use super::*;

    /// A worker's wake-up: a binary semaphore, like its eventfd (a signal
    /// before the wait is kept).
    #[derive(Clone)]
    struct Sem {
        id: usize,
        inner: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Sem {
        fn new(id: usize) -> Sem {
            Sem { id, inner: Arc::new((Mutex::new(false), Condvar::new())) }
        }
        fn signal(&self) {
            *self.inner.0.lock().unwrap() = true;
            self.inner.1.notify_one();
        }
        fn wait(&self) {
            let mut s = self.inner.0.lock().unwrap();
            while !*s {
                s = self.inner.1.wait(s).unwrap();
            }
            *s = false;
        }
    }

    impl Sleeper for Sem {
        fn id(&self) -> usize {
            self.id
        }
    }

    type Shared = Arc<Mutex<Dispatch<u32, Sem>>>;

    /// Every interleaving with up to 3 preemptions (loom's usual bound;
    /// unbounded, these models take hours).
    fn bounded(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(f);
    }

    /// The worker loop of pool/worker.rs, reduced to the dispatch: take,
    /// else sleep; until it has served `want` jobs.
    fn worker(d: Shared, me: Sem, want: usize) {
        let mut served = 0;
        let mut out = Vec::new();
        while served < want {
            d.lock().unwrap().take(1, &me, &mut out);
            if out.is_empty() {
                me.wait();
                d.lock().unwrap().unsleep(me.id);
            } else {
                served += out.len();
                out.clear();
            }
        }
    }

    fn submit(d: &Shared, job: u32) {
        let wake = d.lock().unwrap().push(job);
        if let Some(w) = wake {
            w.signal();
        }
    }

    /// Two submitters and one worker: every job is taken, whatever the
    /// interleaving (a lost wake-up would leave the worker blocked forever,
    /// which loom reports as a deadlock).
    #[test]
    fn loom_no_lost_wakeup() {
        bounded(|| {
            let d: Shared = Arc::new(Mutex::new(Dispatch::new()));
            d.lock().unwrap().live = 1;
            let me = Sem::new(1);
            let w = {
                let (d, me) = (d.clone(), me.clone());
                thread::spawn(move || worker(d, me, 2))
            };
            let s1 = {
                let d = d.clone();
                thread::spawn(move || submit(&d, 1))
            };
            submit(&d, 2);
            s1.join().unwrap();
            w.join().unwrap();
            assert!(d.lock().unwrap().queue.is_empty());
        });
    }

    /// Two workers, two jobs: both jobs are served, by whichever worker.
    #[test]
    fn loom_two_workers_serve_everything() {
        bounded(|| {
            let d: Shared = Arc::new(Mutex::new(Dispatch::new()));
            d.lock().unwrap().live = 2;
            let served = Arc::new(Mutex::new(0usize));
            let mut hs = Vec::new();
            for id in 1..=2 {
                let (d, served) = (d.clone(), served.clone());
                hs.push(thread::spawn(move || {
                    let me = Sem::new(id);
                    let mut out = Vec::new();
                    loop {
                        if *served.lock().unwrap() == 2 {
                            return;
                        }
                        d.lock().unwrap().take(1, &me, &mut out);
                        if out.is_empty() {
                            // The pool stops a worker with a final signal; here
                            // the other worker signals when it serves the last job.
                            if *served.lock().unwrap() == 2 {
                                return;
                            }
                            me.wait();
                            d.lock().unwrap().unsleep(id);
                        } else {
                            let mut s = served.lock().unwrap();
                            *s += out.len();
                            out.clear();
                            if *s == 2 {
                                // Release a sleeping peer so that it sees we are done.
                                for w in d.lock().unwrap().sleepers.drain(..) {
                                    w.signal();
                                }
                            }
                        }
                    }
                }));
            }
            submit(&d, 1);
            submit(&d, 2);
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(*served.lock().unwrap(), 2);
        });
    }

    /// A worker deciding to retire never strands a queued job: it exits only
    /// with the queue empty, and a job queued after it left wakes nobody
    /// (the submitter then sees no sleeper and knows to start a worker).
    #[test]
    fn loom_exit_never_strands_a_job() {
        bounded(|| {
            let d: Shared = Arc::new(Mutex::new(Dispatch::new()));
            {
                let mut g = d.lock().unwrap();
                g.live = 1;
                g.retire = 1;
            }
            let me = Sem::new(1);
            let w = {
                let (d, me) = (d.clone(), me.clone());
                thread::spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        d.lock().unwrap().take(1, &me, &mut out);
                        if !out.is_empty() {
                            out.clear();
                            continue;
                        }
                        if d.lock().unwrap().try_exit(me.id, false, 0).is_some() {
                            return;
                        }
                        me.wait();
                        d.lock().unwrap().unsleep(me.id);
                    }
                })
            };
            let woke = d.lock().unwrap().push(7).is_some();
            if let Some(w) = woke.then(|| me.clone()) {
                w.signal();
            }
            w.join().unwrap();
            let g = d.lock().unwrap();
            // Either the worker took the job before leaving, or it left first
            // and the job waits with no worker (live == 0), which the pool
            // answers by starting one: never a job behind a departed sleeper.
            assert!(g.queue.is_empty() || (g.live == 0 && g.sleepers.is_empty()));
        });
    }
}
