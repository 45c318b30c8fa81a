//! Every public entry point with each bad input: a typed error whose message
//! names the bad value, no panic, no leak. The table is data: one row per case.

mod common;

use std::path::Path;

use ringpool::types::EnginePolicy;
use ringpool::types::{CloneRange, DirectIo, PagePolicy};
use ringpool::{BufferTable, DirectFile, Error, IoMemory, IoPool, MemoryOptions, Ring, RingOptions, TableOptions};

const MIB: u64 = 1 << 20;

/// What a row's call returned, reduced to what the table checks.
type Outcome = Result<(), Error>;

struct Case {
    name: &'static str,
    /// Runs the call with the bad input.
    run: fn(&Path) -> Outcome,
    /// The variant expected.
    want: fn(&Error) -> bool,
    /// Text the message must contain (the bad value, or what to do).
    names: &'static [&'static str],
}

fn pool_mem() -> IoMemory {
    IoMemory::map(MIB, PagePolicy::Base).unwrap()
}

fn file_in(dir: &Path, name: &str, direct: DirectIo) -> DirectFile {
    DirectFile::options().read(true).write(true).create(true).direct(direct).open(dir.join(name)).unwrap()
}

fn io_with(dir: &Path, f: impl FnOnce(&mut Ring, &IoMemory, &DirectFile) -> ringpool::Done) -> Outcome {
    let mem = pool_mem();
    let table = BufferTable::register(&mem)?;
    let mut ring = table.ring()?;
    let file = file_in(dir, "f", DirectIo::Required);
    file.set_len(MIB)?;
    let (r, buf) = f(&mut ring, &mem, &file).into_vec();
    drop(buf);
    assert_eq!(mem.stats().bytes_in_use, 0, "a refused op leaked its lease");
    r.map(drop)
}

