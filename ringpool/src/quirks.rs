//! Kernel-quirk guards: what this kernel does where kernels have been
//! found to differ or to be wrong, and what ringpool does about it. Each
//! guard is a small trial (`observe_*`), a pure judgement (`judge_*`), so
//! that tests can hand a judgement the observation of a broken kernel this
//! machine cannot produce, and the predicate the library calls where it
//! depends on the quirk: one home for each workaround.

use std::time::Duration;

use crate::file::DirectFile;
use crate::probe::{parse_kernel_version, DstReplace, Features};

/// How a kernel behaves for one quirk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum QuirkState {
    /// Correct on this kernel.
    Works,
    /// This kernel has the problem; ringpool works around it.
    Broken,
    /// The feature is not in this kernel.
    Absent,
    /// Could not be tried here (and why is in `detail`).
    Untested,
}

/// One guard's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Quirk {
    /// Short name.
    pub name: &'static str,
    /// How this kernel behaves.
    pub state: QuirkState,
    /// What ringpool does about it here.
    pub what_ringpool_does: String,
    /// What was observed.
    pub detail: String,
}

/// Every guard that needs no FUSE mount, tried now (creates small rings,
/// maps a little memory; the cross-process trial forks a child, and the
/// ring-memory trial forks a few when running as root).
pub fn quirks() -> Vec<Quirk> {
    vec![
        judge_dst_replace(&Features::get().dst_replace),
        judge_ring_memory(observe_ring_memory()),
        judge_clone_across_processes(observe_clone_across_processes()),
        judge_populated_registration(observe_populated_registration()),
    ]
}

// --- DST_REPLACE and the entries after the range -------------------------
// Upstream 525916ce4966 ("io_uring/rsrc: don't drop entries past the
// replaced range"): on 6.13 to 6.18 before the stable fix, a ranged clone
// with IORING_REGISTER_DST_REPLACE dropped the destination's entries after
// the cloned range. probe.rs checks entries on both sides of the range.

/// The DST_REPLACE guard, from the start-up self-test.
pub(crate) fn judge_dst_replace(observed: &DstReplace) -> Quirk {
    let name = "dst_replace_keeps_entries_outside_range";
    match observed {
        DstReplace::Works => Quirk {
            name,
            state: QuirkState::Works,
            what_ringpool_does: "rings follow growth and shrink with a ranged DST_REPLACE clone of the changed slots"
                .into(),
            detail: "a clone over entries 1..3 of 4 kept entries 0 and 3 and replaced 1 and 2".into(),
        },
        DstReplace::Broken(why) => Quirk {
            name,
            state: QuirkState::Broken,
            what_ringpool_does: "rings re-clone their whole table on growth and shrink (Refresh::Auto)".into(),
            detail: why.clone(),
        },
        DstReplace::Unsupported => Quirk {
            name,
            state: QuirkState::Absent,
            what_ringpool_does: "no ranged clone (before Linux 6.13): rings re-clone their whole table".into(),
            detail: "ranged clone is not in this kernel, or the self-test could not run".into(),
        },
    }
}

/// The guard's predicate: whether rings catch up with a ranged
/// DST_REPLACE clone under `Refresh::Auto` (else the whole table again),
/// given what the kernel showed. The table's refresh calls it.
pub(crate) fn ranged_refresh_allowed(f: &Features) -> bool {
    f.clone_ranges && f.dst_replace == DstReplace::Works
}

// --- FUSE short reads -----------------------------------------------------
// Found by ringpool's FUSE fault injection on 6.18: io_uring retries a short
// read of a FUSE file at the same file offset (io_uring/rw.c, the retry of
// a short buffered read), so the bytes past the short part are a second
// copy of its start.

/// The guard's predicate: whether operations on `file` must stay out of
/// io_uring (its file system is FUSE). The engine choice calls it.
pub(crate) fn fuse_bypasses_io_uring(file: &DirectFile) -> bool {
    file.is_fuse()
}

