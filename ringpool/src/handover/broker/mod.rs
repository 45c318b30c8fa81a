//! A ring broker: the owner of a shared pool serves handed-over rings on a
//! Unix socket, so that any process of the group (forked or exec'd) gets a
//! ring with the pool's table in microseconds instead of registering the
//! pool itself.
//!
//! One thread accepts connections and answers requests. A peer of another
//! user is refused unless the options allow its user or group
//! (SO_PEERCRED, SO_PEERGROUPS; the socket file is also made mode 0600 by
//! default), as is a malformed request; each refusal is logged with its
//! reason and sent to the peer. A connection that asked for lease segments
//! holds them for as long as it stays open: the client's view of the pool
//! keeps it open ([`HandedRing::map_pool`]), and the segments come back to
//! the owner when the client closes it or exits.

use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod deliver;
mod isolation;
mod segments;

use super::{wire, BrokerOptions, HandedRing};
use crate::error::{Error, Result};
use crate::memory::SegmentReservation;
use crate::stats::BrokerStats;
use crate::sys;
use crate::table::BufferTable;

#[derive(Default)]
struct Counters {
    served: AtomicU64,
    refused: AtomicU64,
    clients: AtomicU64,
    /// Growths on a client's request.
    growths: AtomicU64,
    /// Idle shrinks done, and those that timed out.
    shrinks: Arc<AtomicU64>,
    shrink_timeouts: Arc<AtomicU64>,
    /// The thread closed the socket after a stop.
    closed: AtomicBool,
}

/// Serves rings of a [`BufferTable`] over a shared pool on a Unix socket
/// (see the [module docs](crate::handover)). Dropping it stops accepting and removes
/// the socket file; connections that hold lease segments keep them until
/// they close (the serving thread stays for them).
///
/// ```no_run
/// use ringpool::handover::{BrokerOptions, RingBroker};
/// use ringpool::{BufferTable, IoMemory, MemoryOptions};
/// let mem = IoMemory::map_with(1 << 30, &MemoryOptions::new().segment_size(64 << 20).shared())?;
/// mem.prefault(|_| {})?;
/// let table = BufferTable::register(&mem)?;
/// let broker = RingBroker::serve(&table, "/run/myengine/rings.sock", &BrokerOptions::default())?;
/// // In any process of the same user:
/// let handed = RingBroker::request("/run/myengine/rings.sock", 64, 2)?;
/// let ring = handed.enable()?;
/// # drop((ring, broker));
/// # Ok::<(), ringpool::Error>(())
/// ```
pub struct RingBroker {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Quotas to apply at the serving thread's next wake-up.
    quotas: Arc<std::sync::Mutex<Option<BrokerOptions>>>,
    wake: Arc<OwnedFd>,
    counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RingBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBroker").field("path", &self.path).field("stats", &self.stats()).finish()
    }
}

/// A ring sent and not yet acknowledged, and its holder.
struct Sent {
    /// Keeps the ring's fd open here (with no holder, the client
    /// duplicates it from here).
    _ring: HandedRing,
    holder: Option<sys::holder::Holder>,
}

struct Client {
    /// The broker's name for it (its index in the list changes).
    id: u64,
    stream: UnixStream,
    /// The lease segments this connection holds.
    reservation: Option<SegmentReservation>,
    /// A request waiting for fresh memory made off the serving thread
    /// (a broker that isolates its clients), and the segments reserved
    /// for it.
    pending: Option<isolation::Pending>,
    /// Rings sent and not yet acknowledged: their fds stay open here until
    /// the client has duplicated them (pidfd_getfd).
    sent: Vec<Sent>,
    pid: u32,
    /// Its user and group (SO_PEERCRED).
    uid: u32,
    gid: u32,
    /// Rings handed to it.
    rings: u32,
}

