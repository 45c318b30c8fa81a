//! `ringpool serve`: a daemon that owns one process-shared pool, registered
//! once, and hands rings with the table cloned in to client processes over
//! a Unix socket (the ring broker's protocol: `IoPoolBuilder::broker`, C
//! `rp_pool_from_broker`). Rings follow the pool's growth and shrink; the
//! pool grows on demand up to `--grow-to` and shrinks back toward `--pool`
//! once the grown segments have been free for `--shrink-idle`; a client's rings and lease segments are
//! reclaimed when its connection closes (its process exits, however it
//! dies). SIGTERM and SIGINT stop accepting, wait up to `--drain` for
//! clients to detach, then exit; SIGHUP reloads the quotas file
//! (`--quotas`) and logs the status.
//! `ringpool serve --status SOCKET` prints a running daemon's state.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use ringpool::handover::{BrokerOptions, RingBroker, RingHolder};
use ringpool::stats::BrokerStatus;
use ringpool::types::{parse_size, Bytes, PagePolicy};
use ringpool::{BufferTable, IoMemory, MemoryOptions, TableOptions};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The socket clients attach to (with --status: the daemon to ask).
    #[arg(long)]
    pub socket: PathBuf,
    /// Print the state of the daemon at --socket and exit.
    #[arg(long)]
    pub status: bool,
    /// Pool size.
    #[arg(long, value_parser = parse_size, required_unless_present = "status")]
    pub pool: Option<u64>,
    /// Page size: auto, 1g, 2m, thp or 4k.
    #[arg(long, default_value = "auto")]
    pub page: PagePolicy,
    /// Segment size (a lease segment is the unit a client leases from).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub segment_size: u64,
    /// Grow the pool on demand up to this size when clients ask for more
    /// lease segments than are free (default: the pool never grows).
    #[arg(long, value_parser = parse_size)]
    pub grow_to: Option<u64>,
    /// Mode of the socket file (octal): 600, this user only; 660 with
    /// --allow-gid; 666 with --allow-uid of users outside that group. The
    /// daemon still checks every peer's user (SO_PEERCRED).
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    pub mode: u32,
    /// Most rings one client connection may get.
    #[arg(long, default_value_t = 64)]
    pub max_rings_per_client: u32,
    /// Most lease bytes one client connection may hold (whole segments).
    #[arg(long, value_parser = parse_size)]
    pub max_lease_bytes_per_client: Option<u64>,
    /// Most client connections at once.
    #[arg(long, default_value_t = 1024)]
    pub max_clients: usize,
    /// Shrink the pool back toward --pool once the segments it grew by
    /// have been free (no client's lease segment) this long, in seconds
    /// (default with --grow-to: 60; 0: never).
    #[arg(long, value_parser = parse_secs)]
    pub shrink_idle: Option<Duration>,
    /// A file of quotas (`max-rings-per-client = N`, `max-lease-bytes-per-client
    /// = SIZE`, `max-clients = N`; `#` comments), read at the start (over
    /// the flags) and again on SIGHUP.
    #[arg(long)]
    pub quotas: Option<PathBuf>,
    /// How long a stop waits for clients to detach.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub drain: Duration,
    /// Nice value of the thread that answers clients (-20 to 19). Clients
    /// that keep the CPUs busy would otherwise delay each other's
    /// attachments and the growth notices in the run queue (BENCHMARKS.md
    /// section 16); raising it needs CAP_SYS_NICE (the daemon warns and
    /// serves at its own nice value without it).
    #[arg(long, default_value_t = -20, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,
    /// Serve processes of this user too (repeatable, or comma-separated;
    /// the daemon must run as root). Give the socket a --mode they can
    /// open. Without --isolate, clients of allowed users get the pool's
    /// memory like any other: allow only users who may reach each other's
    /// memory.
    #[arg(long = "allow-uid", value_delimiter = ',')]
    pub allow_uid: Vec<u32>,
    /// Serve processes of this group too (their primary or a
    /// supplementary group; repeatable). The socket's group becomes the
    /// first one: with --mode 660 only they (and this user) can open it.
    #[arg(long = "allow-gid", value_delimiter = ',')]
    pub allow_gid: Vec<u32>,
    /// Hand every ring through a `ringpool hold-ring` process (clients of
    /// other users always get theirs so) and make the daemon non-dumpable:
    /// a client of the daemon's own user then cannot reach the daemon
    /// (ptrace, its memory, its descriptors). Costs each attachment an
    /// exec (BENCHMARKS.md section 16).
    #[arg(long)]
    pub hold_every_ring: bool,
    /// Keep clients apart: a client's rings reach only its own lease
    /// segments, it gets only their memory, and a segment that passes to
    /// another user gets fresh memory first (zeroing it costs once per
    /// change of user). Rings then do not follow growth. Clients of the
    /// daemon's own user reach everything unless --hold-every-ring.
    #[arg(long)]
    pub isolate: bool,
    /// With --status: one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777).ok_or_else(|| format!("{s} is not an octal file mode"))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s} is not a number of seconds"))
}

