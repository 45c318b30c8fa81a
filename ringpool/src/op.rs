//! `Op`: one I/O operation as one value, and `Done`: what every operation
//! completes with.
//!
//! An operation knows its kind, its file, its offset and its buffers. It
//! checks itself once before submission (a [`Checked`] operation is what
//! rings and pool workers take), builds its own SQE (fixed or plain buffer,
//! fixed or plain file), maps its completion to a typed error (each errno
//! on its own line), and can run itself on the calling thread (preadv2 /
//! pwritev2 / fsync: the inline engine). Rings and pool jobs carry an `Op`;
//! the result is a [`Done`] that hands every buffer back. Adding an
//! operation is a variant of [`OpKind`] and its arms here.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd};

use io_uring::types::{Fd, Fixed as FixedFile, FsyncFlags};
use io_uring::{opcode, squeue};

use crate::buf::{Buffers, IoBuf};
use crate::error::{Error, Result};
use crate::file::DirectFile;
use crate::memory::IoMemory;
use crate::sys;
use crate::types::{OpKind, MAX_IOVECS};

/// What an operation completes with, from a [`Ring`](crate::Ring), an
/// [`OpHandle`](crate::OpHandle) or [`Op::run_blocking`]: the bytes it
/// moved (short at the end of a file) or the error, and every buffer it
/// held, handed back (none for a sync).
///
/// ```no_run
/// # fn f(pool: &ringpool::IoPool, file: &ringpool::DirectFile, buf: ringpool::IoBuf) -> ringpool::Result<()> {
/// let (n, buf) = pool.read_at(file, 0, buf).wait().into_one();
/// println!("read {} bytes into a lease of {}", n?, buf.capacity());
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a completion hands its buffers back: drop them deliberately"]
pub struct Done {
    /// Bytes moved, or the error.
    pub result: Result<usize>,
    /// The buffers, handed back, in file order.
    pub bufs: Buffers,
}

impl Done {
    /// The result and the buffer of a read or write (an empty
    /// [`IoBuf::detached`] where the buffer was lost with its operation:
    /// the error then says why).
    pub fn into_one(self) -> (Result<usize>, IoBuf) {
        (self.result, self.bufs.into_one().unwrap_or_else(IoBuf::detached))
    }

    /// The result and every buffer, in file order.
    pub fn into_vec(self) -> (Result<usize>, Vec<IoBuf>) {
        (self.result, self.bufs.into_vec())
    }

    /// Whether it succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// What a ring decided about an operation before building its SQE.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Route {
    /// The file's registered slot (IOSQE_FIXED_FILE), or the raw fd.
    pub file_slot: Option<u32>,
    /// The registered buffer every buffer of the SQE lies in; `None` for
    /// plain READ / WRITE (the kernel pins per I/O).
    pub fixed: Option<FixedBuf>,
}

/// A registered table entry and how to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedBuf {
    /// The slot of the ring's table (`sqe.buf_index`).
    pub slot: u16,
    /// Added to a local address to give the address the kernel knows the
    /// entry by (the registrar's; 0 when this process registered it).
    pub shift: usize,
}

/// One I/O operation: what to do, on which file, at which offset, with
/// which buffers. Build one with [`Op::read`], [`Op::readv`], ...; run it
/// with [`Ring::run`](crate::Ring::run), [`Ring::push`](crate::Ring::push) or
/// [`IoPool::submit`](crate::IoPool::submit), or blocking with
/// [`Op::run_blocking`]. The buffers come back with the result.
#[derive(Debug)]
pub struct Op {
    kind: OpKind,
    file: DirectFile,
    offset: u64,
    bufs: Buffers,
}

impl Op {
    /// Reads `buf.len()` bytes at `offset` into `buf`.
    pub fn read(file: &DirectFile, offset: u64, buf: IoBuf) -> Op {
        Op { kind: OpKind::Read, file: file.clone(), offset, bufs: Buffers::One(buf) }
    }

    /// Writes `buf.len()` bytes of `buf` at `offset`.
    pub fn write(file: &DirectFile, offset: u64, buf: IoBuf) -> Op {
        Op { kind: OpKind::Write, file: file.clone(), offset, bufs: Buffers::One(buf) }
    }

    /// Reads into `bufs`, one after the other, from `offset` on (the file
    /// range is contiguous; the buffers need not be).
    pub fn readv(file: &DirectFile, offset: u64, bufs: Vec<IoBuf>) -> Op {
        Op { kind: OpKind::Readv, file: file.clone(), offset, bufs: Buffers::Many(bufs) }
    }

