//! ringpool's side of `bench io`: worker threads with a ring each, keeping
//! `iodepth` operations in flight. An operation moves one unit: `--vec`
//! blocks of `--bs` at consecutive file offsets, from buffers scattered in
//! the pool (one vectored operation when `--vec` is above 1).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use ringpool::types::OpKind;
use ringpool::{BufferTable, Buffers, IoBuf, IoMemory, Op, Ring, RingOptions};

use super::target::Target;
use super::{Figures, IoArgs, Lat, Rw};
use crate::verify::{check, stamp, Ledger, SUB};

/// What one worker did.
struct WorkerOut {
    ios: u64,
    bytes: u64,
    hist: Histogram<u64>,
    verified: u64,
    opcode: &'static str,
    stats: ringpool::stats::RingStats,
}

/// What a run's workers share.
pub(super) struct Plan<'a> {
    pub a: &'a IoArgs,
    pub target: &'a Target,
    pub mem: &'a IoMemory,
    pub table: &'a BufferTable,
    pub ledger: Option<&'a Ledger>,
    pub seq: &'a AtomicU64,
}

impl Plan<'_> {
    /// Bytes one operation moves.
    fn unit(&self) -> u64 {
        self.a.bs * u64::from(self.a.vec)
    }
}

/// What one ringpool run gave.
pub(super) struct RunOut {
    pub figures: Figures,
    pub verified: u64,
    /// The opcode the io_uring operations used (READ_FIXED, READV_FIXED, ...).
    pub opcode: &'static str,
    /// Operations the rings took, and those they ran inline.
    pub ops: u64,
    pub inline_ops: u64,
}

/// An operation in flight in one slot.
struct Slot {
    offset: u64,
    write: bool,
    seq: u64,
    at: Instant,
}

