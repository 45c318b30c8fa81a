//! `DirectFile`: a file opened for O_DIRECT I/O through the pool.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::buf::IoBuf;
use crate::device;
use crate::error::{Error, Result};
use crate::sys;
use crate::types::{AlignmentOf, AlignmentSource, DirectIo, Nowait, OpKind};

/// How to open a [`DirectFile`] (like `std::fs::OpenOptions`).
#[derive(Debug, Clone)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    create: bool,
    truncate: bool,
    direct: DirectIo,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { read: true, write: false, create: false, truncate: false, direct: DirectIo::Optional }
    }
}

impl OpenOptions {
    /// Read-only, O_DIRECT optional.
    pub fn new() -> Self {
        Self::default()
    }
    /// Read access.
    pub fn read(mut self, yes: bool) -> Self {
        self.read = yes;
        self
    }
    /// Write access.
    pub fn write(mut self, yes: bool) -> Self {
        self.write = yes;
        self
    }
    /// Create the file if missing (needs write).
    pub fn create(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }
    /// Truncate to zero length (needs write).
    pub fn truncate(mut self, yes: bool) -> Self {
        self.truncate = yes;
        self
    }
    /// The O_DIRECT policy.
    pub fn direct(mut self, policy: DirectIo) -> Self {
        self.direct = policy;
        self
    }

    /// Opens `path`.
    ///
    /// # Errors
    /// [`Error::DirectIoUnsupported`] with [`DirectIo::Required`] where the
    /// file system refuses O_DIRECT; [`Error::Io`] for open errors, naming
    /// the path.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<DirectFile> {
        DirectFile::open_with(path.as_ref(), self)
    }
}

pub(crate) struct FileShared {
    file: fs::File,
    path: PathBuf,
    direct: bool,
    mem_align: u32,
    offset_align: u32,
    align_source: AlignmentSource,
    readable: bool,
    writable: bool,
    block_device: bool,
    /// On FUSE: never through io_uring (see `DirectFile::is_fuse`).
    fuse: bool,
    closed: AtomicBool,
    /// The last pool (by address) this file was submitted to: a pool logs
    /// and records its engine choice for a file it has not seen.
    seen_by: AtomicUsize,
    /// Whether its device serves RWF_NOWAIT (a trial at first need).
    /// The device's profile, found at the first call that needs it.
    device: OnceLock<Arc<device::Profile>>,
}

impl AsFd for FileShared {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// A file for pool I/O: O_DIRECT under a [`DirectIo`] policy, with its
/// alignment from `statx(STATX_DIOALIGN)` or the device's logical block size.
/// Cheap to clone; the fd closes when the last clone and the last operation
/// on it are gone.
#[derive(Clone)]
pub struct DirectFile {
    pub(crate) shared: Arc<FileShared>,
}

impl std::fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectFile")
            .field("path", &self.shared.path)
            .field("direct", &self.shared.direct)
            .field("mem_align", &self.shared.mem_align)
            .field("offset_align", &self.shared.offset_align)
            .finish()
    }
}

static BUFFERED_WARNED: AtomicBool = AtomicBool::new(false);

