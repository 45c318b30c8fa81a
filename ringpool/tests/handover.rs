//! Process-shared pools: rings the owner hands to forked and exec'd
//! processes, lease ranges per process, regions of the pool, the ring
//! broker. Scenarios that fork run in a child test process (no other test
//! thread exists at the fork).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fork_with, open_fds, vmpin_kb, wait_child};
use ringpool::handover::{BrokerOptions, HandedRing, HandoverOptions, RingBroker};
use ringpool::types::{EnginePolicy, PagePolicy};
use ringpool::{BufferTable, Error, IoBuf, IoMemory, IoPool, MemoryOptions, RingOptions};

const MIB: u64 = 1 << 20;
const SEG: u64 = 4 * MIB;
const K4: usize = 4096;

fn shared_pool(len: u64) -> IoMemory {
    let opts = MemoryOptions::new().page(PagePolicy::Base).segment_size(SEG).shared();
    let mem = IoMemory::map_with(len, &opts).expect("a shared pool");
    mem.prefault(|_| {}).unwrap();
    mem
}

fn fixed() -> RingOptions {
    RingOptions { engine: EnginePolicy::IoUring, ..RingOptions::default() }
}

/// The bytes of the shared read-only range, by pool offset.
fn ro_byte(off: u64) -> u8 {
    (off.wrapping_mul(0x9E37_79B9) >> 11) as u8
}

/// A pipe whose ends survive fork; one byte at a time.
fn pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    std::io::pipe().unwrap()
}