impl RingBroker {
    /// Binds `path` (which must not exist) and serves rings of `table` on
    /// it from a thread of this process.
    ///
    /// # Errors
    /// [`Error::NotShared`] for a table over private memory; [`Error::Io`]
    /// binding the socket; [`Error::Forked`].
    pub fn serve(table: &BufferTable, path: impl AsRef<Path>, opts: &BrokerOptions) -> Result<RingBroker> {
        table.template.home.check()?;
        if !table.memory().is_shared() {
            return Err(Error::NotShared);
        }
        opts.check()?;
        if opts.hold_every_ring {
            // Clients take their rings from the holders: none needs to
            // reach this process, and none of its user may.
            sys::holder::make_undumpable().map_err(|e| Error::os("make the broker's process non-dumpable", e))?;
        }
        let path = path.as_ref().to_path_buf();
        let at =
            |op: &'static str, e: std::io::Error| Error::Io { op, path: Some(path.clone()), offset: None, source: e };
        let listener = UnixListener::bind(&path).map_err(|e| at("bind the broker's socket", e))?;
        let setup = || -> std::io::Result<Arc<OwnedFd>> {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(opts.mode))?;
            listener.set_nonblocking(true)?;
            Ok(Arc::new(sys::os::eventfd()?))
        };
        let wake = match setup() {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(at("set up the broker's socket", e));
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let quotas = Arc::new(std::sync::Mutex::new(None));
        let server = Server {
            quotas: quotas.clone(),
            table: table.clone(),
            opts: opts.clone(),
            listener: Some(listener),
            path: path.clone(),
            clients: Vec::new(),
            stop: stop.clone(),
            wake: wake.clone(),
            counters: counters.clone(),
            idle: super::idle_shrink::IdleShrink::new(table.template.entries()),
            stopped_holders: Vec::new(),
            isolation: opts.isolate.then(|| isolation::Isolation::new(wake.clone())),
            next_id: 0,
        };
        let thread = match std::thread::Builder::new().name("ringpool-broker".into()).spawn(move || server.run()) {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(Error::os("spawn broker thread", e));
            }
        };
        tracing::info!(path = %path.display(), "ring broker serving");
        Ok(RingBroker { path, stop, quotas, wake, counters, thread: Some(thread) })
    }

    /// Stops accepting connections (the socket file goes); the open ones
    /// that hold lease segments are served until they close or the broker
    /// is dropped (a daemon's graceful stop: [`RingBroker::stats`] counts
    /// them).
    pub fn stop_accepting(&self) {
        self.stop.store(true, Ordering::Release);
        sys::os::eventfd_signal(self.wake.as_fd());
    }

    /// Changes the quotas of the running broker (what `ringpool serve` does
    /// on SIGHUP): `max_entries`, `max_leases`, `max_clients` and
    /// `max_rings_per_client` of `opts` apply to requests from now on
    /// (what clients hold already stays theirs); its other fields are not
    /// read.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a depth the kernel refuses.
    pub fn set_quotas(&self, opts: &BrokerOptions) -> Result<()> {
        crate::ring::check_depth(opts.max_entries)?;
        *self.quotas.lock().unwrap_or_else(|p| p.into_inner()) = Some(opts.clone());
        sys::os::eventfd_signal(self.wake.as_fd());
        Ok(())
    }

    /// Makes this process non-dumpable (`PR_SET_DUMPABLE` 0), as
    /// [`BrokerOptions::hold_every_ring`] does when the broker starts: call
    /// it first thing in a daemon that will hold every ring, before it maps
    /// the pool (a process that attached to it before stays attached).
    ///
    /// # Errors
    /// [`Error::Io`] from `prctl`.
    pub fn make_undumpable() -> Result<()> {
        sys::holder::make_undumpable().map_err(|e| Error::os("make this process non-dumpable", e))
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rings served, refusals, and open connections.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            served: self.counters.served.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            clients: self.counters.clients.load(Ordering::Relaxed),
        }
    }

    /// Asks the broker at `path` for a ring of `entries` submission queue
    /// entries (0: 128) and `leases` segments to lease from alone (0: none;
    /// a process needs them once, for its view of the pool).
    ///
    /// # Errors
    /// [`Error::PeerRefused`] with the broker's reason; [`Error::Io`]
    /// connecting; [`Error::BadHandover`] for a reply that is not a ring.
    pub fn request(path: impl AsRef<Path>, entries: u32, leases: u16) -> Result<HandedRing> {
        let entries = if entries == 0 { 128 } else { entries };
        Self::ask(path.as_ref(), wire::Request { entries, leases, grow: false })
    }

    /// Asks the broker at `path` to grow its pool by `segments` segments
    /// (within its `grow_to`) and hand a ring whose lease segments are
    /// exactly the new ones: a process that needs more memory gets it, and
    /// every ring that follows growth gets the new slots.
    ///
    /// # Errors
    /// As [`RingBroker::request`]; [`Error::PeerRefused`] when the growth
    /// would pass the broker's `grow_to`.
    pub fn request_growth(path: impl AsRef<Path>, entries: u32, segments: u16) -> Result<HandedRing> {
        if segments == 0 {
            return Err(Error::invalid("growth", 0, "at least one segment"));
        }
        let entries = if entries == 0 { 128 } else { entries };
        Self::ask(path.as_ref(), wire::Request { entries, leases: segments, grow: true })
    }

    /// Connects to the broker at `path`.
    pub(super) fn connect(path: &Path) -> Result<UnixStream> {
        UnixStream::connect(path).map_err(|e| Error::Io {
            op: "connect to the ring broker",
            path: Some(path.to_path_buf()),
            offset: None,
            source: e,
        })
    }

    fn ask(path: &Path, q: wire::Request) -> Result<HandedRing> {
        let stream = Self::connect(path)?;
        if let Err(e) = sys::socket::send_with_fds(stream.as_fd(), &wire::encode_request(&q), &[]) {
            // A broker that refuses the connection says why, then closes it
            // (the request may meet the closed end).
            return Err(match HandedRing::receive(&stream) {
                Err(refused @ Error::PeerRefused { .. }) => refused,
                _ => Error::os("send ring request", e),
            });
        }
        let mut handed = HandedRing::receive(&stream)?;
        handed.conn = Some(stream);
        Ok(handed)
    }
}

