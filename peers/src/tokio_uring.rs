//! tokio-uring, used as its docs and tests show.
//!
//! Random reads: `tokio_uring::start` (the crate's documented entry point,
//! its default 256-entry ring), a `FixedBufRegistry` of 32 buffers
//! registered with `registry.register()`, and `File::read_fixed_at` with a
//! buffer from `registry.check_out(i)` -- the pattern of the
//! `File::read_fixed_at` doc example and of `tests/fixed_buf.rs`
//! (`fixed_buf_turnaround`) -- in 32 tasks (`tokio_uring::spawn`), each
//! looping on its own buffer. The file is opened with
//! `tokio_uring::fs::OpenOptions` + `OpenOptionsExt::custom_flags(O_DIRECT)`.
//!
//! Deviation, forced by O_DIRECT: tokio-uring's examples register
//! `Vec<u8>`s, which the allocator aligns to 1 byte, not 4096. The buffers
//! here are [`AlignedBuf`]s (4096-aligned heap buffers) with the crate's
//! `IoBuf` / `IoBufMut` traits implemented for them, which is what the
//! traits are for (`FixedBufRegistry<T: IoBufMut>`).
//!
//! Spin-up: `std::thread::spawn`, `tokio_uring::start`, then a
//! `FixedBufRegistry` over buffers covering the same 4 GiB that ringpool's
//! pool maps (the very same pages: [`Region`] points into that mapping,
//! 1 GiB per buffer, the kernel's largest registered buffer), and
//! `registry.register()`: ready once it returns. tokio-uring has no way to
//! share a registration between runtimes, so each spin-up registers (pins)
//! the whole 4 GiB again; that is the cost being compared.

use std::rc::Rc;
use std::time::Instant;

use ::tokio_uring::buf::fixed::FixedBufRegistry;
use ::tokio_uring::buf::{IoBuf, IoBufMut};
use anyhow::{bail, Context};

use crate::common::{
    describe_registered, uring_fds, AlignedBuf, JobOut, JobSpec, Meter, Offsets, SpinOut, SpinSpec, BS, DEPTH,
};

// SAFETY: the pointer is the start of an allocation of `len()` bytes that
// lives (and does not move) as long as the AlignedBuf; all of it is
// initialised (zeroed at allocation).
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; every byte is always initialised, so set_init has
// nothing to record.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

/// The random-read job.
pub fn randread(spec: &JobSpec) -> anyhow::Result<JobOut> {
    let spec = spec.clone();
    ::tokio_uring::start(async move {
        let registry = FixedBufRegistry::new((0..DEPTH).map(|_| AlignedBuf::new(BS)));
        registry.register().context("FixedBufRegistry::register")?;
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            ::tokio_uring::fs::OpenOptions::new()
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
            let mut buf = registry.check_out(i).context("check_out")?;
            let file = Rc::clone(&file);
            let mut offs = Offsets::new(&spec, i as u64);
            tasks.push(::tokio_uring::spawn(async move {
                let mut ios = 0u64;
                loop {
                    let (res, b) = file.read_fixed_at(buf, offs.next_offset()).await;
                    buf = b;
                    let n = res.context("read_fixed_at")?;
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
        Ok(meter
            .finish(ios, "READ_FIXED from a FixedBufRegistry of 32 aligned 4 KiB buffers; 32 tokio_uring::spawn tasks"))
    })
}

/// A slice of memory someone else owns and keeps mapped (ringpool's pool),
/// handed to `FixedBufRegistry` as a buffer.
pub struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is one range of a mapping that outlives every
// runtime using it (the spin-ups join their thread before the pool is
// dropped); it never moves; its pages are prefaulted (initialised).
unsafe impl IoBuf for Region {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.len
    }
}

// SAFETY: as above.
unsafe impl IoBufMut for Region {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

/// Spin-ups over the memory `[addr, addr + len)` (kept mapped by the
/// caller until this returns): a new thread, `tokio_uring::start`, a
/// registry of 1 GiB buffers covering it, `register()`, ready.
pub fn spinup(addr: usize, len: u64, page_desc: &str, spec: &SpinSpec) -> anyhow::Result<SpinOut> {
    const CHUNK: u64 = 1 << 30;
    let mut samples = Vec::with_capacity(spec.count);
    let mut seen = String::new();
    for i in 0..spec.count {
        let before = uring_fds();
        let first = i == 0;
        let t0 = Instant::now();
        let h = std::thread::spawn(move || -> anyhow::Result<(Instant, String)> {
            ::tokio_uring::start(async move {
                let regions = (0..len.div_ceil(CHUNK)).map(|k| Region {
                    ptr: (addr + (k * CHUNK) as usize) as *mut u8,
                    len: CHUNK.min(len - k * CHUNK) as usize,
                });
                let registry = FixedBufRegistry::new(regions);
                registry.register().context("FixedBufRegistry::register")?;
                let ready = Instant::now();
                let seen = if first { describe_registered(&before) } else { String::new() };
                Ok((ready, seen))
            })
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
        peer: "tokio-uring".into(),
        pool_bytes: len,
        samples_us: samples,
        note: format!(
            "std::thread::spawn + tokio_uring::start + FixedBufRegistry::register of {} x 1 GiB buffers over the \
             same {page_desc} memory as ringpool's pool (each runtime registers, i.e. pins, all of it); {seen}",
            len.div_ceil(CHUNK)
        ),
    })
}