/// Child side of `sixteen_forked_children_do_verified_io_and_a_killed_one_harms_no_other`.
#[test]
#[ignore = "runs in a child process started by sixteen_forked_children_do_verified_io_and_a_killed_one_harms_no_other"]
fn prefork_child() {
    assert_eq!(std::env::var("RINGPOOL_PREFORK_CHILD").as_deref(), Ok("1"), "run only as a child");
    const CHILDREN: u16 = 16;
    const VICTIM: u16 = 5;
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "prefork");
    file.set_len(u64::from(CHILDREN) * MIB).unwrap();
    // 24 segments of 4 MiB: 0..2 a shared read-only range, 2..18 one per
    // child, 18..24 the owner's.
    let mem = shared_pool(24 * SEG);
    let ro = mem.reserve_segments(0..2).unwrap();
    for seg in 0..2u64 {
        // SAFETY: segments 0 and 1 are reserved (no lease there) and only
        // this region touches them until the children start, which only read.
        let mut r = unsafe { mem.region(seg * SEG, SEG as usize) }.unwrap();
        for (i, b) in r.iter_mut().enumerate() {
            *b = ro_byte(seg * SEG + i as u64);
        }
    }
    let table = BufferTable::register(&mem).unwrap();
    let (pin0, fds0) = (vmpin_kb(), open_fds());

    let (mut started_rx, started_tx) = pipe();
    let mut pids = Vec::new();
    for i in 0..CHILDREN {
        let h = table.handover(&HandoverOptions::new().entries(32).leases(2 + i..3 + i)).unwrap();
        let mut started = started_tx.try_clone().unwrap();
        let for_child = h.try_clone().unwrap();
        let file = &file;
        let pid = fork_with(move || {
            let mut ring = match for_child.enable_with(&fixed()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("child {i}: enable: {e}");
                    return 10;
                }
            };
            let view = ring.memory().unwrap().clone();
            let mut rng = fastrand::Rng::with_seed(u64::from(i));
            let base = u64::from(i) * MIB;
            // The victim runs until it is killed, mid-I/O.
            let rounds = if i == VICTIM { u64::MAX } else { 400 };
            for k in 0..rounds {
                // A block of its own file range through its own lease.
                let block = rng.u64(0..256);
                let mut w = match view.try_alloc(K4) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("child {i}: lease: {e}");
                        return 11;
                    }
                };
                if w.buf_index() != 2 + i {
                    eprintln!("child {i}: a lease in segment {}", w.buf_index());
                    return 12;
                }
                common::fill(&mut w, k * 1000 + u64::from(i));
                let (r, _) = ring.write_at(file, base + block * K4 as u64, w).into_one();
                if r.ok() != Some(K4) {
                    return 13;
                }
                let (r, back) = ring.read_at(file, base + block * K4 as u64, view.try_alloc(K4).unwrap()).into_one();
                if r.ok() != Some(K4) || back[..] != common::pattern(K4, k * 1000 + u64::from(i))[..] {
                    eprintln!("child {i}: block {block} read back wrong");
                    return 14;
                }
                // From the shared read-only range to the file (WRITE_FIXED
                // out of a region), then back into a lease: the same bytes.
                let ro_off = rng.u64(0..(2 * SEG / K4 as u64)) * K4 as u64;
                // SAFETY: every process only reads the read-only range.
                let src = match unsafe { view.region(ro_off, K4) } {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("child {i}: region: {e}");
                        return 15;
                    }
                };
                let (r, src) = ring.write_at(file, base + 255 * K4 as u64, src).into_one();
                if r.ok() != Some(K4) {
                    return 16;
                }
                let want: Vec<u8> = (0..K4 as u64).map(|j| ro_byte(ro_off + j)).collect();
                let (r, back) = ring.read_at(file, base + 255 * K4 as u64, view.try_alloc(K4).unwrap()).into_one();
                if r.ok() != Some(K4) || back[..] != want[..] || src[..] != want[..] {
                    eprintln!("child {i}: the read-only range at {ro_off} came back wrong");
                    return 17;
                }
                if k == 0 {
                    let _ = started.write_all(&[i as u8]);
                }
            }
            0
        });
        // The owner's copy goes at once: its segment stays reserved until
        // the child is done with it (later children do not inherit it).
        drop(h);
        pids.push(pid);
    }
    drop(started_tx);
    // Kill one child once it is doing I/O.
    let mut seen = [false; CHILDREN as usize];
    let mut b = [0u8; 1];
    while !seen[VICTIM as usize] {
        started_rx.read_exact(&mut b).expect("the victim starts");
        seen[b[0] as usize] = true;
    }
    ringpool_testkit::process::kill(pids[VICTIM as usize] as u32, libc::SIGKILL).unwrap();
    for (i, &pid) in pids.iter().enumerate() {
        let r = wait_child(pid, Duration::from_secs(120));
        if i == VICTIM as usize {
            assert_eq!(r, Err(format!("the child died of signal {}", libc::SIGKILL)), "the victim");
        } else {
            assert_eq!(r, Ok(0), "child {i}");
        }
    }
    // The owner's pool is intact: its own leases (segments 18..24) do
    // verified I/O, and the read-only range holds its bytes.
    let mut ring = table.ring_with(&fixed()).unwrap();
    let mut w = mem.try_alloc(64 * K4).unwrap();
    assert!(w.buf_index() >= 18, "the owner leases outside the handed segments");
    common::fill(&mut w, 77);
    assert_eq!(ring.write_at(&file, 0, w).result.unwrap(), 64 * K4);
    let (r, back) = ring.read_at(&file, 0, mem.try_alloc(64 * K4).unwrap()).into_one();
    assert_eq!(r.unwrap(), 64 * K4);
    assert!(back[..] == common::pattern(64 * K4, 77)[..]);
    for seg in 0..2u64 {
        // SAFETY: the children are gone; only this region reads the range.
        let r = unsafe { mem.region(seg * SEG, SEG as usize) }.unwrap();
        assert!(r.iter().enumerate().all(|(i, &b)| b == ro_byte(seg * SEG + i as u64)), "read-only segment {seg}");
    }
    // Handed rings dropped and every child gone: their segments lease
    // again (the lease tokens hung up); fds and VmPin are back where they
    // were before the handovers.
    drop(ring);
    drop(started_rx);
    assert_eq!(mem.reclaim_handed_segments(), CHILDREN, "every child's segment comes back");
    assert!(mem.try_alloc_in(2, K4).is_ok(), "segment 2 leases again");
    drop(ro);
    assert_eq!((open_fds(), vmpin_kb()), (fds0, pin0), "fds and VmPin back to the baseline");
    println!("prefork checks passed");
}

#[test]
fn sixteen_forked_children_do_verified_io_and_a_killed_one_harms_no_other() {
    if !common::require_clone("sixteen_forked_children_do_verified_io_and_a_killed_one_harms_no_other") {
        return;
    }
    let (ok, out) = common::run_child("prefork_child", &[("RINGPOOL_PREFORK_CHILD", "1")]);
    assert!(ok && out.contains("prefork checks passed"), "{out}");
}

