//! What the file system and device under an open file offer: FUSE or a
//! page-cache file system, and the O_DIRECT alignment.

use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::sys;
use crate::types::AlignmentSource;

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
            let lbs = if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
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
