//! The Core issue's tests: clone onto rings, fixed I/O through cloned
//! entries, clone errors, register-each, memlock, huge pages.

mod common;

use ringpool::types::Bytes;
use ringpool::types::{CloneRange, HugePages, PageKind, PagePolicy, Sharing, TablePath};
use ringpool::{BufferTable, Error, IoMemory, MemoryOptions, Ring, RingOptions, TableOptions};
use ringpool_testkit::machine::{HugePageReservation, MachineLock};

const MIB: u64 = 1 << 20;

/// A 64 MiB pool in four 16 MiB segments, prefaulted.
fn four_segment_pool() -> IoMemory {
    let mem =
        IoMemory::map_with(64 * MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(16 * MIB)).unwrap();
    mem.prefault(|_| {}).unwrap();
    assert_eq!(mem.segments().len(), 4);
    mem
}

/// Writes a pattern from segment `seg` at `offset` and reads it back into a
/// different lease of the same segment; checks the file with std::fs too.
fn roundtrip(ring: &mut Ring, mem: &IoMemory, file: &ringpool::DirectFile, seg: u16, offset: u64, seed: u64) {
    let len = 256 << 10;
    let mut w = mem.try_alloc_in(seg, len).unwrap();
    assert_eq!(w.buf_index(), seg);
    common::fill(&mut w, seed);
    let (n, w) = ring.write_at(file, offset, w).into_one();
    assert_eq!(n.unwrap(), len);
    let r = mem.try_alloc_in(seg, len).unwrap();
    assert_eq!(r.buf_index(), seg);
    assert_ne!(r.pool_offset(), w.pool_offset());
    let (n, r) = ring.read_at(file, offset, r).into_one();
    assert_eq!(n.unwrap(), len);
    let expect = common::pattern(len, seed);
    assert!(r[..] == expect[..], "read back through segment {seg} differs");
    let on_disk = std::fs::read(file.path()).unwrap();
    assert!(on_disk[offset as usize..offset as usize + len] == expect[..], "file content differs");
}

#[test]
fn cloned_ring_reaches_first_and_last_segment_and_outlives_the_table() {
    if !common::require_clone("cloned_ring_reaches_first_and_last_segment_and_outlives_the_table") {
        return;
    }
    let mem = four_segment_pool();
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "data");
    let table =
        BufferTable::register_with(&mem, &TableOptions { sharing: Sharing::Clone, ..Default::default() }).unwrap();
    let mut ring = table.ring().unwrap();
    assert_eq!(ring.setup().path, TablePath::Cloned);
    assert_eq!(ring.table_len(), 4);
    roundtrip(&mut ring, &mem, &file, 0, 0, 1);
    roundtrip(&mut ring, &mem, &file, 3, 4 * MIB, 2);

    // Drop the table (and its template ring) and the caller's memory handle:
    // the ring keeps the table and the memory.
    let leased = mem.clone();
    drop(table);
    roundtrip(&mut ring, &leased, &file, 0, 8 * MIB, 3);
    roundtrip(&mut ring, &leased, &file, 3, 12 * MIB, 4);
    drop(mem);
    roundtrip(&mut ring, &leased, &file, 3, 0, 5);
    assert_eq!(leased.stats().bytes_in_use, 0);
}

#[test]
fn clone_errors_have_their_own_variants() {
    if !common::require_clone("clone_errors_have_their_own_variants") {
        return;
    }
    let mem = four_segment_pool();
    let table = BufferTable::register(&mem).unwrap();

    // Into a ring that already holds a table: EBUSY.
    let mut full = table.ring().unwrap();
    let e = full.clone_buffers_from(&table, CloneRange::all()).unwrap_err();
    assert!(matches!(e, Error::TableAlreadyPresent), "{e:?}");
    assert!(e.to_string().contains("already holds a buffer table"), "{e}");

    // From a ring with no table: ENXIO.
    let empty_src = Ring::new(&RingOptions::default()).unwrap();
    let mut dst = Ring::new(&RingOptions::default()).unwrap();
    let e = dst.clone_buffers_from(&empty_src, CloneRange::all()).unwrap_err();
    assert!(matches!(e, Error::EmptySource), "{e:?}");

    // A range past the source table: EOVERFLOW (ranged clone, 6.13+).
    if common::require(
        ringpool::probe::Features::get().clone_ranges,
        "clone_errors_have_their_own_variants",
        "ranged clone needs 6.13+",
    ) {
        let e = dst.clone_buffers_from(&table, CloneRange::range(2, 0, 4)).unwrap_err();
        match e {
            Error::RangeOutOfBounds { src_off: 2, nr: 4, source_len: 4, .. } => {}
            other => panic!("expected RangeOutOfBounds, got {other:?}"),
        }
        // The failed clones left the destination usable: a valid range works.
        dst.clone_buffers_from(&table, CloneRange::range(1, 0, 3)).unwrap();
        assert_eq!(dst.table_len(), 3);
    }
}

