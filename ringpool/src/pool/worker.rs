//! The worker threads: one ring each (io_uring backend), or blocking
//! pread / pwrite (blocking backend).

use std::os::unix::fs::FileExt;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::handle::{IoResult, OpState};
use super::{Exit, Inner, Job, JobKind, SpinupParts, Wake};
use crate::error::{Error, Result};
use crate::ring::{Completion, Ring, RingOptions};

const WAKE_TAG: u64 = u64::MAX;

/// Entry point of a worker thread.
pub(super) fn run(inner: Arc<Inner>, id: usize, started: Instant, ready: Sender<Result<Duration>>) {
    let why = if inner.table.is_some() {
        ring_worker(&inner, id, started, ready)
    } else {
        blocking_worker(&inner, id, started, ready)
    };
    inner.worker_exited(why);
}

enum Done {
    Rw(Arc<OpState<IoResult>>),
    Sync(Arc<OpState<Result<()>>>),
}

fn ring_worker(inner: &Arc<Inner>, id: usize, started: Instant, ready: Sender<Result<Duration>>) -> Exit {
    let thread = started.elapsed();
    let table = inner.table.as_ref().expect("ring workers exist only with a table");
    let setup = || -> Result<(Ring, Arc<Wake>)> {
        // One extra entry for the eventfd read that is always in flight.
        let mut ring = table.ring_with(&RingOptions { entries: inner.cfg.depth + 1, ..RingOptions::default() })?;
        let efd = Arc::new(crate::sys::os::eventfd().map_err(|e| Error::os("eventfd", e))?);
        ring.push_wake(efd.clone(), WAKE_TAG)?;
        ring.submit()?;
        Ok((ring, Arc::new(Wake { id, eventfd: Some(efd), thread: std::thread::current() })))
    };
    let (mut ring, wake) = match setup() {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(worker = id, "worker could not set up its ring: {e}");
            let why = inner.worker_failed(id, &e);
            let _ = ready.send(Err(e));
            return why;
        }
    };
    let spin = started.elapsed();
    inner.record_spinup(SpinupParts {
        thread,
        ring: ring.setup().ring_time,
        table: ring.setup().table_time,
        total: spin,
    });
    let _ = ready.send(Ok(spin));
    tracing::debug!(worker = id, ?spin, path = %ring.setup().path, "worker ready");

    let mut pending: Slab<Done> = Slab::with_capacity(inner.cfg.depth as usize);
    let mut left = false;
    // The loop runs under catch_unwind with the ring and the pending handles
    // outside it: if anything in it panics (a user waker, a bug), the worker
    // still reaps every operation in flight, completes its handle with its
    // buffer, and leaves the books before the thread ends.
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve(inner, &mut ring, &wake, &mut pending, &mut left)
    }));
    inner.ring_at(id, None);
    match served {
        Ok(why) => why,
        Err(_) => {
            tracing::error!(
                worker = id,
                in_flight = pending.len(),
                "IoPool worker panicked; completing its operations"
            );
            while !pending.is_empty() {
                if ring.wait(1).is_err() {
                    break;
                }
                for c in ring.completions() {
                    if c.tag != WAKE_TAG {
                        complete(inner, &mut pending, c);
                    }
                }
            }
            if left {
                Exit::Failed
            } else {
                inner.worker_panicked(id)
            }
        }
    }
    // Dropping the ring cancels the wake-up read and unregisters the table,
    // so that unpinning happens here, now.
}

/// The worker loop: reap, take jobs, submit, sleep; until told to exit.
fn serve(inner: &Arc<Inner>, ring: &mut Ring, wake: &Arc<Wake>, pending: &mut Slab<Done>, left: &mut bool) -> Exit {
    let depth = inner.cfg.depth as usize;
    let mut jobs = Vec::with_capacity(depth);
    let mut last_busy = Instant::now();
    let mut armed = true;
    let table = inner.table.as_ref().expect("ring workers exist only with a table");
    loop {
        // Pick up table growth (one atomic load when there is none).
        if table.generation() != ring.table_generation() {
            match ring.refresh_table() {
                Ok(_) => inner.ring_at(wake.id, Some(ring.table_generation())),
                Err(e) => tracing::warn!(worker = wake.id, "cannot pick up the grown table: {e}"),
            }
        }
        let mut progressed = false;
        for c in ring.completions() {
            progressed = true;
            if c.tag == WAKE_TAG {
                armed = false;
            } else {
                complete(inner, pending, c);
            }
        }
        if !armed {
            match ring.push_wake(wake.eventfd.clone().expect("ring workers have an eventfd"), WAKE_TAG) {
                Ok(()) => armed = true,
                // Retried on the next pass; meanwhile the worker does not sleep.
                Err(e) => tracing::warn!(worker = wake.id, "cannot re-arm the wake-up read: {e}"),
            }
        }
        // Operations in flight, without the wake-up read.
        let busy = ring.in_flight() - armed as usize;
        inner.take_jobs(depth.saturating_sub(busy), wake, &mut jobs);
        for job in jobs.drain(..) {
            progressed = true;
            submit(inner, ring, pending, job);
        }
        if progressed || !armed {
            last_busy = Instant::now();
            if let Err(e) = ring.submit() {
                tracing::warn!(worker = wake.id, "submit: {e}");
            }
            if !armed {
                std::thread::yield_now();
            }
            continue;
        }
        let busy = ring.in_flight() > 1;
        if !busy {
            if let Some(why) = inner.should_exit(wake, last_busy.elapsed()) {
                *left = true;
                return why;
            }
        }
        let timeout = if busy {
            None
        } else {
            Some(inner.cfg.idle.saturating_sub(last_busy.elapsed()).max(Duration::from_millis(1)))
        };
        if let Err(e) = ring.wait_timeout(timeout) {
            tracing::warn!(worker = wake.id, "wait: {e}");
        }
        inner.unsleep(wake);
    }
}