/// The FUSE guard, tried on `file`: `Ok((path, expected))`, a FUSE file
/// whose server answers an 8 KiB read at offset 0 short (with its first
/// 4 KiB), and its first 8 KiB; or why no such file could be made (the
/// guard is then untested).
pub fn fuse_quirk(file: Result<(&std::path::Path, &[u8]), String>) -> Quirk {
    judge_fuse_short_read(file.and_then(|(path, expected)| observe_fuse_short_read(path, expected)))
}

/// What a read through io_uring of a FUSE file whose server answered
/// short showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FuseShortRead {
    /// The bytes after the short part were the file's next bytes (or the
    /// read returned the short count).
    Correct,
    /// They were the short part again.
    Duplicated,
}

/// The FUSE guard. `None`: no trial (no /dev/fuse, not root), with why.
pub(crate) fn judge_fuse_short_read(observed: Result<FuseShortRead, String>) -> Quirk {
    let name = "fuse_short_read_no_duplication";
    let what = "FUSE files never go through io_uring: an IoPool serves them on side threads with preadv2/pwritev2, \
                a Ring runs them inline (preadv2 / pwritev2)";
    match observed {
        Ok(FuseShortRead::Correct) => Quirk {
            name,
            state: QuirkState::Works,
            what_ringpool_does: format!("{what} (a FUSE server may also stall a ring)"),
            detail: "an 8 KiB io_uring read answered short at 4 KiB got the file's next bytes".into(),
        },
        Ok(FuseShortRead::Duplicated) => Quirk {
            name,
            state: QuirkState::Broken,
            what_ringpool_does: what.into(),
            detail: "an 8 KiB io_uring read answered short at 4 KiB got the first 4 KiB twice".into(),
        },
        Err(why) => Quirk { name, state: QuirkState::Untested, what_ringpool_does: what.into(), detail: why },
    }
}

/// Reads 8 KiB at offset 0 of `path` (a FUSE file whose server answers
/// the read short, with 4 KiB) through a plain io_uring READ, and compares
/// with `expected` (the file's first 8 KiB).
pub(crate) fn observe_fuse_short_read(path: &std::path::Path, expected: &[u8]) -> Result<FuseShortRead, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; 8192];
    let n = crate::sys::trial::read_once(std::os::fd::AsFd::as_fd(&file), &mut buf, 0)
        .map_err(|e| format!("io_uring read: {e}"))?;
    if expected.len() < 8192 {
        return Err("the expected data is shorter than 8 KiB".into());
    }
    if n <= 4096 || buf[4096..n] == expected[4096..n] {
        Ok(FuseShortRead::Correct)
    } else if buf[4096..n] == expected[..n - 4096] {
        Ok(FuseShortRead::Duplicated)
    } else {
        Err(format!("read {n} bytes matching neither the file nor a repeat of its start"))
    }
}

// --- Ring memory charged to RLIMIT_MEMLOCK ------------------------------
// Linux 6.14 (io_uring/memmap.c, io_create_region): the SQ/CQ rings and
// the SQE array are charged to the user's locked memory like registered
// buffers (PostgreSQL 18 with 1000 rings under systemd's 8 MiB default).

/// The guard's predicate: whether this kernel charges ring memory to
/// RLIMIT_MEMLOCK (Linux 6.14+). The planner calls it.
pub(crate) fn ring_memory_charged(f: &Features) -> bool {
    parse_kernel_version(&f.kernel).is_some_and(|v| v >= (6, 14))
}

/// Ring memory charged per 129-entry ring, by trial where possible.
pub(crate) fn observe_ring_memory() -> Result<(u64, &'static str), String> {
    parse_kernel_version(&Features::get().kernel).ok_or("unknown kernel version")?;
    if !ring_memory_charged(Features::get()) {
        return Ok((0, "kernel before 6.14"));
    }
    let f = Features::get();
    let sq = 129u32.next_power_of_two();
    let layout = crate::sys::trial::ring_layout_bytes(sq, sq * 2, 0, f.cqes_offset);
    Ok(match crate::sys::trial::smallest_limit_for_ring(129, layout) {
        Some(bytes) => (bytes, "trial"),
        None => (layout, "kernel layout"),
    })
}

