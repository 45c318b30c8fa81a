//! Every operation kind through every engine, checked against std::fs, and
//! the vectored operation's rules: one segment, splits across segments,
//! windows, misaligned buffers, zero and too many buffers, and a ring whose
//! table holds segments at other slots (a shifted ranged clone).

mod common;

use common::{concat, every_kind, std_read, std_write};
use ringpool::probe::Features;
use ringpool::types::EnginePolicy;
use ringpool::types::{AlignmentOf, CloneRange, OpKind, PagePolicy, Sharing};
use ringpool::{
    BufferTable, DirectFile, Error, IoBuf, IoMemory, IoPool, MemoryOptions, Op, Ring, RingOptions, TableOptions,
};

const MIB: u64 = 1 << 20;
const K4: usize = common::K4;

/// 4 segments of 1 MiB, prefaulted.
fn four_segments() -> IoMemory {
    let mem = IoMemory::map_with(4 * MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(MIB)).unwrap();
    mem.prefault(|_| {}).unwrap();
    mem
}

fn scratch(name: &str) -> (tempfile::TempDir, DirectFile, std::path::PathBuf) {
    let dir = common::disk_dir();
    let file = common::direct_file(dir.path(), name);
    file.set_len(MIB).unwrap();
    let path = dir.path().join(name);
    (dir, file, path)
}

#[test]
fn every_op_kind_through_ring_engines_matches_std_fs() {
    if !common::require_io_uring("every_op_kind_through_ring_engines_matches_std_fs") {
        return;
    }
    let mem = four_segments();
    let (_d, file, path) = scratch("rings");
    let mut sharings = vec![Sharing::RegisterEach, Sharing::Unregistered];
    if common::require_clone("every_op_kind_through_ring_engines_matches_std_fs") {
        sharings.insert(0, Sharing::Clone);
    }
    for sharing in sharings {
        let table = BufferTable::register_with(&mem, &TableOptions { sharing, ..Default::default() }).unwrap();
        let mut ring = table.ring().unwrap();
        every_kind(&format!("ring {sharing:?}"), &mem, &file, &path, |op| ring.run(op));
    }
}

#[test]
fn every_op_kind_through_pool_engines_matches_std_fs() {
    let mut backends = vec![EnginePolicy::Blocking];
    if common::require_io_uring("every_op_kind_through_pool_engines_matches_std_fs") {
        backends.insert(0, EnginePolicy::IoUring);
    }
    for backend in backends {
        let mem = four_segments();
        let (_d, file, path) = scratch("pool");
        let pool = IoPool::builder()
            .existing_memory(mem.clone())
            .ring(RingOptions::new().engine(backend))
            .workers(1, 2)
            .build()
            .unwrap();
        every_kind(&format!("pool {backend:?}"), &mem, &file, &path, |op| pool.submit(op).wait());
    }
}

#[test]
fn every_op_kind_run_blocking_matches_std_fs() {
    let mem = four_segments();
    let (_d, file, path) = scratch("blocking");
    every_kind("Op::run_blocking", &mem, &file, &path, Op::run_blocking);
}

#[test]
fn vectored_buffers_of_one_segment_take_one_sqe() {
    if !common::require_clone("vectored_buffers_of_one_segment_take_one_sqe") {
        return;
    }
    let mem = four_segments();
    let (_d, file, path) = scratch("one");
    let table = BufferTable::register(&mem).unwrap();
    // io_uring forced: these count SQEs.
    let mut ring = table.ring_with(&RingOptions::new().engine(EnginePolicy::IoUring)).unwrap();
    let bufs = mem.try_alloc_vec(8, K4).unwrap();
    let seg = bufs[0].buf_index();
    assert!(bufs.iter().all(|b| b.buf_index() == seg), "try_alloc_vec leases from one segment");
    let scattered: Vec<IoBuf> = bufs.into_iter().step_by(2).collect();
    assert!(scattered.windows(2).all(|w| w[1].as_ptr() as usize - w[0].as_ptr() as usize == 2 * K4), "gaps");
    let data = common::pattern(4 * K4, 3);
    std_write(&path, 0, &data);
    let before = ring.stats();
    let (r, got) = ring.readv_at(&file, 0, scattered).into_vec();
    assert_eq!(r.unwrap(), 4 * K4);
    assert_eq!(concat(&got), data);
    let after = ring.stats();
    let expected = if Features::get().readv_fixed { ("READV_FIXED", 1, 0) } else { ("READ_FIXED", 4, 1) };
    assert_eq!(ring.opcode_for(OpKind::Readv), expected.0);
    assert_eq!((after.sqes - before.sqes, after.split_ops - before.split_ops), (expected.1, expected.2));
}