/// Child side of `a_handed_ring_outlives_its_owners_pool`.
#[test]
#[ignore = "runs in a child process started by a_handed_ring_outlives_its_owners_pool"]
fn owner_gone_child() {
    assert_eq!(std::env::var("RINGPOOL_OWNER_GONE_CHILD").as_deref(), Ok("1"), "run only as a child");
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "gone");
    file.set_len(MIB).unwrap();
    let mem = shared_pool(4 * SEG);
    let table = BufferTable::register(&mem).unwrap();
    let h = table.handover(&HandoverOptions::new().entries(8).leases(1..2)).unwrap();
    let (mut ready_rx, ready_tx) = pipe();
    let (gone_rx, gone_tx) = pipe();
    let pid = fork_with(move || {
        let (mut ready_tx, mut gone_rx) = (ready_tx, gone_rx);
        let mut ring = match h.enable_with(&fixed()) {
            Ok(r) => r,
            Err(_) => return 10,
        };
        let _ = ready_tx.write_all(b"r");
        // The owner drops its pool, table and handed ring, then says so.
        let mut b = [0u8; 1];
        if gone_rx.read_exact(&mut b).is_err() {
            return 11;
        }
        let view = ring.memory().unwrap().clone();
        let mut w = view.try_alloc(64 * K4).unwrap();
        common::fill(&mut w, 5);
        if ring.write_at(&file, 0, w).result.ok() != Some(64 * K4) {
            return 12;
        }
        let (r, back) = ring.read_at(&file, 0, view.try_alloc(64 * K4).unwrap()).into_one();
        if r.ok() != Some(64 * K4) || back[..] != common::pattern(64 * K4, 5)[..] {
            return 13;
        }
        0
    });
    let mut b = [0u8; 1];
    ready_rx.read_exact(&mut b).unwrap();
    drop(table);
    drop(mem);
    let mut gone_tx = gone_tx;
    gone_tx.write_all(b"g").unwrap();
    drop(gone_tx);
    assert_eq!(wait_child(pid, Duration::from_secs(60)), Ok(0), "the child's fixed I/O after the owner's pool went");
    println!("owner gone checks passed");
}

#[test]
fn a_handed_ring_outlives_its_owners_pool() {
    if !common::require_clone("a_handed_ring_outlives_its_owners_pool") {
        return;
    }
    let (ok, out) = common::run_child("owner_gone_child", &[("RINGPOOL_OWNER_GONE_CHILD", "1")]);
    assert!(ok && out.contains("owner gone checks passed"), "{out}");
}

