//! Operations on a `Ring`: checking, routing to table slots, splitting
//! vectored operations across segments, submitting, and completing.

use io_uring::{opcode, squeue};
use slab::Slab;

use super::Ring;
use crate::buf::{Buffers, IoBuf};
use crate::error::{Error, Result};
use crate::file::DirectFile;
use crate::op::{opcode_name, FixedBuf, Op, Route};
use crate::probe::Features;
use crate::sys::uring::{FdHold, Reaped, Sqe};
use crate::types::{EngineKind, EnginePolicy, Nowait, OpKind, TablePath};

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
    /// An operation (or one part of a split one: its group and index).
    Io { op: Op, route: Route, tag: Tag, part: Option<(usize, usize)> },
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

/// The result of one operation queued on a [`Ring`].
#[derive(Debug)]
pub struct Completion {
    /// The tag given when it was queued.
    pub tag: u64,
    /// Bytes transferred, or the error.
    pub result: Result<usize>,
    /// The buffers, handed back (none for a sync or a wake-up).
    pub bufs: Buffers,
}

impl Completion {
    /// The buffer of a read or write.
    pub fn into_buf(self) -> Option<IoBuf> {
        self.bufs.into_one()
    }
}

/// Counters of what a [`Ring`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Operations accepted.
    pub ops: u64,
    /// SQEs they took (more than `ops` when some were split).
    pub sqes: u64,
    /// Vectored operations split into one SQE per segment (or per buffer,
    /// without READV_FIXED).
    pub split_ops: u64,
    /// Operations run inline (preadv2 / pwritev2 in `push`), not by io_uring.
    pub inline_ops: u64,
}

/// How an operation goes to the kernel.
enum Plan {
    /// One SQE, through this registered entry or none.
    One(Option<FixedBuf>),
    /// One SQE per run of `.0` buffers, each through its entry.
    Split(Vec<(usize, Option<FixedBuf>)>),
}

/// The opcode a ring uses for `kind` when the buffers lie in one segment.
pub(super) fn opcode_for(ring: &Ring, kind: OpKind) -> &'static str {
    let fixed = ring.map.filled() > 0;
    if kind.is_vectored() && fixed && !Features::get().readv_fixed {
        return opcode_name(if kind.reads() { OpKind::Read } else { OpKind::Write }, true);
    }
    opcode_name(kind, fixed)
}

impl Ring {
    /// Queues `op` (checked first: see [`Op::check`]). Vectored operations
    /// whose buffers lie in several segments are split into one SQE per
    /// segment, transparently (counted in [`Ring::stats`]); their
    /// completion comes once, with every buffer. Returns the operation
    /// untouched when it is refused.
    ///
    /// # Errors
    /// The check's errors; [`Error::BlockingFileSystem`] for a FUSE file;
    /// [`Error::ForeignBuffer`]; [`Error::NotInTable`] for a lease of a
    /// segment this ring's table lacks; [`Error::RingFull`].
    pub fn push(&mut self, op: Op, tag: u64) -> Result<(), (Error, Op)> {
        self.push_tagged(op, Tag::User(tag))
    }

    fn push_tagged(&mut self, op: Op, tag: Tag) -> Result<(), (Error, Op)> {
        if let Err(e) = self.home.check().and_then(|()| self.check(&op)) {
            return Err((e, op));
        }
        if self.runs_inline(&op) {
            self.run_inline(op, tag);
            return Ok(());
        }
        let plan = match self.plan(&op) {
            Ok(p) => p,
            Err(e) => return Err((e, op)),
        };
        let file_slot = self.fixed_file(op.file());
        match plan {
            Plan::One(fixed) => {
                let pending = Pending::Io { op, route: Route { file_slot, fixed }, tag, part: None };
                if let Err(p) = self.raw.push(pending) {
                    let op = p.into_op().expect("an operation slot");
                    return Err((self.full(op.kind()), op));
                }
                self.stats.sqes += 1;
            }
            Plan::Split(runs) => {
                if self.raw.room() < runs.len() {
                    return Err((self.full(op.kind()), op));
                }
                let kind = op.kind();
                let counts: Vec<usize> = runs.iter().map(|r| r.0).collect();
                let parts = op.split(&counts);
                let n = parts.len();
                let key = self.groups.insert(Group { tag, kind, left: n, parts: (0..n).map(|_| None).collect() });
                for (i, (part, (_, fixed))) in parts.into_iter().zip(runs).enumerate() {
                    let pending =
                        Pending::Io { op: part, route: Route { file_slot, fixed }, tag, part: Some((key, i)) };
                    if let Err(p) = self.raw.push(pending) {
                        // Not after the room check; should it happen, the
                        // part completes as not done and the rest still run.
                        let op = p.into_op().expect("an operation slot");
                        let done = part_done(&mut self.groups, key, i, -libc::EAGAIN, op);
                        if let Some((tag, r, bufs)) = done {
                            self.deliver(tag, r, bufs);
                        }
                    }
                }
                self.stats.sqes += n as u64;
                self.stats.split_ops += 1;
            }
        }
        self.stats.ops += 1;
        Ok(())
    }

