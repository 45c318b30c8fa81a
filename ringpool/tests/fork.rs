//! A forked child never hangs, crashes or panics on what it inherited: an
//! IoPool, its memory and leases, a table, a ring, an operation in flight.
//! Each scenario runs in a child test process (so that no other test thread
//! exists at the fork), which forks; the grandchild reports through its exit
//! code, and the child waits for it with a timeout.

mod common;

use std::time::Duration;

use ringpool::types::PagePolicy;
use ringpool::{BufferTable, DirectFile, Error, IoBuf, IoPool};

const MIB: u64 = 1 << 20;

use common::{fork_with, open_fds, vmpin_kb, wait_child};
use ringpool::MemoryOptions;

/// In a forked child: an owned copy of an inherited object, to drop or
/// consume there.
fn take<T>(inherited: &T) -> T {
    // SAFETY: only called in a forked child, which `_exit`s without ever
    // returning to the code that owns the original: the original is never
    // used nor dropped in this process again, so the copy is the only owner.
    unsafe { std::ptr::read(inherited) }
}

fn verified_roundtrip(pool: &IoPool, file: &DirectFile, offset: u64, seed: u64) -> bool {
    let mut w = match pool.memory().try_alloc(16384) {
        Ok(b) => b,
        Err(_) => return false,
    };
    common::fill(&mut w, seed);
    let (r, _) = pool.write_at(file, offset, w).wait().into_one();
    if r.ok() != Some(16384) {
        return false;
    }
    let (r, b) = pool.read_at(file, offset, pool.memory().try_alloc(16384).unwrap()).wait().into_one();
    r.ok() == Some(16384) && b[..] == common::pattern(16384, seed)[..]
}

/// Child side of `a_forked_child_gets_typed_errors_and_the_parent_is_intact`.
#[test]
#[ignore = "runs in a child process started by a_forked_child_gets_typed_errors_and_the_parent_is_intact"]
fn fork_child() {
    assert_eq!(std::env::var("RINGPOOL_FORK_CHILD").as_deref(), Ok("1"), "run only as a child");
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "fork");
    file.set_len(4 * MIB).unwrap();
    let pool = IoPool::builder()
        .size(16 * MIB)
        .memory(MemoryOptions::new().page(PagePolicy::Base))
        .workers(1, 2)
        .build()
        .unwrap();
    assert!(verified_roundtrip(&pool, &file, 0, 1));
    let table = BufferTable::register(pool.memory()).unwrap();
    let mut ring = table.ring().unwrap();
    let mut lease = pool.memory().try_alloc(8192).unwrap();
    common::fill(&mut lease, 7);
    // An operation in flight (or queued) across the fork.
    let in_flight = pool.write_at(&file, MIB, pool.memory().try_alloc(MIB as usize).unwrap());
    let (pin0, fds0) = (vmpin_kb(), open_fds());

    let pid = fork_with(|| {
        let forked = |e: &Error, what: &str| matches!(e, Error::Forked { what: w, .. } if *w == what);
        // Submit and wait on the inherited pool: a typed error, the buffer back.
        let b = IoBuf::detached();
        let (r, back) = pool.read_at(&file, 0, b).wait().into_one();
        if !r.as_ref().is_err_and(|e| forked(e, "IoPool")) || back.capacity() != 0 {
            return 10;
        }
        // The operation in flight at the fork: a typed error, no hang.
        let (r, _) = take(&in_flight).wait().into_one();
        if !r.as_ref().is_err_and(|e| forked(e, "IoPool")) {
            return 11;
        }
        // Allocate from the inherited memory: refused.
        if !pool.memory().try_alloc(4096).is_err_and(|e| forked(&e, "IoMemory")) {
            return 12;
        }
        // The inherited lease: its memory is not here; an empty view, no crash.
        let mut lease = take(&lease);
        let len = lease.len();
        if lease.is_usable() || len > 0 || !lease.is_empty() {
            return 13;
        }
        lease.fill(1);
        let _ = &lease[..lease.len()];
        // The inherited ring and table.
        let mut ring = take(&ring);
        let (r, _) = ring.read_at(&file, 0, IoBuf::detached()).into_one();
        if !r.is_err_and(|e| forked(&e, "Ring")) {
            return 14;
        }
        if !table.ring().is_err_and(|e| forked(&e, "BufferTable")) {
            return 15;
        }
        if !pool.grow(MIB).is_err_and(|e| forked(&e, "IoPool")) {
            return 16;
        }
        let st = pool.stats();
        if st.workers != 0 {
            return 17;
        }
        // Drop them all: nothing of the parent's is released or joined.
        drop(lease);
        drop(ring);
        drop(take(&table));
        let memory = pool.memory().clone();
        drop(take(&pool));
        drop(memory);
        // A fresh pool works, with verified I/O.
        let fresh = match IoPool::builder()
            .size(8 * MIB)
            .memory(MemoryOptions::new().page(PagePolicy::Base))
            .workers(1, 1)
            .build()
        {
            Ok(p) => p,
            Err(_) => return 18,
        };
        if !verified_roundtrip(&fresh, &file, 2 * MIB, 3) {
            return 19;
        }
        0
    });
    match wait_child(pid, Duration::from_secs(60)) {
        Ok(0) => {}
        Ok(code) => panic!("the forked child failed check {code}"),
        Err(how) => panic!("{how}"),
    }
    // The parent's pool, lease and ring are intact.
    let (r, _) = in_flight.wait().into_one();
    assert_eq!(r.unwrap(), MIB as usize);
    assert!(lease[..] == common::pattern(8192, 7)[..], "the lease is intact");
    assert!(verified_roundtrip(&pool, &file, 3 * MIB, 2), "the pool still serves verified I/O");
    let (r, _) = ring.read_at(&file, 0, pool.memory().try_alloc(4096).unwrap()).into_one();
    assert_eq!(r.unwrap(), 4096);
    assert_eq!((vmpin_kb(), open_fds()), (pin0, fds0), "VmPin and fds unchanged");
    println!("fork child checks passed");
}