#[test]
fn a_ring_sent_twice_is_enabled_once_and_misuse_is_typed() {
    if !common::require_clone("a_ring_sent_twice_is_enabled_once_and_misuse_is_typed") {
        return;
    }
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "twice");
    file.set_len(MIB).unwrap();
    let mem = shared_pool(4 * SEG);
    let table = BufferTable::register(&mem).unwrap();
    let h = table.handover(&HandoverOptions::new().entries(8).leases(3..4)).unwrap();
    assert_eq!((h.leases(), h.segments(), h.owner()), (3..4, 4, std::process::id()));
    // The lease segment is out of the owner's leasing while `h` lives.
    assert!(mem.try_alloc_in(3, K4).is_err(), "segment 3 is reserved for the receiver");
    assert!(matches!(
        table.handover(&HandoverOptions::new().leases(3..4)),
        Err(Error::SegmentsInUse { segment: 3, .. })
    ));
    let (a, b) = UnixStream::pair().unwrap();
    h.send(&a).unwrap();
    h.send(&a).unwrap();
    let first = HandedRing::receive(&b).unwrap();
    let second = HandedRing::receive(&b).unwrap();
    let mut ring = first.enable_with(&fixed()).unwrap();
    assert!(matches!(second.enable(), Err(Error::RingAlreadyEnabled)));
    // The ring works here too, at another mapping of the pool, with leases
    // of segment 3 only.
    let view = ring.memory().unwrap().clone();
    assert_ne!(view.addr(), mem.addr(), "the receiver maps the pool again");
    let mut w = view.try_alloc(K4).unwrap();
    assert_eq!(w.buf_index(), 3);
    common::fill(&mut w, 9);
    assert_eq!(ring.write_at(&file, 0, w).result.unwrap(), K4);
    assert_eq!(common::std_read(&dir.path().join("twice"), 0, K4), common::pattern(K4, 9));
    // Regions: not in the lease segment, not across segments, not past the pool.
    // SAFETY (all regions below): nothing else touches these bytes.
    unsafe {
        assert!(matches!(view.region(3 * SEG, K4), Err(Error::BadRegion { .. })), "a region in a lease segment");
        assert!(matches!(view.region(SEG - K4 as u64, 2 * K4), Err(Error::BadRegion { .. })), "across segments");
        assert!(matches!(view.region(4 * SEG, K4), Err(Error::BadRegion { .. })), "past the pool");
        assert!(matches!(view.region(0, 0), Err(Error::BadRegion { .. })), "empty");
        assert!(matches!(view.region(u64::MAX - 10, K4), Err(Error::BadRegion { .. })), "overflowing");
        assert!(matches!(mem.region(0, K4), Err(Error::BadRegion { .. })), "the owner leases from segment 0");
        let r = view.region(SEG, K4).unwrap();
        assert_eq!((r.buf_index(), r.pool_offset(), r.len()), (1, SEG, K4));
        let (res, r) = ring.read_at(&file, 0, r).into_one();
        assert_eq!(res.unwrap(), K4);
        assert!(r[..] == common::pattern(K4, 9)[..]);
        // The owner sees what the receiver read into the shared pool.
        let _reserved = mem.reserve_segments(1..2).unwrap();
        let mine = mem.region(SEG, K4).unwrap();
        assert!(mine[..] == common::pattern(K4, 9)[..], "the owner sees the receiver's read");
    }
    // A private pool cannot hand over.
    let private = IoMemory::map_with(4 * SEG, &MemoryOptions::new().page(PagePolicy::Base).segment_size(SEG)).unwrap();
    let t2 = BufferTable::register(&private).unwrap();
    assert!(matches!(t2.handover(&HandoverOptions::new()), Err(Error::NotShared)));
    // A closed socket and junk are typed errors.
    let (c, d) = UnixStream::pair().unwrap();
    drop(c);
    assert!(matches!(HandedRing::receive(&d), Err(Error::Lost(_))));
    let (mut c, d) = UnixStream::pair().unwrap();
    c.write_all(b"RPH1\x01\x00junk").unwrap();
    assert!(matches!(HandedRing::receive(&d), Err(Error::BadHandover { .. })));
}

/// The broker example binary (cargo test builds the package's examples).
fn broker_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let p = debug.join("examples").join("broker");
    assert!(p.exists(), "{} is missing: cargo test builds the examples", p.display());
    p
}

fn socket_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new().prefix("ringpool-broker-").tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