/// The ring-memory guard.
pub(crate) fn judge_ring_memory(observed: Result<(u64, &'static str), String>) -> Quirk {
    let name = "ring_memory_not_charged_to_memlock";
    let what = "the planner (ringpool plan, and IoPool's builder before it registers) counts ring memory in \
                memlock_needed_bytes";
    match observed {
        Ok((0, source)) => Quirk {
            name,
            state: QuirkState::Works,
            what_ringpool_does: "nothing to count: rings are not charged".into(),
            detail: source.into(),
        },
        Ok((bytes, "trial")) => Quirk {
            name,
            state: QuirkState::Broken,
            what_ringpool_does: what.into(),
            detail: format!("a 129-entry ring needs {bytes} bytes of RLIMIT_MEMLOCK (measured under a scratch user)"),
        },
        Ok((bytes, source)) => Quirk {
            name,
            state: QuirkState::Untested,
            what_ringpool_does: what.into(),
            detail: format!(
                "not measured (needs root); Linux 6.14+ charges rings: {bytes} bytes for a 129-entry ring by the \
                 {source}"
            ),
        },
        Err(why) => Quirk { name, state: QuirkState::Untested, what_ringpool_does: what.into(), detail: why },
    }
}

// --- Clone across accounting contexts -----------------------------------
// Stable fix of January 2025 ("io_uring/rsrc: require cloned buffers to
// share accounting contexts"): IORING_REGISTER_CLONE_BUFFERS returns EINVAL
// unless source and destination rings belong to the same mm and user.

/// What a forked child's clone from its parent's ring gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrossClone {
    /// Refused (EINVAL).
    Refused,
    /// The clone succeeded.
    Allowed,
}

/// A forked child clones the table of a ring its parent made.
pub(crate) fn observe_clone_across_processes() -> Result<CrossClone, String> {
    let f = Features::get();
    if !f.clone_buffers {
        return Err("no IORING_REGISTER_CLONE_BUFFERS (before Linux 6.12)".into());
    }
    match crate::sys::trial::clone_across_processes().map_err(|e| e.to_string())? {
        0 => Ok(CrossClone::Allowed),
        1 => Ok(CrossClone::Refused),
        c => Err(format!("the child's trial failed (code {c})")),
    }
}

/// The cross-process clone guard.
pub(crate) fn judge_clone_across_processes(observed: Result<CrossClone, String>) -> Quirk {
    let name = "clone_refused_across_accounting_contexts";
    let what = "a ring of another process gets the table from the owner: BufferTable::handover clones into a \
                disabled ring the other process enables (a clone attempted across processes is Error::CrossProcess)";
    match observed {
        Ok(CrossClone::Refused) => Quirk {
            name,
            state: QuirkState::Works,
            what_ringpool_does: what.into(),
            detail: "a forked child's clone from its parent's ring: EINVAL (accounting contexts differ)".into(),
        },
        Ok(CrossClone::Allowed) => Quirk {
            name,
            state: QuirkState::Broken,
            what_ringpool_does: format!(
                "{what}; this kernel predates the fix and would let the child share pages charged to the parent"
            ),
            detail: "a forked child's clone from its parent's ring succeeded".into(),
        },
        Err(why) => Quirk { name, state: QuirkState::Untested, what_ringpool_does: what.into(), detail: why },
    }
}

// --- Registering into a populated table ----------------------------------
// io_uring/rsrc.c headpage_already_acct(): for each huge page of a new
// buffer, the kernel scans every buffer already in the table, so updating
// a populated table costs more the larger it is (39.5 ms for 4 GiB against
// 6-8 ms registered on a helper ring and cloned in, measured here). The
// trial registers 1 GiB into a table holding 1 GiB (2.6 ms against 1.5 ms
// here): 1.5 times the helper's time or more is the scan.

/// The guard's predicate: whether growth registers new memory on a helper
/// ring and clones it into the template (needs a ranged DST_REPLACE clone
/// that keeps the entries outside its range), rather than into the
/// populated template directly. The table's growth calls it.
pub(crate) fn grow_via_helper(f: &Features) -> bool {
    f.clone_ranges && f.dst_replace == DstReplace::Works
}

