//! `DirectFile`: a file opened for O_DIRECT I/O through the pool.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{AlignmentOf, Error, Result};
use crate::probe::AlignmentSource;
use crate::sys;
use crate::sys::buf::IoBuf;

/// Whether a file is opened with O_DIRECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectIo {
    /// O_DIRECT or fail with [`Error::DirectIoUnsupported`].
    Required,
    /// O_DIRECT where the file system allows it, else buffered I/O (logged
    /// once; [`DirectFile::is_direct`] tells).
    #[default]
    Optional,
    /// Buffered I/O.
    Disabled,
}

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
    /// Issue operations straight to io_uring's async workers (IOSQE_ASYNC).
    force_async: bool,
    closed: AtomicBool,
}

impl AsFd for FileShared {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl FileShared {
    /// The open file, for the blocking backend's pread / pwrite.
    pub(crate) fn std(&self) -> &fs::File {
        &self.file
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
        let force_async = !block_device && is_blocking_fs(file.as_fd());
        if force_async {
            tracing::debug!(path = %path.display(), "FUSE file: served with pread / pwrite, not io_uring");
        }
        let (mem_align, offset_align, align_source) =
            if direct { alignment_of(file.as_fd()) } else { (1, 1, AlignmentSource::Default) };
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
                force_async,
                closed: AtomicBool::new(false),
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
    /// [`IoPool`](crate::IoPool) serves such files with pread / pwrite on
    /// side threads; [`Ring`](crate::Ring) refuses them.
    pub fn is_forced_async(&self) -> bool {
        self.shared.force_async
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

    fn not_permitted(&self, op: &'static str, access: &'static str) -> Error {
        Error::NotPermitted { op, path: self.shared.path.clone(), access }
    }

    pub(crate) fn io_error(&self, op: &'static str, offset: Option<u64>, source: std::io::Error) -> Error {
        Error::Io { op, path: Some(self.shared.path.clone()), offset, source }
    }

    /// Checks a read or write before it is submitted: open, access,
    /// non-empty, and O_DIRECT alignment of offset, length and memory.
    ///
    /// # Errors
    /// [`Error::FileClosed`], [`Error::NotPermitted`], [`Error::ZeroLength`],
    /// [`Error::Misaligned`] naming what is misaligned and the alignment.
    pub fn check_io(&self, write: bool, offset: u64, buf: &IoBuf) -> Result<()> {
        let op = if write { "write" } else { "read" };
        self.check_open(op)?;
        if write && !self.shared.writable {
            return Err(self.not_permitted(op, "write"));
        }
        if !write && !self.shared.readable {
            return Err(self.not_permitted(op, "read"));
        }
        if buf.is_empty() {
            return Err(Error::ZeroLength { op, path: self.shared.path.clone() });
        }
        if offset > i64::MAX as u64 {
            return Err(Error::invalid("file offset", offset, "it must be below 2^63"));
        }
        if self.shared.direct {
            let mis = |what, value: u64, align: u32| Error::Misaligned {
                op,
                path: self.shared.path.clone(),
                what,
                value,
                align,
            };
            let oa = self.shared.offset_align.max(1) as u64;
            let ma = self.shared.mem_align.max(1) as u64;
            if !offset.is_multiple_of(oa) {
                return Err(mis(AlignmentOf::Offset, offset, oa as u32));
            }
            if !(buf.len() as u64).is_multiple_of(oa) {
                return Err(mis(AlignmentOf::Length, buf.len() as u64, oa as u32));
            }
            if !(buf.as_ptr() as u64).is_multiple_of(ma) {
                return Err(mis(AlignmentOf::Memory, buf.as_ptr() as u64, ma as u32));
            }
        }
        Ok(())
    }

    /// Turns a CQE result into the count or a typed error.
    pub(crate) fn complete(&self, write: bool, offset: u64, requested: usize, res: i32) -> Result<usize> {
        let op = if write { "write" } else { "read" };
        if res >= 0 {
            if !write && res == 0 && requested > 0 {
                // Zero bytes: at or past the end of the file is an error of
                // its own; anything else (a hole at EOF race) is a count.
                if let Ok(size) = file_size(&self.shared) {
                    if offset >= size {
                        return Err(Error::PastEndOfFile { path: self.shared.path.clone(), offset, size });
                    }
                }
            }
            return Ok(res as usize);
        }
        let errno = -res;
        Err(match errno {
            // The fd lacks the access (pre-checked, but a dup'd fd may differ).
            libc::EBADF => self.not_permitted(op, if write { "write" } else { "read" }),
            _ => self.io_error(op, Some(offset), std::io::Error::from_raw_os_error(errno)),
        })
    }

    /// Whether both handles are clones of one open (same fd).
    pub fn same_file(&self, other: &DirectFile) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn hold(&self) -> sys::uring::FdHold {
        self.shared.clone()
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
    if f.metadata()?.is_file() && is_page_cache_fs(f.as_fd()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "tmpfs/ramfs accept O_DIRECT but serve it from the page cache",
        ));
    }
    Ok(f)
}

/// Whether the fd lives on FUSE, whose I/O blocks the issuing thread.
pub(crate) fn is_blocking_fs(fd: BorrowedFd<'_>) -> bool {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    matches!(sys::os::fs_magic(fd), Ok(FUSE_SUPER_MAGIC))
}

/// Whether the fd lives on tmpfs or ramfs.
pub(crate) fn is_page_cache_fs(fd: BorrowedFd<'_>) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    matches!(sys::os::fs_magic(fd), Ok(TMPFS_MAGIC) | Ok(RAMFS_MAGIC))
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

/// O_DIRECT alignment of an open file: (memory, offset, source).
pub(crate) fn alignment_of(fd: BorrowedFd<'_>) -> (u32, u32, AlignmentSource) {
    if let Ok(Some((mem, off))) = sys::os::statx_dioalign(fd) {
        return (mem, off.max(1), AlignmentSource::Statx);
    }
    if let Ok(dup) = fd.try_clone_to_owned() {
        let f = fs::File::from(dup);
        if let Ok(meta) = f.metadata() {
            let lbs = if meta.file_type().is_block_device() {
                sys::os::block_logical_size(fd).ok()
            } else {
                device_logical_block_size(meta.dev())
            };
            if let Some(b) = lbs.filter(|b| b.is_power_of_two()) {
                return (b, b, AlignmentSource::BlockDevice);
            }
        }
    }
    (4096, 4096, AlignmentSource::Default)
}

/// Logical block size of the device holding a file, from sysfs.
fn device_logical_block_size(dev: u64) -> Option<u32> {
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let base = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    for p in [base.join("queue/logical_block_size"), base.join("../queue/logical_block_size")] {
        if let Ok(s) = fs::read_to_string(&p) {
            if let Ok(v) = s.trim().parse() {
                return Some(v);
            }
        }
    }
    None
}
