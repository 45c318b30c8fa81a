//! Fault injection through a FUSE file system the tests mount: failed reads
//! and writes, short reads, a stalled server, truncation under a reader.
//! Mounting changes the machine, so each test holds the machine-state lock;
//! the mount goes away when the session is dropped, also on failure.

mod common;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use ringpool::types::{DirectIo, EngineKind, PagePolicy};
use ringpool::Op;
use ringpool::{DirectFile, Error, IoMemory, IoPool, MemoryOptions};
use ringpool_testkit::machine::MachineLock;

const FILE: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_millis(0);

/// What the file system does, shared with the test.
#[derive(Default)]
struct Faults {
    data: Vec<u8>,
    fail_read_at: HashSet<u64>,
    fail_write_at: HashSet<u64>,
    /// Writes at these offsets fail with ENOSPC.
    full_at: HashSet<u64>,
    /// Offset -> bytes to return instead of the full request.
    short_read_at: HashMap<u64, usize>,
    /// While set, reads wait.
    hold_reads: bool,
    reads: u64,
}

#[derive(Clone, Default)]
struct Shared(Arc<(Mutex<Faults>, Condvar)>);

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        let r = f(&mut self.0 .0.lock().unwrap());
        self.0 .1.notify_all();
        r
    }
}

struct FaultFs(Shared);