fn submit(inner: &Inner, ring: &mut Ring, pending: &mut Slab<Done>, mut job: Job) {
    match &mut job.kind {
        JobKind::Rw { write, buf, done } => {
            let Some(b) = buf.take() else { return };
            let entry = pending.vacant_entry();
            let tag = entry.key() as u64;
            let r = if *write {
                ring.push_write(&job.file, job.offset, b, tag)
            } else {
                ring.push_read(&job.file, job.offset, b, tag)
            };
            match r {
                Ok(()) => {
                    entry.insert(Done::Rw(done.clone()));
                }
                Err((e, b)) => {
                    inner.count(false);
                    done.complete((Err(e), b));
                }
            }
        }
        JobKind::Sync { datasync, done } => {
            let Some(d) = done.take() else { return };
            let entry = pending.vacant_entry();
            let tag = entry.key() as u64;
            match ring.push_sync(&job.file, *datasync, tag) {
                Ok(()) => {
                    entry.insert(Done::Sync(d));
                }
                Err(e) => {
                    inner.count(false);
                    d.complete(Err(e));
                }
            }
        }
    }
}

fn complete(inner: &Inner, pending: &mut Slab<Done>, c: Completion) {
    let Some(done) = pending.try_remove(c.tag as usize) else {
        tracing::error!(tag = c.tag, "completion for an unknown operation");
        return;
    };
    inner.count(c.result.is_ok());
    match done {
        Done::Rw(d) => match c.buf {
            Some(b) => d.complete((c.result, b)),
            None => tracing::error!("read/write completion without its buffer"),
        },
        Done::Sync(d) => d.complete(c.result.map(drop)),
    }
}

fn blocking_worker(inner: &Arc<Inner>, id: usize, started: Instant, ready: Sender<Result<Duration>>) -> Exit {
    let wake = Arc::new(Wake { id, eventfd: None, thread: std::thread::current() });
    let spin = started.elapsed();
    inner.record_spinup(SpinupParts { thread: spin, total: spin, ..SpinupParts::default() });
    let _ = ready.send(Ok(spin));
    let mut jobs = Vec::with_capacity(1);
    let mut last_busy = Instant::now();
    loop {
        inner.take_jobs(1, &wake, &mut jobs);
        if let Some(job) = jobs.pop() {
            run_blocking(inner, job);
            last_busy = Instant::now();
            continue;
        }
        if let Some(why) = inner.should_exit(&wake, last_busy.elapsed()) {
            return why;
        }
        std::thread::park_timeout(inner.cfg.idle.saturating_sub(last_busy.elapsed()).max(Duration::from_millis(1)));
        inner.unsleep(&wake);
    }
}

fn retry_eintr<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

pub(super) fn run_blocking(inner: &Inner, mut job: Job) {
    let file = job.file.clone();
    let offset = job.offset;
    let count = |ok: bool| inner.count(ok);
    match &mut job.kind {
        JobKind::Rw { write, buf, done } => {
            let Some(mut b) = buf.take() else { return };
            // Checked again: the file may have been closed while queued.
            if let Err(e) = file.check_io(*write, offset, &b) {
                count(false);
                done.complete((Err(e), b));
                return;
            }
            let f = file.shared.std();
            let res =
                if *write { retry_eintr(|| f.write_at(&b, offset)) } else { retry_eintr(|| f.read_at(&mut b, offset)) };
            let res = match res {
                Ok(n) => n as i32,
                Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
            };
            let r = file.complete(*write, offset, b.len(), res);
            count(r.is_ok());
            done.complete((r, b));
        }
        JobKind::Sync { datasync, done } => {
            let Some(d) = done.take() else { return };
            let r = if *datasync { file.sync_data() } else { file.sync_all() };
            count(r.is_ok());
            d.complete(r);
        }
    }
}
