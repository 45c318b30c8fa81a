//! Rings handed to other processes.
//!
//! A child cannot clone its parent's table (the kernel's clone needs the
//! same mm and user), but the owner of a shared pool can clone on its
//! behalf: [`BufferTable::handover`] sets a ring up disabled
//! (`IORING_SETUP_R_DISABLED | SINGLE_ISSUER | DEFER_TASKRUN`), clones the
//! table into it, and returns a [`HandedRing`]: the ring's fd, its
//! parameters, the pool's layout and memfds, and the segments the receiving
//! process leases from alone. It crosses a `fork` as it is, or a Unix
//! socket ([`HandedRing::send`], [`HandedRing::receive`]: SCM_RIGHTS). The
//! process that drives it calls [`HandedRing::enable`]
//! (`IORING_REGISTER_ENABLE_RINGS`), becomes its single issuer, and gets a
//! [`Ring`] whose leases come from its own mapping of the pool; ringpool
//! translates their addresses to the registrar's, which the kernel knows the
//! registered buffers by. Clones are not charged to RLIMIT_MEMLOCK again:
//! however many processes, the pool is pinned once (Linux 6.12+).
//!
//! # Lease segments
//!
//! A handed ring may carry lease segments, which the owner takes out of
//! its own leasing. Only the process that enables the ring (the kernel
//! enables a ring once) leases from them. A lease token travels with the
//! ring: a pipe's write end, kept by that process's view of the pool. The
//! owner gives the segments back to its own leasing only when every copy of
//! the token is closed, so never while another process may still use them
//! (a process that exits closes its copies). A broker's connection plays
//! the same part for rings the broker served.

mod broker;
mod holder;
mod idle_shrink;
mod isolated;
mod options;
mod status;
pub(crate) mod wire;

pub use broker::RingBroker;
pub use holder::RingHolder;
pub use options::BrokerOptions;

/// What a receiver answers once it duplicated a sent ring's fd.
pub(crate) const ACK: &[u8] = b"A";

use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::error::{Error, Result};
use crate::memory::{IoMemory, SegmentReservation};
use crate::ring::{Ring, RingOptions};
use crate::sys;
use crate::table::BufferTable;
use crate::types::{CloneRange, TablePath};
use crate::uring::{self, Setup};

/// How [`BufferTable::handover`] makes a ring.
#[derive(Debug, Clone)]
pub struct HandoverOptions {
    /// Submission queue entries (default 128); the completion queue has
    /// twice as many.
    pub entries: u32,
    /// Segments the process that enables the ring leases from alone (taken
    /// out of the owner's leasing until that process is done with them);
    /// `None`: no leases (I/O with regions only).
    pub leases: Option<Range<u16>>,
    /// The ring follows the pool's growth ([`HandoverOptions::follow_growth`]).
    pub follow_growth: bool,
}

impl Default for HandoverOptions {
    fn default() -> Self {
        HandoverOptions { entries: 128, leases: None, follow_growth: false }
    }
}

impl HandoverOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the depth.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries;
        self
    }
    /// Sets the lease segments.
    pub fn leases(mut self, segments: Range<u16>) -> Self {
        self.leases = Some(segments);
        self
    }
    /// The ring follows the pool's growth and shrink: after each
    /// [`BufferTable::grow`] the owner clones the new slots into it
    /// (DST_REPLACE, not charged again) and sends the process that drives
    /// it the new memfds, which its view maps at its next
    /// [`IoMemory::catch_up`] (a region past the memory it knows calls it);
    /// a [`BufferTable::shrink`] takes the slots out of it (a buffers
    /// update; I/O in flight there completes first) and tells its process,
    /// whose view unmaps them at its next catch-up. A shared pool shrinks
    /// only while every ring handed from it follows it.
    /// Such a ring is set up without SINGLE_ISSUER and DEFER_TASKRUN (the
    /// kernel refuses a clone into a SINGLE_ISSUER ring from any task but
    /// its issuer); the owner keeps a handle on it until its process is
    /// gone (noticed at the next growth). It crosses `fork`
    /// ([`HandedRing::try_clone`]) or a socket ([`HandedRing::send`],
    /// [`BrokerOptions::follow_growth`]). To grow, the table needs room
    /// ([`TableOptions::capacity`](crate::TableOptions::capacity)).
    pub fn follow_growth(mut self) -> Self {
        self.follow_growth = true;
        self
    }
}