fn attr(ino: INodeNo, size: u64) -> FileAttr {
    let t = SystemTime::UNIX_EPOCH;
    let dir = ino == INodeNo::ROOT;
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: if dir { FileType::Directory } else { FileType::RegularFile },
        perm: if dir { 0o755 } else { 0o644 },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == "data" {
            let size = self.0.with(|f| f.data.len() as u64);
            reply.entry(&TTL, &attr(FILE, size), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            INodeNo::ROOT => reply.attr(&TTL, &attr(ino, 0)),
            FILE => reply.attr(&TTL, &attr(FILE, self.0.with(|f| f.data.len() as u64))),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino != FILE {
            return reply.error(Errno::EPERM);
        }
        let len = self.0.with(|f| {
            if let Some(s) = size {
                f.data.resize(s as usize, 0);
            }
            f.data.len() as u64
        });
        reply.attr(&TTL, &attr(FILE, len));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Every read and write reaches us (no page cache).
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (lock, cv) = &*(self.0).0;
        let mut f = lock.lock().unwrap();
        while f.hold_reads {
            f = cv.wait(f).unwrap();
        }
        f.reads += 1;
        if f.fail_read_at.contains(&offset) {
            return reply.error(Errno::EIO);
        }
        let start = (offset as usize).min(f.data.len());
        let mut end = (start + size as usize).min(f.data.len());
        if let Some(&n) = f.short_read_at.get(&offset) {
            end = end.min(start + n);
        }
        reply.data(&f.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let failed = self.0.with(|f| {
            if f.fail_write_at.contains(&offset) {
                return Some(Errno::EIO);
            }
            if f.full_at.contains(&offset) {
                return Some(Errno::ENOSPC);
            }
            let end = offset as usize + data.len();
            if f.data.len() < end {
                f.data.resize(end, 0);
            }
            f.data[offset as usize..end].copy_from_slice(data);
            None
        });
        match failed {
            Some(e) => reply.error(e),
            None => reply.written(data.len() as u32),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// A mounted fault file system holding `len` bytes of a known pattern.
struct Mounted {
    shared: Shared,
    path: PathBuf,
    // Drop order: unmount (session) before the directory and the lock go.
    _session: fuser::BackgroundSession,
    _dir: tempfile::TempDir,
    _lock: MachineLock,
}

fn mount(test: &str, len: usize) -> Option<Mounted> {
    if !common::require(std::path::Path::new("/dev/fuse").exists(), test, "no /dev/fuse")
        || !common::require(common::is_root(), test, "mounting FUSE needs root")
    {
        return None;
    }
    let lock = MachineLock::acquire().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shared = Shared::default();
    shared.with(|f| f.data = (0..len).map(|i| (i / 4096) as u8 ^ (i % 251) as u8).collect());
    let mut cfg = Config::default();
    cfg.mount_options = vec![fuser::MountOption::FSName("ringpool-faults".into())];
    let session = match fuser::spawn_mount(FaultFs(shared.clone()), dir.path(), &cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = common::require(false, test, &format!("cannot mount FUSE: {e}"));
            return None;
        }
    };
    let path = dir.path().join("data");
    Some(Mounted { shared, path, _session: session, _dir: dir, _lock: lock })
}

fn expected(shared: &Shared, offset: u64, len: usize) -> Vec<u8> {
    shared.with(|f| f.data[offset as usize..offset as usize + len].to_vec())
}

fn pool() -> IoPool {
    IoPool::builder().size(16 << 20).memory(MemoryOptions::new().page(PagePolicy::Base)).workers(2, 2).build().unwrap()
}

fn open(m: &Mounted) -> DirectFile {
    DirectFile::options().read(true).write(true).direct(DirectIo::Optional).open(&m.path).unwrap()
}

#[test]
fn failed_reads_and_writes_name_op_file_and_offset_and_the_rest_carry_on() {
    let Some(m) = mount("failed_reads_and_writes_name_op_file_and_offset_and_the_rest_carry_on", 1 << 20) else {
        return;
    };
    m.shared.with(|f| {
        f.fail_read_at.insert(3 * 4096);
        f.fail_write_at.insert(5 * 4096);
    });
    let pool = pool();
    let file = open(&m);
    let reads: Vec<_> =
        (0..16u64).map(|i| (i, pool.read_at(&file, i * 4096, pool.memory().try_alloc(4096).unwrap()))).collect();
    for (i, h) in reads {
        let (r, buf) = h.wait().into_one();
        if i == 3 {
            match &r {
                Err(e @ Error::DeviceError { op: "read", path: p, offset: 12288 }) => {
                    assert_eq!(p, &m.path);
                    assert_eq!(e.raw_os_error(), Some(libc::EIO));
                }
                other => panic!("expected the read at 12288 to fail with EIO, got {other:?}"),
            }
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains("read on") && msg.contains("data") && msg.contains("offset 12288"), "{msg}");
        } else {
            assert_eq!(r.unwrap(), 4096, "read {i}");
            assert_eq!(&buf[..], &expected(&m.shared, i * 4096, 4096)[..], "read {i}");
        }
    }
    let writes: Vec<_> = (4..8u64)
        .map(|i| {
            let mut b = pool.memory().try_alloc(4096).unwrap();
            b.fill(i as u8);
            (i, pool.write_at(&file, i * 4096, b))
        })
        .collect();
    for (i, h) in writes {
        let (r, _) = h.wait().into_one();
        if i == 5 {
            assert!(matches!(&r, Err(Error::DeviceError { op: "write", offset: 20480, .. })), "{r:?}");
        } else {
            assert_eq!(r.unwrap(), 4096);
            assert_eq!(expected(&m.shared, i * 4096, 4096), vec![i as u8; 4096]);
        }
    }
    let st = pool.stats();
    assert_eq!((st.failed, st.completed), (2, 20));
    let mem = pool.memory().clone();
    pool.shutdown();
    assert_eq!(mem.stats().leases, 0, "no lease lost");
}

#[test]
fn short_reads_are_counts() {
    let Some(m) = mount("short_reads_are_counts", 1 << 20) else { return };
    m.shared.with(|f| {
        f.short_read_at.insert(8192, 1000);
    });
    let pool = pool();
    let file = open(&m);
    let (r, buf) = pool.read_at(&file, 8192, pool.memory().try_alloc(4096).unwrap()).wait().into_one();
    // Exactly what the server gave, once: io_uring would have retried the
    // rest at the same offset and duplicated the data (Linux 6.18).
    assert_eq!(r.unwrap(), 1000);
    assert_eq!(&buf[..1000], &expected(&m.shared, 8192, 1000)[..]);
    assert_eq!(m.shared.with(|f| f.reads), 1);
    // At the end of the file: a short count too.
    let (r, _) = pool.read_at(&file, (1 << 20) - 4096, pool.memory().try_alloc(16384).unwrap()).wait().into_one();
    assert_eq!(r.unwrap(), 4096);
}

#[test]
fn a_stalled_server_does_not_stall_other_work() {
    let Some(m) = mount("a_stalled_server_does_not_stall_other_work", 1 << 20) else { return };
    let dir = common::disk_dir();
    let disk = common::direct_file(dir.path(), "d");
    let pool = pool();
    let file = open(&m);
    assert!(file.is_fuse(), "FUSE files are served with preadv2 / pwritev2");
    assert_eq!(pool.engine_for(&file).0, ringpool::types::EngineKind::SideThreads);
    m.shared.with(|f| f.hold_reads = true);
    // Whatever happens below, the server lets go before the pool is dropped.
    struct Release(Shared);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.with(|f| f.hold_reads = false);
        }
    }
    let release = Release(m.shared.clone());
    let stalled: Vec<_> =
        (0..4u64).map(|i| pool.read_at(&file, i * 4096, pool.memory().try_alloc(4096).unwrap())).collect();
    // Other work goes through while those wait in the server.
    for i in 0..16u64 {
        let (r, _) = pool
            .write_at(&disk, i * 4096, pool.memory().try_alloc(4096).unwrap())
            .wait_timeout(Duration::from_secs(10))
            .expect("a disk write waited behind the stalled FUSE reads")
            .into_one();
        assert_eq!(r.unwrap(), 4096);
    }
    assert!(stalled.iter().all(|h| !h.is_done()), "the server still holds the reads");
    drop(release);
    for (i, h) in stalled.into_iter().enumerate() {
        let (r, buf) = h.wait().into_one();
        assert_eq!(r.unwrap(), 4096);
        assert_eq!(&buf[..], &expected(&m.shared, i as u64 * 4096, 4096)[..]);
    }
}

#[test]
fn truncation_under_a_running_reader_gives_counts_and_end_of_file() {
    let Some(m) = mount("truncation_under_a_running_reader_gives_counts_and_end_of_file", 4 << 20) else { return };
    let pool = pool();
    let file = open(&m);
    let mut past_end = 0;
    let mut truncated = false;
    for i in 0..1024u64 {
        if i == 100 {
            // Another process truncates the file to 1 MiB + 100 bytes.
            std::fs::OpenOptions::new().write(true).open(&m.path).unwrap().set_len((1 << 20) + 100).unwrap();
            truncated = true;
        }
        let (r, _) = pool.read_at(&file, i * 4096, pool.memory().try_alloc(4096).unwrap()).wait().into_one();
        match r {
            Ok(n) if truncated && i * 4096 > (1 << 20) => panic!("read {n} bytes past the new end at {}", i * 4096),
            Ok(n) => assert!(n == 4096 || (i * 4096 == 1 << 20 && n == 100), "block {i}: {n}"),
            Err(Error::PastEndOfFile { offset, size, .. }) => {
                assert_eq!(size, (1 << 20) + 100);
                assert!(offset >= size);
                past_end += 1;
            }
            Err(e) => panic!("block {i}: {e}"),
        }
    }
    assert!(past_end > 700, "{past_end} reads past the end");
    let mem = pool.memory().clone();
    drop(pool);
    assert_eq!(mem.stats().leases, 0);
}

#[test]
fn a_ring_runs_fuse_files_inline_without_duplicating_short_reads() {
    let test = "a_ring_runs_fuse_files_inline_without_duplicating_short_reads";
    let Some(m) = mount(test, 1 << 20) else { return };
    if !common::require_io_uring(test) {
        return;
    }
    m.shared.with(|f| {
        f.short_read_at.insert(0, 4096);
    });
    let mem = ringpool::IoMemory::map(1 << 20, PagePolicy::Base).unwrap();
    let mut ring = ringpool::BufferTable::register(&mem).unwrap().ring().unwrap();
    let file = open(&m);
    let (engine, why) = ring.engine_for(&file);
    assert_eq!(engine, EngineKind::Inline, "{why}");
    assert!(why.contains("FUSE"), "{why}");
    // An 8 KiB read the server answers with 4 KiB: the short count, and the
    // file's bytes (io_uring on Linux 6.18 would repeat the first 4 KiB).
    let (r, buf) = ring.read_at(&file, 0, mem.try_alloc(8192).unwrap()).into_one();
    assert_eq!(r.unwrap(), 4096);
    assert_eq!(&buf[..4096], &expected(&m.shared, 0, 4096)[..]);
    // Queued operations complete at once, inline.
    for i in 0..4u64 {
        ring.push(Op::read(&file, 65536 + i * 4096, mem.try_alloc(4096).unwrap()), i).unwrap();
    }
    let done: Vec<_> = ring.completions().collect();
    assert_eq!(done.len(), 4);
    for (tag, d) in done {
        let (r, b) = d.into_one();
        assert_eq!(r.unwrap(), 4096);
        assert_eq!(&b[..], &expected(&m.shared, 65536 + tag * 4096, 4096)[..], "read {tag}");
    }
    assert_eq!(ring.stats().inline_ops, 5);
    assert_eq!(m.shared.with(|f| f.reads), 5, "one server read each");
}

#[test]
fn every_op_kind_through_the_side_threads_matches_std_fs() {
    let Some(m) = mount("every_op_kind_through_the_side_threads_matches_std_fs", 1 << 20) else { return };
    let mem = IoMemory::map_with(4 << 20, &MemoryOptions::new().page(PagePolicy::Base).segment_size(1 << 20)).unwrap();
    let pool = IoPool::builder().existing_memory(mem.clone()).workers(1, 1).build().unwrap();
    let file = open(&m);
    assert_eq!(pool.engine_for(&file).0, EngineKind::SideThreads);
    common::every_kind("side threads", &mem, &file, &m.path, |op| pool.submit(op).wait());
    assert!(pool.stats().side_threads <= 4);
}

#[test]
fn vectored_failures_are_mapped_errnos_naming_op_and_offset() {
    let Some(m) = mount("vectored_failures_are_mapped_errnos_naming_op_and_offset", 1 << 20) else { return };
    m.shared.with(|f| {
        f.fail_read_at.insert(16 * 4096);
        f.full_at.insert(32 * 4096);
    });
    let pool = pool();
    let mem = pool.memory().clone();
    let file = open(&m);
    let (r, back) = pool.readv_at(&file, 16 * 4096, mem.try_alloc_vec(2, 4096).unwrap()).wait().into_vec();
    match &r {
        Err(e @ Error::DeviceError { op: "readv", offset: 65536, .. }) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
        other => panic!("expected EIO as DeviceError, got {other:?}"),
    }
    assert_eq!(back.len(), 2);
    let (r, _) = pool.writev_at(&file, 32 * 4096, mem.try_alloc_vec(3, 4096).unwrap()).wait().into_vec();
    match &r {
        Err(e @ Error::NoSpace { op: "writev", offset: 131072, quota: false, .. }) => {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
            assert!(e.to_string().contains("no space left"), "{e}");
        }
        other => panic!("expected ENOSPC as NoSpace, got {other:?}"),
    }
    // The rest carry on.
    let (r, _) = pool.writev_at(&file, 40 * 4096, mem.try_alloc_vec(3, 4096).unwrap()).wait().into_vec();
    assert_eq!(r.unwrap(), 3 * 4096);
    drop(back);
    pool.shutdown();
    assert_eq!(mem.stats().leases, 0);
}