#[test]
fn vectored_buffers_across_segments_are_split_and_counted() {
    if !common::require_clone("vectored_buffers_across_segments_are_split_and_counted") {
        return;
    }
    let mem = four_segments();
    let (_d, file, path) = scratch("split");
    let table = BufferTable::register(&mem).unwrap();
    // io_uring forced: these count SQEs.
    let mut ring = table.ring_with(&RingOptions::new().engine(EnginePolicy::IoUring)).unwrap();
    // Segments 0, 1, 1, 3: runs [0], [1, 1], [3].
    let mut bufs: Vec<IoBuf> = [0u16, 1, 1, 3].iter().map(|&s| mem.try_alloc_in(s, K4).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        common::fill(b, 40 + i as u64);
    }
    let want = concat(&bufs);
    let before = ring.stats();
    let (r, back) = ring.writev_at(&file, 8 * K4 as u64, bufs).into_vec();
    assert_eq!(r.unwrap(), 4 * K4);
    assert_eq!(back.iter().map(|b| b.buf_index()).collect::<Vec<_>>(), [0, 1, 1, 3], "buffers back in order");
    assert_eq!(std_read(&path, 8 * K4 as u64, 4 * K4), want);
    let after = ring.stats();
    let sqes = if Features::get().readv_fixed { 3 } else { 4 };
    assert_eq!((after.sqes - before.sqes, after.split_ops - before.split_ops, after.ops - before.ops), (sqes, 1, 1));

    // The same through a pool: its stats count the split.
    let pool = IoPool::builder()
        .existing_memory(mem.clone())
        .help_while_waiting(false)
        .ring(RingOptions::new().engine(EnginePolicy::IoUring))
        .workers(1, 1)
        .build()
        .unwrap();
    let bufs: Vec<IoBuf> = [2u16, 0].iter().map(|&s| mem.try_alloc_in(s, K4).unwrap()).collect();
    let (r, back) = pool.readv_at(&file, 8 * K4 as u64, bufs).wait().into_vec();
    assert_eq!(r.unwrap(), 2 * K4);
    assert_eq!(concat(&back), want[..2 * K4]);
    assert_eq!(pool.stats().split_ops, 1);
}

#[test]
fn a_split_read_at_the_end_of_the_file_counts_what_was_there() {
    if !common::require_clone("a_split_read_at_the_end_of_the_file_counts_what_was_there") {
        return;
    }
    let mem = four_segments();
    let (_d, file, _path) = scratch("eof");
    let table = BufferTable::register(&mem).unwrap();
    let mut ring = table.ring().unwrap();
    // The file is 1 MiB: a read of 3 blocks (segments 0, 1, 2) starting one
    // block before the end gets that block only.
    let bufs: Vec<IoBuf> = [0u16, 1, 2].iter().map(|&s| mem.try_alloc_in(s, K4).unwrap()).collect();
    let (r, _) = ring.readv_at(&file, MIB - K4 as u64, bufs).into_vec();
    assert_eq!(r.unwrap(), K4);
    // Starting at the end: the typed end-of-file error.
    let bufs: Vec<IoBuf> = [0u16, 1].iter().map(|&s| mem.try_alloc_in(s, K4).unwrap()).collect();
    let (r, _) = ring.readv_at(&file, MIB, bufs).into_vec();
    assert!(matches!(r, Err(Error::PastEndOfFile { offset: MIB, .. })), "{r:?}");
}