/// A ring set up by the owner of a shared pool for another process to
/// drive (see the [module docs](self)).
///
/// # Handing rings to other processes
///
/// ```no_run
/// use ringpool::handover::HandoverOptions;
/// use ringpool::types::PagePolicy;
/// use ringpool::{BufferTable, IoMemory, MemoryOptions};
/// let mem = IoMemory::map_with(1 << 30, &MemoryOptions::new().page(PagePolicy::Auto).segment_size(64 << 20).shared())?;
/// mem.prefault(|_| {})?;
/// let table = BufferTable::register(&mem)?;
/// let handed = table.handover(&HandoverOptions::new().leases(8..16))?;
/// let for_child = handed.try_clone()?;
/// // SAFETY (of the example): one thread; the child uses what it inherited
/// // and ends with _exit.
/// match unsafe { libc::fork() } {
///     0 => {
///         let code = match for_child.enable() {
///             // Its own ring, the table cloned in; leases from segments 8..16.
///             Ok(ring) => ring.memory().and_then(|m| m.try_alloc(4096).ok()).map_or(2, |_buf| 0),
///             Err(_) => 1,
///         };
///         unsafe { libc::_exit(code) }
///     }
///     pid => {
///         drop((handed, for_child)); // segments 8..16 come back once the child is done with them
///         let mut status = 0;
///         unsafe { libc::waitpid(pid, &mut status, 0) };
///     }
/// }
/// # Ok::<(), ringpool::Error>(())
/// ```
pub struct HandedRing {
    fd: OwnedFd,
    msg: wire::Message,
    memfds: Vec<OwnedFd>,
    /// The memfds' identity, read when they were mapped here.
    ids: Option<Vec<(u64, u64)>>,
    /// The lease token's write end (with lease segments): it travels with
    /// the ring and is kept by the view of the process that enables it.
    token: Option<OwnedFd>,
    /// In the owner: the reservation of the lease segments and the token's
    /// read end, parked in the pool when this value goes.
    reservation: Option<(SegmentReservation, OwnedFd)>,
    /// The connection to the broker that served it (the broker keeps the
    /// lease segments while it is open).
    conn: Option<UnixStream>,
    /// For a ring that follows growth: the end of the growth channel the
    /// process that enables it reads the owner's notices from.
    growth: Option<OwnedFd>,
    /// The pidfd of the ring holder a broker started for this ring (the
    /// receiver duplicates the ring through it).
    holder_pidfd: Option<OwnedFd>,
}

impl std::fmt::Debug for HandedRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandedRing")
            .field("owner", &self.msg.owner)
            .field("segments", &self.msg.layout.segs.len())
            .field("leases", &self.msg.leases)
            .finish()
    }
}

impl Drop for HandedRing {
    fn drop(&mut self) {
        // In the owner: close this copy of the token, then hold the lease
        // segments back until every other copy is closed too.
        drop(self.token.take());
        if let Some((reservation, read_end)) = self.reservation.take() {
            reservation.park(read_end);
        }
    }
}

