//! ringpool's side of `bench io`: worker threads with a ring each, keeping
//! `iodepth` operations in flight. An operation moves one unit: `--vec`
//! blocks of `--bs` at consecutive file offsets, from buffers scattered in
//! the pool (one vectored operation when `--vec` is above 1).

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use ringpool::types::OpKind;
use ringpool::{BufferTable, Buffers, DirectFile, IoBuf, IoMemory, IoPool, Op, RingOptions};

use super::target::Target;
use super::{IoArgs, Rw};
use crate::verify::{check, stamp, Ledger, SUB};

/// What one worker did.
pub(super) struct WorkerOut {
    pub ios: u64,
    pub bytes: u64,
    pub hist: Histogram<u64>,
    pub verified: u64,
    pub opcode: &'static str,
    pub stats: ringpool::stats::RingStats,
}

/// What a run's workers share.
pub(super) struct Plan<'a> {
    pub a: &'a IoArgs,
    pub target: &'a Target,
    pub mem: &'a IoMemory,
    pub table: &'a BufferTable,
    pub ledger: Option<&'a Ledger>,
    pub seq: &'a AtomicU64,
    /// With `--api pool`: the pool whose blocking API the workers call.
    pub pool: Option<&'a IoPool>,
}

impl Plan<'_> {
    /// Bytes one operation moves.
    pub(super) fn unit(&self) -> u64 {
        self.a.bs * u64::from(self.a.vec)
    }
}

/// An operation in flight in one slot.
pub(super) struct Slot {
    offset: u64,
    write: bool,
    seq: u64,
    at: Instant,
}

/// Picks the file offset (in units) and the direction of the next operation.
pub(super) struct Picker<'a> {
    a: &'a IoArgs,
    w: u64,
    units: u64,
    span: u64,
    cursor: u64,
    unit: u64,
    /// With --verify and writes, each worker writes only its own stripe of
    /// units, never two in flight to one unit, so that the last completed
    /// write of every unit is well defined.
    stripes: bool,
}

impl Picker<'_> {
    pub(super) fn next(&mut self, rng: &mut fastrand::Rng, busy: &[Option<Slot>]) -> (u64, bool) {
        let write = match self.a.rw {
            Rw::Randread | Rw::Read => false,
            Rw::Randwrite | Rw::Write => true,
            Rw::Randrw => rng.bool(),
        };
        loop {
            let u = if self.a.rw.random() {
                rng.u64(0..self.units)
            } else {
                let u = self.cursor;
                self.cursor += 1;
                if self.cursor >= (self.w + 1) * self.span {
                    self.cursor = self.w * self.span;
                }
                u
            };
            let off = u * self.unit;
            let foreign = u % u64::from(self.a.workers) != self.w;
            if self.stripes && write && (foreign || busy.iter().flatten().any(|s| s.offset == off)) {
                if !self.a.rw.random() {
                    return (off, false);
                }
                continue;
            }
            return (off, write);
        }
    }
}

/// The buffers of one slot: `vec` blocks of `bs` in one segment (one
/// READV_FIXED can take them), every other block of twice as many, so
/// that they are scattered, not one run of memory.
fn lease_unit(mem: &IoMemory, vec: u32, bs: u64, rng: &mut fastrand::Rng) -> anyhow::Result<Buffers> {
    let mut bufs = if vec == 1 {
        Buffers::One(mem.try_alloc(bs as usize)?)
    } else {
        let all = mem.try_alloc_vec(2 * vec as usize, bs as usize).context("leasing a vectored unit")?;
        Buffers::Many(all.into_iter().step_by(2).collect())
    };
    for b in bufs.as_mut_slice() {
        // Incompressible content, as fio's buffers: a compressing device
        // (zram) must not get an easy ride from zero pages.
        rng.fill(b);
    }
    Ok(bufs)
}

/// Worker `w`'s picker of offsets and its random generator.
pub(super) fn picker<'a>(p: &Plan<'a>, w: u32, t0: Instant) -> (Picker<'a>, fastrand::Rng) {
    let a = p.a;
    let units = p.target.size / p.unit();
    let span = units / u64::from(a.workers);
    let w64 = u64::from(w);
    let pick = Picker {
        a,
        w: w64,
        units,
        span,
        cursor: w64 * span,
        unit: p.unit(),
        stripes: p.ledger.is_some() && a.rw.writes(),
    };
    (pick, fastrand::Rng::with_seed(0x5eed ^ w64 ^ t0.elapsed().as_nanos() as u64))
}

/// The buffers of every slot of one worker.
pub(super) fn leases(p: &Plan<'_>, rng: &mut fastrand::Rng) -> anyhow::Result<Vec<Buffers>> {
    (0..p.a.iodepth).map(|_| lease_unit(p.mem, p.a.vec, p.a.bs, rng)).collect()
}

/// The kind of the run's operations (randrw: reads).
pub(super) fn op_kind(a: &IoArgs) -> OpKind {
    match (a.vec, a.rw.writes() && !a.rw.reads()) {
        (1, false) => OpKind::Read,
        (1, true) => OpKind::Write,
        (_, false) => OpKind::Readv,
        (_, true) => OpKind::Writev,
    }
}

