//! The same pool under tokio: every OpHandle and every allocation is a
//! Future (runtime-agnostic: the pool's workers wake the task).
//!
//! `cargo run --release --example tokio_reads -- /var/tmp/ringpool-example`

use std::sync::Arc;

use ringpool::{DirectFile, IoPool};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), ringpool::Error> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/var/tmp/ringpool-example".into());
    std::fs::write(&path, (0..16u8).flat_map(|i| std::iter::repeat_n(i, 1 << 20)).collect::<Vec<u8>>()).unwrap();
    let pool = Arc::new(IoPool::builder().size(64 << 20).workers(1, 2).build()?);
    let file = DirectFile::options().read(true).open(&path)?;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u64 {
        let (pool, file) = (pool.clone(), file.clone());
        tasks.spawn(async move {
            let mib = i % 16;
            let buf = pool.memory().alloc_async(64 << 10).await?; // waits if the pool is exhausted
            let (n, buf) = pool.read_at(&file, mib << 20, buf).await.into_one();
            n?;
            assert!(buf.iter().all(|&b| b as u64 == mib));
            Ok::<_, ringpool::Error>(())
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        r.expect("task panicked")?;
        ok += 1;
    }
    println!("{ok} reads checked; pool stats: {:?}", pool.stats().completed);
    std::fs::remove_file(&path).ok();
    Ok(())
}
