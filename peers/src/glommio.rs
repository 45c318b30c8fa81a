//! glommio, used as its docs and its storage example show.
//!
//! Random reads follow `random_read` in glommio's `examples/storage.rs`
//! ("Direct I/O" case): an executor from `LocalExecutorBuilder` (its
//! `spawn` runs it on a new thread), an `Rc<DmaFile>` from `DmaFile::open`
//! (O_DIRECT), and N tasks (`glommio::spawn_local(..).detach()`, then
//! awaited) each looping on `file.read_at_aligned(pos, 4096)`; N = 32 here
//! (the example uses 50). Each read allocates its buffer from the
//! executor's registered io memory (default 10 MiB, plenty for 32 x 4 KiB)
//! and goes to the kernel as READ_FIXED, which is glommio's own design.
//! The example also sets `spin_before_park(10 ms)`; the defaults (no
//! spinning) are used here, as for every other peer, so that idle polling
//! does not count as CPU per I/O.
//!
//! Spin-up: `LocalExecutorBuilder::default().io_memory(bytes).spawn(..)`,
//! ready when the executor runs its first future (its reactor has then
//! allocated `io_memory` and registered it in its three rings: main,
//! latency and poll). glommio allocates that memory itself with the global
//! allocator (it takes no memory from outside) and registers it as ONE
//! buffer; the kernel refuses a registered buffer above 1 GiB, and glommio
//! then goes on without registered buffers (a `log::warn!`). The spin-up
//! notices that (through the log and /proc/self/fdinfo) and reports it.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Instant;

use ::glommio::io::DmaFile;
use ::glommio::LocalExecutorBuilder;
use anyhow::bail;

use crate::common::{
    describe_registered, registered_since, uring_fds, JobOut, JobSpec, Meter, Offsets, SpinOut, SpinSpec, BS, DEPTH,
};

/// glommio's `log` warnings, kept for the report.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) && r.target().starts_with("glommio") {
            let mut msg = r.args().to_string();
            msg.retain(|c| c != '\n');
            msg.truncate(200);
            if let Ok(mut w) = WARNINGS.lock() {
                w.push(msg);
            }
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

/// Installs the warning capture (once; harmless if another logger is set).
pub fn install_log_capture() {
    if log::set_logger(&CAPTURE).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

fn warnings_since(n: usize) -> Vec<String> {
    WARNINGS.lock().map(|w| w.iter().skip(n).cloned().collect()).unwrap_or_default()
}

fn warnings_len() -> usize {
    WARNINGS.lock().map(|w| w.len()).unwrap_or(0)
}

/// The random-read job.
pub fn randread(spec: &JobSpec) -> anyhow::Result<JobOut> {
    let spec = spec.clone();
    let w0 = warnings_len();
    let h = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let file = match DmaFile::open(&spec.path).await {
                Ok(f) => Rc::new(f),
                Err(e) => return Err(format!("DmaFile::open {}: {e}", spec.path.display())),
            };
            let ios = Rc::new(Cell::new(0u64));
            let failed: Rc<Cell<Option<String>>> = Rc::new(Cell::new(None));
            let meter = Meter::start(spec.runtime);
            let deadline = meter.deadline();
            let mut tasks = Vec::with_capacity(DEPTH);
            for i in 0..DEPTH {
                let (file, ios, failed) = (Rc::clone(&file), Rc::clone(&ios), Rc::clone(&failed));
                let mut offs = Offsets::new(&spec, i as u64);
                tasks.push(
                    ::glommio::spawn_local(async move {
                        loop {
                            match file.read_at_aligned(offs.next_offset(), BS).await {
                                Ok(r) if r.len() == BS => ios.set(ios.get() + 1),
                                Ok(r) => {
                                    failed.set(Some(format!("short read: {} of {BS} bytes", r.len())));
                                    return;
                                }
                                Err(e) => {
                                    failed.set(Some(format!("read_at_aligned: {e}")));
                                    return;
                                }
                            }
                            if Instant::now() >= deadline {
                                return;
                            }
                        }
                    })
                    .detach(),
                );
            }
            for t in tasks {
                t.await;
            }
            let out = meter.finish(ios.get(), "");
            if let Some(e) = failed.take() {
                return Err(e);
            }
            if let Ok(f) = Rc::try_unwrap(file) {
                let _ = f.close().await;
            }
            Ok(out)
        })
        .map_err(|e| anyhow::anyhow!("LocalExecutorBuilder::spawn: {e}"))?;
    let r = h.join().map_err(|e| anyhow::anyhow!("glommio executor: {e}"))?;
    let mut out = match r {
        Ok(o) => o,
        Err(e) => bail!("{e}"),
    };
    let warns = warnings_since(w0);
    out.note = format!(
        "DmaFile::read_at_aligned (READ_FIXED from the executor's registered io memory, default 10 MiB); \
         32 spawn_local tasks{}",
        if warns.is_empty() { String::new() } else { format!("; glommio warned: {}", warns.join(" | ")) }
    );
    Ok(out)
}

/// Spin-ups of executors with `spec.pool_bytes` of io memory.
pub fn spinup(spec: &SpinSpec) -> anyhow::Result<SpinOut> {
    let mut samples = Vec::with_capacity(spec.count);
    let mut seen = String::new();
    let mut unregistered = 0;
    let mut warns = Vec::new();
    for i in 0..spec.count {
        let before = uring_fds();
        let w0 = warnings_len();
        let first = i == 0;
        let bytes = spec.pool_bytes as usize;
        let t0 = Instant::now();
        let h = LocalExecutorBuilder::default()
            .io_memory(bytes)
            .spawn(move || async move {
                let ready = Instant::now();
                let (_, bufs, reg_bytes) = registered_since(&before);
                let seen = if first { describe_registered(&before) } else { String::new() };
                (ready, bufs, reg_bytes, seen)
            })
            .map_err(|e| anyhow::anyhow!("LocalExecutorBuilder::spawn: {e}"))?;
        let (ready, bufs, reg_bytes, s) = h.join().map_err(|e| anyhow::anyhow!("glommio executor: {e}"))?;
        samples.push((ready - t0).as_secs_f64() * 1e6);
        // Registered in all three rings, each the whole io memory.
        if bufs == 0 || reg_bytes < spec.pool_bytes {
            unregistered += 1;
        }
        if first {
            seen = s;
            warns = warnings_since(w0);
        }
        std::thread::sleep(crate::common::SPINUP_GAP);
    }
    let mut note = format!(
        "LocalExecutorBuilder::io_memory({} MiB).spawn(); io memory from glommio's own allocation \
         (global allocator, 4 KiB pages unless THP applies), registered as one buffer in each of its 3 rings; {seen}",
        spec.pool_bytes >> 20
    );
    if !warns.is_empty() {
        note.push_str(&format!("; glommio warned: {}", warns.join(" | ")));
    }
    if unregistered > 0 {
        note.push_str(&format!(
            "; in {unregistered} of {} spin-ups the executor came up WITHOUT registered buffers \
             (so it could not do fixed-buffer I/O over this pool)",
            spec.count
        ));
    }
    Ok(SpinOut {
        peer: "glommio".into(),
        pool_bytes: spec.pool_bytes,
        samples_us: if unregistered > 0 { Vec::new() } else { samples.clone() },
        note: if unregistered > 0 {
            let mut s = samples.clone();
            format!(
                "{note}; p50 to an executor without registered buffers: {:.0} us (not counted as ready)",
                crate::common::median(&mut s).unwrap_or(f64::NAN)
            )
        } else {
            note
        },
    })
}