impl DirectFile {
    /// Opens `path` for reading and writing, O_DIRECT where possible.
    ///
    /// # Errors
    /// As [`OpenOptions::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<DirectFile> {
        OpenOptions::new().read(true).write(true).open(path)
    }

    /// Open options.
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    fn open_with(path: &Path, o: &OpenOptions) -> Result<DirectFile> {
        let io_err = |source| Error::Io { op: "open", path: Some(path.to_path_buf()), offset: None, source };
        if !o.read && !o.write {
            return Err(Error::invalid("open options", path.display(), "neither read nor write access was asked for"));
        }
        let mut std_opts = fs::OpenOptions::new();
        std_opts.read(o.read).write(o.write).create(o.create && o.write).truncate(o.truncate && o.write);
        let try_open = |direct: bool| {
            let mut so = std_opts.clone();
            if direct {
                so.custom_flags(libc::O_DIRECT);
            }
            so.open(path)
        };
        let (file, direct) = match o.direct {
            DirectIo::Disabled => (try_open(false).map_err(io_err)?, false),
            DirectIo::Required | DirectIo::Optional => match try_open(true).and_then(refuse_fake_direct) {
                Ok(f) => (f, true),
                // EINVAL at open: the file system has no O_DIRECT (tmpfs before 6.6, some FUSE).
                Err(e) if is_no_direct(&e) => {
                    if o.direct == DirectIo::Required {
                        return Err(Error::DirectIoUnsupported { path: path.to_path_buf(), source: e });
                    }
                    let f = try_open(false).map_err(io_err)?;
                    if !BUFFERED_WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(path = %path.display(), "O_DIRECT is not supported here; using buffered I/O");
                    }
                    (f, false)
                }
                Err(e) => return Err(io_err(e)),
            },
        };
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(Error::invalid("file", path.display(), "it is a directory"));
        }
        let block_device = meta.file_type().is_block_device();
        let fuse = !block_device && device::is_fuse(file.as_fd());
        let (mem_align, offset_align, align_source) =
            if direct { device::alignment_of(file.as_fd()) } else { (1, 1, AlignmentSource::Default) };
        Ok(DirectFile {
            shared: Arc::new(FileShared {
                file,
                path: path.to_path_buf(),
                direct,
                mem_align,
                offset_align,
                align_source,
                readable: o.read,
                writable: o.write,
                block_device,
                fuse,
                closed: AtomicBool::new(false),
                seen_by: AtomicUsize::new(0),
                device: OnceLock::new(),
            }),
        })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether I/O bypasses the page cache (O_DIRECT).
    pub fn is_direct(&self) -> bool {
        self.shared.direct
    }

    /// Whether the file lives on FUSE. io_uring is not used for it:
    /// its reads and writes block the issuing thread while the server
    /// answers (a stalled server would stall a whole ring), and on Linux
    /// 6.18 a short read or write is retried at the same file offset, which
    /// duplicates data (found by ringpool's FUSE fault-injection tests).
    /// [`IoPool`](crate::IoPool) serves such files with preadv2 / pwritev2
    /// on side threads; [`Ring`](crate::Ring) refuses them.
    pub fn is_fuse(&self) -> bool {
        self.shared.fuse
    }

    /// Whether its device serves non-blocking direct I/O (`RWF_NOWAIT`),
    /// found by a one-block read trial at the first call (cached per
    /// device). Without it, io_uring hands every request to an io-wq thread,
    /// so shallow queues run inline instead ([`EnginePolicy`](crate::types::EnginePolicy)).
    pub fn nowait(&self) -> Nowait {
        self.device().nowait
    }

    /// What ringpool learned of the file's device: NOWAIT support, and
    /// which engine its operations measured faster at depth 1 in each
    /// direction (an idle ring runs the faster one).
    pub fn device_stats(&self) -> crate::stats::DeviceStats {
        self.device().stats()
    }

    /// The profile of the file's device: NOWAIT support and the depth-1
    /// measurements of each engine.
    pub(crate) fn device(&self) -> &Arc<device::Profile> {
        self.shared.device.get_or_init(|| {
            let p = if self.shared.direct {
                device::profile(self.shared.file.as_fd(), self.shared.offset_align)
            } else {
                device::Profile::unknown()
            };
            tracing::debug!(path = %self.shared.path.display(), nowait = ?p.nowait, "non-blocking I/O trial");
            p
        })
    }

    /// Whether it is a block device.
    pub fn is_block_device(&self) -> bool {
        self.shared.block_device
    }

    /// O_DIRECT memory alignment (1 for buffered files).
    pub fn mem_align(&self) -> u32 {
        self.shared.mem_align
    }

    /// O_DIRECT offset and length alignment (1 for buffered files).
    pub fn offset_align(&self) -> u32 {
        self.shared.offset_align
    }

    /// Where the alignment came from.
    pub fn alignment_source(&self) -> AlignmentSource {
        self.shared.align_source
    }

    /// Size in bytes (a block device's capacity).
    ///
    /// # Errors
    /// [`Error::Io`] from fstat / ioctl.
    pub fn size(&self) -> Result<u64> {
        file_size(&self.shared).map_err(|e| self.io_error("size", None, e))
    }

    /// The file's metadata now (`fstat` of the open file: its inode, size
    /// and times, whatever its path names meanwhile).
    ///
    /// # Errors
    /// [`Error::Io`] from fstat.
    pub fn metadata(&self) -> Result<fs::Metadata> {
        self.with_std(|f| f.metadata()).map_err(|e| self.io_error("metadata", None, e))
    }

    /// Sets the size of a regular file.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::NotPermitted`] without write access.
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.check_open("set_len")?;
        if !self.shared.writable {
            return Err(self.not_permitted("set_len", "write"));
        }
        self.with_std(|f| f.set_len(len)).map_err(|e| self.io_error("set_len", None, e))
    }

    /// Flushes data and metadata to the device (blocking `fsync`).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn sync_all(&self) -> Result<()> {
        self.check_open("sync_all")?;
        self.with_std(|f| f.sync_all()).map_err(|e| self.io_error("sync_all", None, e))
    }

    /// Flushes data to the device (blocking `fdatasync`).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn sync_data(&self) -> Result<()> {
        self.check_open("sync_data")?;
        self.with_std(|f| f.sync_data()).map_err(|e| self.io_error("sync_data", None, e))
    }

    /// Marks the file closed: new operations fail with
    /// [`Error::FileClosed`]; the fd itself closes once operations in flight
    /// and other clones are gone.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    /// Whether the pool `pool` (an address) is not the last pool the file
    /// was submitted to (then it records it as the last).
    pub(crate) fn new_to(&self, pool: usize) -> bool {
        self.shared.seen_by.swap(pool, Ordering::Relaxed) != pool
    }

    /// An identity of the open file (for deduplicating records).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// Whether [`DirectFile::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    fn with_std<R>(&self, f: impl FnOnce(&fs::File) -> std::io::Result<R>) -> std::io::Result<R> {
        f(&self.shared.file)
    }

    fn check_open(&self, op: &'static str) -> Result<()> {
        if self.is_closed() {
            return Err(Error::FileClosed { op, path: self.shared.path.clone() });
        }
        Ok(())
    }

    pub(crate) fn not_permitted(&self, op: &'static str, access: &'static str) -> Error {
        Error::NotPermitted { op, path: self.shared.path.clone(), access }
    }

    pub(crate) fn io_error(&self, op: &'static str, offset: Option<u64>, source: std::io::Error) -> Error {
        Error::Io { op, path: Some(self.shared.path.clone()), offset, source }
    }

    /// Checks a read or write before it is submitted: open, access,
    /// non-empty, and O_DIRECT alignment of offset, length and memory
    /// (what [`Op::check`](crate::Op::check) does for every operation).
    ///
    /// # Errors
    /// [`Error::FileClosed`], [`Error::NotPermitted`], [`Error::ZeroLength`],
    /// [`Error::Misaligned`] naming what is misaligned and the alignment.
    pub fn check_io(&self, write: bool, offset: u64, buf: &IoBuf) -> Result<()> {
        let kind = if write { OpKind::Write } else { OpKind::Read };
        self.check_access(kind)?;
        self.check_transfer(kind, offset, std::slice::from_ref(buf))
    }

    /// Checks that the file is open and allows `kind`.
    pub(crate) fn check_access(&self, kind: OpKind) -> Result<()> {
        let op = kind.name();
        self.check_open(op)?;
        if kind.writes() && !self.shared.writable {
            return Err(self.not_permitted(op, "write"));
        }
        if kind.reads() && !self.shared.readable {
            return Err(self.not_permitted(op, "read"));
        }
        Ok(())
    }

    /// Checks the offset and every buffer of a transfer: non-empty, offset
    /// below 2^63, and the O_DIRECT alignment of the offset and of each
    /// buffer's length and address (naming the buffer of a vectored one).
    pub(crate) fn check_transfer(&self, kind: OpKind, offset: u64, bufs: &[IoBuf]) -> Result<()> {
        let op = kind.name();
        let total = bufs.iter().try_fold(0u64, |acc, b| acc.checked_add(b.len() as u64));
        if total.is_none_or(|t| t == 0) {
            return Err(Error::ZeroLength { op, path: self.shared.path.clone() });
        }
        if offset > i64::MAX as u64 || total.and_then(|t| offset.checked_add(t)).is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(Error::invalid("file offset", offset, "the transfer must end below 2^63"));
        }
        if !self.shared.direct {
            return Ok(());
        }
        let oa = u64::from(self.shared.offset_align.max(1));
        let ma = u64::from(self.shared.mem_align.max(1));
        let vectored = kind.is_vectored();
        let mis = |what, value: u64, align: u64, buffer: Option<usize>| Error::Misaligned {
            op,
            path: self.shared.path.clone(),
            what,
            value,
            align: align as u32,
            buffer,
        };
        if !offset.is_multiple_of(oa) {
            return Err(mis(AlignmentOf::Offset, offset, oa, None));
        }
        for (i, b) in bufs.iter().enumerate() {
            let which = vectored.then_some(i);
            if b.is_empty() {
                return Err(Error::ZeroLength { op, path: self.shared.path.clone() });
            }
            if !(b.len() as u64).is_multiple_of(oa) {
                return Err(mis(AlignmentOf::Length, b.len() as u64, oa, which));
            }
            if !(b.as_ptr() as u64).is_multiple_of(ma) {
                return Err(mis(AlignmentOf::Memory, b.as_ptr() as u64, ma, which));
            }
        }
        Ok(())
    }

    /// The file's size now (for telling end of file from a short count).
    pub(crate) fn size_now(&self) -> Option<u64> {
        file_size(&self.shared).ok()
    }

    /// The open file, for blocking system calls.
    pub(crate) fn std_file(&self) -> &fs::File {
        &self.shared.file
    }

    pub(crate) fn path_buf(&self) -> PathBuf {
        self.shared.path.clone()
    }

    /// Whether both handles are clones of one open (same fd).
    pub fn same_file(&self, other: &DirectFile) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl AsFd for DirectFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.file.as_fd()
    }
}

/// tmpfs and ramfs accept O_DIRECT at open (tmpfs since 6.6) but keep every
/// byte in the page cache: for ringpool that is not direct I/O, so the open
/// is treated like the EINVAL of file systems that refuse the flag.
fn refuse_fake_direct(f: fs::File) -> std::io::Result<fs::File> {
    // Only regular files: a block device node lives on devtmpfs, whose magic
    // is tmpfs's, but I/O to it goes to the device.
    if f.metadata()?.is_file() && device::is_page_cache_fs(f.as_fd()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "tmpfs/ramfs accept O_DIRECT but serve it from the page cache",
        ));
    }
    Ok(f)
}

/// Whether the errors of an O_DIRECT open mean "no direct I/O here".
fn is_no_direct(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL) || e.kind() == std::io::ErrorKind::InvalidInput
}

fn file_size(f: &FileShared) -> std::io::Result<u64> {
    if f.block_device {
        return sys::os::block_size_bytes(f.file.as_fd());
    }
    Ok(f.file.metadata()?.len())
}
