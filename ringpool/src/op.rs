//! `Op`: one I/O operation as one value.
//!
//! An operation knows its kind, its file, its offset and its buffers. It
//! checks itself before submission, builds its own SQE (fixed or plain
//! buffer, fixed or plain file), maps its completion to a typed error (each
//! errno on its own line), and can run itself blocking (preadv2 /
//! pwritev2 / fsync). Rings and pool jobs carry an `Op`; the result hands
//! every buffer back. Adding an operation is a variant of [`OpKind`] and its
//! arms here.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd};

use io_uring::types::{Fd, Fixed as FixedFile, FsyncFlags};
use io_uring::{opcode, squeue};

use crate::buf::{Buffers, IoBuf};
use crate::error::{Error, Result};
use crate::file::DirectFile;
use crate::sys;
use crate::types::{OpKind, MAX_IOVECS};

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
#[derive(Debug, Clone, Copy)]
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
    pub fn run_blocking(mut self) -> (Result<usize>, Buffers) {
        let r = self.check().and_then(|()| {
            let res = self.blocking_res(0);
            self.complete(res)
        });
        (r, self.bufs)
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
