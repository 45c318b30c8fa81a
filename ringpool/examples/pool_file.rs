//! Write a file through the IoPool and read it back.
//!
//! `cargo run --release --example pool_file -- /var/tmp/ringpool-example`

use ringpool::types::PagePolicy;
use ringpool::{DirectFile, IoPool, MemoryOptions};

fn main() -> Result<(), ringpool::Error> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/var/tmp/ringpool-example".into());
    let pool =
        IoPool::builder().size(256 << 20).memory(MemoryOptions::new().page(PagePolicy::Auto)).workers(1, 4).build()?;
    let st = pool.stats();
    println!(
        "pool: {} pages, engine {}, table {:?}, registered once in {:?}",
        pool.memory().page_kind(),
        st.engine,
        st.path,
        st.register_time
    );
    let file = DirectFile::options().read(true).write(true).create(true).open(&path)?;
    println!("{}: O_DIRECT {} (alignment {} / {})", path, file.is_direct(), file.mem_align(), file.offset_align());

    // 64 writes of 1 MiB in flight at once; each buffer comes back with its result.
    let handles: Vec<_> = (0..64u64)
        .map(|i| {
            let mut buf = pool.memory().alloc(1 << 20)?;
            buf.fill(i as u8);
            Ok(pool.write_at(&file, i << 20, buf))
        })
        .collect::<Result<_, ringpool::Error>>()?;
    for h in handles {
        let (n, _buf) = h.wait().into_one(); // the lease returns to the pool when _buf drops
        n?;
    }
    pool.sync(&file, true).wait().result?;

    for i in [0u64, 31, 63] {
        let (n, buf) = pool.read_at(&file, i << 20, pool.memory().alloc(1 << 20)?).wait().into_one();
        let n = n?;
        assert!(buf[..n].iter().all(|&b| b == i as u8));
        println!("MiB {i}: {n} bytes of {i:#04x}");
    }
    let st = pool.stats();
    println!("workers started {}, spin-up {:?}, ops {}", st.workers_started, st.spinups, st.completed);
    std::fs::remove_file(&path).ok();
    Ok(())
}
