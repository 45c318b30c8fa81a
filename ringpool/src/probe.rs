//! What this kernel and machine offer, found by trial and cached
//! ([`Features`]), and whether O_DIRECT works in a directory
//! ([`DirectIoSupport`]). The kernel-quirk guards are in
//! [`quirks`](crate::quirks).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::device;
use crate::sys;
use crate::types::{AlignmentSource, HugePages, PageKind, ThpMode};

/// Whether io_uring can be set up in this process, and if not why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoUringStatus {
    /// `io_uring_setup` works.
    Available,
    /// `io_uring_setup` failed.
    Unavailable {
        /// The errno it failed with.
        errno: i32,
        /// The likely cause, in words.
        reason: String,
    },
}

impl IoUringStatus {
    /// `true` when io_uring works here.
    pub fn is_available(&self) -> bool {
        matches!(self, IoUringStatus::Available)
    }
}

/// What this kernel and machine offer to ringpool, found by trial.
#[derive(Debug, Clone)]
pub struct Features {
    /// Kernel release, as `uname -r` prints it.
    pub kernel: String,
    /// Whether io_uring works in this process.
    pub io_uring: IoUringStatus,
    /// `IORING_REGISTER_CLONE_BUFFERS` (Linux 6.12+): an empty source gives
    /// ENXIO where supported, EINVAL where the opcode is unknown.
    pub clone_buffers: bool,
    /// Ranged clone with offsets (Linux 6.13+): an out-of-range `src_off`
    /// gives EOVERFLOW where supported, EINVAL on 6.12.
    pub clone_ranges: bool,
    /// Start-up self-test of a partial DST_REPLACE clone (some 6.18.y
    /// kernels lose or leak entries outside the replaced range).
    pub dst_replace: DstReplace,
    /// `READ_FIXED` and `WRITE_FIXED` in the opcode probe.
    pub read_write_fixed: bool,
    /// `READV_FIXED` and `WRITEV_FIXED` in the opcode probe (Linux 6.15+):
    /// vectored I/O into one registered buffer.
    pub readv_fixed: bool,
    /// 2 MiB hugetlb pages.
    pub hugepages_2m: HugePages,
    /// 1 GiB hugetlb pages.
    pub hugepages_1g: HugePages,
    /// Transparent huge pages.
    pub thp: ThpMode,
    /// `RLIMIT_MEMLOCK` soft limit in bytes, `None` for unlimited.
    pub memlock_limit: Option<u64>,
    /// Whether this process holds `CAP_IPC_LOCK` (then pinning is not charged).
    pub cap_ipc_lock: bool,
    /// Where this kernel's ring memory puts the CQEs (`cq_off.cqes`), for
    /// computing a ring's memlock charge without setting one up.
    pub(crate) cqes_offset: u32,
}

static FEATURES: OnceLock<Features> = OnceLock::new();

impl Features {
    /// The features of this process, detected once and cached.
    ///
    /// Huge page counts change over time: read them fresh with
    /// [`HugePages::read`] when it matters.
    pub fn get() -> &'static Features {
        FEATURES.get_or_init(Features::detect)
    }

    /// Detects the features now, without the cache. Creates and closes a
    /// few small rings; has no lasting side effect.
    pub fn detect() -> Features {
        let kernel = kernel_release();
        let (io_uring, cqes_offset) = match sys::trial::setup_works() {
            Ok(off) => (IoUringStatus::Available, off),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                (IoUringStatus::Unavailable { errno, reason: unavailable_reason(&e) }, 64)
            }
        };
        let (mut clone_buffers, mut clone_ranges, mut read_write_fixed, mut readv_fixed) = (false, false, false, false);
        let mut dst_replace = DstReplace::Unsupported;
        if io_uring.is_available() {
            clone_buffers = sys::trial::clone_exists();
            // Without CAP_IPC_LOCK and a zero memlock limit the trial cannot
            // register its page: trust the version then.
            clone_ranges = clone_buffers
                && sys::trial::clone_ranges_exist()
                    .unwrap_or_else(|| parse_kernel_version(&kernel).is_some_and(|v| v >= (6, 13)));
            (read_write_fixed, readv_fixed) = sys::trial::fixed_opcodes();
            if clone_ranges && read_write_fixed {
                dst_replace = match sys::trial::dst_replace_keeps_outside() {
                    Ok(None) => DstReplace::Works,
                    Ok(Some(why)) => {
                        tracing::warn!("partial DST_REPLACE self-test failed: {why}; rings will re-clone whole tables");
                        DstReplace::Broken(why)
                    }
                    Err(()) => DstReplace::Unsupported,
                };
            }
        }
        // The trials' rings are closed: their memlock charge goes later.
        sys::uring::note_closed();
        Features {
            kernel,
            io_uring,
            clone_buffers,
            clone_ranges,
            dst_replace,
            read_write_fixed,
            readv_fixed,
            hugepages_2m: HugePages::read(PageKind::Huge2M),
            hugepages_1g: HugePages::read(PageKind::Huge1G),
            thp: ThpMode::read(),
            memlock_limit: sys::os::memlock_limit().ok().flatten(),
            cap_ipc_lock: has_cap_ipc_lock(),
            cqes_offset,
        }
    }

    /// Whether O_DIRECT works in `dir`, and the alignment it needs there.
    pub fn direct_io(dir: &Path) -> DirectIoSupport {
        probe_direct_io(dir)
    }
}