pub fn run(a: &ServeArgs) -> anyhow::Result<()> {
    if a.status {
        let s = RingBroker::status(&a.socket).with_context(|| format!("ask {}", a.socket.display()))?;
        print_status(&s, a.json)?;
        return Ok(());
    }
    let pool = a.pool.context("--pool is required")?;
    if a.hold_every_ring {
        // Before anything of the pool exists here.
        RingBroker::make_undumpable()?;
    }
    let other_users = !(a.allow_uid.is_empty() && a.allow_gid.is_empty());
    if other_users && !a.isolate {
        eprintln!(
            "ringpool serve: warning: clients of the allowed users and of this one can read and write each \
             other's segments; --isolate keeps them apart"
        );
    }
    let mut broker_opts = options(a, pool)?;
    if let Some(path) = &a.quotas {
        broker_opts = read_quotas(path, &broker_opts, a.segment_size)?;
    }
    let (mem, table) = build_pool(a, pool, broker_opts.grow_to)?;
    let broker = RingBroker::serve(&table, &a.socket, &broker_opts)
        .with_context(|| format!("serve on {}", a.socket.display()))?;
    if let Some(&gid) = a.allow_gid.first() {
        std::os::unix::fs::chown(&a.socket, None, Some(gid))
            .with_context(|| format!("give the socket {} to group {gid}", a.socket.display()))?;
    }
    eprintln!(
        "ringpool serve: {} of {} pages in {} segments, registered once; socket {} (mode {:o}); pid {}{}",
        Bytes(mem.len()),
        mem.page_kind(),
        table.len(),
        a.socket.display(),
        a.mode,
        std::process::id(),
        if a.isolate { "; clients isolated (each reaches only its own lease segments)" } else { "" }
    );
    wait_for_signals(a, &broker, &broker_opts)?;
    drain(broker, a.drain)
}

/// `base` with the quotas of the file at `path` (lease bytes in whole
/// segments of `segment` bytes).
fn read_quotas(path: &std::path::Path, base: &BrokerOptions, segment: u64) -> anyhow::Result<BrokerOptions> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read the quotas file {}", path.display()))?;
    let mut o = base.clone();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let (key, value) = line
            .split_once('=')
            .or_else(|| line.split_once(char::is_whitespace))
            .with_context(|| format!("{}: `{line}` is not `key = value`", at()))?;
        let (key, value) = (key.trim(), value.trim());
        let count =
            |what: &str| value.parse::<u64>().with_context(|| format!("{}: {what} `{value}` is not a number", at()));
        match key {
            "max-rings-per-client" => o.max_rings_per_client = u32::try_from(count(key)?).unwrap_or(u32::MAX),
            "max-clients" => o.max_clients = usize::try_from(count(key)?).unwrap_or(usize::MAX),
            "max-lease-bytes-per-client" => {
                let bytes = parse_size(value).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
                o.max_leases = u16::try_from(bytes / segment).unwrap_or(u16::MAX);
            }
            _ => {
                bail!("{}: unknown quota `{key}` (max-rings-per-client, max-lease-bytes-per-client, max-clients)", at())
            }
        }
    }
    Ok(o)
}

/// The broker's options from the command line.
fn options(a: &ServeArgs, pool: u64) -> anyhow::Result<BrokerOptions> {
    let grow_to = a.grow_to.unwrap_or(0);
    if grow_to != 0 && grow_to < pool {
        bail!("--grow-to {} is below --pool {}", Bytes(grow_to), Bytes(pool));
    }
    let max_leases = match a.max_lease_bytes_per_client {
        None => u16::MAX,
        Some(b) => u16::try_from(b / a.segment_size).unwrap_or(u16::MAX),
    };
    Ok(BrokerOptions {
        max_entries: 4096,
        max_leases,
        max_clients: a.max_clients,
        mode: a.mode,
        // Rings that follow the pool get its growth and lose shrunk
        // segments (they have no SINGLE_ISSUER: BENCHMARKS.md section 15).
        // (An isolated client's ring holds only its own segments.)
        follow_growth: !a.isolate,
        isolate: a.isolate,
        shrink_idle: match a.shrink_idle {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => (grow_to > pool).then_some(Duration::from_secs(60)),
        },
        max_rings_per_client: a.max_rings_per_client,
        grow_to,
        nice: Some(a.nice),
        // This very binary, even if it is replaced or deleted meanwhile:
        // /proc/self/exe of the spawned child is still the daemon's.
        holder: Some(RingHolder { program: "/proc/self/exe".into(), args: vec!["hold-ring".into()] }),
        hold_every_ring: a.hold_every_ring,
        allow_uids: a.allow_uid.clone(),
        allow_gids: a.allow_gid.clone(),
    })
}