    fn full(&mut self, kind: OpKind) -> Error {
        Error::RingFull { op: kind.name(), in_flight: self.raw.in_flight() }
    }

    /// The checks before routing: the operation's own, FUSE, and that its
    /// buffers are this ring's pool's.
    fn check(&self, op: &Op) -> Result<()> {
        op.check()?;
        let name = op.kind().name();
        if op.file().is_fuse() {
            return Err(Error::BlockingFileSystem { op: name, path: op.file().path().to_path_buf() });
        }
        if let Some(mem) = &self.memory {
            if op.buffers().as_slice().iter().any(|b| !mem.owns(b)) {
                return Err(Error::ForeignBuffer {
                    op: name,
                    reason: "the buffer belongs to another IoMemory than this ring's".into(),
                });
            }
        }
        Ok(())
    }

    /// Operations queued, running, or completed and not yet taken.
    fn outstanding(&self) -> usize {
        self.raw.in_flight() + self.ready.len()
    }

    /// Whether `op` runs inline: the engine choice for one operation.
    /// Under Auto, on a device without NOWAIT: while the queue is shallow,
    /// and at any depth when as many rings serve such devices as there are
    /// CPUs (io-wq's threads would only take CPU time from the rings'
    /// threads, which already keep every CPU busy with system calls).
    fn runs_inline(&mut self, op: &Op) -> bool {
        match self.engine {
            EnginePolicy::IoUring => false,
            EnginePolicy::Inline => true,
            EnginePolicy::Auto => {
                if op.file().nowait() != Nowait::Unsupported {
                    return false;
                }
                self.sync_rings.join();
                self.outstanding() < self.inline_depth || self.sync_rings.cpus_busy()
            }
        }
    }

    /// Runs `op` with preadv2 / pwritev2 / fsync now; its completion is
    /// ready at once.
    fn run_inline(&mut self, mut op: Op, tag: Tag) {
        let res = op.blocking_res(0);
        let result = op.complete(res);
        self.stats.ops += 1;
        self.stats.inline_ops += 1;
        self.deliver(tag, result, op.into_buffers());
    }

    /// Which engine this ring uses for operations on `file`, and why.
    pub fn engine_for(&self, file: &DirectFile) -> (EngineKind, &'static str) {
        match self.engine {
            EnginePolicy::IoUring => (EngineKind::IoUring, "io_uring, as asked"),
            EnginePolicy::Inline => (EngineKind::Inline, "inline, as asked"),
            EnginePolicy::Auto if file.nowait() == Nowait::Unsupported => (
                EngineKind::Inline,
                "the device has no NOWAIT support (io_uring would hand every request to an io-wq thread): \
                 inline while the queue is shallow, io_uring beyond the inline depth",
            ),
            EnginePolicy::Auto => (EngineKind::IoUring, "the device serves non-blocking I/O: io_uring"),
        }
    }