/// Picks the file offset (in units) and the direction of the next operation.
struct Picker<'a> {
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
    fn next(&mut self, rng: &mut fastrand::Rng, busy: &[Option<Slot>]) -> (u64, bool) {
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

/// One worker: its ring, its own open of the file, `iodepth` slots,
/// until `stop_at`.
struct Worker<'p, 'a> {
    p: &'p Plan<'a>,
    ring: Ring,
    file: ringpool::DirectFile,
    slots: Vec<Option<Slot>>,
    out: WorkerOut,
}

impl Worker<'_, '_> {
    fn push(&mut self, slot: usize, mut bufs: Buffers, offset: u64, write: bool) -> anyhow::Result<()> {
        let p = self.p;
        let seq = if write { p.seq.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };
        if write {
            fill_write(bufs.as_mut_slice(), offset, seq, p.ledger.is_some());
        }
        self.slots[slot] = Some(Slot { offset, write, seq, at: Instant::now() });
        let file = &self.file;
        let op = match (bufs, write) {
            (Buffers::One(b), false) => Op::read(file, offset, b),
            (Buffers::One(b), true) => Op::write(file, offset, b),
            (b, false) => Op::readv(file, offset, b.into_vec()),
            (b, true) => Op::writev(file, offset, b.into_vec()),
        };
        let a = p.a;
        self.ring.push(op, slot as u64).map_err(|(e, _)| anyhow::anyhow!(e))?;
        // --submit-batch N: hand the queued operations to the kernel once N
        // wait (1 = each at once, as fio's default iodepth_batch_submit);
        // 0 = all the replacements of a completion batch in one call.
        if a.submit_batch > 0 && self.ring.queued() >= a.submit_batch as usize {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Accounts one completion; gives the buffers back for the next push.
    fn complete(&mut self, (tag, c): (u64, ringpool::Done), now: Instant) -> anyhow::Result<(usize, Buffers)> {
        let slot = tag as usize;
        let s = self.slots[slot].take().expect("a completion for a slot in flight");
        let what = if s.write { "write" } else { "read" };
        let n = c.result.with_context(|| format!("{what} at offset {}", s.offset))?;
        let unit = self.p.unit();
        if n as u64 != unit {
            bail!("short {what} at offset {}: {n} of {unit} bytes", s.offset);
        }
        let bufs = c.bufs;
        if let Some(ledger) = self.p.ledger {
            if s.write {
                ledger.record(s.offset, unit, s.seq);
            } else {
                self.out.verified += check_read(bufs.as_slice(), s.offset, self.p.seq)?;
            }
        }
        self.out.hist.saturating_record((now - s.at).as_nanos() as u64);
        self.out.ios += 1;
        self.out.bytes += n as u64;
        Ok((slot, bufs))
    }
}

fn worker(p: &Plan<'_>, w: u32, start: &Barrier, stop_at: &AtomicU64, t0: Instant) -> anyhow::Result<WorkerOut> {
    let a = p.a;
    let mut opts = RingOptions::new()
        .entries(a.iodepth)
        .defer_taskrun(a.defer_taskrun)
        .coop_taskrun(a.coop_taskrun)
        .no_sqarray(a.no_sqarray)
        .engine(a.engine)
        .inline_depth(a.inline_depth);
    opts.iowq_max_workers = a.iowq_max;
    opts.min_wait = a.min_wait_us.map(|us| Duration::from_micros(u64::from(us)));
    let mut ring = p.table.ring_with(&opts)?;
    let file = p.target.reopen()?;
    if a.fixed_files {
        ring.register_file(&file)?;
    }
    let units = p.target.size / p.unit();
    let span = units / u64::from(a.workers);
    let w64 = u64::from(w);
    let mut pick = Picker {
        a,
        w: w64,
        units,
        span,
        cursor: w64 * span,
        unit: p.unit(),
        stripes: p.ledger.is_some() && a.rw.writes(),
    };
    let mut rng = fastrand::Rng::with_seed(0x5eed ^ w64 ^ t0.elapsed().as_nanos() as u64);
    let leased: Vec<Buffers> =
        (0..a.iodepth).map(|_| lease_unit(p.mem, a.vec, a.bs, &mut rng)).collect::<anyhow::Result<_>>()?;
    let kind = match (a.vec, a.rw.writes() && !a.rw.reads()) {
        (1, false) => OpKind::Read,
        (1, true) => OpKind::Write,
        (_, false) => OpKind::Readv,
        (_, true) => OpKind::Writev,
    };
    let opcode = ring.opcode_for(kind);
    let hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let out = WorkerOut { ios: 0, bytes: 0, hist, verified: 0, opcode, stats: Default::default() };
    let mut wk = Worker { p, ring, file, slots: (0..a.iodepth).map(|_| None).collect(), out };
    start.wait();
    for (slot, bufs) in leased.into_iter().enumerate() {
        let (off, write) = pick.next(&mut rng, &wk.slots);
        wk.push(slot, bufs, off, write)?;
    }
    loop {
        wk.ring.wait(1)?;
        // At most a queue's worth per pass: inline completions are ready as
        // soon as they are pushed.
        let mut drained = true;
        let mut running = true;
        for _ in 0..a.iodepth {
            let Some(c) = wk.ring.next_completion() else { break };
            let now = Instant::now();
            // The main thread moves the deadline from "never" to "now" when the run ends.
            running = (now - t0).as_nanos() < u128::from(stop_at.load(Ordering::Relaxed));
            let (slot, bufs) = wk.complete(c, now)?;
            if running {
                let (off, write) = pick.next(&mut rng, &wk.slots);
                wk.push(slot, bufs, off, write)?;
            }
            drained = false;
        }
        if drained {
            running = t0.elapsed().as_nanos() < u128::from(stop_at.load(Ordering::Relaxed));
        }
        if !running && drained && wk.ring.in_flight() == 0 {
            break;
        }
    }
    wk.out.stats = wk.ring.stats();
    Ok(wk.out)
}

/// Runs the workers for `--runtime`; their figures, whole-process CPU
/// included (io-wq threads too).
pub(super) fn run_ringpool(p: &Plan<'_>) -> anyhow::Result<RunOut> {
    let a = p.a;
    let start = Barrier::new(a.workers as usize + 1);
    let stop_at = AtomicU64::new(u64::MAX);
    let t0 = Instant::now();
    let (outs, secs, cpu_us) = std::thread::scope(|s| -> anyhow::Result<(Vec<WorkerOut>, f64, f64)> {
        let handles: Vec<_> = (0..a.workers)
            .map(|w| {
                let (start, stop_at) = (&start, &stop_at);
                s.spawn(move || {
                    let r = worker(p, w, start, stop_at, t0);
                    if r.is_err() {
                        // Release the others: a failed worker must not hang the run.
                        stop_at.store(0, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        // Workers set up their rings and buffers first; the clock and the
        // CPU account start when all are ready.
        start.wait();
        let (u0, s0) = ringpool_testkit::process::rusage_self_us();
        let begun = Instant::now();
        let deadline = begun + Duration::from_secs_f64(a.runtime);
        while Instant::now() < deadline && stop_at.load(Ordering::Relaxed) != 0 {
            std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(50)));
        }
        stop_at.store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let outs: anyhow::Result<Vec<WorkerOut>> =
            handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?).collect();
        let secs = begun.elapsed().as_secs_f64();
        let (u1, s1) = ringpool_testkit::process::rusage_self_us();
        Ok((outs?, secs, ((u1 - u0) + (s1 - s0)) as f64))
    })?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let (mut ios, mut bytes, mut verified) = (0, 0, 0);
    for o in &outs {
        hist.add(&o.hist).ok();
        ios += o.ios;
        bytes += o.bytes;
        verified += o.verified;
    }
    let figures = Figures {
        iops: ios as f64 / secs,
        mib_s: bytes as f64 / secs / (1 << 20) as f64,
        lat_us: Lat {
            p50: hist.value_at_quantile(0.5) as f64 / 1e3,
            p99: hist.value_at_quantile(0.99) as f64 / 1e3,
            p999: hist.value_at_quantile(0.999) as f64 / 1e3,
        },
        cpu_us_per_io: cpu_us / ios.max(1) as f64,
        fio_reported_cpu_us_per_io: None,
        ios,
        seconds: secs,
    };
    Ok(RunOut {
        figures,
        verified,
        opcode: outs.first().map_or("none", |o| o.opcode),
        ops: outs.iter().map(|o| o.stats.ops).sum(),
        inline_ops: outs.iter().map(|o| o.stats.inline_ops).sum(),
    })
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
