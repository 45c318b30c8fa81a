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

use crate::error::{Error, Result};
use crate::probe::{has_cap_ipc_lock, Features};
use crate::stats::{page_name, Plan};
use crate::types::{Bytes, HugePages, PageKind, PagePolicy, Sharing, TablePath, MAX_RING_ENTRIES};

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

    /// Plans this configuration for this process now: what it pins and is
    /// charged, what the process has, whether it fits, and what to change.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a pool of 0 bytes or larger than the
    /// address space, 0 rings, or entries outside 1..=32768;
    /// [`Error::PageSizeUnavailable`] for THP asked where it is off.
    pub fn plan(&self) -> Result<Plan> {
        plan(self)
    }
}

/// Plans `req` (see [`PlanRequest::plan`]).
fn plan(req: &PlanRequest) -> Result<Plan> {
    if req.pool_bytes == 0 {
        return Err(Error::invalid("pool size", 0, "at least one page"));
    }
    if req.rings == 0 {
        return Err(Error::invalid("rings", 0, "plan for at least one ring"));
    }
    if req.entries == 0 || req.entries > MAX_RING_ENTRIES {
        return Err(Error::invalid("ring entries", req.entries, "it must be from 1 to 32768"));
    }
    let (kind, _) = crate::memory::choose_pages(req.pool_bytes, req.page)?;
    let pool_bytes = req
        .pool_bytes
        .checked_next_multiple_of(kind.bytes())
        .filter(|&l| l <= usize::MAX as u64 / 2)
        .ok_or_else(|| Error::invalid("pool size", Bytes(req.pool_bytes), "larger than the address space"))?;
    let features = Features::get();
    let sharing = match req.sharing {
        Sharing::Auto if features.clone_buffers => TablePath::Cloned,
        Sharing::Auto | Sharing::RegisterEach => TablePath::Registered,
        Sharing::Clone => TablePath::Cloned,
        Sharing::Unregistered => TablePath::Unregistered,
    };
    let pinned_bytes = match sharing {
        TablePath::Cloned => pool_bytes,
        TablePath::Registered => pool_bytes.saturating_mul(u64::from(req.rings) + 1),
        _ => 0,
    };
    let cap_ipc_lock = has_cap_ipc_lock();
    let (ring_bytes_each, source) = ring_charge(req.entries, req.trial);
    let (template_ring, _) = ring_charge(crate::template::TEMPLATE_ENTRIES, req.trial);
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
        page_size: kind,
        sharing,
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
    advise(&mut p, kind, memlock_ok, pages_ok);
    Ok(p)
}

fn advise(p: &mut Plan, kind: PageKind, memlock_ok: bool, pages_ok: bool) {
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
        if p.sharing == TablePath::Registered {
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

/// Ring memory charged per ring of `entries` (and its source): computed
/// from the kernel's ring layout (no ring is set up), or, with `trial`,
/// measured.
fn ring_charge(entries: u32, trial: bool) -> (u64, &'static str) {
    let f = Features::get();
    if !crate::quirks::ring_memory_charged(f) {
        return (0, "not charged (before Linux 6.14)");
    }
    // Set up as ringpool's rings are: SINGLE_ISSUER | DEFER_TASKRUN (which
    // do not change the layout), twice as many CQEs, rounded up to powers
    // of two by the kernel.
    let sq = entries.next_power_of_two();
    let layout = crate::sys::trial::ring_layout_bytes(sq, sq.saturating_mul(2), 0, f.cqes_offset);
    if !trial {
        return (layout, "kernel layout");
    }
    match crate::sys::trial::smallest_limit_for_ring(entries, layout) {
        Some(m) => (m, "trial"),
        None => (layout, "kernel layout"),
    }
}