    /// Writes `bufs`, one after the other, from `offset` on.
    pub fn writev(file: &DirectFile, offset: u64, bufs: Vec<IoBuf>) -> Op {
        Op { kind: OpKind::Writev, file: file.clone(), offset, bufs: Buffers::Many(bufs) }
    }

    /// Flushes the file's data (`datasync`: fdatasync) or data and
    /// metadata (fsync).
    pub fn sync(file: &DirectFile, datasync: bool) -> Op {
        let kind = if datasync { OpKind::Fdatasync } else { OpKind::Fsync };
        Op { kind, file: file.clone(), offset: 0, bufs: Buffers::None }
    }

    /// What it does.
    pub fn kind(&self) -> OpKind {
        self.kind
    }

    /// Its file.
    pub fn file(&self) -> &DirectFile {
        &self.file
    }

    /// Its file offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Its buffers.
    pub fn buffers(&self) -> &Buffers {
        &self.bufs
    }

    /// Bytes it moves: the sum of its buffers' windows.
    pub fn len(&self) -> usize {
        self.bufs.total_len()
    }

    /// Whether it moves no bytes (fsync).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives the buffers back.
    pub fn into_buffers(self) -> Buffers {
        self.bufs
    }

    /// Completes, unrun, with `e`: the buffers go back with it.
    pub(crate) fn fail(self, e: Error) -> Done {
        Done { result: Err(e), bufs: self.bufs }
    }

    /// Checks it before submission: the file open and allowing it; for a
    /// transfer, at least one non-empty buffer, at most 1024 (IOV_MAX), and
    /// the O_DIRECT alignment of the offset and of each buffer.
    ///
    /// # Errors
    /// [`Error::FileClosed`], [`Error::NotPermitted`], [`Error::ZeroLength`],
    /// [`Error::TooManyBuffers`], [`Error::Misaligned`] (naming the buffer of
    /// a vectored operation), [`Error::InvalidArgument`] for an offset past
    /// 2^63.
    pub fn check(&self) -> Result<()> {
        self.file.check_access(self.kind)?;
        if !self.kind.moves_data() {
            return Ok(());
        }
        let n = self.bufs.len();
        if n > MAX_IOVECS {
            return Err(Error::TooManyBuffers { op: self.kind.name(), count: n, max: MAX_IOVECS });
        }
        self.file.check_transfer(self.kind, self.offset, self.bufs.as_slice())
    }

    /// Builds the SQE, as `route` says; a vectored one points into `iovecs`.
    pub(crate) fn sqe(&mut self, route: &Route, iovecs: &mut Vec<libc::iovec>) -> squeue::Entry {
        macro_rules! build {
            ($target:expr) => {{
                let target = $target;
                let off = self.offset;
                let shift = route.fixed.map_or(0, |f| f.shift);
                match self.kind {
                    OpKind::Read | OpKind::Write => {
                        let b = &mut self.bufs.as_mut_slice()[0];
                        let (ptr, len) = (b.as_mut_ptr().wrapping_add(shift), b.len() as u32);
                        match (self.kind, route.fixed) {
                            (OpKind::Read, Some(f)) => {
                                opcode::ReadFixed::new(target, ptr, len, f.slot).offset(off).build()
                            }
                            (OpKind::Read, None) => opcode::Read::new(target, ptr, len).offset(off).build(),
                            (_, Some(f)) => opcode::WriteFixed::new(target, ptr, len, f.slot).offset(off).build(),
                            (_, None) => opcode::Write::new(target, ptr, len).offset(off).build(),
                        }
                    }
                    OpKind::Readv | OpKind::Writev => {
                        iovecs.clear();
                        iovecs.extend(self.bufs.as_mut_slice().iter_mut().map(|b| libc::iovec {
                            iov_base: b.as_mut_ptr().wrapping_add(shift).cast(),
                            iov_len: b.len(),
                        }));
                        // At most 1024 (Op::check).
                        let (iov, n) = (iovecs.as_ptr(), iovecs.len() as u32);
                        match (self.kind, route.fixed) {
                            (OpKind::Readv, Some(f)) => {
                                opcode::ReadvFixed::new(target, iov, n, f.slot).offset(off).build()
                            }
                            (OpKind::Readv, None) => opcode::Readv::new(target, iov, n).offset(off).build(),
                            (_, Some(f)) => opcode::WritevFixed::new(target, iov, n, f.slot).offset(off).build(),
                            (_, None) => opcode::Writev::new(target, iov, n).offset(off).build(),
                        }
                    }
                    OpKind::Fsync => opcode::Fsync::new(target).build(),
                    OpKind::Fdatasync => opcode::Fsync::new(target).flags(FsyncFlags::DATASYNC).build(),
                }
            }};
        }
        match route.file_slot {
            Some(slot) => build!(FixedFile(slot)),
            None => build!(Fd(self.file.as_fd().as_raw_fd())),
        }
    }