/// Times registering 1 GiB of 2 MiB pages into a table that holds 1 GiB
/// already, directly and on a helper ring cloned in. Needs 1024 free 2 MiB
/// pages.
pub(crate) fn observe_populated_registration() -> Result<(Duration, Duration), String> {
    use crate::types::{HugePages, PageKind};
    if !grow_via_helper(Features::get()) {
        return Err("no working ranged DST_REPLACE clone: growth registers directly".into());
    }
    let need = 1024;
    let free = HugePages::read(PageKind::Huge2M).available();
    if free < need {
        return Err(format!("needs {need} free 2 MiB huge pages, {free} are free (ringpool probe --reserve)"));
    }
    crate::sys::trial::populated_registration_times().map_err(|e| e.to_string())
}

/// The populated-table guard.
pub(crate) fn judge_populated_registration(observed: Result<(Duration, Duration), String>) -> Quirk {
    let name = "registration_into_populated_table_fast";
    let what = "growth registers the new memory on a helper ring and clones it into the template's free slots";
    match observed {
        Ok((direct, helper)) if direct.as_secs_f64() >= 1.5 * helper.as_secs_f64() => Quirk {
            name,
            state: QuirkState::Broken,
            what_ringpool_does: what.into(),
            detail: format!("into the populated table {direct:?}; on a helper ring and cloned in {helper:?}"),
        },
        Ok((direct, helper)) => Quirk {
            name,
            state: QuirkState::Works,
            what_ringpool_does: format!("{what} all the same"),
            detail: format!("into the populated table {direct:?}; on a helper ring and cloned in {helper:?}"),
        },
        Err(why) => Quirk { name, state: QuirkState::Untested, what_ringpool_does: what.into(), detail: why },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_dst_replace_turns_ranged_refresh_off() {
        let broken = DstReplace::Broken("entry 3 lost".into());
        let q = judge_dst_replace(&broken);
        assert_eq!(q.state, QuirkState::Broken);
        assert!(q.what_ringpool_does.contains("whole table"));
        let mut f = Features::get().clone();
        (f.clone_ranges, f.dst_replace) = (true, broken);
        assert!(!ranged_refresh_allowed(&f) && !grow_via_helper(&f));
        (f.clone_ranges, f.dst_replace) = (true, DstReplace::Works);
        assert!(ranged_refresh_allowed(&f) && grow_via_helper(&f));
        (f.clone_ranges, f.dst_replace) = (false, DstReplace::Works);
        assert!(!ranged_refresh_allowed(&f) && !grow_via_helper(&f));
        assert_eq!(judge_dst_replace(&DstReplace::Unsupported).state, QuirkState::Absent);
    }

    #[test]
    fn every_guard_judges_a_broken_kernel_and_an_untestable_one() {
        let q = judge_fuse_short_read(Ok(FuseShortRead::Duplicated));
        assert_eq!(q.state, QuirkState::Broken);
        assert_eq!(judge_fuse_short_read(Ok(FuseShortRead::Correct)).state, QuirkState::Works);
        assert_eq!(judge_fuse_short_read(Err("no /dev/fuse".into())).state, QuirkState::Untested);
        assert_eq!(judge_ring_memory(Ok((8192, "trial"))).state, QuirkState::Broken);
        assert_eq!(judge_ring_memory(Ok((0, "kernel before 6.14"))).state, QuirkState::Works);
        assert_eq!(judge_ring_memory(Ok((8192, "kernel layout"))).state, QuirkState::Untested);
        assert_eq!(judge_clone_across_processes(Ok(CrossClone::Allowed)).state, QuirkState::Broken);
        assert_eq!(judge_clone_across_processes(Ok(CrossClone::Refused)).state, QuirkState::Works);
        let slow = judge_populated_registration(Ok((Duration::from_millis(40), Duration::from_millis(7))));
        assert_eq!(slow.state, QuirkState::Broken);
        let fast = judge_populated_registration(Ok((Duration::from_millis(7), Duration::from_millis(6))));
        assert_eq!(fast.state, QuirkState::Works);
    }
}
