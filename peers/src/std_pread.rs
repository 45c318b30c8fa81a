//! The synchronous floor: one std thread, `FileExt::read_at` (pread) into
//! one 4096-aligned buffer, in a loop, on a file opened with O_DIRECT.
//! Depth 1 by nature (one blocking call at a time); no registered buffers,
//! so no spin-up.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::common::{AlignedBuf, JobOut, JobSpec, Meter, Offsets, BS};

/// The random-read job (at depth 1).
pub fn randread(spec: &JobSpec) -> anyhow::Result<JobOut> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&spec.path)
        .with_context(|| format!("open {} with O_DIRECT", spec.path.display()))?;
    let mut buf = AlignedBuf::new(BS);
    let mut offs = Offsets::new(spec, 0);
    let meter = Meter::start(spec.runtime);
    let deadline = meter.deadline();
    let mut ios = 0u64;
    loop {
        let n = file.read_at(buf.as_mut_slice(), offs.next_offset()).context("pread")?;
        if n != BS {
            bail!("short read: {n} of {BS} bytes");
        }
        ios += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(meter
        .finish(ios, "synchronous pread at depth 1 (one thread, one aligned buffer): the floor, not a depth-32 peer"))
}
