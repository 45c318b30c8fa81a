//! Operations on a `Ring`: the engine choice obeyed, routing to table
//! slots, splitting vectored operations across segments, submitting,
//! waiting, and completing.

use std::time::Instant;

use io_uring::{opcode, squeue};
use slab::Slab;

use super::table_view::Route as Routed;
use super::Ring;
use crate::buf::{Buffers, IoBuf};
use crate::engine::{self, Device, Inline, Runner};
use crate::error::{Error, Result};
use crate::file::DirectFile;
use crate::op::{opcode_name, Checked, Done, Op, Route};
use crate::probe::Features;
use crate::sys::uring::{FdHold, Reaped, Sqe};
use crate::types::OpKind;

/// Whose completion a CQE is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// The caller's tag, given to `push`.
    User(u64),
    /// The one operation `run` waits for.
    Run,
}

/// What an in-flight slot holds.
pub(crate) enum Pending {
    /// An operation (or one part of a split one: its group and index);
    /// `sampled`: when an operation started on an idle ring was pushed,
    /// for the device's depth-1 measurements.
    Io { op: Op, route: Route, tag: Tag, part: Option<(usize, usize)>, sampled: Option<Instant> },
    /// A wake-up read of an eventfd.
    Wake { tag: u64 },
}

impl Pending {
    fn into_op(self) -> Option<Op> {
        match self {
            Pending::Io { op, .. } => Some(op),
            Pending::Wake { .. } => None,
        }
    }
}

impl Sqe for Pending {
    fn sqe(&mut self, iovecs: &mut Vec<libc::iovec>) -> squeue::Entry {
        match self {
            Pending::Io { op, route, .. } => op.sqe(route, iovecs),
            // Wake-up reads are pushed with their own entry
            // (RawRing::push_eventfd_read) and never ask for one.
            Pending::Wake { .. } => opcode::Nop::new().build(),
        }
    }
}

/// An operation split into several SQEs, waiting for its parts.
pub(crate) struct Group {
    tag: Tag,
    kind: OpKind,
    left: usize,
    parts: Vec<Option<(i32, Op)>>,
}

/// The opcode a ring uses for `kind` when the buffers lie in one segment.
pub(super) fn opcode_for(ring: &Ring, kind: OpKind) -> &'static str {
    let fixed = ring.table.filled() > 0;
    if kind.is_vectored() && fixed && !Features::get().readv_fixed {
        return opcode_name(if kind.reads() { OpKind::Read } else { OpKind::Write }, true);
    }
    opcode_name(kind, fixed)
}

impl Ring {
    /// Queues `op` (checked first: see [`Op::check`]; its buffers must be
    /// leases of this ring's pool) on the engine the engine choice names
    /// for its file ([`Ring::engine_for`]): an inline operation completes
    /// at once (its completion is ready), the others go to io_uring.
    /// Vectored operations whose buffers lie in several segments are split
    /// into one SQE per segment, transparently (counted in
    /// [`Ring::stats`]); their completion comes once, with every buffer.
    /// Returns the operation untouched when it is refused.
    ///
    /// # Errors
    /// The check's errors; [`Error::ForeignBuffer`]; [`Error::NotInTable`]
    /// for a lease of a segment this ring's table lacks;
    /// [`Error::RingFull`]; [`Error::Forked`].
    pub fn push(&mut self, op: Op, tag: u64) -> Result<(), (Error, Op)> {
        self.push_tagged(op, Tag::User(tag))
    }

    fn push_tagged(&mut self, op: Op, tag: Tag) -> Result<(), (Error, Op)> {
        if let Err(e) = self.home.check() {
            return Err((e, op));
        }
        let checked = Checked::new(op, self.table.memory())?;
        self.push_checked_as(checked, tag)
    }

    /// Queues an operation checked already (by a pool over this ring's
    /// memory), as [`Ring::push`] does; gives it back when refused.
    pub(crate) fn push_checked(&mut self, c: Checked, tag: u64) -> Result<(), (Error, Op)> {
        self.push_checked_as(c, Tag::User(tag))
    }