#[test]
fn register_each_behaves_like_clone() {
    if !common::require_io_uring("register_each_behaves_like_clone") {
        return;
    }
    let mem = four_segment_pool();
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "data");
    let table =
        BufferTable::register_with(&mem, &TableOptions { sharing: Sharing::RegisterEach, ..Default::default() })
            .unwrap();
    assert_eq!(table.path(), TablePath::Registered);
    let mut ring = table.ring().unwrap();
    assert_eq!(ring.setup().path, TablePath::Registered);
    assert_eq!(ring.table_len(), 4);
    roundtrip(&mut ring, &mem, &file, 0, 0, 11);
    roundtrip(&mut ring, &mem, &file, 3, 4 * MIB, 12);
    drop(table);
    roundtrip(&mut ring, &mem, &file, 3, 8 * MIB, 13);

    // The per-ring override works on a clone table too.
    if ringpool::probe::Features::get().clone_buffers {
        let t2 = BufferTable::register(&mem).unwrap();
        let mut r2 = t2.ring_with(&RingOptions::new().sharing(Sharing::RegisterEach)).unwrap();
        assert_eq!(r2.setup().path, TablePath::Registered);
        roundtrip(&mut r2, &mem, &file, 1, 0, 14);
    }
}

#[test]
fn unregistered_rings_do_plain_io_on_pool_memory() {
    if !common::require_io_uring("unregistered_rings_do_plain_io_on_pool_memory") {
        return;
    }
    let mem = four_segment_pool();
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "data");
    let table =
        BufferTable::register_with(&mem, &TableOptions { sharing: Sharing::Unregistered, ..Default::default() })
            .unwrap();
    let mut ring = table.ring().unwrap();
    assert_eq!(ring.setup().path, TablePath::Unregistered);
    assert_eq!(ring.table_len(), 0);
    roundtrip(&mut ring, &mem, &file, 2, 0, 21);
}

#[test]
fn buffers_outside_the_ring_table_are_refused() {
    if !common::require_clone("buffers_outside_the_ring_table_are_refused") {
        return;
    }
    let mem = four_segment_pool();
    let other = IoMemory::map(MIB, PagePolicy::Base).unwrap();
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), "data");
    // A table of the first two segments only.
    let table = BufferTable::register_with(&mem, &TableOptions { segments: Some(2), ..Default::default() }).unwrap();
    let mut ring = table.ring().unwrap();
    let (r, _) = ring.write_at(&file, 0, mem.try_alloc_in(3, 4096).unwrap()).into_one();
    assert!(matches!(r, Err(Error::NotInTable { segment: 3, .. })), "{r:?}");
    let (r, _) = ring.write_at(&file, 0, other.try_alloc(4096).unwrap()).into_one();
    assert!(matches!(r, Err(Error::ForeignBuffer { .. })), "{r:?}");
    let (r, _) = ring.write_at(&file, 0, mem.try_alloc_in(1, 4096).unwrap()).into_one();
    assert_eq!(r.unwrap(), 4096);
}