impl BufferTable {
    /// A ring for another process: set up disabled (`IORING_SETUP_R_DISABLED`
    /// | SINGLE_ISSUER | DEFER_TASKRUN), the table cloned in (Linux 6.12+),
    /// with the pool's layout and memfds and the lease segments `opts.leases`
    /// (taken out of this process's leasing until the process that enables
    /// the ring is done with them). Send it ([`HandedRing::send`]) or let a
    /// child take a copy across `fork` ([`HandedRing::try_clone`]); the
    /// process that drives it calls [`HandedRing::enable`].
    ///
    /// # Errors
    /// [`Error::NotShared`] for a private pool (map it with
    /// [`MemoryOptions::shared`](crate::MemoryOptions::shared));
    /// [`Error::SegmentsInUse`]; clone errors; [`Error::Forked`].
    pub fn handover(&self, opts: &HandoverOptions) -> Result<HandedRing> {
        self.template.home.check()?;
        let reservation = opts.leases.clone().map(|r| self.template.memory.reserve_segments(r)).transpose()?;
        self.handover_reserved(opts.entries, reservation, opts.follow_growth, false)
    }

    /// [`BufferTable::handover`] with the lease segments reserved already;
    /// `restrict`: the ring is for a client of another user
    /// ([`sys::uring::restrict_for_client`]).
    pub(crate) fn handover_reserved(
        &self,
        entries: u32,
        reservation: Option<SegmentReservation>,
        follow_growth: bool,
        restrict: bool,
    ) -> Result<HandedRing> {
        let t = &self.template;
        self.check_handover(entries)?;
        // No growth or shrink between the clone below and the follower's
        // joining the list: it would miss the one or keep slots of the other.
        let growing = t.memory.growth_lock();
        let (layout, memfds) = t.memory.layout(t.entries())?;
        // A ring that follows growth is cloned into by this process after
        // another one enabled it: the kernel allows that only for a ring
        // that is not SINGLE_ISSUER (KERNEL.md), hence no DEFER_TASKRUN. A
        // restricted ring is enabled here (below): not SINGLE_ISSUER either.
        let plain = follow_growth || restrict;
        let setup = Setup { single_issuer: !plain, defer_taskrun: !plain, disabled: true, ..Setup::plain(entries) };
        let (ring, _) = uring::setup(&setup)?;
        // A disabled ring accepts the clone (measured on 6.18).
        uring::clone_into(&ring, t.fd(), u32::from(t.source_len()), CloneRange::all())?;
        if restrict {
            restrict_and_enable(&ring)?;
        }
        let params = sys::handoff::params_bytes(&ring);
        // A forked child then rebuilds the ring without setting one up to
        // learn the layout.
        sys::handoff::remember_layout(&ring);
        let fd = ring.as_fd().try_clone_to_owned().map_err(|e| Error::os("dup ring fd", e))?;
        // The dup keeps the ring; this process's mapping of its queues goes,
        // unless the ring follows growth (the owner clones into it).
        let growth = if follow_growth {
            let (follower, theirs) = crate::followers::Follower::new(ring)?;
            t.followers.add(follower);
            Some(theirs)
        } else {
            drop(ring);
            t.unfollowed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            None
        };
        drop(growing);
        tracing::debug!(segments = layout.segs.len(), "ring set up for another process");
        HandedRing::assemble(fd, params, layout, memfds, reservation, growth, restrict)
    }

    /// What every handover checks first: this process's table, a depth the
    /// kernel takes, and a table shared by clone.
    pub(crate) fn check_handover(&self, entries: u32) -> Result<()> {
        let t = &self.template;
        t.home.check()?;
        crate::ring::check_depth(entries)?;
        if t.path != TablePath::Cloned {
            return Err(Error::invalid(
                "handover",
                t.path,
                "the table must be shared by clone (Sharing::Auto or Clone on Linux 6.12+)",
            ));
        }
        Ok(())
    }
}

