//! The memlock planner: what a configuration pins and is charged, what the
//! process has, whether it fits, and what to change when it does not.
//!
//! What the kernel charges (Linux 6.18, io_uring/rsrc.c and memmap.c):
//! - registering buffers charges their pages (a huge page once per table)
//!   to the user's `locked_vm`, checked against RLIMIT_MEMLOCK, unless the
//!   process has CAP_IPC_LOCK, and adds them to the process's VmPin in any
//!   case; a clone charges nothing (the entries are shared);
//! - since 6.14 each ring's own memory (SQ/CQ rings and SQE array) is
//!   charged the same way (not to VmPin), so many rings need limit too.
//!
//! Ring memory is measured by trial where the process can (root: a few
//! short-lived children under a scratch uid and a lowered limit find the
//! smallest limit a ring fits in) and computed from the kernel's own ring
//! layout otherwise.

use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::probe::{has_cap_ipc_lock, parse_kernel_version, Features};
use crate::types::{HugePages, PageKind, PagePolicy, Sharing};
use crate::units::Bytes;

/// A configuration to plan for.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// Pool size (rounded up to whole pages).
    pub pool_bytes: u64,
    /// Rings that use the pool (worker rings; the template is counted
    /// apart).
    pub rings: u32,
    /// Page policy of the pool.
    pub page: PagePolicy,
    /// How rings get the table: `Clone` (the pool pinned once), or
    /// `RegisterEach` (once per ring and once for the template);
    /// `Unregistered` pins nothing; `Auto` is clone where the kernel has it.
    pub sharing: Sharing,
    /// Submission queue entries of each ring (an IoPool's worker rings have
    /// depth + 1).
    pub entries: u32,
    /// Measure ring memory by trial (forks short-lived children; needs
    /// root). Otherwise it is computed from the kernel's ring layout.
    pub trial: bool,
}

impl PlanRequest {
    /// `pool_bytes` for `rings` rings of 129 entries (an IoPool's default
    /// depth + 1), page policy Auto, sharing Auto, no trial.
    pub fn new(pool_bytes: u64, rings: u32) -> PlanRequest {
        PlanRequest { pool_bytes, rings, page: PagePolicy::Auto, sharing: Sharing::Auto, entries: 129, trial: false }
    }
}

/// What a configuration pins and is charged, what the process has, and
/// whether it fits ([`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Plan {
    /// Pool size, rounded up to whole pages.
    pub pool_bytes: u64,
    /// Rings planned for.
    pub rings: u32,
    /// Pages that would back the pool ("2M", "1G", "thp", "4k").
    pub page_size: String,
    /// "clone", "register-each" or "unregistered".
    pub sharing: String,
    /// Bytes of registered buffers (VmPin): the pool once with clone, once
    /// per ring plus the template with register-each.
    pub pinned_bytes: u64,
    /// Memory of one ring charged to RLIMIT_MEMLOCK (0 where the kernel
    /// does not charge ring memory; a process with CAP_IPC_LOCK is charged
    /// nothing at all).
    pub ring_bytes_each: u64,
    /// How `ring_bytes_each` was found: "trial", "kernel layout", or "not
    /// charged".
    pub ring_bytes_source: String,
    /// What RLIMIT_MEMLOCK must allow a process without CAP_IPC_LOCK:
    /// pinned bytes and ring memory (the rings and the template's).
    pub memlock_needed_bytes: u64,
    /// The soft RLIMIT_MEMLOCK (`None`: unlimited).
    pub memlock_limit_bytes: Option<u64>,
    /// Whether the process has CAP_IPC_LOCK.
    pub cap_ipc_lock: bool,
    /// Huge pages the pool needs (0 for THP and base pages).
    pub hugepages_needed: u64,
    /// Huge pages of that size free now.
    pub hugepages_free: u64,
    /// Whether the configuration fits now (other processes of the same user
    /// that lock memory share the limit: it assumes none).
    pub fits: bool,
    /// What to change, exactly, when it does not fit (and notes when it
    /// does).
    pub advice: Vec<String>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = self.memlock_limit_bytes.map_or("unlimited".to_string(), |l| Bytes(l).to_string());
        write!(
            f,
            "{} of {} pages, {} rings, {}: pins {}, needs {} of RLIMIT_MEMLOCK (limit {limit}{}); {}",
            Bytes(self.pool_bytes),
            self.page_size,
            self.rings,
            self.sharing,
            Bytes(self.pinned_bytes),
            Bytes(self.memlock_needed_bytes),
            if self.cap_ipc_lock { ", CAP_IPC_LOCK: not charged" } else { "" },
            if self.fits { "fits" } else { "does not fit" }
        )?;
        for a in &self.advice {
            write!(f, "; {a}")?;
        }
        Ok(())
    }
}