#[test]
fn an_execd_worker_gets_its_ring_from_the_broker() {
    if !common::require_clone("an_execd_worker_gets_its_ring_from_the_broker") {
        return;
    }
    let dir = common::disk_dir();
    let data = dir.path().join("broker.dat");
    let mem = shared_pool(16 * SEG);
    // Segment 0: a read-only range the worker reads with a region.
    let ro = mem.reserve_segments(0..1).unwrap();
    {
        // SAFETY: segment 0 is reserved; the worker only reads it.
        let mut r = unsafe { mem.region(0, SEG as usize) }.unwrap();
        for (i, b) in r.iter_mut().enumerate() {
            *b = ro_byte(i as u64);
        }
    }
    let table = BufferTable::register(&mem).unwrap();
    let sockets = socket_dir();
    let sock = sockets.path().join("rings.sock");
    let broker = RingBroker::serve(&table, &sock, &BrokerOptions::default()).unwrap();
    let out = std::process::Command::new(broker_example())
        .args(["worker", sock.to_str().unwrap(), data.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("worker ok") && text.contains("pool ok"), "{text}");
    // It mapped the pool at another address than the registrar's.
    let line = text.lines().find(|l| l.starts_with("mapped at")).expect("the worker says where it mapped the pool");
    let addrs: Vec<&str> = line.split_whitespace().filter(|w| w.starts_with("0x")).collect();
    assert_eq!(addrs.len(), 2, "{line}");
    assert_ne!(addrs[0], addrs[1], "{line}");
    assert_eq!(addrs[1], format!("{:#x}", mem.addr()), "the registrar's address is the owner's");
    // The worker's rings: one with leases, more for its pool's workers.
    assert!(broker.stats().served >= 2, "{:?}", broker.stats());
    // Once it exited, its lease segments are the owner's again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.stats().clients > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(broker.stats().clients, 0);
    let all = mem.reserve_segments(1..16).unwrap();
    drop((all, ro, broker));
    assert!(!sock.exists(), "the socket file is removed");
}

#[test]
fn the_broker_refuses_another_user_and_a_malformed_request_and_keeps_serving() {
    if !common::require_clone("the_broker_refuses_another_user_and_a_malformed_request_and_keeps_serving")
        || !common::require(common::is_root(), "the_broker_refuses_another_user", "needs root to run a peer as nobody")
    {
        return;
    }
    let mem = shared_pool(4 * SEG);
    let table = BufferTable::register(&mem).unwrap();
    let sockets = socket_dir();
    let sock = sockets.path().join("rings.sock");
    // Mode 0666: the socket lets anyone connect; SO_PEERCRED refuses.
    let opts = BrokerOptions { mode: 0o666, ..BrokerOptions::default() };
    let broker = RingBroker::serve(&table, &sock, &opts).unwrap();
    // A peer running as nobody (a copy of the example nobody can execute).
    let bin = sockets.path().join("broker-example");
    std::fs::copy(broker_example(), &bin).unwrap();
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(&bin)
        .args(["request", sock.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "the peer as nobody must be refused:\n{text}");
    assert!(text.contains("uid 65534"), "{text}");
    // A malformed request: refused with a reason, the connection closed.
    let mut c = UnixStream::connect(&sock).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("RPE1") && reply.contains("malformed"), "{reply}");
    // Too deep a ring: refused too.
    assert!(matches!(RingBroker::request(&sock, 1 << 20, 0), Err(Error::PeerRefused { .. })));
    // And it keeps serving: a good request gets a ring that does I/O.
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "served");
    file.set_len(MIB).unwrap();
    let mut ring = RingBroker::request(&sock, 16, 1).unwrap().enable_with(&fixed()).unwrap();
    let view = ring.memory().unwrap().clone();
    let mut w = view.try_alloc(K4).unwrap();
    common::fill(&mut w, 3);
    assert_eq!(ring.write_at(&file, 0, w).result.unwrap(), K4);
    let (r, back) = ring.read_at(&file, 0, view.try_alloc(K4).unwrap()).into_one();
    assert_eq!(r.unwrap(), K4);
    assert!(back[..] == common::pattern(K4, 3)[..]);
    let st = broker.stats();
    assert_eq!((st.refused, st.served), (3, 1), "{st:?}");
}

/// 16 writes of 64 KiB through `pool` at once, then each block read back
/// and compared.
fn write_and_verify_16_blocks(pool: &IoPool, file: &ringpool::DirectFile) {
    let handles: Vec<_> = (0..16u64)
        .map(|i| {
            let b: IoBuf = common::filled(pool.memory(), 64 * K4, i);
            pool.write_at(file, i * 64 * K4 as u64, b)
        })
        .collect();
    for h in handles {
        assert_eq!(h.wait().result.unwrap(), 64 * K4);
    }
    for i in 0..16u64 {
        let (r, b) =
            pool.read_at(file, i * 64 * K4 as u64, pool.memory().try_alloc(64 * K4).unwrap()).wait().into_one();
        assert_eq!(r.unwrap(), 64 * K4);
        assert!(b[..] == common::pattern(64 * K4, i)[..], "block {i}");
    }
}

