//! A client process of `ringpool bench service` (hidden subcommand
//! `bench service-client`): until its deadline it attaches to the daemon
//! (a ring and one lease segment), does verified fixed I/O through it, and
//! detaches, again and again; whenever its view of the pool has grown, it
//! does a verified fixed write from the newest growth's first segment
//! (filled by the bench's grower). It reports on stdout, a line each:
//! `A <attach µs> <µs of it waiting for a CPU>`, `G <segments> <monotonic ns>`, `M <what>` (a mismatch),
//! `E <error>`.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use clap::Args;
use ringpool::handover::RingBroker;
use ringpool::{DirectFile, Op};
use ringpool_testkit::process::monotonic_ns;

/// Bytes each client owns in the file: its lease I/O, then its growth checks.
pub const SLOT_BYTES: u64 = 2 << 20;
/// Bytes of one verified operation.
const IO: usize = 64 << 10;

/// What the grower writes at the start of a growth's first segment once
/// the rest is filled, followed by the growth's number (u64, from 1): the
/// pool shrinks and grows again meanwhile, so segment counts do not say
/// which growth a client has seen.
pub const GROWN_STAMP: [u8; 8] = *b"RPGROWN1";

/// The byte the grower writes at pool offset `off` of a growth.
pub fn growth_byte(off: u64) -> u8 {
    (off.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57) as u8
}

#[derive(Args, Debug)]
pub struct ServiceClientArgs {
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long)]
    pub file: PathBuf,
    /// Which part of the file is this client's.
    #[arg(long)]
    pub slot: u64,
    /// Stop at this CLOCK_MONOTONIC time (ns).
    #[arg(long)]
    pub until_ns: u64,
    /// Verified operations per attachment.
    #[arg(long, default_value_t = 16)]
    pub ops: u32,
    /// Segments of the pool before any growth.
    #[arg(long)]
    pub initial_segments: u16,
}

pub fn run(a: &ServiceClientArgs) -> anyhow::Result<()> {
    let file = DirectFile::options().read(true).write(true).open(&a.file)?;
    let plain = std::fs::File::open(&a.file)?;
    let out = std::io::stdout();
    let mut seq = 0u64;
    // The newest growth number verified.
    let mut verified = 0u64;
    while monotonic_ns() < a.until_ns {
        if let Err(e) = attachment(a, &file, &plain, &mut seq, &mut verified) {
            writeln!(out.lock(), "E {e}")?;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(())
}

/// One attachment: attach, verified I/O, the growth check, detach.
fn attachment(
    a: &ServiceClientArgs,
    file: &DirectFile,
    plain: &std::fs::File,
    seq: &mut u64,
    verified: &mut u64,
) -> anyhow::Result<()> {
    let out = std::io::stdout();
    let (t, waited) = (monotonic_ns(), runqueue_ns());
    let mut ring = RingBroker::request(&a.socket, 32, 1)?.enable()?;
    let (took, waited) = (monotonic_ns() - t, runqueue_ns().saturating_sub(waited));
    writeln!(out.lock(), "A {} {}", took / 1000, waited / 1000)?;
    let view = ring.memory().expect("a handed ring has a view").clone();
    let base = a.slot * SLOT_BYTES;
    for _ in 0..a.ops {
        *seq += 1;
        let off = base + (*seq % 16) * IO as u64;
        let mut w = view.try_alloc(IO)?;
        let stamp = (a.slot << 40) ^ *seq;
        w.iter_mut().enumerate().for_each(|(i, b)| *b = (stamp.wrapping_add(i as u64 / 8) >> (i % 8 * 8)) as u8);
        let (r, w) = ring.run(Op::write(file, off, w)).into_one();
        r?;
        let (r, back) = ring.run(Op::read(file, off, view.try_alloc(IO)?)).into_one();
        r?;
        if back[..] != w[..] {
            writeln!(out.lock(), "M read-back at {off}")?;
        }
        // A scan for a new growth after every operation while the pool
        // is larger than it started (a growth's stamp comes once its memory
        // is filled; the pool shrinks and grows again meanwhile). Each
        // region looks for the owner's notices first (one poll).
        let segs = view.catch_up()?;
        {
            if let Some((start, growth)) = newest_growth(&view, a.initial_segments, segs) {
                if growth > *verified {
                    growth_check(&mut ring, &view, file, plain, base + SLOT_BYTES / 2, (start, growth), verified)?;
                }
            }
        }
    }
    Ok(())
}

/// Nanoseconds this thread has waited in a run queue for a CPU (the
/// second field of /proc/thread-self/schedstat; 0 where it is missing).
fn runqueue_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|w| w.parse().ok()))
        .unwrap_or(0)
}

/// A fixed write from the first segment of the newest growth this client
/// has not checked (the grower filled it), verified with pread.
fn growth_check(
    ring: &mut ringpool::Ring,
    view: &ringpool::IoMemory,
    file: &DirectFile,
    plain: &std::fs::File,
    at: u64,
    (first_new, growth): (u16, u64),
    verified: &mut u64,
) -> anyhow::Result<()> {
    let out = std::io::stdout();
    let seg = view.segment_size();
    let off = u64::from(first_new) * seg + 4096;
    // SAFETY: the grower holds that segment and wrote it before the
    // growth's notice could reach this process; nothing writes it after.
    let region = unsafe { view.region(off, IO) };
    let Ok(region) = region else {
        // Not (yet) a segment this process may read: check again later.
        return Ok(());
    };
    let (r, _) = ring.run(Op::write(file, at, region)).into_one();
    r?;
    let mut got = vec![0u8; IO];
    plain.read_exact_at(&mut got, at)?;
    if got.iter().enumerate().any(|(i, &b)| b != growth_byte(off + i as u64)) {
        writeln!(out.lock(), "M growth segment {first_new}")?;
    } else {
        writeln!(out.lock(), "G {growth} {}", monotonic_ns())?;
    }
    *verified = growth;
    Ok(())
}

/// The first segment of the newest growth of the grower in `[from, segs)`
/// and its number: the newest segment whose first bytes carry the stamp
/// (written once the rest of the growth is filled). Other segments there
/// were grown for clients on demand.
fn newest_growth(view: &ringpool::IoMemory, from: u16, segs: u16) -> Option<(u16, u64)> {
    let seg = view.segment_size();
    (from..segs).rev().find_map(|s| {
        // SAFETY: a read-only look at 16 bytes; a segment another client
        // leases may change under it (it then does not match the stamp).
        let b = unsafe { view.region(u64::from(s) * seg, 4096) }.ok()?;
        (b[..8] == GROWN_STAMP).then(|| (s, u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"))))
    })
}
