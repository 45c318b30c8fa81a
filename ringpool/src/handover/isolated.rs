//! Rings for clients kept apart: a ring whose table holds only the
//! client's own segments (a ranged clone of each of its lease ranges; the
//! other slots stay empty, so fixed I/O there is EFAULT), with a layout
//! that carries only those segments' memfds. The owner keeps the ring to
//! take the slots out again when the segments go back
//! ([`IsolatedRing::revoke`]).

use std::ops::Range;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::HandedRing;
use crate::error::{Error, Result};
use crate::memory::SegmentReservation;
use crate::sys;
use crate::sys::mmap::Mapping;
use crate::table::BufferTable;
use crate::types::CloneRange;
use crate::uring::{self, Setup};

/// The owner's handle on a ring handed to an isolated client, and the
/// slots it holds.
pub(crate) struct IsolatedRing {
    ring: sys::uring::Uring,
    ranges: Vec<Range<u16>>,
}

impl IsolatedRing {
    /// Takes slots `range` out of the ring if it holds them (the segments
    /// went back): fixed I/O there is EFAULT from now on, and the kernel
    /// drops its reference to their pages. Its process may have cloned its
    /// slots elsewhere in its table (clones are allowed on a restricted
    /// ring): a ring left with no range loses its whole table (unregister),
    /// one with ranges left gets a table of just those in one step
    /// ([`Template::rebuild`](crate::template::Template::rebuild)). Returns
    /// whether the ring holds no slot any more (the owner may close it).
    pub(crate) fn revoke(&mut self, table: &BufferTable, range: &Range<u16>) -> bool {
        let Some(i) = self.ranges.iter().position(|r| r == range) else { return self.ranges.is_empty() };
        let r = self.ranges.remove(i);
        let done = if self.ranges.is_empty() {
            uring::unregister(&self.ring, true)
        } else {
            table.template.rebuild(&self.ring, &self.ranges)
        };
        if let Err(e) = done {
            tracing::warn!("could not take the whole table out of a client's ring ({e}); taking out slots {r:?}");
            if let Err(e) = table.template.take_out(&self.ring, r.clone()) {
                tracing::warn!("could not take slots {r:?} out of a client's ring: {e}");
            }
        }
        self.ranges.is_empty()
    }

    /// The slots it holds.
    pub(crate) fn ranges(&self) -> &[Range<u16>] {
        &self.ranges
    }
}

impl BufferTable {
    /// A ring for a client that may reach only segments `ranges`: set up
    /// disabled and not SINGLE_ISSUER (the owner takes slots out of it
    /// later), with only those slots cloned in, and a layout with only
    /// their memory (`present`: each segment's memory, which its template
    /// slot holds). `reservation`: the lease segments of the process that
    /// enables it, among `ranges`. `restrict`: for a client of another
    /// user ([`sys::uring::restrict_for_client`]).
    pub(crate) fn handover_isolated(
        &self,
        entries: u32,
        ranges: &[Range<u16>],
        present: &[(u16, Arc<Mapping>)],
        reservation: Option<SegmentReservation>,
        restrict: bool,
    ) -> Result<(HandedRing, IsolatedRing)> {
        let t = &self.template;
        self.check_handover(entries)?;
        if ranges.is_empty() || ranges.iter().any(|r| r.is_empty() || r.end > t.entries()) {
            return Err(Error::invalid("segments of an isolated client", format!("{ranges:?}"), "within the table"));
        }
        let growing = t.memory.growth_lock();
        let (layout, memfds) = t.memory.isolated_layout(t.entries(), present)?;
        let setup = Setup { single_issuer: false, defer_taskrun: false, disabled: true, ..Setup::plain(entries) };
        let (ring, _) = uring::setup(&setup)?;
        for (k, r) in ranges.iter().enumerate() {
            let (at, n) = (u32::from(r.start), u32::from(r.end - r.start));
            let range = CloneRange::range(at, at, n);
            // The first clone makes the ring's table (its slots below `at`
            // empty); the others fill slots of it.
            let range = if k == 0 { range } else { range.replace() };
            uring::clone_into(&ring, t.fd(), u32::from(t.source_len()), range)?;
        }
        drop(growing);
        if restrict {
            super::restrict_and_enable(&ring)?;
        }
        let params = sys::handoff::params_bytes(&ring);
        sys::handoff::remember_layout(&ring);
        let fd = ring.as_fd().try_clone_to_owned().map_err(|e| Error::os("dup ring fd", e))?;
        tracing::debug!(?ranges, "ring set up for an isolated client");
        let handed = HandedRing::assemble(fd, params, layout, memfds, reservation, None, restrict)?;
        Ok((handed, IsolatedRing { ring, ranges: ranges.to_vec() }))
    }
}