#[test]
fn an_io_pool_gets_its_workers_rings_from_a_broker() {
    if !common::require_clone("an_io_pool_gets_its_workers_rings_from_a_broker") {
        return;
    }
    let mem = shared_pool(8 * SEG);
    let table = BufferTable::register(&mem).unwrap();
    let sockets = socket_dir();
    let sock = sockets.path().join("rings.sock");
    let broker = RingBroker::serve(&table, &sock, &BrokerOptions::default()).unwrap();
    let pool = IoPool::builder().broker(&sock, 2).workers(2, 2).build().unwrap();
    assert_eq!(pool.memory().segment_count(), 8);
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "brokered");
    file.set_len(8 * MIB).unwrap();
    write_and_verify_16_blocks(&pool, &file);
    assert!(broker.stats().served >= 2, "{:?}", broker.stats());
    // Growing is the owner's business.
    assert!(pool.grow(SEG).is_err());
    drop(pool);
}

#[test]
fn an_isolating_broker_hands_an_io_pool_only_its_own_segments() {
    if !common::require_clone("an_isolating_broker_hands_an_io_pool_only_its_own_segments") {
        return;
    }
    let mem = shared_pool(8 * SEG);
    let table = BufferTable::register_with(&mem, &ringpool::TableOptions::new().capacity(10 * SEG)).unwrap();
    let sockets = socket_dir();
    let sock = sockets.path().join("rings.sock");
    let opts = BrokerOptions { isolate: true, grow_to: 10 * SEG, ..BrokerOptions::default() };
    let broker = RingBroker::serve(&table, &sock, &opts).unwrap();
    // Two workers: the second ring comes on a connection of its own,
    // without lease segments, and reaches this process's.
    let pool = IoPool::builder().broker(&sock, 2).workers(2, 2).build().unwrap();
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "isolated");
    file.set_len(8 * MIB).unwrap();
    write_and_verify_16_blocks(&pool, &file);
    // The other segments are not there for this process (a prefault of
    // the view passes over them).
    pool.memory().prefault(|_| {}).unwrap();
    // SAFETY: the region is refused; no buffer exists.
    let region = unsafe { pool.memory().region(5 * SEG, K4) };
    assert!(
        matches!(&region, Err(Error::BadRegion { reason, .. }) if reason.contains("not this process's")),
        "{region:?}"
    );
    // Growth on request: the new segment, and only it besides this
    // process's own, reaches the new ring.
    let grown = RingBroker::request_growth(&sock, 32, 1).unwrap();
    assert_eq!(grown.leases(), 8..9);
    assert!(grown.segment_addr(8).is_some() && grown.segment_addr(0).is_some() && grown.segment_addr(5).is_none());
    let ring = grown.enable_with(&fixed()).unwrap();
    let m = ring.memory().unwrap().clone();
    let b: IoBuf = common::filled(&m, 64 * K4, 99);
    assert_eq!(b.buf_index(), 8);
    let mut ring = ring;
    let (r, _) = ring.run(ringpool::Op::write(&file, 0, b)).into_one();
    assert_eq!(r.unwrap(), 64 * K4);
    let mut back = vec![0u8; 64 * K4];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(file.path()).unwrap(), &mut back, 0).unwrap();
    assert!(back[..] == common::pattern(64 * K4, 99)[..]);
    // More rings of this process reach its segments (a process with none
    // is refused: ringpool-cli/tests/serve_users.rs).
    let more = RingBroker::request(&sock, 32, 0).unwrap();
    assert!(more.segment_addr(8).is_some() && more.segment_addr(3).is_none(), "{more:?}");
    let mut more = more.enable_with(&fixed()).unwrap();
    let view = more.memory().unwrap().clone();
    let region_write = |ring: &mut ringpool::Ring, seg: u64| {
        // SAFETY: nothing else uses these bytes of the pool meanwhile.
        let b = unsafe { view.region(seg * SEG, K4) }.unwrap();
        ring.run(ringpool::Op::write(&file, 0, b)).into_one().0
    };
    assert_eq!(region_write(&mut more, 0).unwrap(), K4);
    assert_eq!(region_write(&mut more, 8).unwrap(), K4);
    // The growth's segment goes back when its connection closes: the
    // broker takes it out of every ring that has it, the one that also
    // holds segments 0..2 included (its table rebuilt in one step), which
    // keeps those.
    drop((ring, m));
    let t = Instant::now();
    while region_write(&mut more, 8).is_ok() {
        assert!(t.elapsed() < Duration::from_secs(5), "segment 8 still reachable");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(region_write(&mut more, 0).unwrap(), K4);
    drop((more, pool));
    drop(broker);
}