/// Plans `req` for this process now.
///
/// # Errors
/// [`Error::InvalidArgument`] for a pool of 0 bytes or larger than the
/// address space, 0 rings or entries outside 1..=32768;
/// [`Error::PageSizeUnavailable`] for THP asked where it is off.
pub fn plan(req: &PlanRequest) -> Result<Plan> {
    if req.pool_bytes == 0 {
        return Err(Error::invalid("pool size", 0, "at least one page"));
    }
    crate::ring::check_depth(req.entries)?;
    let (kind, _) = crate::memory::choose_pages(req.pool_bytes, req.page)?;
    let pool_bytes = req
        .pool_bytes
        .checked_next_multiple_of(kind.bytes())
        .filter(|&l| l <= usize::MAX as u64 / 2)
        .ok_or_else(|| Error::invalid("pool size", Bytes(req.pool_bytes), "larger than the address space"))?;
    let features = Features::get();
    let sharing = match req.sharing {
        Sharing::Auto if features.clone_buffers => Sharing::Clone,
        Sharing::Auto => Sharing::RegisterEach,
        s => s,
    };
    let pinned_bytes = match sharing {
        Sharing::Clone => pool_bytes,
        Sharing::RegisterEach => pool_bytes.saturating_mul(u64::from(req.rings) + 1),
        _ => 0,
    };
    let cap_ipc_lock = has_cap_ipc_lock();
    let (ring_bytes_each, source) = ring_charge(req.entries, req.trial);
    let (template_ring, _) = ring_charge(4, req.trial);
    let ring_bytes_source = source.to_string();
    let memlock_needed_bytes =
        pinned_bytes.saturating_add(ring_bytes_each.saturating_mul(u64::from(req.rings))).saturating_add(template_ring);
    let memlock_limit_bytes = crate::sys::os::memlock_limit().ok().flatten();
    let (hugepages_needed, hugepages_free) =
        if kind.is_hugetlb() { (pool_bytes / kind.bytes(), HugePages::read(kind).available()) } else { (0, 0) };
    let memlock_ok = cap_ipc_lock || memlock_limit_bytes.is_none_or(|l| memlock_needed_bytes <= l);
    let pages_ok = hugepages_needed <= hugepages_free;
    let mut p = Plan {
        pool_bytes,
        rings: req.rings,
        page_size: page_name(kind).to_string(),
        sharing: sharing_name(sharing).to_string(),
        pinned_bytes,
        ring_bytes_each,
        ring_bytes_source,
        memlock_needed_bytes,
        memlock_limit_bytes,
        cap_ipc_lock,
        hugepages_needed,
        hugepages_free,
        fits: memlock_ok && pages_ok,
        advice: Vec::new(),
    };
    advise(&mut p, kind, req, memlock_ok, pages_ok);
    Ok(p)
}

fn page_name(kind: PageKind) -> &'static str {
    match kind {
        PageKind::Huge1G => "1G",
        PageKind::Huge2M => "2M",
        PageKind::Transparent => "thp",
        PageKind::Base => "4k",
    }
}

fn sharing_name(s: Sharing) -> &'static str {
    match s {
        Sharing::Clone => "clone",
        Sharing::RegisterEach => "register-each",
        Sharing::Unregistered => "unregistered",
        Sharing::Auto => "auto",
    }
}