impl Drop for RingBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        sys::os::eventfd_signal(self.wake.as_fd());
        // The thread removes the socket file, then stays only for
        // connections holding lease segments: wait for it briefly.
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while !t.is_finished()
                && !self.counters.closed.load(Ordering::Acquire)
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            while !t.is_finished() && self.counters.clients.load(Ordering::Relaxed) == 0 {
                // Closed with no one holding leases: it is returning.
                std::thread::sleep(Duration::from_micros(200));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

struct Server {
    /// Quotas set since (RingBroker::set_quotas).
    quotas: Arc<std::sync::Mutex<Option<BrokerOptions>>>,
    table: BufferTable,
    opts: BrokerOptions,
    listener: Option<UnixListener>,
    path: PathBuf,
    clients: Vec<Client>,
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    counters: Arc<Counters>,
    /// Shrinks the pool back when its grown tail is idle.
    idle: super::idle_shrink::IdleShrink,
    /// Ring holders stopped and not yet reaped.
    stopped_holders: Vec<sys::holder::Holder>,
    /// With [`BrokerOptions::isolate`]: the clients' fresh memory and rings.
    isolation: Option<isolation::Isolation>,
    /// The last client's id.
    next_id: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        // No holder outlives the serving thread, nor stays a zombie.
        let sent = self.clients.iter_mut().flat_map(|c| c.sent.drain(..)).filter_map(|s| s.holder);
        for h in sent.chain(self.stopped_holders.drain(..)) {
            h.kill_and_reap();
        }
    }
}