    /// The engine choice obeyed, then routing and submission.
    fn push_checked_as(&mut self, c: Checked, tag: Tag) -> Result<(), (Error, Op)> {
        let op = c.op();
        if let Err(e) = self.table.admit(self.raw.io_uring(), op.kind(), op.buffers().as_slice()) {
            return Err((e, c.into_op()));
        }
        let choice = engine::choose(self.engine, Runner::Ring, Device::of(c.op().file()));
        if choice.inline == Inline::WhileShallow {
            self.sync_rings.join();
        }
        let outstanding = self.outstanding();
        // On an idle ring, the device's depth-1 measurements pick the engine
        // (and are fed with this operation's latency).
        let measured = (choice.inline == Inline::Measured && outstanding == 0 && c.op().kind().moves_data())
            .then(|| (c.op().file().device().clone(), c.op().kind().writes()));
        let sync = measured.as_ref().map(|(device, writes)| device.shallow(*writes).pick_sync());
        let inline = match sync {
            Some(sync) => sync,
            None => choice.runs_inline(outstanding, self.inline_depth, || self.sync_rings.cpus_busy()),
        };
        if inline {
            // The clock only where the measurement takes the latency.
            let started = measured.as_ref().map(|_| Instant::now());
            let done = c.run_inline();
            if let (Some((device, writes)), Some(started)) = (&measured, started) {
                device.shallow(*writes).record(true, nanos(started));
            }
            self.stats.ops += 1;
            self.stats.inline_ops += 1;
            self.deliver(tag, done);
            return Ok(());
        }
        let sampled = measured.map(|_| Instant::now());
        if let Err(e) = c.still_open() {
            return Err((e, c.into_op()));
        }
        let op = c.into_op();
        let split_max = self.raw.io_uring().params().sq_entries();
        let readv_fixed = Features::get().readv_fixed;
        let route =
            match self.table.route(self.raw.io_uring(), op.kind(), op.buffers().as_slice(), split_max, readv_fixed) {
                Ok(r) => r,
                Err(e) => return Err((e, op)),
            };
        let file_slot = self.fixed_file(op.file());
        match route {
            Routed::One(fixed) => {
                let pending = Pending::Io { op, route: Route { file_slot, fixed }, tag, part: None, sampled };
                if let Err(p) = self.raw.push(pending) {
                    let op = p.into_op().expect("an operation slot");
                    return Err((self.full(op.kind()), op));
                }
                self.stats.sqes += 1;
            }
            Routed::Split(runs) => {
                if self.raw.room() < runs.len() {
                    return Err((self.full(op.kind()), op));
                }
                self.push_split(op, runs, file_slot, tag);
            }
        }
        self.stats.ops += 1;
        Ok(())
    }

    /// Queues the parts of `op`, one per run of buffers in one slot.
    fn push_split(
        &mut self,
        op: Op,
        runs: Vec<(usize, Option<crate::op::FixedBuf>)>,
        file_slot: Option<u32>,
        tag: Tag,
    ) {
        let kind = op.kind();
        let counts: Vec<usize> = runs.iter().map(|r| r.0).collect();
        let parts = op.split(&counts);
        let n = parts.len();
        let key = self.groups.insert(Group { tag, kind, left: n, parts: (0..n).map(|_| None).collect() });
        for (i, (part, (_, fixed))) in parts.into_iter().zip(runs).enumerate() {
            let route = Route { file_slot, fixed };
            let pending = Pending::Io { op: part, route, tag, part: Some((key, i)), sampled: None };
            if let Err(p) = self.raw.push(pending) {
                // Not after the room check; should it happen, the part
                // completes as not done and the rest still run.
                let op = p.into_op().expect("an operation slot");
                if let Some((tag, done)) = part_done(&mut self.groups, key, i, -libc::EAGAIN, op) {
                    self.deliver(tag, done);
                }
            }
        }
        self.stats.sqes += n as u64;
        self.stats.split_ops += 1;
    }

    fn full(&mut self, kind: OpKind) -> Error {
        Error::RingFull { op: kind.name(), in_flight: self.raw.in_flight() }
    }

    /// Operations queued, running, or completed and not yet taken.
    fn outstanding(&self) -> usize {
        self.raw.in_flight() + self.ready.len()
    }

    /// Operations queued and not yet handed to the kernel.
    pub fn queued(&mut self) -> usize {
        self.raw.queued()
    }

