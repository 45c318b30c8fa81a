//! A worker started by exec gets its ring from the pool owner's broker.
//!
//! `cargo run --release --example broker` runs the owner: it maps a shared
//! pool, registers it once, serves rings on a Unix socket, and starts this
//! program again (exec) as a worker. The worker asks the broker for a ring
//! and two lease segments, maps the pool (at another address), and does
//! verified fixed I/O: with its leases, with a region of a range the owner
//! filled, and through an IoPool whose workers' rings come from the broker.
//!
//! `broker worker SOCKET FILE` runs a worker alone; `broker request SOCKET`
//! only asks for a ring (exit code 3 when the broker refuses).

use std::time::Instant;

use ringpool::handover::{BrokerOptions, RingBroker};
use ringpool::types::{EnginePolicy, PagePolicy};
use ringpool::{BufferTable, DirectFile, Error, IoMemory, IoPool, MemoryOptions, RingOptions};

const SEG: u64 = 4 << 20;
const K4: usize = 4096;

/// The bytes the owner puts in segment 0, by pool offset.
fn ro_byte(off: u64) -> u8 {
    (off.wrapping_mul(0x9E37_79B9) >> 11) as u8
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(7919)) >> 3) as u8).collect()
}

fn owner() -> Result<i32, Error> {
    let mem = IoMemory::map_with(64 * SEG, &MemoryOptions::new().page(PagePolicy::Auto).segment_size(SEG).shared())?;
    mem.prefault(|_| {})?;
    // Segment 0: a range the application manages (filled here, read by the
    // worker through a region).
    let _ro = mem.reserve_segments(0..1)?;
    // SAFETY: segment 0 is reserved; the worker only reads it.
    let mut r = unsafe { mem.region(0, SEG as usize) }?;
    for (i, b) in r.iter_mut().enumerate() {
        *b = ro_byte(i as u64);
    }
    drop(r);
    let table = BufferTable::register(&mem)?;
    println!(
        "owner: {} of {} pages registered once in {:?}",
        ringpool::types::Bytes(mem.len()),
        mem.page_kind(),
        table.register_time()
    );
    let sock = std::env::temp_dir().join(format!("ringpool-broker-{}.sock", std::process::id()));
    let broker = RingBroker::serve(&table, &sock, &BrokerOptions::default())?;
    // O_DIRECT needs a disk file system (not /tmp's tmpfs).
    let file = std::path::PathBuf::from(format!("/var/tmp/ringpool-broker-{}.dat", std::process::id()));
    let exe = std::env::current_exe().map_err(|e| Error::Lost(format!("current_exe: {e}")))?;
    let status = std::process::Command::new(exe)
        .args(["worker", sock.to_str().unwrap(), file.to_str().unwrap()])
        .status()
        .map_err(|e| Error::Lost(format!("exec the worker: {e}")))?;
    let _ = std::fs::remove_file(&file);
    println!("owner: broker {:?}; worker {status}", broker.stats());
    Ok(status.code().unwrap_or(1))
}

fn worker(sock: &str, path: &str) -> Result<i32, Error> {
    let t = Instant::now();
    let handed = RingBroker::request(sock, 64, 2)?;
    let registrar = handed.registrar_addr();
    let mut ring = handed.enable_with(&RingOptions { engine: EnginePolicy::IoUring, ..RingOptions::default() })?;
    let view = ring.memory().expect("a handed ring has the pool").clone();
    println!("worker: ring from the broker in {:?}", t.elapsed());
    println!("mapped at {:#x}, registrar {:#x}", view.addr(), registrar);
    let file = DirectFile::options().read(true).write(true).create(true).open(path)?;
    file.set_len(16 << 20)?;
    // Leases of its own segments: write, read back.
    for i in 0..8u64 {
        let mut w = view.try_alloc(16 * K4)?;
        w.copy_from_slice(&data(i, 16 * K4));
        let (r, _) = ring.write_at(&file, i * 16 * K4 as u64, w).into_one();
        r?;
        let (r, b) = ring.read_at(&file, i * 16 * K4 as u64, view.try_alloc(16 * K4)?).into_one();
        r?;
        if b[..] != data(i, 16 * K4)[..] {
            return Err(Error::Lost(format!("block {i} read back wrong")));
        }
    }
    // The owner's range, out of a region: to the file and back.
    for off in [0u64, SEG / 2, SEG - K4 as u64] {
        // SAFETY: the owner filled segment 0 before serving; everyone reads it.
        let src = unsafe { view.region(off, K4) }?;
        let (r, _) = ring.write_at(&file, 8 << 20, src).into_one();
        r?;
        let (r, b) = ring.read_at(&file, 8 << 20, view.try_alloc(K4)?).into_one();
        r?;
        if b.iter().enumerate().any(|(j, &x)| x != ro_byte(off + j as u64)) {
            return Err(Error::Lost(format!("the owner's range at {off} came back wrong")));
        }
    }
    println!("worker ok");
    // An IoPool whose workers get their rings from the broker.
    let pool = IoPool::builder().broker(sock, 1).workers(1, 2).build()?;
    let mut w = pool.memory().try_alloc(64 * K4)?;
    w.copy_from_slice(&data(99, 64 * K4));
    pool.write_at(&file, 0, w).wait().result?;
    let (r, b) = pool.read_at(&file, 0, pool.memory().try_alloc(64 * K4)?).wait().into_one();
    r?;
    if b[..] != data(99, 64 * K4)[..] {
        return Err(Error::Lost("the pool's read came back wrong".into()));
    }
    println!("pool ok");
    Ok(0)
}

fn request(sock: &str) -> i32 {
    match RingBroker::request(sock, 8, 0) {
        Ok(h) => {
            println!("served: a ring of a pool of {} segments", h.segments());
            0
        }
        Err(Error::PeerRefused { reason }) => {
            println!("refused: {reason}");
            3
        }
        Err(e) => {
            println!("error: {e}");
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        None => owner(),
        Some("worker") if args.len() == 4 => worker(&args[2], &args[3]),
        Some("request") if args.len() == 3 => Ok(request(&args[2])),
        _ => {
            eprintln!("usage: broker | broker worker SOCKET FILE | broker request SOCKET");
            Ok(2)
        }
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
