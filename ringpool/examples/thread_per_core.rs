//! Thread-per-core without the pool: each thread takes its own ring from
//! the BufferTable (the table by clone, in microseconds) and submits fixed
//! I/O on it directly, many operations in flight.
//!
//! `cargo run --release --example thread_per_core -- /var/tmp/ringpool-example`

use ringpool::types::PagePolicy;
use ringpool::{BufferTable, DirectFile, IoMemory, Op};

fn main() -> Result<(), ringpool::Error> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/var/tmp/ringpool-example".into());
    let mem = IoMemory::map(512 << 20, PagePolicy::Auto)?;
    mem.prefault(|_| {})?;
    let table = BufferTable::register(&mem)?;
    println!(
        "{} of {} pages registered once in {:?}",
        ringpool::types::Bytes(mem.len()),
        mem.page_kind(),
        table.register_time()
    );
    let file = DirectFile::options().read(true).write(true).create(true).open(&path)?;
    file.set_len(64 << 20)?;

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| -> Result<(), ringpool::Error> {
        let mut threads = Vec::new();
        for core in 0..cores {
            let (table, mem, file) = (&table, &mem, &file);
            threads.push(s.spawn(move || -> Result<(), ringpool::Error> {
                let mut ring = table.ring()?; // SINGLE_ISSUER | DEFER_TASKRUN, table by clone
                println!("core {core}: ring by {} in {:?}", ring.setup().path, ring.setup().total());
                let span = (64 << 20) / cores as u64;
                let base = core as u64 * span;
                // Keep 32 reads of 128 KiB in flight over this thread's span.
                let mut next = 0u64;
                let mut done = 0u64;
                while done < span / (128 << 10) {
                    while ring.in_flight() < 32 && next < span {
                        let buf = mem.alloc(128 << 10)?;
                        ring.push(Op::read(file, base + next, buf), next).map_err(|(e, _)| e)?;
                        next += 128 << 10;
                    }
                    ring.wait(1)?;
                    for (_tag, c) in ring.completions() {
                        c.result?;
                        done += 1; // c.bufs return to the pool here
                    }
                }
                println!("core {core}: {done} reads of 128 KiB with READ_FIXED");
                Ok(())
            }));
        }
        for t in threads {
            t.join().expect("thread panicked")?;
        }
        Ok(())
    })?;
    std::fs::remove_file(&path).ok();
    Ok(())
}