/// The shared pool, prefaulted, and its table (room to grow to `grow_to`).
fn build_pool(a: &ServeArgs, pool: u64, grow_to: u64) -> anyhow::Result<(IoMemory, BufferTable)> {
    let opts = MemoryOptions::new().page(a.page).segment_size(a.segment_size).shared();
    let mem = IoMemory::map_with(pool, &opts).context("map the pool")?;
    let t = Instant::now();
    mem.prefault(|_| {}).context("prefault the pool")?;
    tracing::info!(took = ?t.elapsed(), "pool prefaulted");
    let table = BufferTable::register_with(&mem, &TableOptions::new().capacity(grow_to.max(pool)))
        .context("register the pool")?;
    Ok((mem, table))
}

/// Blocks until SIGTERM or SIGINT; SIGHUP reloads the quotas file (if
/// any), logs the status and goes on.
fn wait_for_signals(a: &ServeArgs, broker: &RingBroker, base: &BrokerOptions) -> anyhow::Result<()> {
    let socket = &a.socket;
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
                _ = hup.recv() => {
                    if let Some(path) = &a.quotas {
                        // A bad file leaves the quotas as they were.
                        match read_quotas(path, base, a.segment_size).and_then(|q| Ok(broker.set_quotas(&q)?)) {
                            Ok(()) => eprintln!("ringpool serve: quotas reloaded from {}", path.display()),
                            Err(e) => eprintln!("ringpool serve: quotas not reloaded: {e:#}"),
                        }
                    }
                    match RingBroker::status(socket) {
                        Ok(s) => eprintln!("ringpool serve: {}", summary(&s)),
                        Err(e) => eprintln!("ringpool serve: status: {e}"),
                    }
                }
            }
        }
    })
}

/// Stops accepting, then waits up to `deadline` for clients to detach.
fn drain(broker: RingBroker, deadline: Duration) -> anyhow::Result<()> {
    broker.stop_accepting();
    let clients = broker.stats().clients;
    eprintln!("ringpool serve: stopped accepting; {clients} client(s) attached");
    let t = Instant::now();
    while broker.stats().clients > 0 && t.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = broker.stats().clients;
    drop(broker);
    if left > 0 {
        eprintln!("ringpool serve: {left} client(s) still attached after {deadline:?}; exiting");
    }
    Ok(())
}

fn summary(s: &BrokerStatus) -> String {
    format!(
        "pid {}, pool {} in {} of {} slots, {} client(s), {} ring(s) served, {} refused, {} following the pool, {} \
         growth(s), {} idle shrink(s), {} failed",
        s.pid,
        Bytes(s.pool_bytes),
        s.segments,
        s.capacity,
        s.clients.len(),
        s.served,
        s.refused,
        s.following_rings,
        s.growths,
        s.shrinks,
        s.shrink_timeouts
    )
}

fn print_status(s: &BrokerStatus, json: bool) -> anyhow::Result<()> {
    let vmpin_kb = ringpool_testkit::process::vm_pinned_kb(s.pid).ok();
    if json {
        let mut v = serde_json::to_value(s)?;
        v["vmpin_kb"] = serde_json::json!(vmpin_kb);
        println!("{v}");
        return Ok(());
    }
    println!("{}", summary(s));
    if let Some(kb) = vmpin_kb {
        println!("daemon VmPin: {}", Bytes(kb * 1024));
    }
    for c in &s.clients {
        println!(
            "  client pid {:>8} (uid {}): {} ring(s), lease segments {:?}",
            c.pid, c.uid, c.rings, c.lease_segments
        );
    }
    Ok(())
}

/// `ringpool hold-ring`: started by the daemon for one handed ring, which
/// it holds as descriptor 3 (and nothing else) until its client has
/// duplicated it ([`RingHolder::hold`]).
pub fn hold_ring() -> ! {
    RingHolder::hold()
}
