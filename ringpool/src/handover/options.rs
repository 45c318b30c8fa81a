//! How a [`RingBroker`](super::RingBroker) serves: its quotas, who it
//! serves, and how it behaves.

use super::RingHolder;
use crate::error::{Error, Result};
use std::time::Duration;

/// How a [`RingBroker`] serves.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Most submission queue entries a client may ask for (default 4096).
    pub max_entries: u32,
    /// Most lease segments one client process may hold, over all its
    /// connections (default: all).
    pub max_leases: u16,
    /// Most connections at once (default 1024); more are refused.
    pub max_clients: usize,
    /// Mode of the socket file (default 0o600: the owner's user only).
    pub mode: u32,
    /// Rings served follow the pool's growth and shrink
    /// ([`HandoverOptions::follow_growth`](super::HandoverOptions::follow_growth)):
    /// needed for the pool to shrink while clients hold rings. Default `false`.
    pub follow_growth: bool,
    /// Most rings one client process may get, over all its connections
    /// (default: no limit).
    pub max_rings_per_client: u32,
    /// Grow the pool on demand, up to this many bytes, when a client asks
    /// for more lease segments than are free (0, the default: never; the
    /// table needs the room: [`TableOptions::capacity`](crate::TableOptions::capacity)).
    pub grow_to: u64,
    /// Shrink the pool back toward its size when the broker started once
    /// its trailing segments past that size have been free (no lease
    /// segment of any client, no lease) for this long (`None`, the
    /// default: never). Needs rings that follow the pool
    /// ([`BrokerOptions::follow_growth`]).
    pub shrink_idle: Option<Duration>,
    /// The nice value of the serving thread (`None`, the default: as the
    /// thread that started the broker). A daemon whose clients keep the
    /// CPUs busy answers them sooner with a negative value (`ringpool
    /// serve --nice`, BENCHMARKS.md section 16); it needs CAP_SYS_NICE,
    /// and the broker serves anyway (with a warning) without it.
    pub nice: Option<i32>,
    /// A program that holds a ring handed out until its client has
    /// duplicated it ([`RingHolder`]), running as the client's user: how
    /// a client of another user ([`BrokerOptions::allow_uids`]) gets its
    /// ring at all. `None` (the default): clients duplicate rings from this
    /// process, which they need ptrace access to (the same user).
    pub holder: Option<RingHolder>,
    /// Hand the rings of this process's own user through the holder too,
    /// and make this process non-dumpable: then no client of its user (but
    /// root) can ptrace it, read its memory or duplicate its descriptors.
    /// A holder costs each attachment an exec (1-2 ms of CPU here).
    /// Default `false`.
    pub hold_every_ring: bool,
    /// Users besides the broker's own whose processes it serves (their
    /// rings' holders run as them): needs a holder and a broker running as
    /// root. Unless [`BrokerOptions::isolate`], clients of these users get
    /// the pool's memfds and its table like any other: allow only users
    /// who may reach each other's memory.
    pub allow_uids: Vec<u32>,
    /// Groups (a peer's primary or supplementary group, SO_PEERCRED and
    /// SO_PEERGROUPS) whose processes it serves, as `allow_uids`.
    pub allow_gids: Vec<u32>,
    /// Keep clients apart: a client's rings hold only the table slots of
    /// its process's lease segments (a ring with no lease segments is
    /// refused), it gets only those segments' memfds, and a segment that
    /// passes to a client of another user gets fresh memory first (a new
    /// memfd, faulted in and registered into its slot: the cost of zeroing
    /// a segment, once per change of user). When a client's segments come
    /// back, the broker takes their slots out of every ring it handed with
    /// them. Rings do not follow growth (a client asks for new segments
    /// with [`RingBroker::request_growth`](super::RingBroker::request_growth)).
    /// Processes of the broker's own user reach everything through it
    /// unless [`BrokerOptions::hold_every_ring`]. Default `false`.
    pub isolate: bool,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            max_entries: 4096,
            max_leases: u16::MAX,
            max_clients: 1024,
            mode: 0o600,
            follow_growth: false,
            max_rings_per_client: u32::MAX,
            grow_to: 0,
            shrink_idle: None,
            nice: None,
            holder: None,
            hold_every_ring: false,
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            isolate: false,
        }
    }
}

impl BrokerOptions {
    /// What a broker refuses to start with: a depth the kernel refuses,
    /// other users without a holder or without root, a holder that is not
    /// an absolute path, `hold_every_ring` without a holder.
    pub(crate) fn check(&self) -> Result<()> {
        crate::ring::check_depth(self.max_entries)?;
        let others = || format!("uids {:?}, gids {:?}", self.allow_uids, self.allow_gids);
        if !(self.allow_uids.is_empty() && self.allow_gids.is_empty()) {
            if self.holder.is_none() {
                return Err(Error::invalid(
                    "allowed users",
                    others(),
                    "a client of another user can take its ring only from a holder of its own user: set a holder",
                ));
            }
            if crate::sys::socket::euid() != 0 {
                return Err(Error::invalid(
                    "allowed users",
                    others(),
                    "only a broker running as root can start a ring holder as another user",
                ));
            }
        }
        if self.isolate && self.follow_growth {
            return Err(Error::invalid(
                "follow_growth",
                true,
                "an isolated client's ring holds only its own segments: it does not follow growth",
            ));
        }
        match &self.holder {
            Some(h) if !h.program.is_absolute() => {
                Err(Error::invalid("ring holder", h.program.display(), "an absolute path"))
            }
            None if self.hold_every_ring => Err(Error::invalid("hold_every_ring", true, "it needs a holder")),
            _ => Ok(()),
        }
    }
}