const CASES: &[Case] = &[
    Case {
        name: "pool size zero",
        run: |_| IoMemory::map(0, PagePolicy::Base).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "pool size", .. }),
        names: &["pool size 0"],
    },
    Case {
        name: "pool past 16384 segments",
        run: |_| {
            IoMemory::map_with(16385 * 4096, &MemoryOptions::new().page(PagePolicy::Base).segment_size(4096)).map(drop)
        },
        want: |e| matches!(e, Error::TooManySegments { segments: 16385, .. }),
        names: &["16385 segments", "16384"],
    },
    Case {
        name: "segment size not a power of two",
        run: |_| IoMemory::map_with(MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(12288)).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "segment size", .. }),
        names: &["segment size 12 KiB"],
    },
    Case {
        name: "segment size above 1 GiB",
        run: |_| IoMemory::map_with(MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(2 << 30)).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "segment size", .. }),
        names: &["2 GiB"],
    },
    Case {
        name: "alignment not a power of two",
        run: |_| IoMemory::map_with(MIB, &MemoryOptions::new().page(PagePolicy::Base).alignment(1000)).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "alignment", .. }),
        names: &["alignment 1000"],
    },
    Case {
        name: "pool larger than memory",
        run: |_| IoMemory::map(8 << 40, PagePolicy::Transparent).map(drop),
        want: |e| matches!(e, Error::InsufficientMemory { .. }),
        names: &["8 TiB", "available"],
    },
    Case {
        name: "pool of u64::MAX bytes, base pages",
        run: |_| IoMemory::map(u64::MAX, PagePolicy::Base).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "pool size", .. }),
        names: &["larger than the address space"],
    },
    Case {
        name: "pool of u64::MAX bytes, auto pages",
        run: |_| IoMemory::map(u64::MAX, PagePolicy::Auto).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "pool size", .. }),
        names: &["larger than the address space"],
    },
    Case {
        name: "pool that overflows when rounded to 2 MiB pages",
        run: |_| IoMemory::map(u64::MAX - 100, PagePolicy::Huge2M).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "pool size", .. }),
        names: &["larger than the address space"],
    },
    Case {
        name: "pool past half the address space",
        run: |_| IoMemory::map(u64::MAX / 2 + 1, PagePolicy::Base).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "pool size", .. }),
        names: &["larger than the address space"],
    },
    Case {
        name: "growth of u64::MAX bytes",
        run: |_| pool_mem().grow(u64::MAX).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "growth", .. }),
        names: &["larger than the address space"],
    },
    Case {
        name: "growth by u16::MAX segments",
        run: |_| {
            let mem = IoMemory::map_with(4 * 4096, &MemoryOptions::new().page(PagePolicy::Base).segment_size(4096))?;
            mem.grow(u64::from(u16::MAX) * 4096).map(drop)
        },
        want: |e| matches!(e, Error::TooManySegments { segments: 65539, .. }),
        names: &["65539 segments", "16384"],
    },
    Case {
        name: "pool growth by u16::MAX segments, blocking backend",
        run: |_| {
            let pool = IoPool::builder()
                .size(4 * 4096)
                .memory(MemoryOptions::new().segment_size(4096).page(PagePolicy::Base))
                .ring(RingOptions::new().engine(EnginePolicy::Blocking))
                .build()?;
            pool.grow(u64::from(u16::MAX) * 4096).map(drop)
        },
        want: |e| matches!(e, Error::TooManySegments { segments: 65539, .. }),
        names: &["65539 segments"],
    },
    Case {
        name: "pool growth past its capacity, blocking backend",
        run: |_| {
            let pool = IoPool::builder()
                .size(4 * 4096)
                .memory(MemoryOptions::new().segment_size(4096).page(PagePolicy::Base))
                .table(TableOptions::new().capacity(8 * 4096))
                .ring(RingOptions::new().engine(EnginePolicy::Blocking))
                .build()?;
            pool.grow(4 * 4096)?;
            pool.grow(4096).map(drop)
        },
        want: |e| matches!(e, Error::CapacityExhausted { capacity: 8, used: 8, .. }),
        names: &["8 slots", "8 in use"],
    },
    Case {
        name: "pool growth past its capacity, io_uring",
        run: |_| {
            let pool = IoPool::builder()
                .size(4 * 4096)
                .memory(MemoryOptions::new().segment_size(4096).page(PagePolicy::Base))
                .table(TableOptions::new().capacity(6 * 4096))
                .ring(RingOptions::new().engine(EnginePolicy::IoUring))
                .build()?;
            pool.grow(3 * 4096).map(drop)
        },
        want: |e| matches!(e, Error::CapacityExhausted { capacity: 6, used: 4, needed: 3, .. }),
        names: &["6 slots", "needs 3 more"],
    },
    Case {
        name: "vector of usize::MAX leases",
        run: |_| pool_mem().try_alloc_vec(usize::MAX, 4096).map(drop),
        want: |e| matches!(e, Error::TooManyBuffers { .. }),
        names: &["1024"],
    },
    Case {
        name: "huge pages not reserved",
        run: |_| {
            let _lock = ringpool_testkit::machine::MachineLock::acquire()?;
            let free = ringpool::types::HugePages::read(ringpool::types::PageKind::Huge2M).available();
            IoMemory::map((free + 1) * 2 * MIB, PagePolicy::Huge2M).map(drop)
        },
        want: |e| matches!(e, Error::HugePagesUnavailable { .. }),
        names: &["hugepages-2048kB/nr_hugepages", "needs"],
    },
    Case {
        name: "lease of zero bytes",
        run: |_| pool_mem().try_alloc(0).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "lease length", .. }),
        names: &["lease length 0"],
    },
    Case {
        name: "lease larger than a segment",
        run: |_| {
            IoMemory::map_with(4 * MIB, &MemoryOptions::new().page(PagePolicy::Base).segment_size(MIB))
                .unwrap()
                .try_alloc(2 << 20)
                .map(drop)
        },
        want: |e| matches!(e, Error::LeaseTooLarge { .. }),
        names: &["2 MiB", "1 MiB"],
    },
    Case {
        name: "lease in a segment past the end",
        run: |_| pool_mem().try_alloc_in(7, 4096).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "segment", .. }),
        names: &["segment 7"],
    },
    Case {
        name: "buffer window past the lease",
        run: |_| pool_mem().try_alloc(4096).unwrap().set_window(4000, 200),
        want: |e| matches!(e, Error::InvalidArgument { what: "buffer window", .. }),
        names: &["4000+200", "4096"],
    },
    Case {
        name: "table prefix longer than the pool",
        run: |_| {
            BufferTable::register_with(&pool_mem(), &TableOptions { segments: Some(3), ..Default::default() }).map(drop)
        },
        want: |e| matches!(e, Error::InvalidArgument { what: "segment prefix", .. }),
        names: &["segment prefix 3"],
    },
    Case {
        name: "ring depth zero",
        run: |_| Ring::new(&RingOptions::new().entries(0)).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "ring depth", .. }),
        names: &["ring depth 0"],
    },
    Case {
        name: "ring depth above 32768",
        run: |_| Ring::new(&RingOptions::new().entries(40000)).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "ring depth", .. }),
        names: &["ring depth 40000"],
    },
    Case {
        name: "pool worker ring of one entry (none left for operations)",
        run: |_| IoPool::builder().size(MIB).ring(RingOptions::new().entries(1)).build().map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "worker ring entries", .. }),
        names: &["worker ring entries 1", "wake-up read"],
    },
    Case {
        name: "pool worker ring above 32768 entries",
        run: |_| IoPool::builder().size(MIB).ring(RingOptions::new().entries(32769)).build().map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "worker ring entries", .. }),
        names: &["worker ring entries 32769"],
    },
    Case {
        name: "min workers above max",
        run: |_| IoPool::builder().size(MIB).workers(5, 2).build().map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "min workers", .. }),
        names: &["min workers 5", "max workers (2)"],
    },
    Case {
        name: "no workers at all",
        run: |_| IoPool::builder().size(MIB).workers(0, 0).build().map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "max workers", .. }),
        names: &["max workers 0"],
    },
    Case {
        name: "clone range past the source",
        run: |_| {
            let mem = pool_mem();
            let table = BufferTable::register(&mem)?;
            Ring::new(&RingOptions::default())?.clone_buffers_from(&table, CloneRange::range(1, 0, 5))
        },
        want: |e| matches!(e, Error::RangeOutOfBounds { src_off: 1, nr: 5, .. }),
        names: &["src_off 1", "nr 5", "1 entries"],
    },
    Case {
        name: "open a directory",
        run: |dir| DirectFile::open(dir).map(drop),
        want: |e| matches!(e, Error::Io { op: "open", .. } | Error::InvalidArgument { what: "file", .. }),
        names: &["ringpool-test-"],
    },
    Case {
        name: "open a missing file",
        run: |dir| DirectFile::options().read(true).open(dir.join("missing")).map(drop),
        want: |e| matches!(e, Error::Io { op: "open", .. }),
        names: &["missing", "No such file"],
    },
    Case {
        name: "open with neither read nor write",
        run: |dir| DirectFile::options().read(false).open(dir.join("x")).map(drop),
        want: |e| matches!(e, Error::InvalidArgument { what: "open options", .. }),
        names: &["neither read nor write"],
    },
    Case {
        name: "tmpfs with DirectIo::Required",
        run: |_| {
            let shm = tempfile::tempdir_in("/dev/shm").unwrap();
            DirectFile::options()
                .read(true)
                .write(true)
                .create(true)
                .direct(DirectIo::Required)
                .open(shm.path().join("x"))
                .map(drop)
        },
        want: |e| matches!(e, Error::DirectIoUnsupported { .. }),
        names: &["/dev/shm", "DirectIo::Optional"],
    },
    Case {
        name: "write to a file opened read-only",
        run: |dir| {
            file_in(dir, "ro", DirectIo::Required);
            let ro = DirectFile::options().read(true).open(dir.join("ro"))?;
            let mem = pool_mem();
            let mut ring = BufferTable::register(&mem)?.ring()?;
            ring.write_at(&ro, 0, mem.try_alloc(4096)?).result.map(drop)
        },
        want: |e| matches!(e, Error::NotPermitted { access: "write", .. }),
        names: &["ro", "without write access"],
    },
    Case {
        name: "set_len on a read-only file",
        run: |dir| {
            file_in(dir, "ro2", DirectIo::Required);
            DirectFile::options().read(true).open(dir.join("ro2"))?.set_len(4096)
        },
        want: |e| matches!(e, Error::NotPermitted { .. }),
        names: &["ro2"],
    },
    Case {
        name: "misaligned offset",
        run: |dir| io_with(dir, |ring, mem, f| ring.read_at(f, 100, mem.try_alloc(4096).unwrap())),
        want: |e| matches!(e, Error::Misaligned { what: ringpool::types::AlignmentOf::Offset, value: 100, .. }),
        names: &["file offset 100"],
    },
    Case {
        name: "misaligned length",
        run: |dir| {
            io_with(dir, |ring, mem, f| {
                let mut b = mem.try_alloc(4096).unwrap();
                b.set_len(1000).unwrap();
                ring.read_at(f, 0, b)
            })
        },
        want: |e| matches!(e, Error::Misaligned { what: ringpool::types::AlignmentOf::Length, value: 1000, .. }),
        names: &["length 1000"],
    },
    Case {
        name: "misaligned memory",
        run: |dir| {
            io_with(dir, |ring, mem, f| {
                let mut b = mem.try_alloc(8192).unwrap();
                b.set_window(100, 4096).unwrap();
                ring.read_at(f, 0, b)
            })
        },
        want: |e| matches!(e, Error::Misaligned { what: ringpool::types::AlignmentOf::Memory, .. }),
        names: &["memory address"],
    },
    Case {
        name: "zero-length read",
        run: |dir| {
            io_with(dir, |ring, mem, f| {
                let mut b = mem.try_alloc(4096).unwrap();
                b.set_len(0).unwrap();
                ring.read_at(f, 0, b)
            })
        },
        want: |e| matches!(e, Error::ZeroLength { .. }),
        names: &["zero-length"],
    },
    Case {
        name: "read past the end",
        run: |dir| io_with(dir, |ring, mem, f| ring.read_at(f, 64 * MIB, mem.try_alloc(4096).unwrap())),
        want: |e| matches!(e, Error::PastEndOfFile { offset: 67108864, size: 1048576, .. }),
        names: &["offset 67108864", "1048576 bytes"],
    },
    Case {
        name: "offset beyond 2^63",
        run: |dir| io_with(dir, |ring, mem, f| ring.read_at(f, u64::MAX - 4095, mem.try_alloc(4096).unwrap())),
        want: |e| matches!(e, Error::InvalidArgument { what: "file offset", .. }),
        names: &["18446744073709547520"],
    },
    Case {
        name: "closed file",
        run: |dir| {
            io_with(dir, |ring, mem, f| {
                f.close();
                ring.write_at(f, 0, mem.try_alloc(4096).unwrap())
            })
        },
        want: |e| matches!(e, Error::FileClosed { .. }),
        names: &["closed"],
    },
    Case {
        name: "buffer from another pool",
        run: |dir| {
            let other = pool_mem();
            io_with(dir, |ring, _, f| ring.read_at(f, 0, other.try_alloc(4096).unwrap()))
        },
        want: |e| matches!(e, Error::ForeignBuffer { .. }),
        names: &["another IoMemory"],
    },
];

