//! ringpool, used as its own docs show.
//!
//! Random reads follow the crate docs (`ringpool/src/lib.rs`: "One pool,
//! prefaulted once, registered once. Any thread: a ring with the whole
//! table, by clone") and the loop of its own benchmark
//! (`ringpool-cli/src/bench/io/job.rs`, minus its verification and
//! histograms): one `IoMemory`, one `BufferTable`, one `Ring` from
//! `table.ring_with(RingOptions::new().entries(32))` on the benchmarking
//! thread, the file registered (`Ring::register_file`), 32 leases from the
//! pool each in one READ_FIXED, re-pushed from `Ring::next_completion` after
//! `Ring::wait(1)`.
//!
//! The engine is ringpool's default (`EnginePolicy::Auto`): io_uring where
//! the device serves NOWAIT (the ext4 file), and on a device without it
//! (zram) operations run inline (preadv2 on the ring's thread) while fewer
//! than `INLINE_DEPTH` (12) are outstanding, io_uring above. That is the
//! library's documented behaviour, but it means that on zram part of
//! ringpool's reads are synchronous: the row's note says how many, and
//! [`randread`] with `Some(EnginePolicy::IoUring)` gives the pure io_uring
//! figure beside it.
//!
//! Spin-up follows `BufferTable::ring`'s docs: the pool and table are made
//! once; each spin-up is `std::thread::spawn` + `table.ring()` (the table by
//! IORING_REGISTER_CLONE_BUFFERS) on the new thread.

use std::sync::Arc;
use std::time::Instant;

use ::ringpool::types::DirectIo;
use ::ringpool::{BufferTable, DirectFile, IoBuf, IoMemory};
use anyhow::{bail, Context};

use crate::common::{describe_registered, uring_fds, JobOut, JobSpec, Meter, Offsets, SpinOut, SpinSpec, BS, DEPTH};
pub use ringpool::types::{EnginePolicy, PagePolicy};
pub use ringpool::{MemoryOptions, Op, RingOptions};

/// The random-read job. `engine`: `None` for ringpool's default (Auto).
pub fn randread(spec: &JobSpec, engine: Option<EnginePolicy>) -> anyhow::Result<JobOut> {
    // A small pool: 2 MiB hugetlb if a page is free, else Auto (THP).
    let mem = IoMemory::map_with(2 << 20, &MemoryOptions::new().page(PagePolicy::Huge2M))
        .or_else(|_| IoMemory::map_with(2 << 20, &MemoryOptions::new().page(PagePolicy::Auto)))?;
    mem.prefault(|_| {})?;
    let table = BufferTable::register(&mem)?;
    let mut opts = RingOptions::new().entries(DEPTH as u32);
    if let Some(e) = engine {
        opts = opts.engine(e);
    }
    let mut ring = table.ring_with(&opts)?;
    let file = DirectFile::options().read(true).direct(DirectIo::Required).open(&spec.path)?;
    ring.register_file(&file)?;
    let (engine_kind, why) = ring.engine_for(&file);
    let bufs: Vec<IoBuf> = (0..DEPTH).map(|_| mem.try_alloc(BS)).collect::<Result<_, _>>()?;
    let mut offs = Offsets::new(spec, 0);

    let meter = Meter::start(spec.runtime);
    let deadline = meter.deadline();
    for (slot, buf) in bufs.into_iter().enumerate() {
        ring.push(Op::read(&file, offs.next_offset(), buf), slot as u64).map_err(|(e, _)| e)?;
    }
    let mut ios = 0u64;
    let mut running = true;
    loop {
        ring.wait(1)?;
        // At most a queue's worth per pass, as ringpool-cli's job.rs: inline
        // completions are ready as soon as they are pushed.
        let mut drained = true;
        for _ in 0..DEPTH {
            let Some((tag, c)) = ring.next_completion() else { break };
            drained = false;
            let n = c.result.context("ringpool read")?;
            if n != BS {
                bail!("short read: {n} of {BS} bytes");
            }
            ios += 1;
            running = running && Instant::now() < deadline;
            if running {
                let buf = c.bufs.into_one().context("a read gives its buffer back")?;
                ring.push(Op::read(&file, offs.next_offset(), buf), tag).map_err(|(e, _)| e)?;
            }
        }
        if !running && drained && ring.in_flight() == 0 {
            break;
        }
    }
    let stats = ring.stats();
    let note = format!(
        "{} over {} ({}); engine {:?} -> {} ({why}); {} of {} ops inline (preadv2 on the ring's thread)",
        ring.opcode_for(::ringpool::types::OpKind::Read),
        mem.page_kind(),
        if ring.setup().path == ::ringpool::types::TablePath::Cloned { "table by clone" } else { "table registered" },
        engine.unwrap_or_default(),
        engine_kind.name(),
        stats.inline_ops,
        stats.ops,
    );
    Ok(meter.finish(ios, note))
}

/// The pool and table the spin-ups share (made once, not timed).
pub fn make_pool(pool_bytes: u64, page: PagePolicy) -> anyhow::Result<(IoMemory, BufferTable)> {
    let mem = IoMemory::map_with(pool_bytes, &MemoryOptions::new().page(page))?;
    mem.prefault(|_| {})?;
    let table = BufferTable::register(&mem)?;
    Ok((mem, table))
}

/// Spin-ups: a new thread, `table.ring()` on it, ready.
pub fn spinup(table: &Arc<BufferTable>, spec: &SpinSpec) -> anyhow::Result<SpinOut> {
    let mut samples = Vec::with_capacity(spec.count);
    let mut seen = String::new();
    for i in 0..spec.count {
        let before = uring_fds();
        let t = Arc::clone(table);
        let first = i == 0;
        let t0 = Instant::now();
        let h = std::thread::spawn(move || -> anyhow::Result<(Instant, String)> {
            let ring = t.ring()?;
            let ready = Instant::now();
            let mut seen = String::new();
            if first {
                seen = format!(
                    "ring path {:?}, {} table slots; {}",
                    ring.setup().path,
                    ring.table_len(),
                    describe_registered(&before)
                );
            }
            drop(ring);
            Ok((ready, seen))
        });
        let (ready, s) =
            h.join().map_err(|p| anyhow::anyhow!("spin-up thread panicked: {}", crate::common::panic_text(&*p)))??;
        samples.push((ready - t0).as_secs_f64() * 1e6);
        if first {
            seen = s;
        }
        std::thread::sleep(crate::common::SPINUP_GAP);
    }
    Ok(SpinOut {
        peer: "ringpool".into(),
        pool_bytes: spec.pool_bytes,
        samples_us: samples,
        note: format!(
            "std::thread::spawn + BufferTable::ring() (clone of the one registered table of {} pages); {seen}",
            table.memory().page_kind()
        ),
    })
}