    /// Hands queued operations to the kernel.
    ///
    /// # Errors
    /// [`Error::Io`] from io_uring_enter.
    pub fn submit(&mut self) -> Result<usize> {
        self.home.check()?;
        self.raw.submit().map_err(|e| Error::os("submit", e))
    }

    /// Submits, then waits until at least `min` completions are ready (or
    /// nothing is left in flight). Returns how many are ready. One
    /// `io_uring_enter` per wait: it submits, runs deferred completions and
    /// sleeps.
    ///
    /// # Errors
    /// [`Error::Io`] from io_uring_enter.
    pub fn wait(&mut self, min: usize) -> Result<usize> {
        self.home.check()?;
        self.reap(false);
        if self.ready.len() >= min && self.raw.in_flight() > 0 {
            // Completions of inline operations are ready at once; reap the
            // kernel's too, so that they never wait behind a stream of them.
            self.reap(true);
        }
        loop {
            if self.ready.len() >= min || self.raw.in_flight() == 0 {
                self.submit()?;
                return Ok(self.ready.len());
            }
            let want = (min - self.ready.len()).min(self.raw.in_flight());
            let r = match self.min_wait {
                Some(t) => self.raw.submit_and_wait_batch(self.raw.in_flight(), t),
                None => self.raw.submit_and_wait(want),
            };
            r.map_err(|e| Error::os("wait", e))?;
            self.reap(false);
        }
    }

    /// Submits, then waits for at least one completion, at most `timeout`
    /// (`None`: no limit). Returns `false` on timeout.
    ///
    /// # Errors
    /// [`Error::Io`] from io_uring_enter.
    pub fn wait_timeout(&mut self, timeout: Option<std::time::Duration>) -> Result<bool> {
        self.home.check()?;
        self.reap(true);
        if !self.ready.is_empty() {
            self.submit()?;
            return Ok(true);
        }
        match timeout {
            Some(t) => self.raw.submit_and_wait_timeout(t).map_err(|e| Error::os("wait", e)),
            None => self.raw.submit_and_wait(1).map(|_| true).map_err(|e| Error::os("wait", e)),
        }
    }

    /// Keeps a read of `eventfd` in flight; its completion comes back with
    /// `tag` (for waking a thread blocked in [`Ring::wait_timeout`]).
    pub(crate) fn push_wake(&mut self, eventfd: FdHold, tag: u64) -> Result<()> {
        self.raw.push_eventfd_read(eventfd, Pending::Wake { tag }).map_err(|_| self.full(OpKind::Read))
    }

    /// Reaps what completed (running deferred completions first).
    pub(crate) fn reap_now(&mut self) {
        self.reap(true);
    }

    /// The oldest ready completion, without reaping.
    pub(crate) fn pop_completion(&mut self) -> Option<(u64, Done)> {
        self.ready.pop_front()
    }

    /// The next ready completion and its tag (reaping first when none is
    /// ready), or `None`; unlike [`Ring::completions`] it leaves the ring
    /// free between completions (to push the next operation).
    pub fn next_completion(&mut self) -> Option<(u64, Done)> {
        if self.ready.is_empty() {
            self.reap(true);
        }
        self.ready.pop_front()
    }