#[test]
fn every_bad_input_gives_its_typed_error() {
    if !common::require_io_uring("every_bad_input_gives_its_typed_error") {
        return;
    }
    let dir = common::disk_dir();
    let mut failures = Vec::new();
    for case in CASES {
        let outcome = std::panic::catch_unwind(|| (case.run)(dir.path()));
        match outcome {
            Err(_) => failures.push(format!("{}: panicked", case.name)),
            Ok(Ok(())) => failures.push(format!("{}: succeeded", case.name)),
            Ok(Err(e)) => {
                if !(case.want)(&e) {
                    failures.push(format!("{}: wrong error {e:?}", case.name));
                }
                let msg = e.to_string();
                for n in case.names {
                    if !msg.contains(n) {
                        failures.push(format!("{}: message {msg:?} does not name {n:?}", case.name));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

/// Child side of `memlock_too_low_without_cap_ipc_lock_names_both_sizes`.
#[test]
#[ignore = "runs in a child process started by memlock_too_low_without_cap_ipc_lock_names_both_sizes"]
fn memlock_bad_input_child() {
    assert_eq!(std::env::var("RINGPOOL_BAD_MEMLOCK_CHILD").as_deref(), Ok("1"), "run only as a child");
    caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_IPC_LOCK).unwrap();
    ringpool_testkit::process::set_memlock_limit(Some(256 << 10)).unwrap();
    let mem = IoMemory::map(4 * MIB, PagePolicy::Base).unwrap();
    let e = BufferTable::register(&mem).unwrap_err();
    assert!(matches!(e, Error::MemlockLimit { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("256 KiB") && msg.contains("4 MiB") && msg.contains("CAP_IPC_LOCK"), "{msg}");
    // The pool's builder plans first: the error carries the plan, which
    // says what is needed and how to change the limit.
    let e = IoPool::builder().existing_memory(mem.clone()).build().unwrap_err();
    match &e {
        Error::DoesNotFit { plan } => {
            assert!(!plan.fits && plan.memlock_needed_bytes > 4 * MIB, "{plan:?}");
            assert_eq!(plan.memlock_limit_bytes, Some(256 << 10));
            assert!(plan.advice.iter().any(|a| a.contains("ulimit -l")), "{plan:?}");
        }
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert_eq!(mem.stats().leases, 0);
}

#[test]
fn memlock_too_low_without_cap_ipc_lock_names_both_sizes() {
    let test = "memlock_too_low_without_cap_ipc_lock_names_both_sizes";
    if !common::require_io_uring(test) || !common::require(common::is_root(), test, "dropping CAP_IPC_LOCK needs root")
    {
        return;
    }
    let (ok, out) = common::run_child("memlock_bad_input_child", &[("RINGPOOL_BAD_MEMLOCK_CHILD", "1")]);
    assert!(ok, "child failed:\n{out}");
}