    /// Turns a CQE result (or a syscall's, negated errno) into the count or
    /// a typed error naming the operation, the file and the offset.
    pub(crate) fn complete(&self, res: i32) -> Result<usize> {
        let op = self.kind.name();
        if res >= 0 {
            if self.kind.reads() && res == 0 && !self.is_empty() {
                // Zero bytes: at or past the end of the file is an error of
                // its own; anything else (a hole at EOF race) is a count.
                if let Some(size) = self.file.size_now().filter(|&size| self.offset >= size) {
                    return Err(Error::PastEndOfFile { path: self.file.path_buf(), offset: self.offset, size });
                }
            }
            return Ok(res as usize);
        }
        let (path, offset) = (self.file.path_buf(), self.offset);
        let access = if self.kind.writes() { "write" } else { "read" };
        Err(match -res {
            // The fd lacks the access (pre-checked, but a dup'd fd may differ).
            libc::EBADF => self.file.not_permitted(op, access),
            // A read-only file system or mount.
            libc::EROFS => self.file.not_permitted(op, "write"),
            // The device (or the FUSE server) failed the transfer.
            libc::EIO => Error::DeviceError { op, path, offset },
            // The file system is full.
            libc::ENOSPC => Error::NoSpace { op, path, offset, quota: false },
            // The user's or group's disk quota is used up.
            libc::EDQUOT => Error::NoSpace { op, path, offset, quota: true },
            // A non-blocking attempt (RWF_NOWAIT, O_NONBLOCK) would have waited.
            libc::EAGAIN => Error::WouldBlock { op, path, offset },
            // Cancelled in flight (an IORING_OP_ASYNC_CANCEL naming it).
            libc::ECANCELED => Error::Canceled { op, path, offset },
            // The file or device lacks the operation (a flag, fsync on some FUSE).
            libc::EOPNOTSUPP => Error::Unsupported { op, path },
            // The file system wants more alignment than it reported, refuses
            // the offset, or the kernel lacks the opcode.
            libc::EINVAL => Error::Refused { op, path, offset },
            // The address lies outside the registered entry the SQE names.
            libc::EFAULT => Error::BadBuffer { op, path, offset },
            // Past RLIMIT_FSIZE or the file system's largest file.
            libc::EFBIG => Error::FileTooLarge { op, path, offset },
            errno => Error::Io {
                op,
                path: Some(path),
                offset: Some(offset),
                source: std::io::Error::from_raw_os_error(errno),
            },
        })
    }

    /// Runs it on this thread with preadv2 / pwritev2 / fsync (checked
    /// first), and gives the buffers back with the result.
    pub fn run_blocking(self) -> Done {
        match self.check() {
            Ok(()) => Checked(self).run_inline(),
            Err(e) => self.fail(e),
        }
    }