    /// Completions that are ready, with their tags (call [`Ring::wait`] to
    /// get some).
    pub fn completions(&mut self) -> impl Iterator<Item = (u64, Done)> + '_ {
        self.reap(true);
        self.ready.drain(..)
    }

    /// Reaps CQEs into `ready` (with `flush`, first running deferred
    /// completions); nothing in a forked child (the CQ is the parent's).
    fn reap(&mut self, flush: bool) {
        if !self.home.is_here() {
            return;
        }
        let (raw, groups) = (&mut self.raw, &mut self.groups);
        let mut done = Vec::new();
        let f = |r: Reaped<Pending>| {
            if let Some(d) = reaped(groups, r) {
                done.push(d);
            }
        };
        if flush {
            raw.reap(f);
        } else {
            raw.reap_posted(f);
        }
        for (tag, d) in done {
            self.deliver(tag, d);
        }
    }

    fn deliver(&mut self, tag: Tag, done: Done) {
        match tag {
            Tag::User(tag) => self.ready.push_back((tag, done)),
            Tag::Run => self.ran = Some(done),
        }
    }

    /// Runs `op` and waits for it: the count (short at end of file) or the
    /// error, and the buffers. Other operations' completions stay queued
    /// for [`Ring::completions`].
    pub fn run(&mut self, op: Op) -> Done {
        if let Err((e, op)) = self.push_tagged(op, Tag::Run) {
            return op.fail(e);
        }
        self.finish_run()
    }

    /// [`Ring::run`] of an operation checked already (by a pool over this
    /// ring's memory).
    pub(crate) fn run_checked(&mut self, c: Checked) -> Done {
        if let Err((e, op)) = self.push_checked_as(c, Tag::Run) {
            return op.fail(e);
        }
        self.finish_run()
    }

    /// Waits for the operation `run` pushed.
    fn finish_run(&mut self) -> Done {
        if let Some(done) = self.ran.take() {
            // It ran inline.
            return done;
        }
        if let Err(e) = self.raw.submit() {
            // Submission failed: the op is still queued; waited for below.
            tracing::debug!("submit failed: {e}");
        }
        loop {
            self.reap(true);
            if let Some(done) = self.ran.take() {
                return done;
            }
            if let Err(e) = self.raw.submit_and_wait(1) {
                // The op is in flight and cannot be abandoned with its
                // buffers: reap (which frees CQ room, the cause of EBUSY) and
                // wait again.
                tracing::warn!("io_uring_enter failed while waiting: {e}; retrying");
                std::thread::yield_now();
            }
        }
    }

    /// Reads `buf.len()` bytes at `offset` and waits (READ_FIXED where the
    /// ring has the table): [`Ring::run`] of [`Op::read`].
    pub fn read_at(&mut self, file: &DirectFile, offset: u64, buf: IoBuf) -> Done {
        self.run(Op::read(file, offset, buf))
    }

    /// Writes `buf.len()` bytes at `offset` and waits (WRITE_FIXED).
    pub fn write_at(&mut self, file: &DirectFile, offset: u64, buf: IoBuf) -> Done {
        self.run(Op::write(file, offset, buf))
    }

    /// Reads into `bufs` from `offset` on, in one READV_FIXED where the
    /// buffers lie in one segment (lease them with
    /// [`IoMemory::try_alloc_vec`](crate::IoMemory::try_alloc_vec)), split
    /// per segment otherwise; waits.
    pub fn readv_at(&mut self, file: &DirectFile, offset: u64, bufs: Vec<IoBuf>) -> Done {
        self.run(Op::readv(file, offset, bufs))
    }

    /// Writes `bufs` from `offset` on (WRITEV_FIXED), and waits.
    pub fn writev_at(&mut self, file: &DirectFile, offset: u64, bufs: Vec<IoBuf>) -> Done {
        self.run(Op::writev(file, offset, bufs))
    }
}

/// Nanoseconds since `t`.
fn nanos(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What a reaped CQE completes: an operation, a whole split one, a
/// wake-up, or nothing yet (a part whose siblings are still in flight).
fn reaped(groups: &mut Slab<Group>, r: Reaped<Pending>) -> Option<(Tag, Done)> {
    match r.payload {
        Pending::Wake { tag } => {
            let result = if r.res < 0 {
                Err(Error::os("eventfd read", std::io::Error::from_raw_os_error(-r.res)))
            } else {
                Ok(r.res as usize)
            };
            Some((Tag::User(tag), Done { result, bufs: Buffers::None }))
        }
        Pending::Io { op, tag, part: None, sampled, .. } => {
            if let Some(started) = sampled {
                op.file().device().shallow(op.kind().writes()).record(false, nanos(started));
            }
            let result = op.complete(r.res);
            Some((tag, Done { result, bufs: op.into_buffers() }))
        }
        Pending::Io { op, part: Some((key, i)), .. } => part_done(groups, key, i, r.res, op),
    }
}

/// Records part `i` of group `key`; the whole operation when it was the last.
fn part_done(groups: &mut Slab<Group>, key: usize, i: usize, res: i32, op: Op) -> Option<(Tag, Done)> {
    let g = groups.get_mut(key)?;
    g.parts[i] = Some((res, op));
    g.left -= 1;
    if g.left > 0 {
        return None;
    }
    let g = groups.remove(key);
    let parts = g.parts.into_iter().map(|p| p.expect("every part completed")).collect();
    let (result, op) = Op::join(g.kind, parts);
    Some((g.tag, Done { result, bufs: op.into_buffers() }))
}
