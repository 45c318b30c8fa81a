//! monoio, used as its docs show, with the io_uring driver.
//!
//! `monoio::RuntimeBuilder::<IoUringDriver>::new().build()` (its default
//! 1024-entry ring), `block_on`, a file from `monoio::fs::OpenOptions` with
//! `OpenOptionsExt::custom_flags(O_DIRECT)`, and `File::read_at(buf, pos)`
//! (the `File::read_at` doc example: an owned buffer in, the buffer back
//! with the result) in 32 tasks (`monoio::spawn`), each looping on its own
//! buffer. `read_at` is an io_uring READ (monoio has no registered-buffer
//! API, so no READ_FIXED).
//!
//! Deviation, forced by O_DIRECT: monoio's examples read into `Vec<u8>`,
//! which is not 4096-aligned; the buffers here are [`AlignedBuf`]s with
//! monoio's `IoBufMut` trait implemented for them, which is what the trait
//! is for.
//!
//! Spin-up: monoio has no registered-buffer API, so there is nothing to
//! time (the row says so).

use std::rc::Rc;
use std::time::Instant;

use ::monoio::buf::IoBufMut;
use anyhow::{bail, Context};

use crate::common::{AlignedBuf, JobOut, JobSpec, Meter, Offsets, BS, DEPTH};

// SAFETY: the pointer is the start of a live allocation of len() bytes
// that never moves while the AlignedBuf lives; every byte is initialised.
unsafe impl IoBufMut for AlignedBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_total(&mut self) -> usize {
        self.len()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

/// The random-read job.
pub fn randread(spec: &JobSpec) -> anyhow::Result<JobOut> {
    let spec = spec.clone();
    let mut rt = ::monoio::RuntimeBuilder::<::monoio::IoUringDriver>::new().build().context("monoio runtime")?;
    rt.block_on(async move {
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            ::monoio::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&spec.path)
                .await
                .with_context(|| format!("open {} with O_DIRECT", spec.path.display()))?
        };
        let file = Rc::new(file);
        let meter = Meter::start(spec.runtime);
        let deadline = meter.deadline();
        let mut tasks = Vec::with_capacity(DEPTH);
        for i in 0..DEPTH {
            let file = Rc::clone(&file);
            let mut offs = Offsets::new(&spec, i as u64);
            tasks.push(::monoio::spawn(async move {
                let mut buf = AlignedBuf::new(BS);
                let mut ios = 0u64;
                loop {
                    let (res, b) = file.read_at(buf, offs.next_offset()).await;
                    buf = b;
                    let n = res.context("read_at")?;
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
            ios += t.await?;
        }
        Ok(meter.finish(ios, "io_uring READ (no registered buffers in monoio's API) into 32 aligned owned buffers; 32 monoio::spawn tasks"))
    })
}
