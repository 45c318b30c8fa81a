//! The crate's vocabulary: small value types that many modules share
//! (policies and what they chose, segments, clone ranges, byte sizes).
//!
//! This module imports nothing else of the crate, so any module may use it
//! without making an import circle.

mod units;

use std::fmt;
use std::path::PathBuf;

pub use units::{parse_size, Bytes};

/// Most entries a registered buffer table can hold (kernel limit).
pub const MAX_SEGMENTS: u64 = 16384;
/// Largest registered buffer (kernel limit); also the largest segment.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// Which pages back the pool, as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PagePolicy {
    /// The largest hugetlb size with enough free pages, else transparent huge
    /// pages, else base pages. The choice is reported by
    /// [`IoMemory::page_choice`](crate::IoMemory::page_choice).
    #[default]
    Auto,
    /// 1 GiB hugetlb pages (reserve them in
    /// `/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages`).
    Huge1G,
    /// 2 MiB hugetlb pages (reserve them in
    /// `/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`).
    Huge2M,
    /// Anonymous memory with `MADV_HUGEPAGE` (transparent huge pages).
    Transparent,
    /// 4 KiB base pages only (`MADV_NOHUGEPAGE`).
    Base,
}

impl std::str::FromStr for PagePolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(PagePolicy::Auto),
            "1g" | "1gib" | "huge1g" => Ok(PagePolicy::Huge1G),
            "2m" | "2mib" | "huge2m" => Ok(PagePolicy::Huge2M),
            "thp" | "transparent" => Ok(PagePolicy::Transparent),
            "4k" | "4kib" | "base" => Ok(PagePolicy::Base),
            _ => Err(format!("unknown page size {s:?}: expected auto, 1g, 2m, thp or 4k")),
        }
    }
}

/// Which pages back the pool, as chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// 1 GiB hugetlb pages.
    Huge1G,
    /// 2 MiB hugetlb pages.
    Huge2M,
    /// Transparent huge pages (2 MiB where the kernel can, else 4 KiB).
    Transparent,
    /// 4 KiB base pages.
    Base,
}

impl PageKind {
    /// The page size in bytes (the size granularity of the pool).
    pub fn bytes(self) -> u64 {
        match self {
            PageKind::Huge1G => 1 << 30,
            PageKind::Huge2M | PageKind::Transparent => 2 << 20,
            PageKind::Base => 4096,
        }
    }

    /// Short name as the CLI takes it: `1g`, `2m`, `thp`, `4k`.
    pub fn short_name(self) -> &'static str {
        match self {
            PageKind::Huge1G => "1g",
            PageKind::Huge2M => "2m",
            PageKind::Transparent => "thp",
            PageKind::Base => "4k",
        }
    }

    /// Whether these are hugetlbfs pages (reserved through sysfs).
    pub fn is_hugetlb(self) -> bool {
        matches!(self, PageKind::Huge1G | PageKind::Huge2M)
    }
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageKind::Huge1G => "1 GiB hugetlb",
            PageKind::Huge2M => "2 MiB hugetlb",
            PageKind::Transparent => "transparent huge",
            PageKind::Base => "4 KiB base",
        })
    }
}

/// The hugetlb pool of one page size, read from sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugePages {
    /// The page size.
    pub page: PageKind,
    /// `nr_hugepages`: pages in the pool.
    pub total: u64,
    /// `free_hugepages`: pages not faulted in by anyone.
    pub free: u64,
    /// `resv_hugepages`: free pages promised to existing mappings.
    pub reserved: u64,
    /// `surplus_hugepages`: pages above the persistent pool, freed when
    /// their last user lets go (for example io_uring unpinning a closed
    /// ring's buffers in the background).
    pub surplus: u64,
    /// Whether the kernel offers this size at all.
    pub present: bool,
}

impl HugePages {
    /// The sysfs directory of a hugetlb page size.
    pub fn sysfs_dir(page: PageKind) -> PathBuf {
        let kb = page.bytes() / 1024;
        PathBuf::from(format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB"))
    }

    /// The sysfs file whose value is the pool size in pages.
    pub fn nr_hugepages_path(page: PageKind) -> PathBuf {
        Self::sysfs_dir(page).join("nr_hugepages")
    }

    /// Reads the current counts (fresh, not cached).
    pub fn read(page: PageKind) -> HugePages {
        let dir = Self::sysfs_dir(page);
        let get = |name: &str| -> Option<u64> { std::fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok() };
        HugePages {
            page,
            total: get("nr_hugepages").unwrap_or(0),
            free: get("free_hugepages").unwrap_or(0),
            reserved: get("resv_hugepages").unwrap_or(0),
            surplus: get("surplus_hugepages").unwrap_or(0),
            present: dir.is_dir(),
        }
    }

    /// Pages a new mapping can still get: free minus those reserved by others.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }

    /// The persistent pool size (`nr_hugepages` without surplus pages that
    /// are on their way out).
    pub fn persistent(&self) -> u64 {
        self.total.saturating_sub(self.surplus)
    }
}

/// Transparent huge page mode (`/sys/kernel/mm/transparent_hugepage/enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThpMode {
    /// Every anonymous mapping may get huge pages.
    Always,
    /// Only mappings with `MADV_HUGEPAGE`.
    Madvise,
    /// THP is off.
    Never,
    /// The kernel has no THP.
    Unavailable,
}

