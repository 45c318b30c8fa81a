//! ringpool's side of `bench io --api ring`: each worker thread takes its
//! own ring from the pool's table (by clone) and keeps `iodepth`
//! operations in flight on it.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use ringpool::{Buffers, Ring, RingOptions};

use super::job::{account, leases, make_op, op_kind, picker, Plan, Slot, WorkerOut};

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
    fn push(&mut self, slot: usize, bufs: Buffers, offset: u64, write: bool) -> anyhow::Result<()> {
        let (op, s) = make_op(self.p, &self.file, bufs, offset, write);
        self.slots[slot] = Some(s);
        self.ring.push(op, slot as u64).map_err(|(e, _)| anyhow::anyhow!(e))?;
        // --submit-batch N: hand the queued operations to the kernel once N
        // wait (1 = each at once, as fio's default iodepth_batch_submit);
        // 0 = all the replacements of a completion batch in one call.
        let batch = self.p.a.submit_batch;
        if batch > 0 && self.ring.queued() >= batch as usize {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Accounts one completion; gives the buffers back for the next push.
    fn complete(&mut self, (tag, c): (u64, ringpool::Done), now: Instant) -> anyhow::Result<(usize, Buffers)> {
        let slot = tag as usize;
        let s = self.slots[slot].take().expect("a completion for a slot in flight");
        let bufs = account(self.p, &mut self.out, &s, c, now)?;
        Ok((slot, bufs))
    }
}

pub(super) fn worker(
    p: &Plan<'_>,
    w: u32,
    start: &Barrier,
    stop_at: &AtomicU64,
    t0: Instant,
) -> anyhow::Result<WorkerOut> {
    let a = p.a;
    let mut opts = RingOptions::new()
        .entries(a.iodepth)
        .defer_taskrun(a.defer_taskrun)
        .single_issuer(a.single_issuer)
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
    let (mut pick, mut rng) = picker(p, w, t0);
    let leased = leases(p, &mut rng)?;
    let out = WorkerOut::new(ring.opcode_for(op_kind(a)));
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
