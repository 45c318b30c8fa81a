//! A blank table: a ring with an empty (sparse) buffer table of the most
//! slots a table can have, made on first use. Slots of a ring handed to
//! another process are emptied by a DST_REPLACE clone of the same range
//! from it: empty source slots become empty destination slots, and the
//! kernel drops the ring's references to what they held (I/O in flight
//! there completes first), as a buffers update with empty iovecs would.
//! Unlike a buffers update, a clone is allowed on a ring restricted for a
//! client of another user ([`crate::sys::uring::restrict_for_client`]).
//! Where ranged clones are missing (Linux 6.12), a buffers update does it
//! on a ring that is not restricted.

use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::sys::uring::Uring;
use crate::types::CloneRange;
use crate::uring::{self, Setup};

/// The most slots a buffer table has (IORING_MAX_REG_BUFFERS).
const MAX_SLOTS: u16 = 1 << 14;

pub(crate) struct Blank {
    ring: OnceLock<Uring>,
}

/// A ring with an empty table of `MAX_SLOTS` slots.
fn blank_ring() -> Result<Uring> {
    let (b, _) = uring::setup(&Setup::plain(1))?;
    crate::sys::uring::register_sparse(&b, u32::from(MAX_SLOTS)).map_err(|e| Error::os("register a blank table", e))?;
    Ok(b)
}

impl Blank {
    /// A blank table, not made yet.
    pub(crate) fn new() -> Blank {
        Blank { ring: OnceLock::new() }
    }

    /// Makes the blank ring now (a table over a shared pool, whose rings
    /// go to other processes, will need it: its descriptor is then part of
    /// the owner's baseline rather than appearing at the first shrink).
    pub(crate) fn make(&self) -> Result<&Uring> {
        if let Some(b) = self.ring.get() {
            return Ok(b);
        }
        let b = blank_ring()?;
        Ok(self.ring.get_or_init(|| b))
    }

    /// Empties slots `range` of `ring` (a ring whose process dropped its
    /// table gets empty slots).
    pub(crate) fn take_out(&self, ring: &io_uring::IoUring, range: Range<u16>) -> Result<()> {
        let blank = self.make()?;
        let (at, n) = (u32::from(range.start), u32::from(range.end - range.start));
        let cloned = uring::clone_into(ring, blank.fd(), u32::from(MAX_SLOTS), CloneRange::range(at, at, n).replace());
        match cloned {
            Ok(()) => Ok(()),
            // No ranged clone here (6.12): a buffers update, where allowed.
            Err(e) => match uring::clear(ring, range.start, range.end - range.start) {
                Ok(()) => Ok(()),
                Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENXIO) => Ok(()),
                Err(_) => Err(e),
            },
        }
    }

    /// Replaces `ring`'s whole table, in one step, with one that holds
    /// slots `ranges` of the template (fd `src`, `source_len` slots) and
    /// nothing else: what its process may have cloned elsewhere in its
    /// table goes too. The table then has the most slots a table can have.
    pub(crate) fn rebuild(
        &self,
        ring: &io_uring::IoUring,
        src: RawFd,
        source_len: u32,
        ranges: &[Range<u16>],
    ) -> Result<()> {
        let staging = blank_ring()?;
        for r in ranges {
            let (at, n) = (u32::from(r.start), u32::from(r.end - r.start));
            uring::clone_into(&staging, src, source_len, CloneRange::range(at, at, n).replace())?;
        }
        let all = u32::from(MAX_SLOTS);
        uring::clone_into(ring, staging.fd(), all, CloneRange::range(0, 0, all).replace())
    }
}