    /// Which table slot each buffer goes through, and whether the
    /// operation must be split.
    fn plan(&mut self, op: &Op) -> Result<Plan> {
        if !op.kind().moves_data() {
            return Ok(Plan::One(None));
        }
        let name = op.kind().name();
        if self.opaque {
            return Err(Error::ForeignBuffer {
                op: name,
                reason: "this ring's table was cloned from a bare fd; it cannot check buffers".into(),
            });
        }
        if self.memory.is_none() {
            return Ok(Plan::One(None));
        }
        let bufs = op.buffers().as_slice();
        let fixed = self.map.filled() > 0 || matches!(self.setup.path, TablePath::Cloned | TablePath::Registered);
        if !fixed {
            return Ok(Plan::One(None));
        }
        // The table grew or shrank since this ring last looked: catch up
        // before routing (a shrunk slot may hold new memory now).
        if self.link.as_ref().is_some_and(|l| l.generation() != self.generation) {
            self.refresh_table()?;
        }
        let vectored = op.kind().is_vectored();
        let mut runs: Vec<(usize, Option<FixedBuf>)> = Vec::new();
        for (i, b) in bufs.iter().enumerate() {
            let segment = b.buf_index();
            let slot = self.slot_for(name, segment, vectored.then_some(i))?;
            match runs.last_mut() {
                Some((n, Some(f))) if f.slot == slot => *n += 1,
                _ => {
                    // Not 0 for a pool another process registered.
                    let shift = self.memory.as_ref().map_or(0, |m| m.shift_of(segment));
                    runs.push((1, Some(FixedBuf { slot, shift })));
                }
            }
        }
        if !vectored {
            return Ok(Plan::One(runs[0].1));
        }
        let runs: Vec<_> = if Features::get().readv_fixed {
            if runs.len() == 1 {
                return Ok(Plan::One(runs[0].1));
            }
            runs
        } else {
            // No READV_FIXED (before 6.15): one fixed operation per buffer.
            runs.iter().flat_map(|&(n, f)| std::iter::repeat_n((1, f), n)).collect()
        };
        let entries = self.raw.io_uring().params().sq_entries();
        if runs.len() > entries as usize {
            return Err(Error::TooManyParts { op: name, sqes: runs.len(), entries });
        }
        Ok(Plan::Split(runs))
    }

    /// The slot holding `segment`, picking up table growth once if needed.
    fn slot_for(&mut self, op: &'static str, segment: u16, buffer: Option<usize>) -> Result<u16> {
        if let Some(s) = self.map.slot(segment) {
            return Ok(s);
        }
        // A segment the table gained since this ring got it.
        self.refresh_table()?;
        self.map.slot(segment).ok_or(Error::NotInTable { op, segment, buffer })
    }

    /// Queues a read of `buf.len()` bytes at `offset` (READ_FIXED where the
    /// ring has the table).
    ///
    /// # Errors
    /// As [`Ring::push`]; the buffer comes back.
    pub fn push_read(&mut self, file: &DirectFile, offset: u64, buf: IoBuf, tag: u64) -> Result<(), (Error, IoBuf)> {
        self.push(Op::read(file, offset, buf), tag).map_err(one_back)
    }

    /// Queues a write of `buf.len()` bytes at `offset` (WRITE_FIXED where the
    /// ring has the table).
    ///
    /// # Errors
    /// As [`Ring::push`]; the buffer comes back.
    pub fn push_write(&mut self, file: &DirectFile, offset: u64, buf: IoBuf, tag: u64) -> Result<(), (Error, IoBuf)> {
        self.push(Op::write(file, offset, buf), tag).map_err(one_back)
    }

    /// Queues a vectored read into `bufs` from `offset` on (READV_FIXED
    /// where the ring has the table and the kernel has it, Linux 6.15+).
    ///
    /// # Errors
    /// As [`Ring::push`]; the buffers come back.
    pub fn push_readv(
        &mut self,
        file: &DirectFile,
        offset: u64,
        bufs: Vec<IoBuf>,
        tag: u64,
    ) -> Result<(), (Error, Vec<IoBuf>)> {
        self.push(Op::readv(file, offset, bufs), tag).map_err(|(e, op)| (e, op.into_buffers().into_vec()))
    }

    /// Queues a vectored write of `bufs` from `offset` on (WRITEV_FIXED).
    ///
    /// # Errors
    /// As [`Ring::push`]; the buffers come back.
    pub fn push_writev(
        &mut self,
        file: &DirectFile,
        offset: u64,
        bufs: Vec<IoBuf>,
        tag: u64,
    ) -> Result<(), (Error, Vec<IoBuf>)> {
        self.push(Op::writev(file, offset, bufs), tag).map_err(|(e, op)| (e, op.into_buffers().into_vec()))
    }

    /// Queues an fsync (`datasync`: fdatasync).
    ///
    /// # Errors
    /// [`Error::FileClosed`], [`Error::RingFull`].
    pub fn push_sync(&mut self, file: &DirectFile, datasync: bool, tag: u64) -> Result<()> {
        self.push(Op::sync(file, datasync), tag).map_err(|(e, _)| e)
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
    pub(crate) fn pop_completion(&mut self) -> Option<Completion> {
        self.ready.pop_front()
    }

    /// The next ready completion (reaping first when none is ready), or
    /// `None`; unlike [`Ring::completions`] it leaves the ring free between
    /// completions (to push the next operation).
    pub fn next_completion(&mut self) -> Option<Completion> {
        if self.ready.is_empty() {
            self.reap(true);
        }
        self.ready.pop_front()
    }

    /// Completions that are ready (call [`Ring::wait`] to get some).
    pub fn completions(&mut self) -> impl Iterator<Item = Completion> + '_ {
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
        for (tag, r, bufs) in done {
            self.deliver(tag, r, bufs);
        }
    }