impl HandedRing {
    /// A handed ring of the ring `fd` (its parameters `params`), the pool
    /// as `layout` and `memfds` show it, and the lease segments
    /// `reservation` (a lease token travels with them); `growth`: the
    /// channel of a ring that follows growth; `enabled`: this process
    /// enabled the ring (a restricted one).
    pub(crate) fn assemble(
        fd: OwnedFd,
        params: Vec<u8>,
        layout: crate::memory::Layout,
        memfds: Vec<OwnedFd>,
        reservation: Option<SegmentReservation>,
        growth: Option<OwnedFd>,
        enabled: bool,
    ) -> Result<HandedRing> {
        let leases = reservation.as_ref().map_or(0..0, SegmentReservation::segments);
        let (token, reservation) = match reservation {
            Some(r) => {
                let (read_end, write_end) = sys::socket::pipe().map_err(|e| Error::os("lease token pipe", e))?;
                (Some(write_end), Some((r, read_end)))
            }
            None => (None, None),
        };
        let owner = sys::pid::current_pid();
        let follows_growth = growth.is_some();
        let msg = wire::Message { params, layout, leases, owner, ring_fd: -1, follows_growth, holder: 0, enabled };
        Ok(HandedRing { fd, msg, memfds, ids: None, token, reservation, conn: None, growth, holder_pidfd: None })
    }

    /// A copy for a process to take across `fork` (moved into the child's
    /// code, which enables it): the descriptors duplicated (the lease token
    /// too), no reservation. Of all copies, the one enabled first drives the
    /// ring and leases. Drop the original in the owner after the fork: its
    /// lease segments stay reserved until the child is done with them, and
    /// children forked later do not inherit its descriptors.
    ///
    /// # Errors
    /// [`Error::Io`] duplicating a descriptor; [`Error::BadHandover`] when
    /// the pool was mapped from this handover already.
    pub fn try_clone(&self) -> Result<HandedRing> {
        if self.memfds.len() != self.msg.layout.maps.len() {
            return Err(Error::BadHandover { reason: "the pool was mapped from this handover already".into() });
        }
        let dup = |f: &OwnedFd| f.try_clone().map_err(|e| Error::os("dup handed ring", e));
        Ok(HandedRing {
            fd: dup(&self.fd)?,
            msg: self.msg.clone(),
            memfds: self.memfds.iter().map(dup).collect::<Result<_>>()?,
            ids: None,
            token: self.token.as_ref().map(dup).transpose()?,
            reservation: None,
            conn: None,
            growth: self.growth.as_ref().map(dup).transpose()?,
            holder_pidfd: None,
        })
    }

    /// The segments the process that enables the ring leases from.
    pub fn leases(&self) -> Range<u16> {
        self.msg.leases.clone()
    }

    /// The process that registered the pool.
    pub fn owner(&self) -> u32 {
        self.msg.owner
    }

    /// The address of the pool's first byte in the process that registered
    /// it (the kernel knows the registered buffers by those addresses; a
    /// receiver maps the pool elsewhere and ringpool translates).
    pub fn registrar_addr(&self) -> u64 {
        self.msg.layout.segs.first().map_or(0, |s| s.addr)
    }

    /// The address of segment `segment` in the process that registered it
    /// (where its table slot has it), if this ring's process may reach the
    /// segment (a broker that isolates its clients sends only theirs).
    pub fn segment_addr(&self, segment: u16) -> Option<u64> {
        let s = self.msg.layout.segs.get(usize::from(segment))?;
        (s.map != crate::memory::ABSENT).then_some(s.addr)
    }

    /// Segments of the pool (slots of the ring's table).
    pub fn segments(&self) -> u16 {
        // At most 16384 (Layout::check).
        self.msg.layout.segs.len() as u16
    }

    /// Enables the ring in the calling process, which becomes its single
    /// issuer (the calling thread drives it), maps the pool here, and gives
    /// the [`Ring`]: fixed I/O with leases of its lease segments
    /// ([`Ring::memory`]) and with regions
    /// ([`IoMemory::region`](crate::IoMemory::region)) of the others,
    /// addresses translated to the registrar's.
    ///
    /// # Errors
    /// [`Error::RingAlreadyEnabled`]; [`Error::BadHandover`] when the fd is
    /// not an io_uring or the parameters do not match this kernel's layout;
    /// mapping errors.
    pub fn enable(self) -> Result<Ring> {
        self.enable_with(&RingOptions::default())
    }