#[test]
fn bad_vectors_give_typed_errors_naming_the_buffer() {
    if !common::require_clone("bad_vectors_give_typed_errors_naming_the_buffer") {
        return;
    }
    let mem = IoMemory::map_with(8 * MIB, &MemoryOptions::new().page(PagePolicy::Base)).unwrap();
    let (_d, file, _path) = scratch("bad");
    let table = BufferTable::register(&mem).unwrap();
    let mut ring = table.ring().unwrap();
    let pool = IoPool::builder().existing_memory(mem.clone()).workers(1, 1).build().unwrap();
    let oa = file.offset_align() as usize;

    // A length that is not a multiple of the alignment, in buffer 1.
    let mut bufs = mem.try_alloc_vec(3, K4).unwrap();
    bufs[1].set_len(oa / 2).unwrap();
    let (r, back) = ring.readv_at(&file, 0, bufs).into_vec();
    assert!(matches!(r, Err(Error::Misaligned { what: AlignmentOf::Length, buffer: Some(1), .. })), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("buffer 1"));
    assert_eq!(back.len(), 3, "refused: every buffer comes back");
    drop(back);

    // A misaligned address in buffer 2 (where the file wants alignment).
    let ma = file.mem_align() as usize;
    if ma > 1 {
        let mut bufs = mem.try_alloc_vec(3, 2 * K4).unwrap();
        bufs[2].set_window(ma / 2, K4).unwrap();
        let (r, _) = pool.writev_at(&file, 0, bufs).wait().into_vec();
        assert!(matches!(r, Err(Error::Misaligned { what: AlignmentOf::Memory, buffer: Some(2), .. })), "{r:?}");
    }

    // A misaligned file offset.
    let (r, _) = ring.readv_at(&file, (oa / 2) as u64, mem.try_alloc_vec(2, K4).unwrap()).into_vec();
    assert!(matches!(r, Err(Error::Misaligned { what: AlignmentOf::Offset, buffer: None, .. })), "{r:?}");

    // No buffers.
    let (r, back) = ring.readv_at(&file, 0, Vec::new()).into_vec();
    assert!(matches!(r, Err(Error::ZeroLength { op: "readv", .. })), "{r:?}");
    assert!(back.is_empty());

    // More than IOV_MAX: the allocator refuses, and so does the operation.
    assert!(matches!(mem.try_alloc_vec(1025, 512), Err(Error::TooManyBuffers { count: 1025, max: 1024, .. })));
    let bufs: Vec<IoBuf> = (0..1025).map(|_| mem.try_alloc(K4).unwrap()).collect();
    let (r, back) = pool.readv_at(&file, 0, bufs).wait().into_vec();
    assert!(matches!(r, Err(Error::TooManyBuffers { op: "readv", count: 1025, max: 1024 })), "{r:?}");
    assert_eq!(back.len(), 1025);
    drop(back);
    assert_eq!(mem.stats().leases, 0);
}

#[test]
fn a_shifted_ranged_clone_refuses_leases_it_lacks_and_serves_those_it_holds() {
    if !common::require_clone("a_shifted_ranged_clone_refuses_leases_it_lacks_and_serves_those_it_holds")
        || !common::require(Features::get().clone_ranges, "a_shifted_ranged_clone_refuses_leases_it_lacks", "6.13")
    {
        return;
    }
    let mem = four_segments();
    let (_d, file, path) = scratch("shift");
    let table = BufferTable::register(&mem).unwrap();
    // Template entries 2..4 into slots 0..2.
    let mut ring = Ring::new(&RingOptions::default()).unwrap();
    ring.clone_buffers_from(&table, CloneRange::range(2, 0, 2)).unwrap();
    assert_eq!(ring.table_len(), 2);
    assert_eq!((ring.slot_of(2), ring.slot_of(3), ring.slot_of(0), ring.slot_of(1)), (Some(0), Some(1), None, None));
    for seg in [0u16, 1] {
        let (r, _) = ring.write_at(&file, 0, mem.try_alloc_in(seg, K4).unwrap()).into_one();
        assert!(matches!(r, Err(Error::NotInTable { segment, .. }) if segment == seg), "segment {seg}: {r:?}");
    }
    let (r, _) =
        ring.readv_at(&file, 0, vec![mem.try_alloc_in(2, K4).unwrap(), mem.try_alloc_in(0, K4).unwrap()]).into_vec();
    assert!(matches!(r, Err(Error::NotInTable { segment: 0, buffer: Some(1), .. })), "{r:?}");
    for seg in [2u16, 3] {
        let mut w = mem.try_alloc_in(seg, 2 * K4).unwrap();
        common::fill(&mut w, u64::from(seg));
        let want = w.to_vec();
        let off = u64::from(seg) * 2 * K4 as u64;
        let (r, _) = ring.write_at(&file, off, w).into_one();
        assert_eq!(r.unwrap(), 2 * K4, "segment {seg}");
        assert_eq!(std_read(&path, off, 2 * K4), want, "segment {seg} wrote its own bytes");
        let (r, back) = ring.read_at(&file, off, mem.try_alloc_in(seg, 2 * K4).unwrap()).into_one();
        assert_eq!(r.unwrap(), 2 * K4);
        assert_eq!(&back[..], &want[..], "segment {seg} read into its own bytes");
    }
}