impl Server {
    fn run(mut self) {
        if let Some(nice) = self.opts.nice {
            match sys::os::set_thread_nice(nice) {
                Ok(()) => tracing::debug!(nice, "ring broker thread reniced"),
                Err(e) => tracing::warn!(nice, "ring broker: cannot set the serving thread's nice value: {e}"),
            }
        }
        loop {
            if self.stop.load(Ordering::Acquire) && self.listener.is_some() {
                self.listener = None;
                let _ = std::fs::remove_file(&self.path);
                // Connections without leases have nothing to keep.
                let (keep, gone): (Vec<Client>, Vec<Client>) =
                    std::mem::take(&mut self.clients).into_iter().partition(|c| c.reservation.is_some());
                self.clients = keep;
                for s in gone.into_iter().flat_map(|c| c.sent) {
                    self.stop_holder(s.holder);
                }
                self.counters.clients.store(self.clients.len() as u64, Ordering::Relaxed);
                self.counters.closed.store(true, Ordering::Release);
                tracing::info!(path = %self.path.display(), holding = self.clients.len(), "ring broker stopped");
            }
            if self.listener.is_none() && self.clients.is_empty() {
                return;
            }
            let ready = {
                let mut fds = vec![self.wake.as_fd()];
                if let Some(l) = &self.listener {
                    fds.push(l.as_fd());
                }
                fds.extend(self.clients.iter().map(|c| c.stream.as_fd()));
                match sys::socket::poll_readable(&fds, self.tick()) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!("ring broker poll: {e}; stopping");
                        return;
                    }
                }
            };
            if ready[0] {
                sys::os::eventfd_drain(self.wake.as_fd());
                self.apply_quotas();
                self.install_made();
            }
            let first_client = if self.listener.is_some() { 2 } else { 1 };
            // Clients first (indices stay valid), from the back.
            for i in (0..self.clients.len()).rev() {
                if ready[first_client + i] && !self.serve_client(i) {
                    let mut c = self.clients.swap_remove(i);
                    for s in c.sent.drain(..) {
                        self.stop_holder(s.holder);
                    }
                    // No ring reaches its segments when they go back.
                    if let (Some(iso), Some(r)) = (self.isolation.as_mut(), &c.reservation) {
                        iso.release(&self.table, &r.segments());
                    }
                    tracing::debug!(pid = c.pid, leases = ?c.reservation.as_ref().map(|r| r.segments()), "broker client gone");
                    // Its rings that followed growth go too.
                    self.table.template.followers.prune();
                }
            }
            if first_client == 2 && ready[1] {
                self.accept_all();
            }
            self.counters.clients.store(self.clients.len() as u64, Ordering::Relaxed);
            self.shrink_if_idle();
            // Holders stopped earlier that have exited by now.
            self.stopped_holders.retain(|h| !h.try_reap());
        }
    }

    /// Stops a ring holder (its client took the ring, or is gone); it is
    /// reaped once it has exited.
    fn stop_holder(&mut self, holder: Option<sys::holder::Holder>) {
        if let Some(h) = holder {
            h.kill();
            if !h.try_reap() {
                self.stopped_holders.push(h);
            }
        }
    }

    /// Whether a peer of another user than the broker's may be served.
    fn allowed(&self, stream: &UnixStream, uid: u32, gid: u32) -> bool {
        let (uids, gids) = (&self.opts.allow_uids, &self.opts.allow_gids);
        uids.contains(&uid)
            || gids.contains(&gid)
            || (!gids.is_empty()
                && sys::holder::peer_groups(stream.as_fd()).is_ok_and(|g| g.iter().any(|g| gids.contains(g))))
    }

    /// Takes the quotas [`RingBroker::set_quotas`] left.
    fn apply_quotas(&mut self) {
        let Some(q) = self.quotas.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        self.opts.max_entries = q.max_entries;
        self.opts.max_leases = q.max_leases;
        self.opts.max_clients = q.max_clients;
        self.opts.max_rings_per_client = q.max_rings_per_client;
        tracing::info!(
            max_entries = q.max_entries,
            max_leases = q.max_leases,
            max_clients = q.max_clients,
            max_rings_per_client = q.max_rings_per_client,
            "ring broker quotas changed"
        );
    }

    /// How long the loop may sleep: for ever, unless it shrinks when idle.
    fn tick(&self) -> Option<Duration> {
        let ms = Duration::from_millis;
        self.opts.shrink_idle.map(|idle| (idle / 4).clamp(ms(10), ms(250)))
    }

    /// The idle shrink's look at the pool ([`super::idle_shrink`]).
    fn shrink_if_idle(&mut self) {
        let Some(idle) = self.opts.shrink_idle else { return };
        if !self.idle.due() {
            return;
        }
        let held = self.held();
        self.idle.look(&self.table, &held, idle, &self.counters.shrinks, &self.counters.shrink_timeouts);
        if let Some(iso) = self.isolation.as_mut() {
            let restored = self.table.template.restored.load(Ordering::Acquire);
            iso.after_shrink(self.table.template.entries(), restored, &held);
        }
    }

    fn refuse(&self, stream: &UnixStream, pid: u32, reason: &str) {
        tracing::warn!(peer_pid = pid, "ring broker refused a peer: {reason}");
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        let _ = sys::socket::send_with_fds(stream.as_fd(), &wire::encode_refusal(reason), &[]);
    }

    fn accept_all(&mut self) {
        let Some(listener) = &self.listener else { return };
        loop {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("ring broker accept: {e}");
                    return;
                }
            };
            let (pid, uid, gid) = match sys::socket::peer_cred(stream.as_fd()) {
                Ok(c) => c,
                Err(e) => {
                    self.refuse(&stream, 0, &format!("cannot read the peer's credentials: {e}"));
                    continue;
                }
            };
            let me = sys::socket::euid();
            if uid != me && !self.allowed(&stream, uid, gid) {
                let others = if self.opts.allow_uids.is_empty() && self.opts.allow_gids.is_empty() {
                    " only".to_string()
                } else {
                    format!(", uids {:?} and gids {:?}", self.opts.allow_uids, self.opts.allow_gids)
                };
                self.refuse(
                    &stream,
                    pid,
                    &format!("peer process {pid} runs as uid {uid} gid {gid}; this broker serves uid {me}{others}"),
                );
                continue;
            }
            if self.clients.len() >= self.opts.max_clients {
                self.refuse(
                    &stream,
                    pid,
                    &format!("{} connections open, the most this broker takes", self.clients.len()),
                );
                continue;
            }
            // Blocking, but a client that stops reading cannot stall the
            // broker for long.
            let blocking =
                stream.set_nonblocking(false).and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(2))));
            if let Err(e) = blocking {
                tracing::warn!("ring broker: {e}");
                continue;
            }
            self.next_id += 1;
            let id = self.next_id;
            let c = Client { id, stream, reservation: None, pending: None, sent: Vec::new(), pid, uid, gid, rings: 0 };
            self.clients.push(c);
        }
    }

    /// The lease segments the clients hold, or that are reserved for a
    /// request of theirs in progress.
    fn held(&self) -> Vec<Range<u16>> {
        let of = |c: &Client| {
            let pending = c.pending.as_ref().map(|p| p.reservation.segments());
            c.reservation.as_ref().map(SegmentReservation::segments).into_iter().chain(pending)
        };
        self.clients.iter().flat_map(of).collect()
    }

    /// Answers what client `i` sent; `false`: drop the connection.
    fn serve_client(&mut self, i: usize) -> bool {
        let c = &self.clients[i];
        // A request is 12 bytes; descriptors a client sends are closed.
        let bytes = match sys::socket::recv_with_fds(c.stream.as_fd(), 256) {
            Ok((b, _fds)) => b,
            Err(e) => {
                self.refuse(&c.stream, c.pid, &format!("unreadable request: {e}"));
                return false;
            }
        };
        if bytes.is_empty() {
            return false;
        }
        // Acknowledgements first: the client has the ring, its fd here can go.
        let mut rest = &bytes[..];
        while let Some(r) = rest.strip_prefix(super::ACK) {
            if !self.clients[i].sent.is_empty() {
                let s = self.clients[i].sent.remove(0);
                self.stop_holder(s.holder);
            }
            rest = r;
        }
        if rest.is_empty() {
            return true;
        }
        let c = &self.clients[i];
        if rest == super::status::ASK {
            let answer = super::status::encode(&self.status());
            return sys::socket::send_with_fds(c.stream.as_fd(), &answer, &[]).is_ok() || c.reservation.is_some();
        }
        // A connection that holds lease segments stays open whatever it
        // sends: closing it would give back segments its process leases.
        let holds = c.reservation.is_some();
        let q = match wire::decode_request(rest) {
            Ok(q) => q,
            Err(reason) => {
                self.refuse(&c.stream, c.pid, &format!("malformed request: {reason}"));
                return holds;
            }
        };
        match self.hand_over(i, q) {
            Ok(()) => true,
            Err(e) => {
                let c = &self.clients[i];
                self.refuse(&c.stream, c.pid, &e.to_string());
                // Bad requests close the connection; a pool that is out of
                // segments does not.
                holds || matches!(e, Error::SegmentsInUse { .. })
            }
        }
    }

    fn hand_over(&mut self, i: usize, q: wire::Request) -> Result<()> {
        if q.entries == 0 || q.entries > self.opts.max_entries {
            return Err(Error::invalid("entries", q.entries, format!("1 to {}", self.opts.max_entries)));
        }
        if q.leases > self.opts.max_leases {
            return Err(Error::invalid("lease segments", q.leases, format!("at most {}", self.opts.max_leases)));
        }
        if self.clients[i].pending.is_some() {
            return Err(Error::invalid("request", "a second one", "one at a time: the last one is still being served"));
        }
        // Quotas count every connection of the client's process.
        let pid = self.clients[i].pid;
        let of_pid = self.clients.iter().filter(|c| c.pid == pid);
        let rings: u32 = of_pid.clone().map(|c| c.rings).sum();
        if rings >= self.opts.max_rings_per_client {
            return Err(Error::invalid(
                "rings",
                rings + 1,
                format!("at most {} per client process", self.opts.max_rings_per_client),
            ));
        }
        let held: u32 = of_pid
            .flat_map(|c| c.reservation.as_ref().into_iter().chain(c.pending.as_ref().map(|p| &p.reservation)))
            .map(|r| u32::from(r.segments().len() as u16))
            .sum();
        let most = crate::memory::MAX_ISOLATED_SEGMENTS as u32;
        if self.isolation.is_some() && held + u32::from(q.leases) > most {
            // Before any fresh memory is made for them.
            return Err(Error::invalid(
                "lease segments",
                held + u32::from(q.leases),
                format!("at most {most} per client process of a broker that isolates its clients (a memfd each)"),
            ));
        }
        if held + u32::from(q.leases) > u32::from(self.opts.max_leases) {
            return Err(Error::invalid(
                "lease segments",
                held + u32::from(q.leases),
                format!("at most {} per client process", self.opts.max_leases),
            ));
        }
        let reservation = if q.leases == 0 {
            None
        } else if self.clients[i].reservation.is_some() {
            return Err(Error::invalid("lease segments", q.leases, "one lease range per connection"));
        } else if q.grow {
            Some(self.grow_for(q.leases)?)
        } else {
            Some(self.reserve(q.leases)?)
        };
        if let Some(r) = &reservation {
            self.idle.reserved(r.segments().end);
        }
        if self.isolation.is_some() {
            // Maybe later: fresh memory is made off this thread.
            return self.hand_over_isolated(i, q.entries, reservation);
        }
        let restrict = self.clients[i].uid != sys::socket::euid();
        let handed = self.table.handover_reserved(q.entries, reservation, self.opts.follow_growth, restrict)?;
        self.deliver(i, handed, None)
    }
}