impl ThpMode {
    /// Reads the current mode.
    pub fn read() -> ThpMode {
        let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if s.contains("[always]") {
            ThpMode::Always
        } else if s.contains("[madvise]") {
            ThpMode::Madvise
        } else if s.contains("[never]") {
            ThpMode::Never
        } else {
            ThpMode::Unavailable
        }
    }

    /// Whether `MADV_HUGEPAGE` memory gets huge pages.
    pub fn is_usable(self) -> bool {
        matches!(self, ThpMode::Always | ThpMode::Madvise)
    }
}

/// Which quantity of an I/O request broke the O_DIRECT alignment rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignmentOf {
    /// The file offset.
    Offset,
    /// The length of the transfer (of one buffer, for vectored I/O).
    Length,
    /// The memory address of the buffer.
    Memory,
}

impl fmt::Display for AlignmentOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlignmentOf::Offset => "file offset",
            AlignmentOf::Length => "length",
            AlignmentOf::Memory => "memory address",
        })
    }
}

/// Where the O_DIRECT alignment of a file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignmentSource {
    /// `statx(STATX_DIOALIGN)`.
    Statx,
    /// The block device's logical block size.
    BlockDevice,
    /// Neither said: 4 KiB assumed.
    Default,
}

/// Whether a file is opened with O_DIRECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectIo {
    /// O_DIRECT or fail with [`Error::DirectIoUnsupported`](crate::Error::DirectIoUnsupported).
    Required,
    /// O_DIRECT where the file system allows it, else buffered I/O (logged
    /// once; [`DirectFile::is_direct`](crate::DirectFile::is_direct) tells).
    #[default]
    Optional,
    /// Buffered I/O.
    Disabled,
}

/// How a ring got its buffer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum TablePath {
    /// Cloned from the template ring (`IORING_REGISTER_CLONE_BUFFERS`).
    Cloned,
    /// Registered (pinned) by this ring itself.
    Registered,
    /// No table: plain READ / WRITE on pool memory.
    Unregistered,
    /// No table yet ([`Ring::new`](crate::Ring::new)).
    Empty,
}

impl fmt::Display for TablePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TablePath::Cloned => "clone",
            TablePath::Registered => "register-each",
            TablePath::Unregistered => "unregistered",
            TablePath::Empty => "empty",
        })
    }
}

/// How rings get the pool's buffer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Clone where the kernel can (6.12+), else register on each ring; the
    /// path taken is reported.
    #[default]
    Auto,
    /// Clone from the template ring; fails on kernels without
    /// `IORING_REGISTER_CLONE_BUFFERS`.
    Clone,
    /// Every ring registers (pins) the pool itself.
    RegisterEach,
    /// No table: plain READ/WRITE on pool memory (the kernel pins per I/O).
    Unregistered,
}

impl std::str::FromStr for Sharing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Sharing::Auto),
            "clone" => Ok(Sharing::Clone),
            "register-each" | "register_each" | "registereach" => Ok(Sharing::RegisterEach),
            "unregistered" | "none" => Ok(Sharing::Unregistered),
            _ => Err(format!("unknown sharing {s:?}: expected auto, clone, register-each or unregistered")),
        }
    }
}

/// How a ring picks up segments added to the template after it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refresh {
    /// A ranged DST_REPLACE clone of just the new slots where the kernel has
    /// it (6.13+) and the start-up self-test passed; else [`Refresh::Whole`].
    #[default]
    Auto,
    /// Always the ranged DST_REPLACE clone.
    Ranged,
    /// Unregister, then clone the whole table again (any 6.12+ kernel).
    Whole,
}

/// One entry of the buffer table: a contiguous part of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index in the template's table, and so the `buf_index` of leases in it.
    pub index: u16,
    /// Offset of its first byte in the pool.
    pub offset: u64,
    /// Length in bytes (at most 1 GiB).
    pub len: u64,
    /// Address of its first byte in this process (where it is mapped here;
    /// a pool handed over by another process is mapped at other addresses
    /// there).
    pub addr: usize,
}

/// Progress of a long operation: bytes done of bytes total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// What an I/O operation does. Every kind is one [`Op`](crate::Op).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// Read into one buffer (READ_FIXED / READ / pread).
    Read,
    /// Write from one buffer (WRITE_FIXED / WRITE / pwrite).
    Write,
    /// Read into several buffers at consecutive file offsets (READV_FIXED /
    /// READV / preadv2).
    Readv,
    /// Write from several buffers (WRITEV_FIXED / WRITEV / pwritev2).
    Writev,
    /// Flush data and metadata (fsync).
    Fsync,
    /// Flush data (fdatasync).
    Fdatasync,
}

