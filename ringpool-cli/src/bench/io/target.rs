//! The file or device `bench io` runs on: opened O_DIRECT, laid out with
//! real data (and verify headers) where needed.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use ringpool::types::Bytes;
use ringpool::types::DirectIo;
use ringpool::{BufferTable, DirectFile, IoMemory, RingOptions};

use super::IoArgs;
use crate::verify::{check, stamp, SUB};
use ringpool::Op;

pub(super) struct Target {
    pub file: DirectFile,
    pub size: u64,
    pub device: String,
    /// How to open it again (each worker opens its own, as fio's jobs do).
    pub options: ringpool::OpenOptions,
}

impl Target {
    /// The file opened again, for one worker.
    pub fn reopen(&self) -> anyhow::Result<DirectFile> {
        let path = self.file.path();
        self.options.open(path).with_context(|| format!("opening {}", path.display()))
    }
}

fn is_mounted(path: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path)?.rdev();
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    Ok(info.lines().any(|l| l.split_whitespace().nth(2).is_some_and(|d| d == format!("{maj}:{min}"))))
}

/// Opens the target; lays a regular file out (real data, so reads hit the
/// device) when it is new, too short, or lacks verify headers.
pub(super) fn prepare_target(a: &IoArgs, mem: &IoMemory, table: &BufferTable) -> anyhow::Result<Target> {
    let meta = std::fs::metadata(&a.file).ok();
    let is_block = meta.as_ref().is_some_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    if is_block && a.rw.writes() && is_mounted(&a.file)? {
        bail!("{} is mounted: refusing to write to it", a.file.display());
    }
    let options =
        DirectFile::options().read(true).write(a.rw.writes() || !is_block).create(!is_block).direct(DirectIo::Required);
    let file = options.open(&a.file).with_context(|| format!("opening {}", a.file.display()))?;
    let device =
        if is_block { format!("block device, logical block {}", file.offset_align()) } else { "regular file".into() };
    let have = file.size()?;
    let size = match (a.size, is_block) {
        (Some(s), true) if s > have => bail!("--size {} is larger than the device ({})", Bytes(s), Bytes(have)),
        (Some(s), _) => s,
        (None, true) => have,
        (None, false) => 1 << 30,
    };
    // Operations move units of --vec blocks of --bs.
    let unit = a.bs * u64::from(a.vec);
    let size = size / unit * unit;
    if size < unit * u64::from(a.workers) {
        bail!("--size {} holds fewer than one operation of {} per worker", Bytes(size), Bytes(unit));
    }
    if !a.bs.is_multiple_of(file.offset_align() as u64) {
        bail!(
            "--bs {} is not a multiple of the O_DIRECT alignment {} of {}",
            a.bs,
            file.offset_align(),
            a.file.display()
        );
    }
    if is_block && a.rw.reads() {
        if let Some(why) = zram_unfilled(&a.file, size)? {
            if !a.allow_unfilled_zram {
                bail!(
                    "{why}: reads of never-written zram slots return zeroes without decompressing anything. Fill it \
                     with incompressible data first (e.g. fio --name=fill --filename={} --rw=write --bs=1m \
                     --direct=1 --ioengine=psync --refill_buffers=1), or pass --allow-unfilled-zram",
                    a.file.display()
                );
            }
            eprintln!("warning: {why}: the figures do not measure decompression");
        }
    }
    let needs_layout = if is_block {
        a.verify && !a.rw.writes() && !has_header(&file, mem, table, 0)?
    } else {
        have < size || (a.verify && !has_header(&file, mem, table, 0)?)
    };
    if needs_layout {
        if is_block && !a.verify {
            bail!("nothing to lay out on a block device");
        }
        if is_block && is_mounted(&a.file)? {
            bail!("{} is mounted: refusing to lay out verify headers on it", a.file.display());
        }
        layout(&file, size, a.verify || !is_block, mem, table)?;
    }
    Ok(Target { file, size, device, options: options.create(false) })
}

/// When `path` is a zram device holding less data than 90% of the `size`
/// bytes to be read (its `mm_stat` orig_data_size; same-filled pages are
/// not decompressed either and do not count): why, in words.
fn zram_unfilled(path: &Path, size: u64) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path)?.rdev();
    let sys = format!("/sys/dev/block/{}:{}", libc::major(rdev), libc::minor(rdev));
    let Ok(dev) = std::fs::canonicalize(&sys) else { return Ok(None) };
    let name = dev.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.starts_with("zram") {
        return Ok(None);
    }
    let stat = std::fs::read_to_string(dev.join("mm_stat")).with_context(|| format!("reading {name}'s mm_stat"))?;
    let stored: u64 = stat.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(zram_unfilled_by(stored, size)
        .then(|| format!("{} ({name}) holds {} of data for {} to read", path.display(), Bytes(stored), Bytes(size))))
}

/// Whether `stored` bytes of data fall short of 90% of `size`.
fn zram_unfilled_by(stored: u64, size: u64) -> bool {
    (stored as u128) * 10 < (size as u128) * 9
}

fn has_header(file: &DirectFile, mem: &IoMemory, table: &BufferTable, offset: u64) -> anyhow::Result<bool> {
    if file.size()? < offset + SUB as u64 {
        return Ok(false);
    }
    let mut ring = table.ring()?;
    let (r, buf) = ring.read_at(file, offset, mem.try_alloc(SUB)?).into_one();
    Ok(r? == SUB && check(&buf, offset).is_ok())
}

/// Writes the whole file (verify headers, sequence 0) through a ring, with a progress bar.
fn layout(file: &DirectFile, size: u64, stamped: bool, mem: &IoMemory, table: &BufferTable) -> anyhow::Result<()> {
    let chunk: u64 = 1 << 20;
    let bar = crate::util::byte_bar(size, "layout");
    let mut ring = table.ring_with(&RingOptions::new().entries(16))?;
    let mut next = 0u64;
    let mut done = 0u64;
    while done < size {
        while ring.in_flight() < 16 && next < size {
            let len = chunk.min(size - next);
            let mut buf = mem.alloc_timeout(len as usize, Duration::from_secs(60))?;
            buf.set_len(len as usize)?;
            for (i, sub) in buf.chunks_mut(SUB).enumerate() {
                if stamped && sub.len() == SUB {
                    stamp(sub, next + (i * SUB) as u64, 0);
                }
            }
            ring.push(Op::write(file, next, buf), next).map_err(|(e, _)| e)?;
            next += len;
        }
        ring.wait(1)?;
        for (tag, c) in ring.completions() {
            let n = c.result.with_context(|| format!("laying out {} at {}", file.path().display(), tag))?;
            done += n as u64;
            bar.set_position(done);
        }
    }
    bar.finish_and_clear();
    file.sync_data()?;
    eprintln!("laid out {} of {}", Bytes(size), file.path().display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn zram_counts_as_filled_from_ninety_percent() {
        assert!(super::zram_unfilled_by(0, 1 << 30));
        assert!(super::zram_unfilled_by(900, 1001));
        assert!(!super::zram_unfilled_by(900, 1000));
        assert!(!super::zram_unfilled_by(u64::MAX, u64::MAX));
    }
}