    fn deliver(&mut self, tag: Tag, result: Result<usize>, bufs: Buffers) {
        match tag {
            Tag::User(tag) => self.ready.push_back(Completion { tag, result, bufs }),
            Tag::Run => self.ran = Some((result, bufs)),
        }
    }

    /// Runs `op` and waits for its result: the count (short at end of
    /// file) or the error, and the buffers. Other operations' completions
    /// stay queued for [`Ring::completions`].
    pub fn run(&mut self, op: Op) -> (Result<usize>, Buffers) {
        if let Err((e, op)) = self.push_tagged(op, Tag::Run) {
            return (Err(e), op.into_buffers());
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

    /// Reads `buf.len()` bytes at `offset` and waits for the result: the
    /// count (short at end of file), or the error, and the buffer.
    pub fn read_at(&mut self, file: &DirectFile, offset: u64, buf: IoBuf) -> (Result<usize>, IoBuf) {
        one(self.run(Op::read(file, offset, buf)))
    }

    /// Writes `buf.len()` bytes at `offset` and waits for the result.
    pub fn write_at(&mut self, file: &DirectFile, offset: u64, buf: IoBuf) -> (Result<usize>, IoBuf) {
        one(self.run(Op::write(file, offset, buf)))
    }

    /// Reads into `bufs` from `offset` on, in one READV_FIXED where the
    /// buffers lie in one segment (lease them with
    /// [`IoMemory::try_alloc_vec`](crate::IoMemory::try_alloc_vec)), split
    /// per segment otherwise; waits for the result.
    pub fn readv_at(&mut self, file: &DirectFile, offset: u64, bufs: Vec<IoBuf>) -> (Result<usize>, Vec<IoBuf>) {
        let (r, b) = self.run(Op::readv(file, offset, bufs));
        (r, b.into_vec())
    }

    /// Writes `bufs` from `offset` on (WRITEV_FIXED), and waits.
    pub fn writev_at(&mut self, file: &DirectFile, offset: u64, bufs: Vec<IoBuf>) -> (Result<usize>, Vec<IoBuf>) {
        let (r, b) = self.run(Op::writev(file, offset, bufs));
        (r, b.into_vec())
    }
}

fn one((r, b): (Result<usize>, Buffers)) -> (Result<usize>, IoBuf) {
    (r, b.into_one().expect("a read or write gives its buffer back"))
}

fn one_back((e, op): (Error, Op)) -> (Error, IoBuf) {
    (e, op.into_buffers().into_one().expect("a read or write gives its buffer back"))
}

/// What a reaped CQE completes: an operation, a whole split one, a
/// wake-up, or nothing yet (a part whose siblings are still in flight).
fn reaped(groups: &mut Slab<Group>, r: Reaped<Pending>) -> Option<(Tag, Result<usize>, Buffers)> {
    match r.payload {
        Pending::Wake { tag } => {
            let result = if r.res < 0 {
                Err(Error::os("eventfd read", std::io::Error::from_raw_os_error(-r.res)))
            } else {
                Ok(r.res as usize)
            };
            Some((Tag::User(tag), result, Buffers::None))
        }
        Pending::Io { op, tag, part: None, .. } => {
            let result = op.complete(r.res);
            Some((tag, result, op.into_buffers()))
        }
        Pending::Io { op, part: Some((key, i)), .. } => part_done(groups, key, i, r.res, op),
    }
}

/// Records part `i` of group `key`; the whole operation when it was the last.
fn part_done(
    groups: &mut Slab<Group>,
    key: usize,
    i: usize,
    res: i32,
    op: Op,
) -> Option<(Tag, Result<usize>, Buffers)> {
    let g = groups.get_mut(key)?;
    g.parts[i] = Some((res, op));
    g.left -= 1;
    if g.left > 0 {
        return None;
    }
    let g = groups.remove(key);
    let parts = g.parts.into_iter().map(|p| p.expect("every part completed")).collect();
    let (result, op) = Op::join(g.kind, parts);
    Some((g.tag, result, op.into_buffers()))
}
