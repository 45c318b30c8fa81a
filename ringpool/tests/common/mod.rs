//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use ringpool::probe::Features;
use ringpool::types::DirectIo;
use ringpool::{Buffers, DirectFile, Done, IoBuf, IoMemory, Op};

pub const K4: usize = 4096;

/// Whether kernel-feature tests must fail instead of skipping (`.ci/run` sets it).
pub fn strict() -> bool {
    std::env::var("RINGPOOL_STRICT").is_ok_and(|v| v == "1")
}

/// Skips `test` (or fails it under `RINGPOOL_STRICT=1`) when `cond` is false.
/// Returns `true` when the test should go on.
#[must_use]
pub fn require(cond: bool, test: &str, why: &str) -> bool {
    if cond {
        return true;
    }
    if strict() {
        panic!("{test}: {why} (RINGPOOL_STRICT=1 turns this skip into a failure)");
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// io_uring usable and clone supported.
#[must_use]
pub fn require_clone(test: &str) -> bool {
    let f = Features::get();
    require(f.io_uring.is_available(), test, "io_uring is unavailable")
        && require(f.clone_buffers, test, "IORING_REGISTER_CLONE_BUFFERS needs Linux 6.12+")
}

/// io_uring usable.
#[must_use]
pub fn require_io_uring(test: &str) -> bool {
    require(Features::get().io_uring.is_available(), test, "io_uring is unavailable")
}

/// Whether we are root (sysfs writes, capability changes).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|v| v.split_whitespace().next() == Some("0")))
        .unwrap_or(false)
}

/// A scratch directory on a file system with O_DIRECT (not tmpfs).
pub fn disk_dir() -> tempfile::TempDir {
    let base = std::env::var("RINGPOOL_TEST_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let d = tempfile::Builder::new().prefix("ringpool-test-").tempdir_in(&base).expect("temp dir");
    let probe = Features::direct_io(d.path());
    if !probe.supported && strict() {
        panic!("{} has no O_DIRECT ({:?}); set RINGPOOL_TEST_DIR", base, probe.error);
    }
    d
}

/// Opens (creating) `name` in `dir` for read and write, O_DIRECT required.
pub fn direct_file(dir: &Path, name: &str) -> DirectFile {
    DirectFile::options()
        .read(true)
        .write(true)
        .create(true)
        .direct(DirectIo::Required)
        .open(dir.join(name))
        .expect("open O_DIRECT")
}

/// Fills a buffer with a pattern derived from `seed`.
pub fn fill(buf: &mut IoBuf, seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// The expected bytes of `fill(len, seed)`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Runs the ignored test `entry` of this test binary in a child process
/// with `env` set, and returns (success, combined output).
pub fn run_child(entry: &str, env: &[(&str, &str)]) -> (bool, String) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--ignored", "--exact", entry, "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn child test");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The child must really have run the entry, not filtered it out.
    let ran = text.contains("1 passed") || text.contains("1 failed");
    assert!(ran, "child did not run {entry}:\n{text}");
    (out.status.success(), text)
}

pub fn filled(mem: &IoMemory, len: usize, seed: u64) -> IoBuf {
    let mut b = mem.try_alloc(len).unwrap();
    fill(&mut b, seed);
    b
}

/// The bytes of `bufs` one after the other.
pub fn concat(bufs: &[IoBuf]) -> Vec<u8> {
    bufs.iter().flat_map(|b| b.iter().copied()).collect()
}

/// Reads `len` bytes at `offset` with std::fs (through the page cache,
/// which O_DIRECT writes invalidate).
pub fn std_read(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, offset).unwrap();
    v
}

pub fn std_write(path: &Path, offset: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
    f.sync_all().unwrap();
}

/// Runs each kind through `run` on `file` (in `path`) and checks the file
/// against std::fs: write, writev (a window and a buffer of another
/// segment among them), read, readv, fsync, fdatasync.
pub fn every_kind(engine: &str, mem: &IoMemory, file: &DirectFile, path: &Path, mut run: impl FnMut(Op) -> Done) {
    // write
    let w = filled(mem, 2 * K4, 1);
    let want = w.to_vec();
    let Done { result: r, bufs: b } = run(Op::write(file, 0, w));
    assert_eq!(r.unwrap(), 2 * K4, "{engine}: write");
    assert_eq!(b.len(), 1, "{engine}: the buffer comes back");
    assert_eq!(std_read(path, 0, 2 * K4), want, "{engine}: write");
    drop(b);

    // writev: three blocks of one segment, one with a window, and one of
    // another segment when the pool has one.
    let mut bufs = mem.try_alloc_vec(3, 2 * K4).unwrap();
    bufs[1].set_window(K4, K4).unwrap();
    if mem.segment_count() > 1 {
        let seg = (bufs[0].buf_index() + 1) % mem.segment_count();
        bufs.push(mem.try_alloc_in(seg, K4).unwrap());
    }
    for (i, b) in bufs.iter_mut().enumerate() {
        fill(b, 10 + i as u64);
    }
    let want = concat(&bufs);
    let Done { result: r, bufs: b } = run(Op::writev(file, 64 << 10, bufs));
    assert_eq!(r.unwrap(), want.len(), "{engine}: writev");
    assert_eq!(b.len(), if mem.segment_count() > 1 { 4 } else { 3 }, "{engine}: every buffer comes back");
    assert_eq!(std_read(path, 64 << 10, want.len()), want, "{engine}: writev");
    drop(b);

    // read
    let data = pattern(3 * K4, 77);
    std_write(path, 256 << 10, &data);
    let Done { result: r, bufs: b } = run(Op::read(file, 256 << 10, mem.try_alloc(3 * K4).unwrap()));
    assert_eq!(r.unwrap(), 3 * K4, "{engine}: read");
    assert_eq!(&b.into_one().unwrap()[..], &data[..], "{engine}: read");

    // readv: into scattered blocks (every other of a run), one with a window.
    let all = mem.try_alloc_vec(4, K4).unwrap();
    let mut bufs: Vec<IoBuf> = all.into_iter().step_by(2).collect();
    let mut big = mem.try_alloc(2 * K4).unwrap();
    big.set_window(K4, K4).unwrap();
    bufs.push(big);
    let Done { result: r, bufs: b } = run(Op::readv(file, 256 << 10, bufs));
    assert_eq!(r.unwrap(), 3 * K4, "{engine}: readv (3 blocks)");
    let got = concat(b.as_slice());
    assert_eq!(got, data, "{engine}: readv");
    drop(b);

    // fsync, fdatasync
    for op in [Op::sync(file, false), Op::sync(file, true)] {
        let kind = op.kind();
        let Done { result: r, bufs: b } = run(op);
        assert_eq!(r.unwrap(), 0, "{engine}: {kind}");
        assert!(matches!(b, Buffers::None));
    }
    assert_eq!(mem.stats().leases, 0, "{engine}: every lease came back");
}

/// zram0, set up for a test under the machine-state lock (the lock is held
/// while it lives) and reset when dropped, also on failure.
pub struct Zram {
    pub path: std::path::PathBuf,
    _lock: ringpool_testkit::machine::MachineLock,
}

impl Zram {
    /// `size` bytes of zram0, or `None` (skipped; a failure under
    /// RINGPOOL_STRICT=1) without root or zram.
    pub fn setup(test: &str, size: u64) -> Option<Zram> {
        if !require(is_root(), test, "setting up zram needs root") {
            return None;
        }
        let lock = ringpool_testkit::machine::MachineLock::acquire().expect("machine-state lock");
        let sys = Path::new("/sys/block/zram0");
        if !sys.exists() && Path::new("/sys/class/zram-control/hot_add").exists() {
            let _ = std::fs::read_to_string("/sys/class/zram-control/hot_add");
        }
        if !require(sys.exists(), test, "no zram device (modprobe zram)") {
            return None;
        }
        let used = std::fs::read_to_string(sys.join("disksize")).unwrap_or_default();
        if !require(used.trim() == "0", test, "zram0 is in use") {
            return None;
        }
        std::fs::write(sys.join("disksize"), size.to_string()).expect("set zram0's size");
        Some(Zram { path: "/dev/zram0".into(), _lock: lock })
    }
}

impl Drop for Zram {
    fn drop(&mut self) {
        ringpool_testkit::machine::reset_zram();
    }
}

/// `VmPin` of this process, in kB.
pub fn vmpin_kb() -> u64 {
    ringpool_testkit::process::vm_pinned_kb(std::process::id()).unwrap_or(0)
}

/// Descriptors open in this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits for `pid` up to `timeout`; its exit code, or a description of how
/// it died (a signal, or killed after hanging).
pub fn wait_child(pid: libc::pid_t, timeout: std::time::Duration) -> Result<i32, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-parameter.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            return Err(format!("the child died of signal {}", libc::WTERMSIG(status)));
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!("the child hung for {timeout:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Forks; the child runs `child` and exits with its code (101 on a panic),
/// without returning. The parent gets the child's pid. Call it from a child
/// test process (`run_child`), where no other test thread runs.
pub fn fork_with(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `child` and then `_exit`s; at the fork this
    // process runs no test thread but this one (a child test process).
    let pid = unsafe { ringpool_testkit::process::fork_child(child) }.expect("fork");
    pid as libc::pid_t
}
