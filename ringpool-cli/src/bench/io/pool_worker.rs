//! ringpool's side of `bench io --api pool`: the same job through
//! [`IoPool`]'s blocking API, called from the worker threads. At depth 1
//! each worker calls `IoPool::run` (its operation runs on the thread's own
//! ring, cloned at its first call); deeper, it keeps `iodepth` handles of
//! `IoPool::submit` and waits for the oldest.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Instant;

use ringpool::{IoPool, OpHandle};

use super::job::{account, leases, make_op, op_kind, picker, Plan, Slot, WorkerOut};

pub(super) fn worker(
    p: &Plan<'_>,
    pool: &IoPool,
    w: u32,
    start: &Barrier,
    stop_at: &AtomicU64,
    t0: Instant,
) -> anyhow::Result<WorkerOut> {
    let a = p.a;
    let file = p.target.reopen()?;
    let (mut pick, mut rng) = picker(p, w, t0);
    let mut leased = leases(p, &mut rng)?;
    // The thread's ring is made here, before the clock starts.
    let opcode = pool.with_ring(|r| r.opcode_for(op_kind(a)))?;
    let mut out = WorkerOut::new(opcode);
    let mut slots: Vec<Option<Slot>> = (0..a.iodepth).map(|_| None).collect();
    let running = |now: Instant| (now - t0).as_nanos() < u128::from(stop_at.load(Ordering::Relaxed));
    start.wait();
    if a.iodepth == 1 {
        let mut bufs = leased.pop().expect("one slot");
        loop {
            let (off, write) = pick.next(&mut rng, &slots);
            let (op, s) = make_op(p, &file, bufs, off, write);
            let done = pool.run(op);
            let now = Instant::now();
            bufs = account(p, &mut out, &s, done, now)?;
            if !running(now) {
                return Ok(out);
            }
        }
    }
    let mut fifo: VecDeque<(usize, OpHandle)> = VecDeque::new();
    for (slot, bufs) in leased.into_iter().enumerate() {
        let (off, write) = pick.next(&mut rng, &slots);
        let (op, s) = make_op(p, &file, bufs, off, write);
        slots[slot] = Some(s);
        fifo.push_back((slot, pool.submit(op)));
    }
    while let Some((slot, h)) = fifo.pop_front() {
        let done = h.wait();
        let now = Instant::now();
        let s = slots[slot].take().expect("a handle for a slot in flight");
        let bufs = account(p, &mut out, &s, done, now)?;
        if running(now) {
            let (off, write) = pick.next(&mut rng, &slots);
            let (op, s) = make_op(p, &file, bufs, off, write);
            slots[slot] = Some(s);
            fifo.push_back((slot, pool.submit(op)));
        }
    }
    Ok(out)
}