fn advise(p: &mut Plan, kind: PageKind, req: &PlanRequest, memlock_ok: bool, pages_ok: bool) {
    if !memlock_ok {
        let kib = p.memlock_needed_bytes.div_ceil(1024);
        let limit = p.memlock_limit_bytes.map_or("unlimited".into(), |l| Bytes(l).to_string());
        p.advice.push(format!(
            "RLIMIT_MEMLOCK is {limit}; {} is needed: `ulimit -l {kib}` (or unlimited) in the shell that starts it",
            Bytes(p.memlock_needed_bytes)
        ));
        p.advice.push(format!("systemd: LimitMEMLOCK={} in the unit's [Service] section", p.memlock_needed_bytes));
        p.advice.push(format!("/etc/security/limits.conf: `<user> - memlock {kib}` (then log in again)"));
        p.advice.push(
            "or give the process CAP_IPC_LOCK (AmbientCapabilities=CAP_IPC_LOCK, or setcap cap_ipc_lock+ep on the \
             binary): nothing is charged then"
                .into(),
        );
        if p.sharing == "register-each" && req.rings > 0 {
            p.advice.push(format!(
                "or share by clone (Linux 6.12+): the pool is pinned once, {} instead of {}",
                Bytes(p.pool_bytes),
                Bytes(p.pinned_bytes)
            ));
        }
    }
    if !pages_ok {
        let hp = HugePages::read(kind);
        let want = hp.total.saturating_add(p.hugepages_needed - p.hugepages_free);
        p.advice.push(format!(
            "{} huge pages of {} are needed and {} are free: `echo {want} > {}` (as root), or a smaller pool, or \
             --page auto to fall back",
            p.hugepages_needed,
            page_name(kind),
            p.hugepages_free,
            HugePages::nr_hugepages_path(kind).display()
        ));
    }
    if p.fits && !p.cap_ipc_lock && p.ring_bytes_each > 0 {
        p.advice.push(format!(
            "ring memory is charged to RLIMIT_MEMLOCK on this kernel: {} per ring",
            Bytes(p.ring_bytes_each)
        ));
    }
}

/// Ring memory charged per ring of `entries`, by trial where this process
/// can (root), from the kernel's ring layout otherwise; and the source.
pub(crate) fn ring_charge_probe(entries: u32) -> (u64, &'static str) {
    ring_charge(entries, true)
}

/// Ring memory charged per ring of `entries` (and its source).
fn ring_charge(entries: u32, trial: bool) -> (u64, &'static str) {
    let Some((major, minor)) = parse_kernel_version(&Features::get().kernel) else { return (0, "not charged") };
    if (major, minor) < (6, 14) {
        return (0, "not charged (before Linux 6.14)");
    }
    type Cached = (u32, bool, u64, &'static str);
    static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());
    let cached =
        CACHE.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|c| c.0 == entries && c.1 == trial).copied();
    if let Some((_, _, bytes, source)) = cached {
        return (bytes, source);
    }
    let opts = crate::ring::RingOptions { entries, ..crate::ring::RingOptions::default() };
    let layout = crate::ring::build_io_uring(&opts).ok().map(|(r, _)| crate::sys::trial::ring_layout_bytes(&r));
    let measured = if trial { charge_by_trial(&opts, layout.unwrap_or(64 << 10)) } else { None };
    let (bytes, source) = match (measured, layout) {
        (Some(m), _) => (m, "trial"),
        (None, Some(l)) => (l, "kernel layout"),
        (None, None) => (0, "not charged"),
    };
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).push((entries, trial, bytes, source));
    (bytes, source)
}

/// The smallest RLIMIT_MEMLOCK under which a ring of `opts` sets up, for a
/// user that has nothing else locked: a binary search over whole pages up
/// to 16 times `hint`, each step in a child under a scratch uid of its own
/// (a ring's charge is released asynchronously when it closes, so no uid
/// is used twice). Root only; `None` otherwise or when a step fails oddly.
fn charge_by_trial(opts: &crate::ring::RingOptions, hint: u64) -> Option<u64> {
    if crate::sys::socket::euid() != 0 {
        return None;
    }
    // Scratch uids high in the 32-bit range: 256 per process, none used
    // twice (a closed ring's charge is released later, asynchronously).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let fits = |limit: u64| -> Option<bool> {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n >= 0x100 {
            return None;
        }
        let uid = 0x7ff0_0000 + (std::process::id() % 0x1000) * 0x100 + n;
        crate::sys::trial::ring_fits_under(limit, uid, opts.entries)
    };
    let page = crate::sys::trial::page_size();
    let (mut lo, mut hi) = (0u64, hint.saturating_mul(16).div_ceil(page));
    if !fits(hi * page)? {
        return None;
    }
    // fits(lo) is false (a ring needs some memory), fits(hi) true.
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(mid * page)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi * page)
}
