//! Handed rings that follow the pool's growth (issue 20): the owner keeps
//! a handle on each ring it handed over with
//! [`HandoverOptions::follow_growth`](crate::handover::HandoverOptions::follow_growth)
//! and a SOCK_SEQPACKET socket to the process that drives it. After a growth has
//! been registered into the template, the owner clones just the new slots
//! into every such ring (DST_REPLACE; the kernel allows it because the ring
//! is not SINGLE_ISSUER, and the clone is not charged again), then sends
//! that process the new layout with the memfds, which its view maps at its
//! next catch-up ([`IoMemory::catch_up`]). The handover makes the
//! followers; the template reaches them at each growth.

use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::memory::IoMemory;
use crate::sys;
use crate::sys::uring::Uring;
use crate::types::CloneRange;
use crate::uring;

/// One handed ring that follows growth, as its owner keeps it.
pub(crate) struct Follower {
    /// The owner's handle on the ring (its queues stay mapped here; a few
    /// pages): growth is cloned into it.
    ring: Uring,
    /// The owner's end of the growth channel (SOCK_SEQPACKET: a closed
    /// peer shows as POLLHUP).
    channel: OwnedFd,
}

impl Follower {
    /// A follower of `ring`, and the other end of its channel (it travels
    /// with the handed ring).
    pub(crate) fn new(ring: Uring) -> Result<(Follower, OwnedFd)> {
        // Non-blocking: a process that does not read its notices must not
        // stall a growth.
        let (ours, theirs) = sys::socket::seqpacket_pair().map_err(|e| Error::os("growth channel", e))?;
        Ok((Follower { ring, channel: ours }, theirs))
    }

    /// Clones slots `range` of the template (fd `src`, `source_len`
    /// slots) into the ring, then sends the new layout.
    fn reach(&self, src: RawFd, source_len: u32, memory: &IoMemory, range: &Range<u16>) -> Result<()> {
        let clone = CloneRange {
            src_off: u32::from(range.start),
            dst_off: u32::from(range.start),
            nr: u32::from(range.end - range.start),
            replace: true,
        };
        uring::clone_into(&self.ring, src, source_len, clone)?;
        let (layout, memfds) = memory.layout(range.end)?;
        let fds: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
        sys::socket::send_with_fds(self.channel.as_fd(), &layout.encode_notice(), &fds)
            .map_err(|e| Error::os("send the growth to a handed ring's process", e))
    }
}

/// The handed rings of a table that follow its growth.
#[derive(Default)]
pub(crate) struct Followers {
    list: Mutex<Vec<Follower>>,
}

impl Followers {
    /// Adds `f`, dropping the followers whose processes are gone (their
    /// ends of the channel closed), with their rings.
    pub(crate) fn add(&self, f: Follower) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|f| !sys::socket::hung_up(f.channel.as_fd()));
        list.push(f);
    }

    /// Drops the followers whose processes are gone, with their rings.
    pub(crate) fn prune(&self) {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).retain(|f| !sys::socket::hung_up(f.channel.as_fd()));
    }

    /// Handed rings followed now.
    pub(crate) fn len(&self) -> usize {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Gives every follower slots `range` (just registered into the
    /// template, fd `src`): returns how many got them. A follower whose
    /// process is gone (its end of the channel closed) is dropped, with
    /// its ring; one the growth cannot reach is dropped too, loudly: its
    /// ring keeps the slots it had, and its process sees no more growth.
    pub(crate) fn reach(&self, src: RawFd, source_len: u32, memory: &IoMemory, range: Range<u16>) -> u32 {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let mut reached = 0u32;
        list.retain(|f| match f.reach(src, source_len, memory, &range) {
            Ok(()) => {
                reached += 1;
                true
            }
            Err(Error::Io { source, .. }) if gone(&source) => {
                tracing::debug!("a handed ring's process is gone: its ring is released");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, ?range, "a growth could not reach a handed ring; it no longer follows growth");
                false
            }
        });
        reached
    }
}

/// The other end of the channel is closed (its process exited).
fn gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::EPIPE | libc::ENOTCONN))
}
