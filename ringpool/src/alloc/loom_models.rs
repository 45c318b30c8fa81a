//! Model checks of the allocator's locking (`RUSTFLAGS="--cfg ringpool_loom"
//! cargo test -p ringpool --lib --release loom`).

use loom::sync::Arc;
use loom::thread;

use super::*;

fn bounded(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// A blocked `alloc` is woken by the free that makes room, whatever the
/// interleaving of its check, its wait and the free.
#[test]
fn loom_waiting_alloc_gets_the_freed_block() {
    bounded(|| {
        // Two blocks of 4 KiB, both taken.
        let a = Arc::new(Allocator::new(Buddy::new(8192, 13, 12)));
        let g1 = a.try_alloc(4096, None).unwrap();
        let g2 = a.try_alloc(4096, None).unwrap();
        let waiter = {
            let a = a.clone();
            thread::spawn(move || {
                let g = a.alloc_wait(4096, None).expect("an untimed wait returns with a block");
                a.release(g);
            })
        };
        a.release(g1);
        waiter.join().unwrap();
        a.release(g2);
        let st = a.stats();
        assert_eq!((st.bytes_in_use, st.leases), (0, 0));
    });
}

/// Concurrent allocations never get the same block, and frees from
/// other threads leave the books balanced.
#[test]
fn loom_concurrent_allocs_never_overlap() {
    bounded(|| {
        let a = Arc::new(Allocator::new(Buddy::new(16384, 14, 12)));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                thread::spawn(move || a.try_alloc(4096, None).map(|g| g.offset()))
            })
            .collect();
        let mut offs: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), 2, "two threads got the same block");
        assert_eq!(a.stats().leases, 2);
    });
}
