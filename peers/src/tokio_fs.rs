//! tokio, used as its `tokio::fs` docs recommend for file I/O.
//!
//! tokio's `File` cannot do O_DIRECT: it reads through its own internal
//! `Vec` buffer (not 4096-aligned, and not positioned). tokio's `fs` module
//! docs, "Tuning your file IO", say it uses `spawn_blocking` behind the
//! scenes and recommend to "Manually use `std::fs` inside
//! `spawn_blocking`". So: a `current_thread` runtime, a `std::fs::File`
//! opened with O_DIRECT, and 32 tasks (`tokio::spawn`), each looping on
//! `tokio::task::spawn_blocking(move || file.read_at(aligned buf, pos))`
//! (`FileExt::read_at`, a positioned pread) and awaiting it.
//!
//! The blocking pool is threads: up to 32 preads run at once on up to 32
//! pool threads (tokio's design, not io_uring); their CPU counts, as the
//! whole process is measured. tokio's io_uring file support needs
//! `--cfg tokio_unstable` and is not the documented default, so it is not
//! used.
//!
//! Spin-up: no registered-buffer API, nothing to time.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::common::{AlignedBuf, JobOut, JobSpec, Meter, Offsets, BS, DEPTH};

/// The random-read job.
pub fn randread(spec: &JobSpec) -> anyhow::Result<JobOut> {
    let rt = ::tokio::runtime::Builder::new_current_thread().build().context("tokio runtime")?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&spec.path)
        .with_context(|| format!("open {} with O_DIRECT", spec.path.display()))?;
    let file = Arc::new(file);
    let spec = spec.clone();
    rt.block_on(async move {
        let meter = Meter::start(spec.runtime);
        let deadline = meter.deadline();
        let mut tasks = Vec::with_capacity(DEPTH);
        for i in 0..DEPTH {
            let file = Arc::clone(&file);
            let mut offs = Offsets::new(&spec, i as u64);
            tasks.push(::tokio::spawn(async move {
                let mut buf = AlignedBuf::new(BS);
                let mut ios = 0u64;
                loop {
                    let off = offs.next_offset();
                    let f = Arc::clone(&file);
                    let (b, res) = ::tokio::task::spawn_blocking(move || {
                        let r = f.read_at(buf.as_mut_slice(), off);
                        (buf, r)
                    })
                    .await
                    .context("spawn_blocking")?;
                    buf = b;
                    let n = res.context("pread")?;
                    if n != BS {
                        bail!("short read: {n} of {BS} bytes");
                    }
                    ios += 1;
                    if Instant::now() >= deadline {
                        return Ok::<u64, anyhow::Error>(ios);
                    }
                }
            }));
        }
        let mut ios = 0;
        for t in tasks {
            ios += t.await.context("task")??;
        }
        Ok(meter.finish(
            ios,
            "tokio::task::spawn_blocking(pread into an aligned buffer), 32 tasks on a current_thread runtime; \
             the preads run on tokio's blocking thread pool (up to 32 threads), not io_uring",
        ))
    })
}