    /// The system call's result as a CQE would carry it (count or negated
    /// errno), with `RWF_*` `flags` for reads and writes. Not checked.
    pub(crate) fn blocking_res(&mut self, flags: i32) -> i32 {
        let fd = self.file.as_fd();
        let r = match self.kind {
            OpKind::Read | OpKind::Readv => {
                let bufs = self.bufs.as_mut_slice();
                if let [one] = bufs {
                    sys::os::preadv2(fd, &mut [IoSliceMut::new(one)], self.offset, flags)
                } else {
                    let mut v: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                    sys::os::preadv2(fd, &mut v, self.offset, flags)
                }
            }
            OpKind::Write | OpKind::Writev => {
                let bufs = self.bufs.as_slice();
                if let [one] = bufs {
                    sys::os::pwritev2(fd, &[IoSlice::new(one)], self.offset, flags)
                } else {
                    let v: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
                    sys::os::pwritev2(fd, &v, self.offset, flags)
                }
            }
            OpKind::Fsync => sys::os::retry_eintr(|| self.file.std_file().sync_all()).map(|()| 0),
            OpKind::Fdatasync => sys::os::retry_eintr(|| self.file.std_file().sync_data()).map(|()| 0),
        };
        match r {
            // A transfer is at most 1024 buffers of at most 1 GiB each, and
            // the kernel moves at most 2 GiB - 4 KiB per call: it fits.
            Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
            Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Splits a vectored operation into consecutive parts of `runs[i]`
    /// buffers each, at consecutive offsets. A part of one buffer becomes a
    /// plain read or write.
    pub(crate) fn split(self, runs: &[usize]) -> Vec<Op> {
        let Op { kind, file, mut offset, bufs } = self;
        let single = if kind.reads() { OpKind::Read } else { OpKind::Write };
        let mut it = bufs.into_vec().into_iter();
        let mut parts = Vec::with_capacity(runs.len());
        for &n in runs {
            let part: Vec<IoBuf> = it.by_ref().take(n).collect();
            let len: u64 = part.iter().map(|b| b.len() as u64).sum();
            let (kind, bufs) = if part.len() == 1 {
                (single, Buffers::One(part.into_iter().next().expect("one buffer")))
            } else {
                (kind, Buffers::Many(part))
            };
            parts.push(Op { kind, file: file.clone(), offset, bufs });
            offset += len;
        }
        parts
    }

    /// Puts split parts (in order) back together as one `kind` operation,
    /// and works out its result from theirs, as `preadv2` / `pwritev2`
    /// would: the bytes of the contiguous prefix that completed, up to and
    /// including the first short part; an error only when the first part
    /// failed (or read nothing at the end of the file). A later part that
    /// failed shortens the count: the caller retries the rest and meets the
    /// error then.
    pub(crate) fn join(kind: OpKind, parts: Vec<(i32, Op)>) -> (Result<usize>, Op) {
        let mut total = 0usize;
        let mut result = None;
        for (i, (res, part)) in parts.iter().enumerate() {
            if i == 0 && *res <= 0 {
                // The first part failed, or found the end of the file.
                result = Some(part.complete(*res));
                break;
            }
            if *res < 0 {
                tracing::debug!(
                    part = i,
                    offset = part.offset,
                    errno = -res,
                    "a later part of a split operation failed"
                );
                break;
            }
            let n = *res as usize;
            total += n;
            if n < part.len() {
                break;
            }
        }
        let result = result.unwrap_or(Ok(total));
        let mut parts = parts.into_iter().map(|(_, p)| p);
        let first = parts.next().expect("a split has at least one part");
        let mut bufs = first.bufs.into_vec();
        for p in parts {
            bufs.extend(p.bufs.into_vec());
        }
        (result, Op { kind, file: first.file, offset: first.offset, bufs: Buffers::Many(bufs) })
    }
}

/// An operation checked once ([`Checked::new`]): what rings and pool
/// workers take, and trust.
#[derive(Debug)]
pub(crate) struct Checked(Op);

impl Checked {
    /// Checks `op` ([`Op::check`]) and, for a pool's or ring's memory
    /// `pool`, that every buffer is a lease of it; gives the operation back
    /// untouched with the error.
    pub(crate) fn new(op: Op, pool: Option<&IoMemory>) -> std::result::Result<Checked, (Error, Op)> {
        if let Err(e) = op.check() {
            return Err((e, op));
        }
        if let Some(mem) = pool {
            if op.bufs.as_slice().iter().any(|b| !mem.owns(b)) {
                let reason = "the buffer belongs to another IoMemory than this ring's or pool's".into();
                return Err((Error::ForeignBuffer { op: op.kind.name(), reason }, op));
            }
        }
        Ok(Checked(op))
    }

    /// An operation checked before and given back unchanged (by a ring
    /// that was full).
    pub(crate) fn trusted(op: Op) -> Checked {
        Checked(op)
    }

    /// The operation.
    pub(crate) fn op(&self) -> &Op {
        &self.0
    }

    /// The operation, to submit or give back.
    pub(crate) fn into_op(self) -> Op {
        self.0
    }

    /// [`Error::FileClosed`] when the file was closed since the check
    /// (while the operation waited in a queue).
    pub(crate) fn still_open(&self) -> Result<()> {
        let f = &self.0.file;
        if f.is_closed() {
            return Err(Error::FileClosed { op: self.0.kind.name(), path: f.path_buf() });
        }
        Ok(())
    }

    /// The inline engine: runs it on this thread with preadv2 / pwritev2 /
    /// fsync, and completes it.
    pub(crate) fn run_inline(self) -> Done {
        if let Err(e) = self.still_open() {
            return self.0.fail(e);
        }
        let mut op = self.0;
        let res = op.blocking_res(0);
        let result = op.complete(res);
        Done { result, bufs: op.bufs }
    }
}

/// The opcode an SQE of `kind` uses, by name (for reports).
pub(crate) fn opcode_name(kind: OpKind, fixed: bool) -> &'static str {
    match (kind, fixed) {
        (OpKind::Read, true) => "READ_FIXED",
        (OpKind::Read, false) => "READ",
        (OpKind::Write, true) => "WRITE_FIXED",
        (OpKind::Write, false) => "WRITE",
        (OpKind::Readv, true) => "READV_FIXED",
        (OpKind::Readv, false) => "READV",
        (OpKind::Writev, true) => "WRITEV_FIXED",
        (OpKind::Writev, false) => "WRITEV",
        (OpKind::Fsync | OpKind::Fdatasync, _) => "FSYNC",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{IoMemory, MemoryOptions};
    use crate::types::PagePolicy;

    fn setup() -> (IoMemory, DirectFile, tempfile::TempDir) {
        let opts = MemoryOptions::new().page(PagePolicy::Base).segment_size(64 << 10);
        let mem = IoMemory::map_with(256 << 10, &opts).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let file = DirectFile::options().read(true).write(true).direct(crate::types::DirectIo::Disabled).open(&path);
        (mem, file.unwrap(), dir)
    }

    fn bufs(mem: &IoMemory, lens: &[usize]) -> Vec<IoBuf> {
        lens.iter()
            .enumerate()
            .map(|(i, &l)| {
                let mut b = mem.try_alloc(l).unwrap();
                b.fill(i as u8 + 1);
                b
            })
            .collect()
    }

    #[test]
    fn split_parts_follow_each_other_in_file_order() {
        let (mem, file, _d) = setup();
        let op = Op::readv(&file, 8192, bufs(&mem, &[4096, 8192, 4096, 4096]));
        let parts = op.split(&[2, 1, 1]);
        let shape: Vec<(OpKind, u64, usize, usize)> =
            parts.iter().map(|p| (p.kind(), p.offset(), p.buffers().len(), p.len())).collect();
        assert_eq!(
            shape,
            [(OpKind::Readv, 8192, 2, 12288), (OpKind::Read, 20480, 1, 4096), (OpKind::Read, 24576, 1, 4096)]
        );
        let w = Op::writev(&file, 0, bufs(&mem, &[4096, 4096])).split(&[1, 1]);
        assert_eq!((w[0].kind(), w[1].kind(), w[1].offset()), (OpKind::Write, OpKind::Write, 4096));
    }

    #[test]
    fn join_counts_the_contiguous_prefix_as_preadv_would() {
        let (mem, file, _d) = setup();
        let parts = |res: [i32; 3]| -> Vec<(i32, Op)> {
            let op = Op::readv(&file, 0, bufs(&mem, &[4096, 4096, 8192]));
            op.split(&[1, 1, 1]).into_iter().zip(res).map(|(p, r)| (r, p)).collect()
        };
        let count = |res: [i32; 3]| {
            let (r, op) = Op::join(OpKind::Readv, parts(res));
            assert_eq!(op.buffers().len(), 3, "every buffer comes back, in order");
            assert_eq!(op.buffers().as_slice()[2][0], 3, "the third buffer is the third");
            assert_eq!((op.kind(), op.offset()), (OpKind::Readv, 0));
            r
        };
        assert_eq!(count([4096, 4096, 8192]).unwrap(), 16384, "all done");
        assert_eq!(count([4096, 1000, 8192]).unwrap(), 5096, "up to and including the first short part");
        assert_eq!(count([4096, -libc::EIO, 8192]).unwrap(), 4096, "a later failure shortens the count");
        assert!(matches!(count([-libc::EIO, 4096, 8192]), Err(Error::DeviceError { offset: 0, .. })), "first fails");
        assert!(matches!(count([-libc::ENOSPC, 0, 0]), Err(Error::NoSpace { .. })));
        // Zero bytes from the first part, inside the file, is a count of 0.
        assert_eq!(count([0, 4096, 8192]).unwrap(), 0);
    }
}