/// Child side of `memlock_limit_is_reported_and_clones_are_not_charged`.
#[test]
#[ignore = "runs in a child process started by memlock_limit_is_reported_and_clones_are_not_charged"]
fn memlock_child() {
    assert_eq!(std::env::var("RINGPOOL_MEMLOCK_CHILD").as_deref(), Ok("1"), "run only as a child");
    caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_IPC_LOCK).expect("drop CAP_IPC_LOCK");
    assert!(!ringpool::probe::has_cap_ipc_lock());
    ringpool_testkit::process::set_memlock_limit(Some(MIB)).expect("set RLIMIT_MEMLOCK");

    // 64 MiB cannot be pinned under a 1 MiB limit.
    let big = IoMemory::map(64 * MIB, PagePolicy::Base).unwrap();
    big.prefault(|_| {}).unwrap();
    let e = BufferTable::register(&big).unwrap_err();
    match &e {
        Error::MemlockLimit { limit, needed, .. } => {
            assert_eq!(*limit, Bytes(MIB));
            assert_eq!(*needed, Bytes(64 * MIB));
        }
        other => panic!("expected MemlockLimit, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("1 MiB") && msg.contains("64 MiB"), "message must name both sizes: {msg}");
    println!("memlock error: {msg}");

    // 512 KiB fits; cloning it into 4 rings charges nothing more.
    let small = IoMemory::map(512 << 10, PagePolicy::Base).unwrap();
    small.prefault(|_| {}).unwrap();
    let table =
        BufferTable::register_with(&small, &TableOptions { sharing: Sharing::Clone, ..Default::default() }).unwrap();
    let rings: Vec<Ring> = (0..4).map(|_| table.ring().unwrap()).collect();
    for r in &rings {
        assert_eq!(r.setup().path, TablePath::Cloned);
        assert_eq!(r.table_len(), 1);
    }
    // Registering it once more on a fifth ring would be charged: 1 MiB > limit.
    let e = table.ring_with(&RingOptions::new().sharing(Sharing::RegisterEach)).unwrap_err();
    assert!(matches!(e, Error::MemlockLimit { .. }), "{e:?}");
}

#[test]
fn memlock_limit_is_reported_and_clones_are_not_charged() {
    if !common::require_clone("memlock_limit_is_reported_and_clones_are_not_charged")
        || !common::require(
            common::is_root(),
            "memlock_limit_is_reported_and_clones_are_not_charged",
            "needs root to drop CAP_IPC_LOCK",
        )
    {
        return;
    }
    let (ok, out) = common::run_child("memlock_child", &[("RINGPOOL_MEMLOCK_CHILD", "1")]);
    assert!(ok, "child failed:\n{out}");
    assert!(out.contains("RLIMIT_MEMLOCK is 1 MiB, the table needs 64 MiB"), "{out}");
}

#[test]
fn huge2m_without_free_pages_names_how_many_are_needed() {
    let hp = HugePages::read(PageKind::Huge2M);
    if !common::require(
        hp.present,
        "huge2m_without_free_pages_names_how_many_are_needed",
        "no 2 MiB hugetlb pages in this kernel",
    ) {
        return;
    }
    let _lock = MachineLock::acquire().unwrap();
    let hp = HugePages::read(PageKind::Huge2M);
    let want = hp.available() + 3;
    let e = IoMemory::map(want * 2 * MIB, PagePolicy::Huge2M).unwrap_err();
    match &e {
        Error::HugePagesUnavailable { page: PageKind::Huge2M, needed, sysfs, .. } => {
            assert_eq!(*needed, want);
            assert!(sysfs.ends_with("hugepages-2048kB/nr_hugepages"));
        }
        other => panic!("expected HugePagesUnavailable, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("needs {want}"))
            && msg.contains("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
        "{msg}"
    );
}

#[test]
fn huge2m_pool_works_with_reserved_pages_and_gives_them_back() {
    let test = "huge2m_pool_works_with_reserved_pages_and_gives_them_back";
    if !common::require_io_uring(test) || !common::require(common::is_root(), test, "reserving huge pages needs root") {
        return;
    }
    let before = HugePages::read(PageKind::Huge2M).total;
    {
        let res = HugePageReservation::ensure_available(PageKind::Huge2M, 32).unwrap();
        let mem = IoMemory::map_with(64 * MIB, &MemoryOptions::new().page(PagePolicy::Huge2M).segment_size(16 * MIB))
            .unwrap();
        assert_eq!(mem.page_kind(), PageKind::Huge2M);
        mem.prefault(|_| {}).unwrap();
        let table = BufferTable::register(&mem).unwrap();
        let mut ring = table.ring().unwrap();
        let dir = common::disk_dir();
        let file = common::direct_file(dir.path(), "huge");
        roundtrip(&mut ring, &mem, &file, 3, 0, 31);

        // Auto picks the reserved hugetlb pages (free again) and says so.
        drop((ring, table, mem));
        let auto = IoMemory::map(16 * MIB, PagePolicy::Auto).unwrap();
        assert_eq!(auto.page_kind(), PageKind::Huge2M, "{}", auto.page_choice());
        assert!(auto.page_choice().starts_with("auto: 2 MiB hugetlb"), "{}", auto.page_choice());
        drop(auto);
        drop(res);
    }
    assert_eq!(HugePages::read(PageKind::Huge2M).total, before, "nr_hugepages restored");
}

#[test]
fn auto_reports_its_fallback_without_huge_pages() {
    let _lock = MachineLock::acquire().unwrap();
    let hp2 = HugePages::read(PageKind::Huge2M);
    let mem = IoMemory::map(16 * MIB, PagePolicy::Auto).unwrap();
    let choice = mem.page_choice().to_string();
    assert!(choice.starts_with("auto:"), "{choice}");
    if hp2.available() < 8 {
        assert!(matches!(mem.page_kind(), PageKind::Transparent | PageKind::Base), "{choice}");
        assert!(choice.contains("2 MiB hugetlb: "), "the choice names what was tried: {choice}");
    }
}

#[test]
fn bad_sizes_give_clear_errors() {
    let e = IoMemory::map(0, PagePolicy::Base).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "pool size", .. }), "{e:?}");

    // 16385 segments of 4 KiB.
    let e =
        IoMemory::map_with(16385 * 4096, &MemoryOptions::new().page(PagePolicy::Base).segment_size(4096)).unwrap_err();
    assert!(matches!(e, Error::TooManySegments { segments: 16385, .. }), "{e:?}");
    assert!(e.to_string().contains("16384"));

    let e = IoMemory::map_with(MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(3 * 4096)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "segment size", .. }), "{e:?}");
    let e = IoMemory::map_with(MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(2 << 30)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "segment size", .. }), "{e:?}");
    let e = IoMemory::map_with(MIB, &MemoryOptions::new().page(PagePolicy::Base).alignment(100)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "alignment", .. }), "{e:?}");

    // Not a multiple of the page: rounded up, and said.
    let m = IoMemory::map(10_000, PagePolicy::Base).unwrap();
    assert_eq!((m.requested_len(), m.len()), (10_000, 12_288));

    // Larger than the machine.
    let e = IoMemory::map(1 << 50, PagePolicy::Base).unwrap_err();
    assert!(matches!(e, Error::InsufficientMemory { .. } | Error::TooManySegments { .. }), "{e:?}");
    let e = IoMemory::map(8 << 40, PagePolicy::Transparent).unwrap_err();
    assert!(matches!(e, Error::InsufficientMemory { .. }), "{e:?}");

    // Ring depth.
    for bad in [0, 32769] {
        let e = Ring::new(&RingOptions::new().entries(bad)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { what: "ring depth", .. }), "{e:?}");
    }
}

