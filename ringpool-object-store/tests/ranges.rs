//! Ranged reads against LocalFileSystem on the same files: random ranges
//! (unaligned edges, empty, overlapping, past the end), get_opts with every
//! kind of range, both sides must agree (the same bytes, or both an error);
//! the bytes lie in the pool (no copy).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use proptest::prelude::*;
use ringpool::types::PagePolicy;
use ringpool_object_store::{RingpoolStore, StoreOptions};

struct Fixture {
    _root: tempfile::TempDir,
    ours: RingpoolStore,
    theirs: LocalFileSystem,
    len: u64,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let root = tempfile::TempDir::new_in("/var/tmp").unwrap();
        let len = (3 << 20) + 12345u64;
        let mut rng = fastrand::Rng::with_seed(9);
        let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        std::fs::write(root.path().join("blob"), &data).unwrap();
        let opts = StoreOptions { pool_size: 64 << 20, page: PagePolicy::Base, coalesce: 4096, ..Default::default() };
        let ours = RingpoolStore::new(root.path(), opts).unwrap();
        let theirs = LocalFileSystem::new_with_prefix(root.path()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Fixture { _root: root, ours, theirs, len, rt }
    })
}

fn in_pool(store: &RingpoolStore, b: &Bytes) -> bool {
    let p = b.as_ptr() as usize;
    store.pool().memory().segments().iter().any(|s| s.addr <= p && p + b.len() <= s.addr + s.len as usize)
}

fn range_strategy(len: u64) -> impl Strategy<Value = Range<u64>> {
    prop_oneof![
        // Inside the file, any edges.
        (0..len, 0..300_000u64).prop_map(move |(s, n)| s..(s + n).min(len)),
        // Empty.
        (0..len + 10).prop_map(|s| s..s),
        // Past the end.
        (len - 100..len + 100, 1..500u64).prop_map(|(s, n)| s..s + n),
        // Block-aligned.
        (0..len / 4096, 1..64u64).prop_map(move |(b, n)| b * 4096..((b + n) * 4096).min(len)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn get_ranges_agrees_with_local_file_system(ranges in prop::collection::vec(range_strategy(fixture().len), 1..40)) {
        let f = fixture();
        let loc = Path::from("blob");
        let (ours, theirs) = f.rt.block_on(async {
            (f.ours.get_ranges(&loc, &ranges).await, f.theirs.get_ranges(&loc, &ranges).await)
        });
        match (ours, theirs) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(&b) {
                    prop_assert_eq!(x, y);
                    if !x.is_empty() {
                        prop_assert!(in_pool(&f.ours, x), "the bytes are the pool's, not a copy");
                    }
                }
            }
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "ours {:?} / LocalFileSystem's {:?} for {:?}", a.map(|v| v.len()), b.map(|v| v.len()), ranges),
        }
    }

    #[test]
    fn get_opts_ranges_agree(kind in 0..4u8, a in 0..fixture().len + 50, n in 0..400_000u64) {
        let f = fixture();
        let loc = Path::from("blob");
        let range = match kind {
            0 => None,
            1 => Some(GetRange::Bounded(a..a + n)),
            2 => Some(GetRange::Offset(a)),
            _ => Some(GetRange::Suffix(n)),
        };
        let opts = || GetOptions { range: range.clone(), ..Default::default() };
        let (ours, theirs) = f.rt.block_on(async {
            let o = match f.ours.get_opts(&loc, opts()).await { Ok(r) => Ok((r.range.clone(), r.bytes().await.unwrap())), Err(e) => Err(e) };
            let t = match f.theirs.get_opts(&loc, opts()).await { Ok(r) => Ok((r.range.clone(), r.bytes().await.unwrap())), Err(e) => Err(e) };
            (o, t)
        });
        match (ours, theirs) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "ours {:?} / theirs {:?} for {:?}", a.map(|x| x.0), b.map(|x| x.0), range),
        }
    }
}

#[test]
fn a_whole_object_get_is_read_through_the_pool_in_chunks() {
    let f = fixture();
    let loc = Path::from("blob");
    let (chunks, whole) = f.rt.block_on(async {
        use futures::StreamExt;
        let r = f.ours.get(&loc).await.unwrap();
        let chunks: Vec<Bytes> = r.into_stream().map(|c| c.unwrap()).collect().await;
        (chunks, f.theirs.get(&loc).await.unwrap().bytes().await.unwrap())
    });
    assert!(chunks.iter().all(|c| in_pool(&f.ours, c)));
    assert_eq!(chunks.concat(), whole.to_vec());
    let _keep: Arc<()> = Arc::new(());
}

#[test]
fn the_pool_full_falls_back_and_still_reads_right() {
    let root = tempfile::TempDir::new_in("/var/tmp").unwrap();
    let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.path().join("big"), &data).unwrap();
    let opts = StoreOptions { pool_size: 4 << 20, page: PagePolicy::Base, ..Default::default() };
    let store = RingpoolStore::new(root.path(), opts).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let got = rt.block_on(async {
        // Hold 3 MiB of the 4 MiB pool, then ask for 5 MiB.
        let held = store.get_range(&Path::from("big"), 0..3 << 20).await.unwrap();
        let more = store.get_range(&Path::from("big"), 1..(5 << 20) + 1).await.unwrap();
        (held, more)
    });
    assert_eq!(&got.0[..], &data[..3 << 20]);
    assert_eq!(&got.1[..], &data[1..(5 << 20) + 1]);
}
