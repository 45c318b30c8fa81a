//! What the file system and device under an open file offer: FUSE or a
//! page-cache file system, the O_DIRECT alignment, and non-blocking I/O.

use std::collections::HashMap;
use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::sys;
use crate::types::{AlignmentSource, Nowait};

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Whether the fd lives on FUSE, whose I/O blocks the issuing thread.
pub(crate) fn is_fuse(fd: BorrowedFd<'_>) -> bool {
    matches!(sys::os::fs_magic(fd), Ok(FUSE_SUPER_MAGIC))
}

/// Whether the fd lives on tmpfs or ramfs (O_DIRECT accepted at open since
/// 6.6, but every byte stays in the page cache).
pub(crate) fn is_page_cache_fs(fd: BorrowedFd<'_>) -> bool {
    matches!(sys::os::fs_magic(fd), Ok(TMPFS_MAGIC) | Ok(RAMFS_MAGIC))
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
                logical_block_size(meta.dev())
            };
            if let Some(b) = lbs.filter(|b| b.is_power_of_two()) {
                return (b, b, AlignmentSource::BlockDevice);
            }
        }
    }
    (4096, 4096, AlignmentSource::Default)
}

/// Logical block size of the device holding a file, from sysfs.
fn logical_block_size(dev: u64) -> Option<u32> {
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

/// Trial results per device: (device number, whether it is a block device).
static NOWAIT: Mutex<Option<HashMap<(u64, bool), Nowait>>> = Mutex::new(None);

/// Whether the device under `fd` serves RWF_NOWAIT, by a one-block read
/// trial, cached per device (a regular file's file system, or the block
/// device itself).
pub(crate) fn nowait(fd: BorrowedFd<'_>, block: u32) -> Nowait {
    let Ok(meta) = fd.try_clone_to_owned().map(fs::File::from).and_then(|f| f.metadata()) else {
        return Nowait::Unknown;
    };
    let is_block = meta.file_type().is_block_device();
    let key = (if is_block { meta.rdev() } else { meta.dev() }, is_block);
    if let Some(n) = NOWAIT.lock().ok().and_then(|c| c.as_ref().and_then(|m| m.get(&key).copied())) {
        return n;
    }
    let n = match sys::os::read_nowait_trial(fd, block as usize) {
        // Read, or would have blocked: the flag is honoured.
        Ok(_) => Nowait::Supported,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Nowait::Supported,
        // The file (its device) does not take RWF_NOWAIT.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Nowait::Unsupported,
        // Not readable (EBADF on a write-only fd), or another failure.
        Err(e) => {
            tracing::debug!("RWF_NOWAIT trial failed ({e}): assuming non-blocking I/O works");
            return Nowait::Unknown;
        }
    };
    if let Ok(mut c) = NOWAIT.lock() {
        c.get_or_insert_with(HashMap::new).insert(key, n);
    }
    n
}
