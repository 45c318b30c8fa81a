//! Delivering a ring the broker set up to its client: through a ring
//! holder for a client of another user (or for every client, with
//! `hold_every_ring`), then the handover message; the connection keeps the
//! lease segments, and the broker the ring's fd until the client has
//! duplicated it.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::super::isolated::IsolatedRing;
use super::super::HandedRing;
use super::{Sent, Server};
use crate::error::{Error, Result};
use crate::sys;

impl Server {
    /// Sends `handed` to client `i` (through a holder when it needs one);
    /// `isolated`: the broker's handle on it, for a client kept apart.
    pub(super) fn deliver(&mut self, i: usize, mut handed: HandedRing, isolated: Option<IsolatedRing>) -> Result<()> {
        let c = &self.clients[i];
        let other_user = c.uid != sys::socket::euid();
        let holder = match &self.opts.holder {
            Some(h) if other_user || self.opts.hold_every_ring => {
                // As the client's user when it is not the broker's (root's).
                let creds = other_user.then_some((c.uid, c.gid));
                let started = std::time::Instant::now();
                let child = sys::holder::spawn_holder(&h.program, &h.args, handed.fd.as_fd(), creds).map_err(|e| {
                    Error::Io { op: "start the ring holder", path: Some(h.program.clone()), offset: None, source: e }
                })?;
                tracing::trace!(took = ?started.elapsed(), holder = child.id(), "ring holder started");
                handed.msg.holder = child.id();
                match child.pidfd().try_clone_to_owned() {
                    Ok(pidfd) => handed.holder_pidfd = Some(pidfd),
                    Err(e) => {
                        self.stop_holder(Some(child));
                        return Err(Error::os("duplicate the ring holder's pidfd", e));
                    }
                }
                Some(child)
            }
            _ => None,
        };
        if let Err(e) = handed.send(&c.stream) {
            self.stop_holder(holder);
            return Err(e);
        }
        let c = &mut self.clients[i];
        // The client holds the growth channel now: the owner's copy of its
        // end would keep it open after the client is gone.
        drop(handed.growth.take());
        tracing::debug!(pid = c.pid, leases = ?handed.leases(), "broker handed a ring over");
        // The connection holds the lease segments (a ring without keeps
        // those it holds); the ring's fd and the memfds sent are closed
        // here.
        if let Some((r, _token)) = handed.reservation.take() {
            c.reservation = Some(r);
        }
        c.sent.push(Sent { _ring: handed, holder });
        c.rings += 1;
        if let Some(ring) = isolated {
            self.keep_isolated(ring);
        }
        self.counters.served.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
