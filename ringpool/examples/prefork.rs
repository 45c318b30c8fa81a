//! A prefork server's pool: the owner maps a shared pool, registers it
//! once, and hands each of N forked workers its own ring (the table cloned
//! in, microseconds) and its own lease segment. Each worker enables its ring
//! and does verified fixed reads; the pool is pinned once however many
//! workers there are.
//!
//! `cargo run --release --example prefork -- [WORKERS] [FILE]`

use std::io::Write;

use ringpool::handover::HandoverOptions;
use ringpool::types::PagePolicy;
use ringpool::{BufferTable, DirectFile, IoMemory, MemoryOptions};

const SEG: u64 = 4 << 20;
const BLOCK: usize = 16 << 10;

fn byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn worker(
    i: u16,
    handed: ringpool::handover::HandedRing,
    path: &std::path::Path,
    blocks: u64,
) -> Result<(), ringpool::Error> {
    let mut ring = handed.enable()?;
    let view = ring.memory().expect("a handed ring has the pool").clone();
    let file = DirectFile::open(path)?;
    let mut rng = u64::from(i) * 0x9E37_79B9 + 1;
    for _ in 0..64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let block = rng % blocks;
        let (r, buf) = ring.read_at(&file, block * BLOCK as u64, view.try_alloc(BLOCK)?).into_one();
        r?;
        let base = block * BLOCK as u64;
        if buf.iter().enumerate().any(|(j, &b)| b != byte(base + j as u64)) {
            return Err(ringpool::Error::Lost(format!("worker {i}: block {block} read wrong")));
        }
    }
    let pin = ringpool_testkit::process::vm_pinned_kb(std::process::id()).unwrap_or(0);
    println!("worker {i} (pid {}): 64 verified fixed reads into segment {}, VmPin {pin} kB", std::process::id(), i + 1);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let workers: u16 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(8).clamp(1, 256);
    let path =
        std::path::PathBuf::from(args.get(2).cloned().unwrap_or_else(|| "/var/tmp/ringpool-prefork-example".into()));
    // The data the workers read: 16 MiB, written with std.
    let blocks = 1024u64;
    let data: Vec<u8> = (0..blocks * BLOCK as u64).map(byte).collect();
    std::fs::File::create(&path)?.write_all(&data)?;

    // Segment 0 is the owner's; segment i + 1 is worker i's.
    let opts = MemoryOptions::new().page(PagePolicy::Auto).segment_size(SEG).shared();
    let mem = IoMemory::map_with((u64::from(workers) + 1) * SEG, &opts)?;
    mem.prefault(|_| {})?;
    let table = BufferTable::register(&mem)?;
    println!(
        "owner: {} of {} pages registered once in {:?}; VmPin {} kB",
        ringpool::types::Bytes(mem.len()),
        mem.page_kind(),
        table.register_time(),
        ringpool_testkit::process::vm_pinned_kb(std::process::id())?
    );
    let mut pids = Vec::new();
    for i in 0..workers {
        let h = table.handover(&HandoverOptions::new().entries(16).leases(i + 1..i + 2))?;
        let child = h.try_clone()?;
        let p = path.clone();
        // SAFETY: this program runs one thread; the child uses what it
        // inherited and exits.
        let pid = unsafe {
            ringpool_testkit::process::fork_child(move || match worker(i, child, &p, blocks) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("worker {i}: {e}");
                    1
                }
            })
        }?;
        // The owner's copy goes at once: the segment stays the worker's
        // until the worker is done with it.
        drop(h);
        pids.push(pid);
    }
    let mut failed = 0;
    for pid in pids {
        if ringpool_testkit::process::wait_child(pid)? != 0 {
            failed += 1;
        }
    }
    println!("owner: {} segments came back from the workers", mem.reclaim_handed_segments());
    println!(
        "owner: {workers} workers done, {failed} failed; VmPin {} kB",
        ringpool_testkit::process::vm_pinned_kb(std::process::id())?
    );
    std::fs::remove_file(&path)?;
    if failed > 0 {
        return Err(format!("{failed} workers failed").into());
    }
    Ok(())
}
