//! A broker's idle shrink ([`BrokerOptions::shrink_idle`](super::BrokerOptions::shrink_idle)):
//! the pool grew past its starting size for clients; once the segments past
//! what the clients used at their busiest over a whole idle period are
//! free, the pool shrinks back to that, plus one growth step of slack
//! (never below the starting size). A
//! growth in the period counts as every segment used, and every lease
//! range the broker hands out raises the period's peak: demand peaks last
//! milliseconds, and sampling alone would miss them.
//! Taking the busiest moment of the period, not the present, keeps a pool
//! that serves bursts from shrinking between them and growing again. The
//! shrink itself runs on a thread of its own: the broker keeps serving
//! (a growth waits for it on the pool's growth lock).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::table::BufferTable;

/// How often the pool is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(20);
/// How long a shrink waits for a segment that is still held.
const SHRINK_TIMEOUT: Duration = Duration::from_millis(100);

pub(crate) struct IdleShrink {
    /// Segments when the broker started: the pool never shrinks below.
    base: u16,
    /// The current period: when it started, and the most segments in use
    /// (up to the last one held) seen in it.
    period: Option<(Instant, u16)>,
    last_look: Option<Instant>,
    /// The pool's segments at the last look: a growth since means that the
    /// clients needed every segment at some moment of the period.
    last_entries: u16,
    /// A shrink runs now.
    running: Arc<AtomicBool>,
}

impl IdleShrink {
    /// A client was given lease segments up to `end`: the period's peak
    /// is at least that (demand peaks last milliseconds; looks every 20 ms
    /// would miss them).
    pub(crate) fn reserved(&mut self, end: u16) {
        if let Some((_, peak)) = &mut self.period {
            *peak = (*peak).max(end);
        }
    }

    /// Segments when the broker started.
    pub(crate) fn base(&self) -> u16 {
        self.base
    }

    pub(crate) fn new(base: u16) -> IdleShrink {
        IdleShrink {
            base,
            period: None,
            last_look: None,
            last_entries: base,
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Looks at the pool (when [`IdleShrink::due`]); at the end of a period of
    /// `idle` in which no more than `peak` segments were ever in use,
    /// shrinks the pool to `peak` (at least the starting size) on a thread
    /// of its own, counting into `shrinks` or `failed`. `held`: the
    /// clients' lease segments.
    /// Whether it is time for a look (at most every 20 ms, and not while a
    /// shrink runs).
    pub(crate) fn due(&self) -> bool {
        self.last_look.is_none_or(|t| t.elapsed() >= LOOK_EVERY) && !self.running.load(Ordering::Acquire)
    }

    pub(crate) fn look(
        &mut self,
        table: &BufferTable,
        held: &[Range<u16>],
        idle: Duration,
        shrinks: &Arc<AtomicU64>,
        failed: &Arc<AtomicU64>,
    ) {
        if !self.due() {
            return;
        }
        let now = Instant::now();
        self.last_look = Some(now);
        // Rings whose processes are gone go (with their fds), including
        // those that stopped reading notices.
        table.template.followers.prune();
        let entries = table.template.entries();
        // A growth since the last look: the clients wanted more than the
        // pool had, whatever is held at this moment.
        let grew = entries > self.last_entries;
        self.last_entries = entries;
        let used = if grew { entries } else { in_use(table, held, self.base, entries) };
        let (since, peak) = self.period.get_or_insert((now, used));
        *peak = (*peak).max(used);
        if now.duration_since(*since) < idle {
            return;
        }
        // One growth step of slack above the peak (the broker grows in
        // steps of an eighth of the starting pool): a pool that serves
        // bursts does not shrink and grow again each period.
        let target = if *peak > self.base { peak.saturating_add(self.base / 8) } else { self.base };
        self.period = Some((now, used));
        if target >= entries || used > target {
            return;
        }
        let mem = table.memory();
        let bytes: u64 = mem.segments().iter().skip(usize::from(target)).map(|s| s.len).sum();
        let (table, running, shrinks, failed) = (table.clone(), self.running.clone(), shrinks.clone(), failed.clone());
        running.store(true, Ordering::Release);
        let spawned = std::thread::Builder::new().name("ringpool-shrink".into()).spawn(move || {
            match table.shrink(bytes, SHRINK_TIMEOUT) {
                Ok(r) => {
                    shrinks.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(segments = ?r.segments, bytes = r.bytes, took = ?r.total, "broker shrank the idle pool");
                }
                Err(e) => {
                    // Segments held outside the broker (handed over
                    // otherwise): the pool is as before; the next period
                    // tries again.
                    failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "broker could not shrink the idle pool");
                }
            }
            running.store(false, Ordering::Release);
        });
        if let Err(e) = spawned {
            self.running.store(false, Ordering::Release);
            tracing::warn!(error = %e, "broker could not start its idle shrink");
        }
    }
}

/// Segments in use: up to the last one a client holds or anything leases
/// from (at least `base`).
fn in_use(table: &BufferTable, held: &[Range<u16>], base: u16, entries: u16) -> u16 {
    if entries <= base {
        return entries;
    }
    let stats = table.memory().segment_stats();
    (base..entries)
        .rev()
        .find(|&s| held.iter().any(|r| r.contains(&s)) || stats.get(usize::from(s)).is_some_and(|st| st.leases > 0))
        .map_or(base, |s| s + 1)
}
