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

use crate::blank::Blank;
use crate::error::{Error, Result};
use crate::memory::IoMemory;
use crate::sys;
use crate::sys::uring::Uring;
use crate::types::CloneRange;
use crate::uring;

/// What followers need of the table they follow: its template ring (fd
/// and kernel table size), its memory, and its blank table.
pub(crate) struct Origin<'a> {
    pub(crate) fd: RawFd,
    pub(crate) source_len: u32,
    pub(crate) memory: &'a IoMemory,
    pub(crate) blank: &'a Blank,
}

/// One handed ring that follows growth, as its owner keeps it.
pub(crate) struct Follower {
    /// The owner's handle on the ring (its queues stay mapped here; a few
    /// pages): growth is cloned into it.
    ring: Uring,
    /// The owner's end of the growth channel (SOCK_SEQPACKET: a closed
    /// peer shows as POLLHUP).
    channel: OwnedFd,
    /// A notice could not be sent (its process does not read them and the
    /// channel is full): no more growth reaches the ring (a growth's slots
    /// are taken back out of it), but shrinks still take slots out of it,
    /// so that it never holds memory the pool gave back.
    deaf: bool,
}

impl Follower {
    /// A follower of `ring`, and the other end of its channel (it travels
    /// with the handed ring).
    pub(crate) fn new(ring: Uring) -> Result<(Follower, OwnedFd)> {
        // Non-blocking: a process that does not read its notices must not
        // stall a growth.
        let (ours, theirs) = sys::socket::seqpacket_pair().map_err(|e| Error::os("growth channel", e))?;
        Ok((Follower { ring, channel: ours, deaf: false }, theirs))
    }

    /// Clones slots `range` of the template into the ring, then sends the
    /// new layout; when it cannot be sent (the process does not read its
    /// notices), takes the slots back out and marks the follower deaf.
    fn reach(&mut self, t: &Origin<'_>, range: &Range<u16>) -> Result<()> {
        self.regrant(t, range)?;
        let (layout, memfds) = t.memory.layout(range.end)?;
        let fds: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
        let sent = sys::socket::send_with_fds(self.channel.as_fd(), &layout.encode_notice(), &fds);
        if let Err(e) = &sent {
            if !gone(e) {
                // Its process will not map what its ring would hold.
                self.deaf = true;
                self.revoke(t, range)?;
            }
        }
        sent.map_err(|e| Error::os("send the growth to a handed ring's process", e))
    }

    /// Empties slots `range` of the ring ([`Blank::take_out`]: allowed
    /// because the ring is not SINGLE_ISSUER). I/O in flight there keeps
    /// the pages until it completes.
    fn revoke(&self, t: &Origin<'_>, range: &Range<u16>) -> Result<()> {
        t.blank.take_out(&self.ring, range.clone())
    }

    /// Clones slots `range` of the template into the ring (a growth, or a
    /// revoke called off).
    fn regrant(&self, t: &Origin<'_>, range: &Range<u16>) -> Result<()> {
        let clone = CloneRange {
            src_off: u32::from(range.start),
            dst_off: u32::from(range.start),
            nr: u32::from(range.end - range.start),
            replace: true,
        };
        uring::clone_into(&self.ring, t.fd, t.source_len, clone)
    }

    /// Tells the process that the pool now has `segments` segments.
    fn send_shrunk(&mut self, segments: u16) -> Result<()> {
        if self.deaf {
            return Ok(());
        }
        sys::socket::send_with_fds(self.channel.as_fd(), &crate::memory::encode_shrink_notice(segments), &[])
            .map_err(|e| Error::os("send the shrink to a handed ring's process", e))
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
    pub(crate) fn reach(&self, t: &Origin<'_>, range: Range<u16>) -> u32 {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let mut reached = 0u32;
        list.retain_mut(|f| {
            if f.deaf {
                return !sys::socket::hung_up(f.channel.as_fd());
            }
            match f.reach(t, &range) {
                Ok(()) => {
                    reached += 1;
                    true
                }
                Err(Error::Io { source, .. }) if gone(&source) => {
                    tracing::debug!("a handed ring's process is gone: its ring is released");
                    false
                }
                // Deaf now: kept, so that shrinks still reach its ring.
                Err(e) if f.deaf => {
                    tracing::warn!(error = %e, ?range, "a handed ring's process does not read the pool's notices; no more growth reaches its ring");
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?range, "a growth could not reach a handed ring; it no longer follows the pool");
                    false
                }
            }
        });
        reached
    }
}

impl Followers {
    /// Empties slots `range` in every follower's ring, all of them or none:
    /// when one cannot be emptied, those emptied get the slots back from
    /// the template (fd `src`, still holding them) and the error is
    /// returned. Followers whose processes are gone are dropped first.
    pub(crate) fn revoke(&self, t: &Origin<'_>, range: Range<u16>) -> Result<u32> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|f| !sys::socket::hung_up(f.channel.as_fd()));
        for (i, f) in list.iter().enumerate() {
            if let Err(e) = f.revoke(t, &range) {
                for done in &list[..i] {
                    if let Err(e2) = done.regrant(t, &range) {
                        tracing::error!(error = %e2, ?range, "a shrink called off could not give a handed ring its slots back");
                    }
                }
                return Err(e);
            }
        }
        Ok(u32::try_from(list.len()).unwrap_or(u32::MAX))
    }

    /// Gives every follower slots `range` of the template back (a shrink
    /// called off after [`Followers::revoke`]).
    pub(crate) fn regrant(&self, t: &Origin<'_>, range: &Range<u16>) {
        for f in self.list.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Err(e) = f.regrant(t, range) {
                tracing::error!(error = %e, ?range, "a shrink called off could not give a handed ring its slots back");
            }
        }
    }

    /// Tells every follower's process that the pool has `segments`
    /// segments now (its view drops the others at its next catch-up).
    /// Returns how many were told; a follower that cannot be told is
    /// dropped (its ring has no slots past `segments` already).
    pub(crate) fn shrunk(&self, segments: u16) -> u32 {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let mut told = 0u32;
        list.retain_mut(|f| match f.send_shrunk(segments) {
            Ok(()) => {
                told += u32::from(!f.deaf);
                true
            }
            Err(Error::Io { source, .. }) if gone(&source) => false,
            Err(e) => {
                // Its ring holds no slot past `segments` already; kept, so
                // that later shrinks reach it too.
                tracing::warn!(error = %e, segments, "a handed ring's process does not read the pool's notices; no more growth reaches its ring");
                f.deaf = true;
                true
            }
        });
        told
    }
}

/// The other end of the channel is closed (its process exited).
fn gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ECONNRESET | libc::EPIPE | libc::ENOTCONN))
}
