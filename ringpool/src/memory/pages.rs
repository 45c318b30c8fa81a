//! Which pages back the pool: the page policy's choice, whether the machine
//! can supply them, and the one place that maps pool memory.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::sys::mmap::{Backing, Mapping};
use crate::types::Bytes;
use crate::types::{HugePages, PageKind, PagePolicy, ThpMode};

/// How `mmap` backs memory of a page kind.
pub(super) fn backing(kind: PageKind) -> Backing {
    match kind {
        PageKind::Huge1G => Backing::Hugetlb { shift: 30 },
        PageKind::Huge2M => Backing::Hugetlb { shift: 21 },
        PageKind::Transparent => Backing::Transparent,
        PageKind::Base => Backing::Base,
    }
}

/// `len` rounded up to whole pages of `kind`, or the error naming `what`.
pub(super) fn round_to_pages(what: &'static str, len: u64, kind: PageKind) -> Result<u64> {
    len.checked_next_multiple_of(kind.bytes())
        .filter(|&l| l <= usize::MAX as u64 / 2)
        .ok_or_else(|| Error::invalid(what, Bytes(len), "larger than the address space"))
}

/// Maps `len` bytes (whole pages) of `kind` memory aligned to `align`: the
/// one place pool memory is mapped, so that every caller reports a hugetlb
/// shortfall the same way.
pub(super) fn map(kind: PageKind, len: u64, align: u64, shared: bool) -> Result<Arc<Mapping>> {
    check_capacity(kind, len)?;
    let len_usize = usize::try_from(len).map_err(|_| Error::invalid("pool size", Bytes(len), "too large"))?;
    let align = usize::try_from(align).map_err(|_| Error::invalid("alignment", align, "too large"))?;
    let mapped = if shared {
        Mapping::map_shared(len_usize, backing(kind), align)
    } else {
        Mapping::map(len_usize, backing(kind), align)
    };
    match mapped {
        Ok(m) => Ok(Arc::new(m)),
        // hugetlb: the pages were taken between our check and mmap.
        Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && kind.is_hugetlb() => {
            Err(check_capacity(kind, len).err().unwrap_or(Error::os("mmap", e)))
        }
        Err(e) => Err(Error::os("mmap", e)),
    }
}

fn hugetlb_need(kind: PageKind, len: u64) -> Result<()> {
    let hp = HugePages::read(kind);
    let needed = len.div_ceil(kind.bytes());
    if !hp.present {
        return Err(Error::PageSizeUnavailable {
            page: kind,
            reason: format!("{} does not exist", HugePages::sysfs_dir(kind).display()),
        });
    }
    let avail = hp.available();
    if avail < needed {
        return Err(Error::HugePagesUnavailable {
            page: kind,
            needed,
            free: avail,
            want_total: hp.total.saturating_add(needed - avail),
            sysfs: HugePages::nr_hugepages_path(kind),
        });
    }
    Ok(())
}

/// Whether the machine can supply `len` bytes of `kind` pages now.
pub(super) fn check_capacity(kind: PageKind, len: u64) -> Result<()> {
    if kind.is_hugetlb() {
        return hugetlb_need(kind, len);
    }
    if let Some(avail) = mem_available() {
        if len > avail {
            return Err(Error::InsufficientMemory { needed: Bytes(len), available: Bytes(avail) });
        }
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 =
        s.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    kb.checked_mul(1024)
}

/// The page kind a policy gives for a pool of `size` bytes, and why.
pub(super) fn choose(size: u64, policy: PagePolicy) -> Result<(PageKind, String)> {
    let fixed = |k: PageKind| Ok((k, format!("{k} pages, as asked")));
    match policy {
        PagePolicy::Huge1G => fixed(PageKind::Huge1G),
        PagePolicy::Huge2M => fixed(PageKind::Huge2M),
        PagePolicy::Transparent => {
            let mode = ThpMode::read();
            if !mode.is_usable() {
                return Err(Error::PageSizeUnavailable {
                    page: PageKind::Transparent,
                    reason: format!(
                        "transparent huge pages are {mode:?} in /sys/kernel/mm/transparent_hugepage/enabled"
                    ),
                });
            }
            fixed(PageKind::Transparent)
        }
        PagePolicy::Base => fixed(PageKind::Base),
        PagePolicy::Auto => Ok(choose_auto(size)),
    }
}

fn choose_auto(size: u64) -> (PageKind, String) {
    let mut tried = Vec::new();
    for kind in [PageKind::Huge1G, PageKind::Huge2M] {
        let page = kind.bytes();
        // A size that overflows when rounded cannot use this page size.
        let Some(rounded) = size.checked_next_multiple_of(page) else {
            tried.push(format!("{kind}: the size overflows when rounded to {}", Bytes(page)));
            continue;
        };
        // Skip a page size that would inflate the pool by more than 1/8.
        if rounded - size > size / 8 {
            tried.push(format!("{kind}: pool not a multiple of {}", Bytes(page)));
            continue;
        }
        let hp = HugePages::read(kind);
        let needed = rounded / page;
        if hp.present && hp.available() >= needed {
            return (kind, format!("auto: {kind} ({needed} pages needed, {} free)", hp.available()));
        }
        tried.push(format!("{kind}: {} free, {needed} needed", hp.available()));
    }
    let mode = ThpMode::read();
    if mode.is_usable() && size >= PageKind::Transparent.bytes() {
        tried.push(format!("THP is {mode:?}"));
        return (PageKind::Transparent, format!("auto: transparent huge pages ({})", tried.join("; ")));
    }
    tried.push(format!("THP {mode:?} or pool under 2 MiB"));
    (PageKind::Base, format!("auto: 4 KiB base pages ({})", tried.join("; ")))
}