#[test]
fn registered_files_follow_the_file_not_its_address() {
    if !common::require_clone("registered_files_follow_the_file_not_its_address") {
        return;
    }
    let mem = four_segment_pool();
    let dir = common::disk_dir();
    let table = BufferTable::register(&mem).unwrap();
    let mut ring = table.ring().unwrap();
    for i in 0..8u64 {
        // Register a file, drop every handle, open the next: the new file
        // must never be served by the old one's slot.
        let f = common::direct_file(dir.path(), &format!("f{i}"));
        ring.register_file(&f).unwrap();
        let mut b = mem.try_alloc(4096).unwrap();
        common::fill(&mut b, i);
        let (n, _) = ring.write_at(&f, 0, b).into_one();
        assert_eq!(n.unwrap(), 4096);
        drop(f);
    }
    for i in 0..8u64 {
        let on_disk = std::fs::read(dir.path().join(format!("f{i}"))).unwrap();
        assert_eq!(on_disk, common::pattern(4096, i), "file f{i}");
    }
}

#[test]
fn leases_honour_alignments_above_the_page_size() {
    for align in [8192u64, 65536, 1 << 20] {
        let mem = IoMemory::map_with(8 * MIB, &MemoryOptions::new().page(PagePolicy::Base).alignment(align)).unwrap();
        let bufs: Vec<_> = (0..4).map(|_| mem.try_alloc(100).unwrap()).collect();
        for b in &bufs {
            assert_eq!(b.as_ptr() as u64 % align, 0, "alignment {align}");
            assert_eq!(b.capacity() as u64, align);
        }
    }
    let e = IoMemory::map_with(4 * MIB, &MemoryOptions::new().page(PagePolicy::Huge2M).alignment(4 * MIB)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { what: "alignment", .. } | Error::HugePagesUnavailable { .. }),
        "{e:?}"
    );
}