impl OpKind {
    /// The name used in messages: `read`, `writev`, `fsync`, ...
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Readv => "readv",
            OpKind::Writev => "writev",
            OpKind::Fsync => "fsync",
            OpKind::Fdatasync => "fdatasync",
        }
    }

    /// Whether it moves data from the file into memory.
    pub fn reads(self) -> bool {
        matches!(self, OpKind::Read | OpKind::Readv)
    }

    /// Whether it moves data from memory to the file.
    pub fn writes(self) -> bool {
        matches!(self, OpKind::Write | OpKind::Writev)
    }

    /// Whether it moves data at all (read or write, vectored or not).
    pub fn moves_data(self) -> bool {
        self.reads() || self.writes()
    }

    /// Whether it takes several buffers.
    pub fn is_vectored(self) -> bool {
        matches!(self, OpKind::Readv | OpKind::Writev)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which engine runs an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum EngineKind {
    /// A worker's io_uring, with the pool's registered table.
    IoUring,
    /// Blocking preadv2 / pwritev2 on a worker thread.
    Blocking,
    /// Blocking preadv2 / pwritev2 on side threads of their own (FUSE
    /// files: io_uring blocks the ring on the server and duplicates data on
    /// short transfers on Linux 6.18).
    SideThreads,
    /// preadv2 / pwritev2 on the thread that submits (or, in a pool, that
    /// waits), for devices without NOWAIT support at shallow depth: no
    /// hand-off to an io-wq thread.
    Inline,
}

impl EngineKind {
    /// Short name for reports: `io_uring`, `blocking`, `side-threads`, `inline`.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::IoUring => "io_uring",
            EngineKind::Blocking => "blocking",
            EngineKind::SideThreads => "side-threads",
            EngineKind::Inline => "inline",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Kernel limit on the buffers of one vectored operation (`UIO_MAXIOV`).
pub const MAX_IOVECS: usize = 1024;

/// Whether a file's device serves non-blocking direct I/O (`RWF_NOWAIT`),
/// found by a one-block read trial, cached per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Nowait {
    /// It does: io_uring issues its requests from the submitting thread.
    Supported,
    /// It does not (zram, some dm/md stacks, network block devices): every
    /// io_uring request goes through an io-wq thread, a hand-off that costs
    /// tens of µs on a small VM.
    Unsupported,
    /// The trial could not run (the file is not readable); treated as
    /// supported.
    Unknown,
}

/// Which engine serves a ring's (or a pool's) operations, as asked for.
/// The choice for each file, and why, is `engine_for` of the ring or pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnginePolicy {
    /// io_uring; but on a device without NOWAIT support ([`Nowait`]), an
    /// operation runs inline (preadv2 / pwritev2 on the submitting thread)
    /// while the ring has fewer than its inline depth of operations
    /// outstanding, because there io_uring would hand each request to an
    /// io-wq thread. A pool falls back to [`EnginePolicy::Blocking`] where
    /// io_uring cannot be set up, and says so.
    #[default]
    Auto,
    /// Always io_uring (a pool fails to build without it).
    IoUring,
    /// Always inline: every operation completes before `push` returns
    /// (in a pool, on the thread that waits for it, or on a worker).
    Inline,
    /// No io_uring at all: a pool's workers run preadv2 / pwritev2 (a
    /// ring runs every operation inline).
    Blocking,
}

impl std::str::FromStr for EnginePolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(EnginePolicy::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(EnginePolicy::IoUring),
            "inline" | "sync" => Ok(EnginePolicy::Inline),
            "blocking" => Ok(EnginePolicy::Blocking),
            _ => Err(format!("unknown engine {s:?}: expected auto, io_uring, inline or blocking")),
        }
    }
}

/// Outstanding operations below which [`EnginePolicy::Auto`] runs
/// operations on a device without NOWAIT inline (measured: BENCHMARKS.md).
pub const INLINE_DEPTH: u32 = 12;

/// Kernel limit on a ring's submission queue entries.
pub const MAX_RING_ENTRIES: u32 = 32768;

/// A range of a clone (`IORING_REGISTER_CLONE_BUFFERS`): which slots of the
/// source table go to which slots of the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloneRange {
    /// First source entry.
    pub src_off: u32,
    /// First destination entry.
    pub dst_off: u32,
    /// Entries; 0 = the whole source table (then both offsets must be 0).
    pub nr: u32,
    /// Replace existing destination entries (DST_REPLACE, Linux 6.13+).
    pub replace: bool,
}

impl CloneRange {
    /// The whole table, into an empty ring.
    pub fn all() -> Self {
        Self::default()
    }
    /// `nr` entries from `src_off` to `dst_off` (ranged clone, Linux 6.13+).
    pub fn range(src_off: u32, dst_off: u32, nr: u32) -> Self {
        CloneRange { src_off, dst_off, nr, replace: false }
    }
    /// With DST_REPLACE.
    pub fn replace(mut self) -> Self {
        self.replace = true;
        self
    }
}