    /// [`HandedRing::enable`] with the engine policy of `opts` (its depth
    /// and task-run options were fixed when the owner set the ring up).
    ///
    /// # Errors
    /// As [`HandedRing::enable`].
    pub fn enable_with(mut self, opts: &RingOptions) -> Result<Ring> {
        let memory = self.map_pool()?;
        self.enable_in(&memory, opts)
    }

    /// Maps the pool in this process (at whatever address): the view its
    /// ring, and rings handed over later for the same pool
    /// ([`HandedRing::enable_in`]), do fixed I/O with. The view leases from
    /// nothing until a ring with lease segments is enabled in it. Takes the
    /// memfds: call it once.
    ///
    /// # Errors
    /// [`Error::BadHandover`] when the memfds were taken already or do not
    /// match the layout; mapping errors.
    pub fn map_pool(&mut self) -> Result<IoMemory> {
        if self.memfds.is_empty() {
            return Err(Error::BadHandover { reason: "the pool was mapped from this handover already".into() });
        }
        let memfds = std::mem::take(&mut self.memfds);
        self.ids = Some(IoMemory::memfd_identity(&memfds)?);
        IoMemory::from_layout(&self.msg.layout, memfds, self.msg.owner)
    }

    /// Enables the ring over `memory`, a view of the same pool mapped from
    /// an earlier handover ([`HandedRing::map_pool`]): several rings of one
    /// process (an [`IoPool`](crate::IoPool)'s workers) share one view. When
    /// the ring carries lease segments, the view leases from them from now
    /// on (and keeps the lease token).
    ///
    /// # Errors
    /// [`Error::BadHandover`] when `memory` is not a view of this ring's
    /// pool (other memfds, or other addresses); as [`HandedRing::enable`].
    pub fn enable_in(mut self, memory: &IoMemory, opts: &RingOptions) -> Result<Ring> {
        let ids = match self.ids.take() {
            Some(ids) => ids,
            None => IoMemory::memfd_identity(&self.memfds)?,
        };
        if !memory.is_view_of(&self.msg.layout, &ids) {
            return Err(Error::BadHandover {
                reason: "the memory given is not a view of this ring's pool (map it from a handover of the same pool)"
                    .into(),
            });
        }
        let fd = self.fd.try_clone().map_err(|e| Error::os("dup handed ring", e))?;
        let io = sys::handoff::ring_from_fd(fd, &self.msg.params)
            .map_err(|e| Error::BadHandover { reason: format!("the ring's fd and parameters: {e}") })?;
        // Charged to the process that set it up.
        let io = sys::uring::Uring::new(io, 0);
        if !self.msg.enabled {
            uring::enable(&io)?;
        }
        if let Some(channel) = self.growth.take() {
            memory.follow_growth(channel)?;
        }
        // This process is the one that enabled the ring: it alone leases
        // from its segments, for as long as its view keeps the token.
        if !self.msg.leases.is_empty() {
            let keep: Vec<OwnedFd> = self.token.take().into_iter().chain(self.conn.take().map(OwnedFd::from)).collect();
            memory.add_lease_segments(self.msg.leases.clone(), keep);
        }
        let segments = self.segments();
        let defer = sys::handoff::defers_taskrun(&self.msg.params);
        Ok(Ring::from_handed(io, memory.clone(), segments, opts, defer))
    }

