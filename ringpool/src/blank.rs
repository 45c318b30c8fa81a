//! A blank table: a ring with an empty (sparse) buffer table of a given
//! number of slots, made on first use. Slots of a ring handed to another
//! process are emptied by a DST_REPLACE clone of the same range from it:
//! empty source slots become empty destination slots, and the kernel drops
//! the ring's references to what they held (I/O in flight there completes
//! first), as a buffers update with empty iovecs would. Unlike a buffers
//! update, a clone is allowed on a ring restricted for a client of another
//! user ([`crate::sys::uring::restrict_for_client`]).

use std::ops::Range;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::sys::uring::Uring;
use crate::types::CloneRange;
use crate::uring::{self, Setup};

pub(crate) struct Blank {
    slots: u16,
    ring: OnceLock<Uring>,
}

impl Blank {
    /// A blank table of `slots` slots (a table's capacity), not made yet.
    pub(crate) fn new(slots: u16) -> Blank {
        Blank { slots, ring: OnceLock::new() }
    }

    /// Makes the blank ring now (a table over a shared pool, whose rings
    /// go to other processes, will need it: its descriptor is then part of
    /// the owner's baseline rather than appearing at the first shrink).
    pub(crate) fn make(&self) -> Result<&Uring> {
        if let Some(b) = self.ring.get() {
            return Ok(b);
        }
        let (b, _) = uring::setup(&Setup::plain(1))?;
        crate::sys::uring::register_sparse(&b, u32::from(self.slots))
            .map_err(|e| Error::os("register the blank table", e))?;
        Ok(self.ring.get_or_init(|| b))
    }

    /// Empties slots `range` of `ring` (a ring whose process dropped its
    /// table gets empty slots).
    pub(crate) fn take_out(&self, ring: &io_uring::IoUring, range: Range<u16>) -> Result<()> {
        let blank = self.make()?;
        let (at, n) = (u32::from(range.start), u32::from(range.end - range.start));
        uring::clone_into(ring, blank.fd(), u32::from(self.slots), CloneRange::range(at, at, n).replace())
    }
}
