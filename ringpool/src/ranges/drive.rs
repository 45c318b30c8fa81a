//! The two drivers of a ranged read's pieces: the calling thread's own ring
//! (blocking), and operation handles (awaited). Both keep going until every
//! piece is read; on an error they push nothing more and wait for what is in
//! flight, so that no buffer is given back while the kernel writes into it.

use std::collections::VecDeque;

use super::{settle, Meta, Piece, RangeRequest, Settled};
use crate::error::{Error, Result};
use crate::op::{Done, Op};
use crate::pool::IoPool;
use crate::ring::Ring;

/// Reads in flight at most on the calling thread's ring (it holds 32).
const DEPTH: usize = 32;

fn read_op(reqs: &[RangeRequest], p: Piece) -> (Meta, Op) {
    let m = Meta::of(&p);
    (m, Op::read(&reqs[m.req].file, m.file_off + m.done, p.buf))
}

/// Every piece read on the calling thread's ring (one at a time, inline,
/// where the pool has no ring for callers).
pub(super) fn blocking(pool: &IoPool, reqs: &[RangeRequest], pieces: Vec<Piece>) -> Result<Vec<Piece>> {
    let mut pieces = Some(pieces);
    match pool.with_ring(|ring| on_ring(ring, reqs, pieces.take().unwrap_or_default())) {
        Ok(r) => r,
        Err(_) => {
            let mut out = Vec::new();
            let mut queue: VecDeque<Piece> = pieces.take().unwrap_or_default().into();
            while let Some(p) = queue.pop_front() {
                let (m, op) = read_op(reqs, p);
                match settle(m, pool.run(op), reqs)? {
                    Settled::Done(p) => out.push(p),
                    Settled::Again(p) => queue.push_front(p),
                }
            }
            Ok(out)
        }
    }
}

/// Keeps up to `DEPTH` pieces in flight on `ring` until all are read.
fn on_ring(ring: &mut Ring, reqs: &[RangeRequest], pieces: Vec<Piece>) -> Result<Vec<Piece>> {
    let mut queue: VecDeque<Piece> = pieces.into();
    let mut flight: Vec<Option<Meta>> = Vec::new();
    let mut in_flight = 0usize;
    let mut out = Vec::new();
    let mut failed: Option<Error> = None;
    loop {
        while failed.is_none() && in_flight < DEPTH {
            let Some(p) = queue.pop_front() else { break };
            let tag = flight.iter().position(Option::is_none).unwrap_or_else(|| {
                flight.push(None);
                flight.len() - 1
            });
            let (m, op) = read_op(reqs, p);
            match ring.push(op, tag as u64) {
                Ok(()) => {
                    flight[tag] = Some(m);
                    in_flight += 1;
                }
                Err((Error::RingFull { .. }, op)) if in_flight > 0 => {
                    match op.into_buffers().into_one() {
                        Some(buf) => queue.push_front(m.with(buf)),
                        None => failed = Some(Error::Lost("a ranged read lost its buffer".into())),
                    }
                    break;
                }
                Err((e, _)) => failed = Some(e),
            }
        }
        if in_flight == 0 {
            break;
        }
        // A failed wait leaves the reads in flight in the ring, which keeps
        // their buffers until they complete.
        ring.wait(1)?;
        let done: Vec<(u64, Done)> = ring.completions().collect();
        for (tag, d) in done {
            let Some(m) = flight.get_mut(tag as usize).and_then(Option::take) else { continue };
            in_flight -= 1;
            match settle(m, d, reqs) {
                Ok(Settled::Done(p)) => out.push(p),
                Ok(Settled::Again(p)) => queue.push_front(p),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Every piece submitted at once, then awaited in order (a short read's
/// rest is submitted when it is seen). A dropped future leaves its reads in
/// flight with their buffers (the pool reaps them), never freed early.
pub(super) async fn awaited(pool: &IoPool, reqs: &[RangeRequest], pieces: Vec<Piece>) -> Result<Vec<Piece>> {
    let mut flight: VecDeque<(Meta, crate::handle::OpHandle)> = VecDeque::with_capacity(pieces.len());
    for p in pieces {
        let (m, op) = read_op(reqs, p);
        flight.push_back((m, pool.submit(op)));
    }
    let mut out = Vec::new();
    let mut failed: Option<Error> = None;
    while let Some((m, h)) = flight.pop_front() {
        let d = h.await;
        if failed.is_some() {
            continue;
        }
        match settle(m, d, reqs) {
            Ok(Settled::Done(p)) => out.push(p),
            Ok(Settled::Again(p)) => {
                let (m, op) = read_op(reqs, p);
                flight.push_front((m, pool.submit(op)));
            }
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
