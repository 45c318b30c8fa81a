//! Machine-wide state changed under one lock, and given back: hugetlb
//! pages reserved through sysfs.
//!
//! Changing `nr_hugepages` changes the whole machine, so every change is made
//! under [`MachineLock`] (a lock file shared by ringpool's tests and
//! benchmarks) and undone when the [`HugePageReservation`] is dropped, when
//! [`restore_all`] runs (from a Ctrl-C handler), or on unwinding.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use ringpool::types::{HugePages, PageKind};
use ringpool::{Error, Result};

/// The lock file serialising changes to machine-wide state.
pub const MACHINE_LOCK_PATH: &str = "/tmp/ringpool-machine-state.lock";

/// An exclusive lock on [`MACHINE_LOCK_PATH`], held until dropped.
#[derive(Debug)]
pub struct MachineLock {
    _file: File,
}

impl MachineLock {
    /// Waits for the lock.
    ///
    /// # Errors
    /// [`Error::Io`] if the lock file cannot be opened or locked.
    pub fn acquire() -> Result<MachineLock> {
        let file = File::options().create(true).truncate(false).write(true).open(MACHINE_LOCK_PATH).map_err(|e| {
            Error::Io { op: "open lock", path: Some(MACHINE_LOCK_PATH.into()), offset: None, source: e }
        })?;
        file.lock().map_err(|e| Error::Io {
            op: "lock",
            path: Some(MACHINE_LOCK_PATH.into()),
            offset: None,
            source: e,
        })?;
        Ok(MachineLock { _file: file })
    }
}

/// Original `nr_hugepages` values to write back, for [`restore_all`].
static ACTIVE: Mutex<Vec<(usize, PathBuf, u64)>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Huge pages reserved through sysfs; the previous count is written back on
/// drop.
#[derive(Debug)]
pub struct HugePageReservation {
    id: usize,
    page: PageKind,
    path: PathBuf,
    previous: u64,
    added: u64,
    _lock: MachineLock,
}

impl HugePageReservation {
    /// Makes at least `pages` pages of `page` available, raising
    /// `nr_hugepages` by exactly the shortfall (needs root). Holds the
    /// machine lock until dropped.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a non-hugetlb page kind;
    /// [`Error::Io`] writing sysfs (not root); [`Error::HugePagesUnavailable`]
    /// when the kernel could not find enough contiguous memory (the count is
    /// restored first).
    pub fn ensure_available(page: PageKind, pages: u64) -> Result<HugePageReservation> {
        if !matches!(page, PageKind::Huge1G | PageKind::Huge2M) {
            return Err(Error::InvalidArgument {
                what: "page size",
                value: page.to_string(),
                reason: "only hugetlb pages (1g, 2m) can be reserved".into(),
            });
        }
        let lock = MachineLock::acquire()?;
        let path = HugePages::nr_hugepages_path(page);
        let hp = HugePages::read(page);
        if !hp.present {
            return Err(Error::PageSizeUnavailable { page, reason: format!("{} does not exist", path.display()) });
        }
        let short = pages.saturating_sub(hp.available());
        // The count to give back is the persistent pool: surplus pages (a
        // closed ring's buffers still being unpinned in the background) leave
        // by themselves, and restoring them would leave pages behind.
        let mut r = HugePageReservation {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            page,
            path: path.clone(),
            previous: hp.persistent(),
            added: 0,
            _lock: lock,
        };
        if short == 0 {
            return Ok(r);
        }
        if let Ok(mut a) = ACTIVE.lock() {
            a.push((r.id, path.clone(), r.previous));
        }
        let target = hp.total + short;
        std::fs::write(&path, target.to_string()).map_err(|e| Error::Io {
            op: "reserve huge pages",
            path: Some(path.clone()),
            offset: None,
            source: e,
        })?;
        r.added = short;
        let mut now = HugePages::read(page);
        // Pages still held by a closed ring come back within moments.
        for _ in 0..20 {
            if now.available() >= pages {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            now = HugePages::read(page);
        }
        if now.available() < pages {
            // The kernel found too few free contiguous ranges: compact memory
            // once and ask again (1 GiB pages need 1 GiB of contiguous RAM).
            tracing::info!(%page, got = now.available(), pages, "compacting memory to find contiguous huge pages");
            let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
            let _ = std::fs::write(&path, target.to_string());
            now = HugePages::read(page);
        }
        if now.available() < pages {
            let got = now.available();
            drop(r);
            return Err(Error::HugePagesReserveFailed { page, needed: pages, got, sysfs: path });
        }
        tracing::info!(%page, added = short, total = target, "reserved huge pages");
        Ok(r)
    }

    /// Pages this reservation added to the pool.
    pub fn added(&self) -> u64 {
        self.added
    }

    /// The page size.
    pub fn page(&self) -> PageKind {
        self.page
    }

    /// `nr_hugepages` before the reservation.
    pub fn previous(&self) -> u64 {
        self.previous
    }
}

impl Drop for HugePageReservation {
    fn drop(&mut self) {
        if self.added == 0 {
            return;
        }
        if let Err(e) = std::fs::write(&self.path, self.previous.to_string()) {
            tracing::error!(path = %self.path.display(), "could not restore nr_hugepages to {}: {e}", self.previous);
        }
        if let Ok(mut a) = ACTIVE.lock() {
            a.retain(|(id, _, _)| *id != self.id);
        }
    }
}

/// Writes back every reservation's previous count now (for a Ctrl-C
/// handler that is about to exit the process).
pub fn restore_all() {
    let list = match ACTIVE.lock() {
        Ok(mut a) => std::mem::take(&mut *a),
        Err(_) => return,
    };
    for (_, path, prev) in list {
        let _ = std::fs::write(&path, prev.to_string());
    }
}

/// Resets /dev/zram0 (its size back to 0), retrying for up to 10 s while
/// the device is busy: a ring being torn down in the background, in this
/// process or one that just exited, may still hold it for a moment
/// (EBUSY). Whether it is free now.
pub fn reset_zram() -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reset = std::fs::write("/sys/block/zram0/reset", "1");
        let size = std::fs::read_to_string("/sys/block/zram0/disksize").unwrap_or_default();
        if size.trim() == "0" {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            eprintln!("zram0 could not be reset ({reset:?}): reset it by hand (echo 1 > /sys/block/zram0/reset)");
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