    /// Sends the ring over a connected, blocking Unix socket to a process of
    /// the same user: the memfds and the lease token go as SCM_RIGHTS with
    /// the message; the ring's fd cannot (Linux refuses io_uring fds in
    /// SCM_RIGHTS since 6.7), so the receiver duplicates it from this
    /// process with `pidfd_getfd` and answers with one byte. Keep this value
    /// until [`HandedRing::receive`] returned on the other side. Its lease
    /// segments stay the receiver's until every copy of the token is closed.
    ///
    /// # Errors
    /// [`Error::BadHandover`] when the memfds were mapped here already
    /// ([`HandedRing::map_pool`]); [`Error::Io`] from `sendmsg`.
    pub fn send(&self, sock: &UnixStream) -> Result<()> {
        if self.memfds.len() != self.msg.layout.maps.len() {
            return Err(Error::BadHandover {
                reason: "the pool was mapped from this handover: it cannot be sent".into(),
            });
        }
        if !self.msg.leases.is_empty() && self.token.is_none() {
            return Err(Error::BadHandover { reason: "the lease token went to the view that leases".into() });
        }
        let mut msg = self.msg.clone();
        // A holder has it as descriptor 3 (sys::holder).
        msg.ring_fd = match msg.holder {
            0 => std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            _ => sys::holder::HOLDER_FD,
        };
        let bytes = wire::encode(&msg);
        let mut fds: Vec<std::os::fd::BorrowedFd<'_>> = self.memfds.iter().map(|f| f.as_fd()).collect();
        if !self.msg.leases.is_empty() {
            fds.extend(self.token.as_ref().map(|t| t.as_fd()));
        }
        if self.msg.follows_growth {
            let Some(channel) = &self.growth else {
                return Err(Error::BadHandover { reason: "the growth channel went to the view that follows".into() });
            };
            fds.push(channel.as_fd());
        }
        if self.msg.holder != 0 {
            let Some(pidfd) = &self.holder_pidfd else {
                return Err(Error::BadHandover { reason: "the ring holder's pidfd is missing".into() });
            };
            fds.push(pidfd.as_fd());
        }
        sys::socket::send_with_fds(sock.as_fd(), &bytes, &fds).map_err(|e| Error::os("send handed ring", e))
    }

    /// Receives a ring sent with [`HandedRing::send`]: the message and its
    /// descriptors, then the ring's fd duplicated from the sender (the
    /// socket's peer, by SO_PEERCRED) with `pidfd_getfd`; then one byte
    /// back, so that the sender may close its copy.
    ///
    /// # Errors
    /// [`Error::BadHandover`] for a malformed or truncated message, one
    /// with the wrong descriptors (they are closed), or a ring fd that
    /// cannot be duplicated; [`Error::Io`] from `recvmsg`; [`Error::Lost`]
    /// when the peer closed the socket; [`Error::PeerRefused`] for a
    /// broker's refusal.
    pub fn receive(sock: &UnixStream) -> Result<HandedRing> {
        let (mut bytes, fds) = sys::socket::recv_with_fds(sock.as_fd(), wire::MAX_MESSAGE)
            .map_err(|e| Error::BadHandover { reason: format!("receiving: {e}") })?;
        if bytes.is_empty() {
            return Err(Error::Lost("the peer closed the socket before sending a ring".into()));
        }
        if let Some(reason) = wire::refusal(&bytes) {
            return Err(Error::PeerRefused { reason });
        }
        // A long message may arrive in parts on a stream socket (its
        // descriptors come with the first).
        if let Some(total) = wire::declared_len(&bytes).filter(|&t| t > bytes.len() && t <= wire::MAX_MESSAGE) {
            use std::io::Read;
            let have = bytes.len();
            bytes.resize(total, 0);
            let mut s = sock;
            s.read_exact(&mut bytes[have..]).map_err(|e| Error::BadHandover {
                reason: format!("the message says it has {total} bytes; reading the rest after {have}: {e}"),
            })?;
        }
        let msg = wire::decode(&bytes).map_err(|reason| Error::BadHandover { reason })?;
        let (memfds, token, growth, holder_pidfd) = Self::split_fds(&msg, fds)?;
        // From the sender, or from the ring holder a broker started for
        // this ring (sys::holder), through its pidfd.
        let from = match msg.holder {
            0 => {
                sys::socket::peer_cred(sock.as_fd())
                    .map_err(|e| Error::BadHandover { reason: format!("the sender's credentials: {e}") })?
                    .0
            }
            holder => holder,
        };
        let pull = || match &holder_pidfd {
            Some(pidfd) => sys::os::pull_fd_by_pidfd(pidfd.as_fd(), msg.ring_fd),
            None => sys::os::pull_fd(from, msg.ring_fd),
        };
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_micros(50);
        let fd = loop {
            match pull() {
                // A holder started as root for this user is not ours until
                // it has dropped to it (its first act): a few tries, further
                // and further apart (EPERM that lasts is a real refusal).
                Err(e)
                    if msg.holder != 0
                        && e.raw_os_error() == Some(libc::EPERM)
                        && started.elapsed() < std::time::Duration::from_secs(2) =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                r => break r,
            }
        }
        .map_err(|e| Error::BadHandover {
            reason: format!(
                "duplicating the ring's fd {} from process {from}{}: {e}",
                msg.ring_fd,
                if msg.holder == 0 { "" } else { " (the broker's ring holder)" }
            ),
        })?;
        // (enable checks it is an io_uring: a holder that died and whose
        // pid came back would have another file there.)
        // The sender may close its copy now (a failed answer only keeps it
        // open longer).
        let _ = sys::socket::send_with_fds(sock.as_fd(), ACK, &[]);
        drop(holder_pidfd);
        Ok(HandedRing { fd, msg, memfds, ids: None, token, reservation: None, conn: None, growth, holder_pidfd: None })
    }