/// `uname -r`, read from procfs.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `(major, minor)` of a kernel release string such as `6.18.44-foo`.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether the calling thread holds `CAP_IPC_LOCK` in its effective set
/// (read now; capabilities are per thread).
pub fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Explains an `io_uring_setup` failure.
pub(crate) fn unavailable_reason(e: &std::io::Error) -> String {
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok().and_then(|s| s.trim().parse::<u32>().ok());
    match e.raw_os_error() {
        Some(libc::ENOSYS) => {
            "io_uring_setup is not implemented (ENOSYS): the kernel is older than 5.1, built without \
                               CONFIG_IO_URING, or a seccomp filter hides it"
                .into()
        }
        Some(libc::EPERM) => match disabled {
            Some(2) => {
                "io_uring is disabled system-wide (EPERM, /proc/sys/kernel/io_uring_disabled = 2): set it to 0".into()
            }
            Some(1) => {
                "io_uring is restricted (EPERM, /proc/sys/kernel/io_uring_disabled = 1) to CAP_SYS_ADMIN and the \
                        io_uring_group: set it to 0 or join the group"
                    .into()
            }
            _ => "io_uring_setup was refused (EPERM): a seccomp filter or container policy blocks it".into(),
        },
        Some(libc::ENOMEM) => "io_uring_setup failed with ENOMEM: the ring memory could not be allocated".into(),
        _ => format!("io_uring_setup failed: {e}"),
    }
}

/// The result of the start-up self-test of partial DST_REPLACE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DstReplace {
    /// A ranged DST_REPLACE clone replaced exactly its range.
    Works,
    /// It did not: what went wrong (growth falls back to whole clones).
    Broken(String),
    /// The kernel has no ranged clone (before 6.13), or the test could not run.
    Unsupported,
}

/// Whether O_DIRECT works in a directory, and with which alignment.
#[derive(Debug, Clone)]
pub struct DirectIoSupport {
    /// The directory probed.
    pub dir: PathBuf,
    /// Whether an O_DIRECT open succeeded.
    pub supported: bool,
    /// Why not, if it failed.
    pub error: Option<String>,
    /// Memory alignment for O_DIRECT buffers.
    pub mem_align: u32,
    /// File offset (and length) alignment.
    pub offset_align: u32,
    /// Where the alignment came from.
    pub source: AlignmentSource,
}

fn probe_direct_io(dir: &Path) -> DirectIoSupport {
    let mut out = DirectIoSupport {
        dir: dir.to_path_buf(),
        supported: false,
        error: None,
        mem_align: 4096,
        offset_align: 4096,
        source: AlignmentSource::Default,
    };
    let fd = match sys::os::open_tmpfile(dir, libc::O_DIRECT) {
        Ok(fd) => Ok(fd),
        // No O_TMPFILE here (e.g. some FUSE file systems): a named file instead.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)) => {
            let path = dir.join(format!(".ringpool-probe-{}", std::process::id()));
            use std::os::unix::fs::OpenOptionsExt;
            let r = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .map(std::os::fd::OwnedFd::from);
            let _ = std::fs::remove_file(&path);
            r
        }
        Err(e) => Err(e),
    };
    match fd {
        Ok(fd) if device::is_page_cache_fs(fd.as_fd()) => {
            out.error = Some("tmpfs/ramfs: O_DIRECT is accepted at open but served from the page cache".into());
        }
        Ok(fd) => {
            out.supported = true;
            let (mem, off, src) = device::alignment_of(fd.as_fd());
            out.mem_align = mem;
            out.offset_align = off;
            out.source = src;
        }
        Err(e) => {
            out.error = Some(match e.raw_os_error() {
                Some(libc::EINVAL) => format!("the file system refuses O_DIRECT ({e})"),
                _ => e.to_string(),
            })
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_version("6.12.0"), Some((6, 12)));
        assert_eq!(parse_kernel_version("5.4"), Some((5, 4)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(parse_kernel_version(""), None);
    }
}