#[test]
fn a_forked_child_gets_typed_errors_and_the_parent_is_intact() {
    if !common::require_clone("a_forked_child_gets_typed_errors_and_the_parent_is_intact") {
        return;
    }
    let (ok, out) = common::run_child("fork_child", &[("RINGPOOL_FORK_CHILD", "1")]);
    assert!(ok && out.contains("fork child checks passed"), "{out}");
}

/// Child side of `an_execd_child_inherits_no_ring_and_pins_nothing`.
#[test]
#[ignore = "runs in a child process started by an_execd_child_inherits_no_ring_and_pins_nothing"]
fn exec_child() {
    use std::os::fd::{AsFd, AsRawFd};
    assert_eq!(std::env::var("RINGPOOL_EXEC_CHILD").as_deref(), Ok("1"), "run only as a child");
    let pin0 = vmpin_kb();
    let pool = IoPool::builder()
        .size(16 * MIB)
        .memory(MemoryOptions::new().page(PagePolicy::Base))
        .workers(2, 2)
        .build()
        .unwrap();
    let table = BufferTable::register(pool.memory()).unwrap();
    let ring = table.ring().unwrap();
    assert!(vmpin_kb() >= pin0 + 16 * 1024, "the pool is pinned");
    // Every descriptor of the ring and the table is close-on-exec.
    for fd in [ring.as_fd().as_raw_fd(), table.template_fd()] {
        // SAFETY: F_GETFD on an open fd.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0, "fd {fd} is not close-on-exec");
    }
    // A child that execs a program and lives on while the parent drops its pool.
    let pid = fork_with(|| {
        let prog = c"/bin/sleep";
        let args = [c"sleep".as_ptr(), c"2".as_ptr(), std::ptr::null()];
        // SAFETY: a NUL-terminated argv of C strings.
        unsafe { libc::execv(prog.as_ptr(), args.as_ptr()) };
        98
    });
    std::thread::sleep(Duration::from_millis(300));
    let inherited: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.contains("io_uring") || p.contains("eventfd"))
        .collect();
    assert!(inherited.is_empty(), "the exec'd image holds {inherited:?}");
    drop(ring);
    drop(table);
    drop(pool);
    assert_eq!(vmpin_kb(), pin0, "nothing stays pinned while the exec'd child lives");
    assert_eq!(wait_child(pid, Duration::from_secs(30)), Ok(0));
    println!("exec child checks passed");
}

#[test]
fn an_execd_child_inherits_no_ring_and_pins_nothing() {
    if !common::require_clone("an_execd_child_inherits_no_ring_and_pins_nothing") {
        return;
    }
    let (ok, out) = common::run_child("exec_child", &[("RINGPOOL_EXEC_CHILD", "1")]);
    assert!(ok && out.contains("exec child checks passed"), "{out}");
}
