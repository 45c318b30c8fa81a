//! The crate's one error type.
//!
//! Every errno that `io_uring_register(2)` can return for buffer
//! registration and cloning maps to its own variant, whose message says what
//! happened and what to do about it.

use std::io;
use std::path::PathBuf;

use crate::types::Bytes;
use crate::types::{AlignmentOf, PageKind};

/// Result alias with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ringpool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument is out of its valid range.
    #[error("invalid {what} {value}: {reason}")]
    InvalidArgument {
        /// The parameter (`"pool size"`, `"ring depth"`, ...).
        what: &'static str,
        /// The value given, as text.
        value: String,
        /// What would be valid.
        reason: String,
    },

    /// The pool would need more than the 16384 entries a table can hold.
    #[error(
        "a pool of {size} in segments of {segment} needs {segments} segments, but a buffer table holds at most 16384: \
         use a larger segment size (at most 1 GiB) or a smaller pool"
    )]
    TooManySegments {
        /// Pool size in bytes.
        size: Bytes,
        /// Segment size in bytes.
        segment: Bytes,
        /// Segments needed.
        segments: u64,
    },

    /// Not enough free hugetlb pages of the requested size.
    #[error(
        "{page} huge pages: the pool needs {needed} but only {free} are free: reserve them as root with \
         `echo {want_total} > {sysfs}` (or pass --reserve to the ringpool command), or choose another page size"
    )]
    HugePagesUnavailable {
        /// The page size asked for.
        page: PageKind,
        /// Pages the pool needs.
        needed: u64,
        /// Pages free (and not reserved by other mappings) now.
        free: u64,
        /// The value to write to `sysfs` so that enough are free.
        want_total: u64,
        /// The sysfs file that sets the pool of this page size.
        sysfs: PathBuf,
    },

    /// Writing `nr_hugepages` did not yield enough pages (memory too fragmented).
    #[error(
        "{page} huge pages: asked the kernel for {needed} through {sysfs} but only {got} could be made available \
         (memory too fragmented even after compaction): reserve them at boot (hugepagesz= hugepages= on the kernel \
         command line), free memory, or choose a smaller page size"
    )]
    HugePagesReserveFailed {
        /// The page size.
        page: PageKind,
        /// Pages wanted.
        needed: u64,
        /// Pages available after the attempt.
        got: u64,
        /// The sysfs file written.
        sysfs: PathBuf,
    },

    /// The kernel or the machine offers no such page size.
    #[error("{page} pages are not available here: {reason}")]
    PageSizeUnavailable {
        /// The page size asked for.
        page: PageKind,
        /// Why.
        reason: String,
    },

    /// More memory than the machine has available.
    #[error(
        "the pool needs {needed} but the machine has only {available} available (MemAvailable): use a smaller pool"
    )]
    InsufficientMemory {
        /// Bytes asked for.
        needed: Bytes,
        /// Bytes available.
        available: Bytes,
    },

    /// A ring's own memory would exceed `RLIMIT_MEMLOCK` (ENOMEM from
    /// io_uring_setup, Linux 6.14+ without CAP_IPC_LOCK).
    #[error(
        "io_uring_setup: RLIMIT_MEMLOCK ({limit}) is used up: Linux 6.14+ charges each ring's own memory to it; raise \
         it (`ringpool plan --pool SIZE --rings N` says by how much) or run with CAP_IPC_LOCK"
    )]
    RingMemlock {
        /// The soft limit.
        limit: Bytes,
    },

    /// Registration would exceed `RLIMIT_MEMLOCK` (ENOMEM from register).
    #[error(
        "{op}: RLIMIT_MEMLOCK is {limit}, the table needs {needed}: raise it (ulimit -l, LimitMEMLOCK= in a systemd \
         unit, memlock in limits.conf) or run with CAP_IPC_LOCK"
    )]
    MemlockLimit {
        /// The operation.
        op: &'static str,
        /// The current soft limit.
        limit: Bytes,
        /// The bytes the registration pins.
        needed: Bytes,
    },

    /// A SINGLE_ISSUER ring was used by a thread other than its submitter (EEXIST).
    #[error(
        "{op}: the ring was set up SINGLE_ISSUER and this thread is not its submitter: make register and clone calls \
         from the thread that created the ring, and clone from a BufferTable, whose template ring is not SINGLE_ISSUER"
    )]
    SingleIssuer {
        /// The operation.
        op: &'static str,
    },

    /// The destination ring already holds a buffer table (EBUSY).
    #[error(
        "clone: the destination ring already holds a buffer table: clone into a fresh ring, or replace a range \
         with CloneRange::replace (DST_REPLACE, Linux 6.13+)"
    )]
    TableAlreadyPresent,

    /// The source ring has no registered buffers (ENXIO).
    #[error("clone: the source ring has no registered buffers: register the pool on it first (BufferTable::register)")]
    EmptySource,

    /// The clone range lies outside the source or destination table (EOVERFLOW, or EINVAL for the range).
    #[error(
        "clone: range out of bounds: src_off {src_off} + nr {nr} must lie inside the source table of {source_len} \
         entries, and dst_off {dst_off} + nr inside 16384"
    )]
    RangeOutOfBounds {
        /// First source entry.
        src_off: u32,
        /// First destination entry.
        dst_off: u32,
        /// Entries asked for (0 = all).
        nr: u32,
        /// Entries in the source table.
        source_len: u32,
    },

    /// The rings belong to different processes or accounting users (EINVAL).
    #[error(
        "clone: the source ring belongs to another process or accounting user (a forked child cannot clone its \
         parent's table; rings created with and without CAP_IPC_LOCK cannot share one): create the table in this process"
    )]
    CrossProcess,

    /// The kernel lacks a feature (EINVAL for an unknown register opcode, ENOSYS).
    #[error("{feature} needs Linux {needed} or newer; this kernel is {kernel}")]
    KernelTooOld {
        /// The feature.
        feature: &'static str,
        /// First kernel version that has it.
        needed: &'static str,
        /// `uname -r`.
        kernel: String,
    },

    /// io_uring cannot be set up in this process.
    #[error("io_uring is unavailable: {reason}")]
    IoUringUnavailable {
        /// ENOSYS, EPERM and what causes them here.
        reason: String,
        /// The errno from io_uring_setup.
        #[source]
        source: io::Error,
    },

    /// A segment is not memory the kernel can register (EFAULT).
    #[error("{op}: the kernel cannot pin the pool's memory (EFAULT): {hint}")]
    BadAddress {
        /// The operation.
        op: &'static str,
        /// Likely cause.
        hint: &'static str,
    },

    /// The table has no free slots for the growth asked for.
    #[error(
        "grow by {bytes}: the table has {capacity} slots, {used} in use, and the growth needs {needed} more: \
         build the table (or IoPool) with a larger capacity, up to 16384"
    )]
    CapacityExhausted {
        /// Slots in the table.
        capacity: u16,
        /// Slots filled.
        used: u16,
        /// Slots the growth needs.
        needed: u64,
        /// Bytes asked for.
        bytes: Bytes,
    },

    /// A lease larger than one segment was asked for.
    #[error("a lease of {requested} is larger than a segment ({segment}); no lease may straddle two segments")]
    LeaseTooLarge {
        /// Bytes asked for.
        requested: Bytes,
        /// Segment size.
        segment: Bytes,
    },

    /// No free block large enough (from `try_alloc`).
    #[error("pool exhausted: no free block of {requested} ({in_use} of {capacity} leased)")]
    PoolExhausted {
        /// Bytes asked for (rounded to the alignment).
        requested: Bytes,
        /// Bytes leased now.
        in_use: Bytes,
        /// Pool capacity.
        capacity: Bytes,
    },

    /// A wait ran out of time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: std::time::Duration,
    },

    /// An O_DIRECT request is not aligned.
    #[error(
        "{op} on {path}: {}{what} {value} is not a multiple of {align} (O_DIRECT alignment of this file)",
        buffer.map(|i| format!("buffer {i}: ")).unwrap_or_default()
    )]
    Misaligned {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Offset, length or memory.
        what: AlignmentOf,
        /// The offending value.
        value: u64,
        /// The alignment needed.
        align: u32,
        /// Which buffer of a vectored operation (`None`: the only one, or
        /// the file offset).
        buffer: Option<usize>,
    },

    /// A vectored operation with more buffers than one system call takes.
    #[error("{op}: {count} buffers, but one vectored operation takes at most {max} (IOV_MAX): split it")]
    TooManyBuffers {
        /// The operation.
        op: &'static str,
        /// Buffers given.
        count: usize,
        /// The limit.
        max: usize,
    },

    /// A lease whose segment this ring's table does not hold (a ranged clone
    /// left it out): refused before submission.
    #[error(
        "{op}: {}the lease lies in pool segment {segment}, which this ring's table does not hold: clone that \
         segment into the ring (CloneRange), or use a ring made by BufferTable::ring",
        buffer.map(|i| format!("buffer {i}: ")).unwrap_or_default()
    )]
    NotInTable {
        /// The operation.
        op: &'static str,
        /// The lease's segment.
        segment: u16,
        /// Which buffer of a vectored operation.
        buffer: Option<usize>,
    },

    /// An operation that needs more SQEs at once than the ring holds.
    #[error(
        "{op}: its buffers need {sqes} SQEs (one per segment they span, or one per buffer without READV_FIXED), \
         more than this ring's {entries} entries: lease them in one segment (IoMemory::try_alloc_vec) or use a \
         deeper ring"
    )]
    TooManyParts {
        /// The operation.
        op: &'static str,
        /// SQEs it needs.
        sqes: usize,
        /// Entries of the ring's submission queue.
        entries: u32,
    },

    /// The ring has no room for the operation now.
    #[error(
        "{op}: the ring's submission or completion queue is full ({in_flight} operations in flight): reap \
         completions (Ring::wait, Ring::completions) before queuing more"
    )]
    RingFull {
        /// The operation.
        op: &'static str,
        /// Operations in flight on the ring.
        in_flight: usize,
    },

    /// The device or file system reported an I/O error (EIO).
    #[error("{op} on {path} at offset {offset}: the device reported an I/O error (EIO); the data moved is not valid")]
    DeviceError {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The file offset of the operation (of its part, when it was split).
        offset: u64,
    },

    /// No space left on the device, or the disk quota is exhausted.
    #[error(
        "{op} on {path} at offset {offset}: {}: free space or raise the quota",
        if *quota { "disk quota exceeded (EDQUOT)" } else { "no space left on the device (ENOSPC)" }
    )]
    NoSpace {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The file offset.
        offset: u64,
        /// EDQUOT rather than ENOSPC.
        quota: bool,
    },

    /// The file or device would have blocked (EAGAIN).
    #[error("{op} on {path} at offset {offset}: the file would block (EAGAIN): retry the operation")]
    WouldBlock {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The file offset.
        offset: u64,
    },

    /// The operation was cancelled before it completed (ECANCELED).
    #[error(
        "{op} on {path} at offset {offset}: cancelled before it completed (ECANCELED): nothing or part of it may \
         have reached the file; retry it"
    )]
    Canceled {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The file offset.
        offset: u64,
    },

    /// The file or its device does not support this operation (EOPNOTSUPP).
    #[error("{op} on {path}: the file or its device does not support this operation (EOPNOTSUPP)")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
    },

    /// The kernel refused the request as invalid (EINVAL): an alignment the
    /// file system wants beyond what it reported, an offset it cannot take,
    /// or an opcode this kernel lacks.
    #[error(
        "{op} on {path} at offset {offset}: the kernel refused the request (EINVAL): the file system needs a \
         larger alignment or refuses this offset, or the kernel lacks the opcode"
    )]
    Refused {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The file offset.
        offset: u64,
    },

    /// The kernel could not use the buffer's memory (EFAULT): for fixed I/O,
    /// the address is outside the registered entry the operation named.
    #[error(
        "{op} on {path} at offset {offset}: the kernel could not use the buffer (EFAULT): the registered table \
         entry does not cover it"
    )]
    BadBuffer {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The file offset.
        offset: u64,
    },

    /// The write would pass the largest file size allowed (EFBIG).
    #[error("{op} on {path} at offset {offset}: past the largest file size allowed (EFBIG)")]
    FileTooLarge {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The file offset.
        offset: u64,
    },

    /// A read or write of zero bytes.
    #[error("{op} on {path}: zero-length request")]
    ZeroLength {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
    },

    /// A read starting at or past the end of the file.
    #[error("read on {path}: offset {offset} is at or past the end of the file ({size} bytes)")]
    PastEndOfFile {
        /// The file.
        path: PathBuf,
        /// Requested offset.
        offset: u64,
        /// File size.
        size: u64,
    },

    /// A ranged read that ends past the end of the file.
    #[error("read on {path}: the range [{offset}, {end}) goes past the end of the file ({size} bytes)")]
    RangePastEnd {
        /// The file.
        path: PathBuf,
        /// The range's first byte.
        offset: u64,
        /// One past its last byte.
        end: u64,
        /// File size.
        size: u64,
    },

    /// The file was opened without the access the op needs.
    #[error("{op} on {path}: the file was opened without {access} access")]
    NotPermitted {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// `"read"` or `"write"`.
        access: &'static str,
    },

    /// The file was closed with [`crate::DirectFile::close`].
    #[error("{op} on {path}: the file is closed")]
    FileClosed {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
    },

    /// O_DIRECT is required but the file system refuses it.
    #[error(
        "open {path}: O_DIRECT is not supported here ({source}); use DirectIo::Optional to fall back to buffered I/O"
    )]
    DirectIoUnsupported {
        /// The file.
        path: PathBuf,
        /// The open error.
        #[source]
        source: io::Error,
    },

    /// A buffer from another pool, or outside this ring's table.
    #[error("{op}: {reason}")]
    ForeignBuffer {
        /// The operation.
        op: &'static str,
        /// Which rule the buffer broke.
        reason: String,
    },

    /// A FUSE file on a Ring: io_uring would block the ring on the server
    /// and, on Linux 6.18, duplicate data on short transfers.
    #[error(
        "{op} on {path}: the file is on FUSE, which io_uring serves badly (the ring blocks while the server answers, \
         and short transfers are retried at the same offset, duplicating data): use an IoPool, which serves FUSE \
         files with pread / pwrite, or std::fs"
    )]
    BlockingFileSystem {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
    },

    /// An object made in another process (inherited across `fork`): its
    /// memory, rings and threads are the parent's.
    #[error(
        "{what} was made in process {created_in}; this is process {now} (a forked child): its memory, rings and \
         threads belong to the parent. Build a new one in this process (a ring handed over on purpose works: see \
         the process-shared pools)"
    )]
    Forked {
        /// The type: `"IoPool"`, `"IoMemory"`, `"Ring"`, ...
        what: &'static str,
        /// The process that made it.
        created_in: u32,
        /// This process.
        now: u32,
    },

    /// A handover needs a shared pool.
    #[error(
        "the pool is private (anonymous, MADV_DONTFORK): a ring for another process needs a shared pool: map it with \
         MemoryOptions::shared()"
    )]
    NotShared,

    /// A handover message or its descriptors do not describe a ring.
    #[error("a handed-over ring cannot be used: {reason}")]
    BadHandover {
        /// What is wrong with the message.
        reason: String,
    },

    /// Segments asked for as a lease range hold leases.
    #[error("segments {range:?} cannot be reserved: segment {segment} holds leases (or is reserved already)")]
    SegmentsInUse {
        /// The range asked for.
        range: std::ops::Range<u16>,
        /// The first segment that could not be taken.
        segment: u16,
    },

    /// A handed-over ring that some process enabled already.
    #[error(
        "the handed-over ring is enabled already (EBADFD): each handed-over ring is enabled once, by the process \
         that drives it"
    )]
    RingAlreadyEnabled,

    /// A broker refused a peer.
    #[error("the ring broker refused the connection: {reason}")]
    PeerRefused {
        /// Why.
        reason: String,
    },

    /// A raw region that overlaps memory this process leases, or leaves
    /// its segment.
    #[error("raw region at pool offset {offset} of {len} bytes: {reason}")]
    BadRegion {
        /// Pool offset asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// What is wrong.
        reason: String,
    },

    /// The configuration does not fit this process's memlock limit or the
    /// free huge pages; the plan says what it needs and what to change.
    #[error("the pool does not fit: {plan}")]
    DoesNotFit {
        /// The plan ([`crate::plan`]).
        plan: Box<crate::stats::Plan>,
    },

    /// A shrink's segments still held leases at its deadline: nothing was
    /// released, the pool is as before.
    #[error(
        "shrinking segments {segments:?} timed out after {waited:?}: {leases} leases in them are still out and \
         {held} of them are reserved (lease segments of rings handed to other processes, or \
         IoMemory::reserve_segments); nothing was released"
    )]
    ShrinkTimeout {
        /// The segments it would have released.
        segments: std::ops::Range<u16>,
        /// Leases still out in them.
        leases: u64,
        /// Of those segments, how many are still reserved: lease segments of
        /// a shared pool's rings handed to other processes (or a broker's
        /// clients), or [`IoMemory::reserve_segments`](crate::IoMemory::reserve_segments).
        held: u16,
        /// How long it waited.
        waited: std::time::Duration,
    },

    /// The pool is shutting down or shut down.
    #[error("the IoPool is shut down; no new operations are accepted")]
    ShutDown,

    /// A worker died before completing the operation.
    #[error("the operation was lost: {0}")]
    Lost(String),

    /// Any other OS error, with the operation and, where known, the file and offset.
    #[error("{op}{}{}: {source}", path.as_ref().map(|p| format!(" on {}", p.display())).unwrap_or_default(), offset.map(|o| format!(" at offset {o}")).unwrap_or_default())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file, if any.
        path: Option<PathBuf>,
        /// The file offset, if any.
        offset: Option<u64>,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] without file context.
    pub(crate) fn os(op: &'static str, source: io::Error) -> Error {
        Error::Io { op, path: None, offset: None, source }
    }

    /// The raw OS error number, where there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. }
            | Error::IoUringUnavailable { source, .. }
            | Error::DirectIoUnsupported { source, .. } => source.raw_os_error(),
            Error::DeviceError { .. } => Some(libc::EIO),
            Error::NoSpace { quota: false, .. } => Some(libc::ENOSPC),
            Error::NoSpace { quota: true, .. } => Some(libc::EDQUOT),
            Error::WouldBlock { .. } => Some(libc::EAGAIN),
            Error::Canceled { .. } => Some(libc::ECANCELED),
            Error::Unsupported { .. } => Some(libc::EOPNOTSUPP),
            Error::Refused { .. } => Some(libc::EINVAL),
            Error::BadBuffer { .. } => Some(libc::EFAULT),
            Error::FileTooLarge { .. } => Some(libc::EFBIG),
            _ => None,
        }
    }

    /// An errno for any error, for C callers and logs: the OS's where
    /// there is one ([`Error::raw_os_error`]), else the closest.
    pub fn errno(&self) -> i32 {
        if let Some(e) = self.raw_os_error() {
            return e;
        }
        match self {
            Error::HugePagesUnavailable { .. }
            | Error::HugePagesReserveFailed { .. }
            | Error::InsufficientMemory { .. }
            | Error::CapacityExhausted { .. }
            | Error::PoolExhausted { .. } => libc::ENOMEM,
            Error::MemlockLimit { .. } | Error::RingMemlock { .. } | Error::DoesNotFit { .. } => libc::ENOMEM,
            Error::PageSizeUnavailable { .. } | Error::KernelTooOld { .. } | Error::DirectIoUnsupported { .. } => {
                libc::EOPNOTSUPP
            }
            Error::SingleIssuer { .. } | Error::CrossProcess | Error::BadAddress { .. } | Error::BadRegion { .. } => {
                libc::EFAULT
            }
            Error::TableAlreadyPresent | Error::SegmentsInUse { .. } => libc::EBUSY,
            Error::RingFull { .. } => libc::EBUSY,
            Error::EmptySource | Error::NotInTable { .. } => libc::ENXIO,
            Error::RangeOutOfBounds { .. } => libc::EOVERFLOW,
            Error::Timeout { .. } | Error::ShrinkTimeout { .. } => libc::ETIMEDOUT,
            Error::PastEndOfFile { .. } | Error::RangePastEnd { .. } => libc::ENODATA,
            Error::NotPermitted { .. } | Error::PeerRefused { .. } => libc::EACCES,
            Error::FileClosed { .. } | Error::RingAlreadyEnabled | Error::BadHandover { .. } => libc::EBADFD,
            Error::Forked { .. } => libc::ECHILD,
            Error::ShutDown => libc::ESHUTDOWN,
            Error::Lost(_) => libc::EIO,
            Error::LeaseTooLarge { .. } | Error::TooManyBuffers { .. } | Error::TooManyParts { .. } => libc::E2BIG,
            _ => libc::EINVAL,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: impl std::fmt::Display, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { what, value: value.to_string(), reason: reason.into() }
    }
}