#[test]
fn a_vector_needing_more_sqes_than_the_ring_holds_is_refused() {
    if !common::require_clone("a_vector_needing_more_sqes_than_the_ring_holds_is_refused") {
        return;
    }
    let mem = four_segments();
    let (_d, file, _path) = scratch("parts");
    let table = BufferTable::register(&mem).unwrap();
    let mut ring = table.ring_with(&RingOptions::new().entries(4).engine(EnginePolicy::IoUring)).unwrap();
    // Segments 0,1,0,1,0,1: six runs, six SQEs, in a ring of four.
    let bufs: Vec<IoBuf> = (0..6u16).map(|i| mem.try_alloc_in(i % 2, K4).unwrap()).collect();
    let (r, back) = ring.readv_at(&file, 0, bufs).into_vec();
    assert!(matches!(r, Err(Error::TooManyParts { sqes: 6, entries: 4, .. })), "{r:?}");
    assert_eq!(back.len(), 6);
}

#[test]
fn a_pool_holds_split_operations_back_while_its_ring_is_full() {
    if !common::require_clone("a_pool_holds_split_operations_back_while_its_ring_is_full") {
        return;
    }
    let mem = four_segments();
    let (_d, file, path) = scratch("full");
    let data = common::pattern(64 * K4, 9);
    std_write(&path, 0, &data);
    // A worker ring of 4 (+1) entries; each operation takes 3 SQEs.
    let pool = IoPool::builder()
        .existing_memory(mem.clone())
        .ring(RingOptions::new().entries(4 + 1).engine(EnginePolicy::IoUring))
        .help_while_waiting(false)
        .workers(1, 1)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..16u64)
        .map(|i| {
            let bufs: Vec<IoBuf> = [0u16, 1, 2].iter().map(|&s| mem.try_alloc_in(s, K4).unwrap()).collect();
            (i, pool.readv_at(&file, i * 3 * K4 as u64 % (60 * K4 as u64), bufs))
        })
        .collect();
    for (i, h) in handles {
        let (r, back) = h.wait().into_vec();
        assert_eq!(r.unwrap(), 3 * K4, "op {i}");
        let off = (i * 3 * K4 as u64 % (60 * K4 as u64)) as usize;
        assert_eq!(concat(&back), data[off..off + 3 * K4], "op {i}");
    }
    let st = pool.stats();
    assert_eq!((st.failed, st.split_ops), (0, 16), "{st:?}");
}

#[test]
fn growth_after_a_ranged_clone_into_a_table_ring_keeps_every_slot() {
    if !common::require_clone("growth_after_a_ranged_clone_into_a_table_ring_keeps_every_slot")
        || !common::require(Features::get().clone_ranges, "growth_after_a_ranged_clone", "6.13")
    {
        return;
    }
    let mem = four_segments();
    let (_d, file, _path) = scratch("grow");
    let table = BufferTable::register_with(&mem, &TableOptions::new().capacity(200 * MIB)).unwrap();
    let mut ring = table.ring().unwrap();
    // Segment 0 also in slot 100, then the table grows by two segments.
    ring.clone_buffers_from(&table, CloneRange::range(0, 100, 1).replace()).unwrap();
    assert_eq!(ring.table_len(), 5);
    let report = table.grow(2 * MIB).unwrap();
    assert_eq!(report.segments, 4..6);
    assert!(ring.refresh_table().unwrap());
    for seg in 0..6u16 {
        let (r, _) = ring.write_at(&file, u64::from(seg) * K4 as u64, mem.try_alloc_in(seg, K4).unwrap()).into_one();
        assert_eq!(r.unwrap(), K4, "segment {seg}");
    }
}