impl WorkerOut {
    pub(super) fn new(opcode: &'static str) -> WorkerOut {
        let hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
        WorkerOut { ios: 0, bytes: 0, hist, verified: 0, opcode, stats: Default::default() }
    }
}

/// Writes the data of a write at `offset`: verify headers, or (as fio's
/// scramble_buffers) the offset in every 512-byte sector so that no two
/// writes carry the same data (no dedupe, no same-page merging).
fn fill_write(bufs: &mut [IoBuf], offset: u64, seq: u64, stamped: bool) {
    let mut at = offset;
    for b in bufs {
        if stamped {
            for (i, sub) in b.chunks_mut(SUB).enumerate() {
                stamp(sub, at + (i * SUB) as u64, seq);
            }
        } else {
            for sector in b.chunks_mut(512) {
                sector[..8].copy_from_slice(&(at ^ seq).to_le_bytes());
            }
        }
        at += b.len() as u64;
    }
}

/// Checks every 4 KiB of a read at `offset`; returns how many.
fn check_read(bufs: &[IoBuf], offset: u64, seq: &AtomicU64) -> anyhow::Result<u64> {
    let mut at = offset;
    let mut n = 0;
    for b in bufs {
        for (i, sub) in b.chunks(SUB).enumerate() {
            let off = at + (i * SUB) as u64;
            let s = check(sub, off).map_err(|e| anyhow::anyhow!("verify failed: {e}"))?;
            let issued = seq.load(Ordering::Relaxed);
            if s > issued {
                bail!("verify failed: offset {off}: sequence {s} was never written (last issued {issued})");
            }
            n += 1;
        }
        at += b.len() as u64;
    }
    Ok(n)
}

/// The operation of one unit at `offset` (a write's data written into its
/// buffers first), and its slot record, timed from now.
pub(super) fn make_op(p: &Plan<'_>, file: &DirectFile, mut bufs: Buffers, offset: u64, write: bool) -> (Op, Slot) {
    let seq = if write { p.seq.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };
    if write && (p.ledger.is_some() || p.a.scramble) {
        fill_write(bufs.as_mut_slice(), offset, seq, p.ledger.is_some());
    }
    let op = match (bufs, write) {
        (Buffers::One(b), false) => Op::read(file, offset, b),
        (Buffers::One(b), true) => Op::write(file, offset, b),
        (b, false) => Op::readv(file, offset, b.into_vec()),
        (b, true) => Op::writev(file, offset, b.into_vec()),
    };
    (op, Slot { offset, write, seq, at: Instant::now() })
}

/// Accounts the completion `c` of the operation of slot `s` (its latency,
/// its bytes, its check with --verify); the buffers, for the next push.
pub(super) fn account(
    p: &Plan<'_>,
    out: &mut WorkerOut,
    s: &Slot,
    c: ringpool::Done,
    now: Instant,
) -> anyhow::Result<Buffers> {
    let what = if s.write { "write" } else { "read" };
    let n = c.result.with_context(|| format!("{what} at offset {}", s.offset))?;
    let unit = p.unit();
    if n as u64 != unit {
        bail!("short {what} at offset {}: {n} of {unit} bytes", s.offset);
    }
    let bufs = c.bufs;
    if let Some(ledger) = p.ledger {
        if s.write {
            ledger.record(s.offset, unit, s.seq);
        } else {
            out.verified += check_read(bufs.as_slice(), s.offset, p.seq)?;
        }
    }
    out.hist.saturating_record((now - s.at).as_nanos() as u64);
    out.ios += 1;
    out.bytes += n as u64;
    Ok(bufs)
}

/// After the timed run: re-reads every 4 KiB written and checks it holds
/// exactly the last sequence written there (no lost or misplaced write).
pub(super) fn final_verify(p: &Plan<'_>, ledger: &Ledger) -> anyhow::Result<u64> {
    let mut ring = p.table.ring_with(&RingOptions::new().entries(32))?;
    let file = &p.target.file;
    let written = ledger.written_blocks();
    let bar = crate::util::byte_bar(written.len() as u64 * SUB as u64, "verify");
    let mut it = written.iter();
    let mut checked = 0u64;
    let mut outstanding = 0;
    loop {
        while outstanding < 32 {
            let Some(&sub) = it.next() else { break };
            let buf = p.mem.alloc_timeout(SUB, Duration::from_secs(60))?;
            ring.push(Op::read(file, sub * SUB as u64, buf), sub).map_err(|(e, _)| e)?;
            outstanding += 1;
        }
        if outstanding == 0 {
            break;
        }
        ring.wait(1)?;
        for (tag, c) in ring.completions() {
            outstanding -= 1;
            let off = tag * SUB as u64;
            c.result.with_context(|| format!("verify read at {off}"))?;
            let buf = c.bufs.into_one().expect("reads carry their buffer");
            let seq = check(&buf, off).map_err(|e| anyhow::anyhow!("verify failed: {e}"))?;
            let want = ledger.seq[tag as usize].load(Ordering::Relaxed);
            if seq != want {
                bail!("verify failed: offset {off} holds sequence {seq}, but the last write there was sequence {want}");
            }
            checked += 1;
            bar.inc(SUB as u64);
        }
    }
    bar.finish_and_clear();
    Ok(checked)
}