    /// The memfds, the lease token and the growth channel among the
    /// descriptors that came with `msg`, or why they do not fit it (they
    /// are closed).
    #[allow(clippy::type_complexity)]
    fn split_fds(
        msg: &wire::Message,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(Vec<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>)> {
        if fds.len() != msg.fds() {
            let reason = format!(
                "{} descriptors; {} memfds{}{}{} were expected",
                fds.len(),
                msg.layout.maps.len(),
                if msg.leases.is_empty() { "" } else { " and a lease token" },
                if msg.follows_growth { " and a growth channel" } else { "" },
                if msg.holder == 0 { "" } else { " and the ring holder's pidfd" }
            );
            return Err(Error::BadHandover { reason });
        }
        let holder = if msg.holder != 0 { fds.pop() } else { None };
        let growth = if msg.follows_growth { fds.pop() } else { None };
        let token = if msg.leases.is_empty() { None } else { fds.pop() };
        Ok((fds, token, growth, holder))
    }
}

/// Restricts a disabled ring set up for a client of another user
/// ([`sys::uring::restrict_for_client`]) and enables it: a restriction is
/// in force only once the ring is enabled, and the client must never hold
/// the ring unrestricted. Such a ring is not SINGLE_ISSUER (its issuer
/// would be this process).
pub(crate) fn restrict_and_enable(ring: &io_uring::IoUring) -> Result<()> {
    sys::uring::restrict_for_client(ring).map_err(|e| Error::os("restrict a client's ring", e))?;
    uring::enable(ring)
}

/// Checks a handover message as [`HandedRing::receive`] does, without its
/// descriptors: the number of descriptors it expects, or why it is refused.
/// For fuzzing the decoder.
#[doc(hidden)]
pub fn check_message(bytes: &[u8]) -> std::result::Result<usize, String> {
    let m = wire::decode(bytes)?;
    let again = wire::encode(&m);
    assert_eq!(again, bytes, "a decoded message encodes to the same bytes");
    Ok(m.fds())
}

/// Checks a ring broker's request as the broker does: (entries, lease
/// segments), or why it is refused. For fuzzing the decoder.
#[doc(hidden)]
pub fn check_request(bytes: &[u8]) -> std::result::Result<(u32, u16), String> {
    let q = wire::decode_request(bytes)?;
    assert_eq!(wire::encode_request(&q), bytes, "a decoded request encodes to the same bytes");
    Ok((q.entries, q.leases))
}
