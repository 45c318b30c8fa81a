//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use ringpool::{DirectFile, DirectIo, Features, IoBuf};

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
