//! A client of `ringpool serve` that tries to reach other clients' memory
//! (hidden subcommand `bench service-probe`, for the daemon's isolation
//! tests): it attaches with one lease segment, says what it got, fills its
//! segment, tries fixed writes from the table slots it is told to (other
//! clients' segments, at their registrar addresses), and holds its segment
//! for a while. It reports on stdout, a line each:
//! `A <µs>` (the attachment: request to enabled ring),
//! `L <segment> <registrar address>` (its lease segment),
//! `F <inode>...` (the memfds it was sent),
//! `Z <0|1>` (whether its segment was all zeros when it got it),
//! `T <slot> <result> <byte|->` (a fixed write from that slot to its file:
//! the CQE's result, and the byte the file then holds if all alike),
//! `P <0|errno>` (whether it could pin memory of its own through its ring).

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ringpool::handover::RingBroker;

#[derive(Args, Debug)]
pub struct ServiceProbeArgs {
    #[arg(long)]
    pub socket: PathBuf,
    /// A file of its own to write to.
    #[arg(long)]
    pub file: PathBuf,
    /// The byte it fills its segment with.
    #[arg(long)]
    pub fill: u8,
    /// `SLOT:ADDRESS` (decimal): a fixed write of 4 KiB from that table
    /// slot, naming that registrar address (repeatable); `self`: from its
    /// own segment.
    #[arg(long = "try")]
    pub tries: Vec<String>,
    /// Then try to pin this many bytes of its own memory through its
    /// ring (a buffers update into its slot): `P <0|errno>`.
    #[arg(long, default_value_t = 0)]
    pub try_pin: usize,
    /// How long to hold the segment after the tries (ms).
    #[arg(long, default_value_t = 0)]
    pub hold_ms: u64,
}

pub fn run(a: &ServiceProbeArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let started = std::time::Instant::now();
    let handed = RingBroker::request(&a.socket, 32, 1).context("attach")?;
    let asked = started.elapsed();
    let seg = handed.leases().start;
    let inodes = memfd_inodes()?;
    let own_addr = handed.segment_addr(seg).unwrap_or(0);
    let enabling = std::time::Instant::now();
    let mut ring = handed.enable().context("enable the ring")?;
    writeln!(out, "A {}", (asked + enabling.elapsed()).as_micros())?;
    writeln!(out, "L {seg} {own_addr}")?;
    writeln!(out, "F {}", inodes.iter().map(u64::to_string).collect::<Vec<_>>().join(" "))?;
    let mem = ring.memory().context("the ring's memory")?.clone();
    let mut buf = mem.try_alloc(mem.segment_size() as usize).context("lease the whole segment")?;
    writeln!(out, "Z {}", u8::from(buf.iter().all(|&b| b == 0)))?;
    buf.fill(a.fill);
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&a.file)?;
    for t in &a.tries {
        let (slot, addr): (u16, u64) = match t.split_once(':') {
            _ if t == "self" => (seg, own_addr),
            Some((slot, addr)) => (slot.parse()?, addr.parse()?),
            None => anyhow::bail!("--try SLOT:ADDRESS or self, not {t}"),
        };
        file.set_len(0)?;
        let res = ring.try_write_from_slot(file.as_fd(), slot, addr, 4096)?;
        let mut got = Vec::new();
        file.rewind()?;
        file.read_to_end(&mut got)?;
        let byte = match got.first() {
            Some(&b) if res > 0 && got.iter().all(|&x| x == b) => b.to_string(),
            _ => "-".into(),
        };
        writeln!(out, "T {slot} {res} {byte}")?;
    }
    if a.try_pin > 0 {
        let errno = match ring.try_pin_through_slot(seg, a.try_pin) {
            Ok(()) => 0,
            Err(ringpool::Error::Io { source, .. }) => source.raw_os_error().unwrap_or(-1),
            Err(e) => return Err(e.into()),
        };
        writeln!(out, "P {errno}")?;
    }
    out.flush()?;
    std::thread::sleep(Duration::from_millis(a.hold_ms));
    drop(buf);
    Ok(())
}

/// The inodes of the memfds this process holds.
fn memfd_inodes() -> anyhow::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd")? {
        let path = e?.path();
        let Ok(target) = std::fs::read_link(&path) else { continue };
        if target.to_string_lossy().starts_with("/memfd:ringpool") {
            inodes.push(std::fs::metadata(&path)?.ino());
        }
    }
    inodes.sort_unstable();
    inodes.dedup();
    Ok(inodes)
}
