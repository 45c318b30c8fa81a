//! Processes and their resources, as tests and benchmarks need them: fork
//! a child and wait for it, kill it, read its VmPin and CPU time, run code
//! as a scratch user under a memlock limit, set this process's limit, and a
//! clock every process of the machine shares. The system calls are the
//! `nix` crate's.

use std::io;

use nix::sys::resource::{getrusage, setrlimit, Resource, UsageWho};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn pid_of(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid).map(Pid::from_raw).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))
}

/// Forks; the child runs `child` and exits with its code (`_exit`: no
/// atexit handlers, no destructors of the parent's objects; 101 when it
/// panics). Returns the child's pid.
///
/// # Safety
/// The child is a copy of the process with only the calling thread: it
/// must not wait for a lock another thread of the parent may have held at
/// the fork (glibc's malloc is safe; ringpool's objects say
/// `Error::Forked` instead of touching their locks).
///
/// # Errors
/// The errno of `fork`.
pub unsafe fn fork_child(child: impl FnOnce() -> i32) -> io::Result<u32> {
    // SAFETY: the caller upholds the contract above for what the child runs.
    match unsafe { fork() }.map_err(io_err)? {
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
            // SAFETY: _exit ends the child at once, as the contract says.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(child.as_raw() as u32),
    }
}

/// Waits for child `pid` to end: its exit code, or 128 + the signal that
/// killed it.
///
/// # Errors
/// The errno of `waitpid` (ECHILD: not a child of this process).
pub fn wait_child(pid: u32) -> io::Result<i32> {
    let pid = pid_of(pid)?;
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// Sends `signal` to process `pid`.
///
/// # Errors
/// EINVAL for an unknown signal; the errno of `kill` (ESRCH: no such
/// process).
pub fn kill(pid: u32, signal: i32) -> io::Result<()> {
    let sig = Signal::try_from(signal).map_err(io_err)?;
    nix::sys::signal::kill(pid_of(pid)?, sig).map_err(io_err)
}

/// `VmPin` of process `pid` (pages pinned, io_uring buffers among them), in
/// KiB, from /proc/PID/status.
///
/// # Errors
/// Reading /proc (the process is gone), or no VmPin line.
pub fn vm_pinned_kb(pid: u32) -> io::Result<u64> {
    status_kb(pid, "VmPin:")
}

/// A `kB` line of /proc/PID/status (`VmPin:`, `VmRSS:`, `VmHWM:`, ...).
///
/// # Errors
/// Reading /proc (the process is gone), or no such line.
pub fn status_kb(pid: u32, key: &str) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {key} in /proc/{pid}/status")))
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    // The directory's own descriptor, open while it is read, is not counted.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the
/// machine (an `Instant` cannot cross a fork as a value).
pub fn monotonic_ns() -> u64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    // Non-negative on Linux; u64 nanoseconds last 584 years.
    (ts.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec() as u64)
}

/// CPU time (user, system) of this process, all its threads (io_uring's
/// io-wq workers included), in microseconds.
pub fn rusage_self_us() -> (u64, u64) {
    rusage_us(UsageWho::RUSAGE_SELF)
}

/// CPU time (user, system) of this process's terminated, waited-for
/// children, in microseconds.
pub fn rusage_children_us() -> (u64, u64) {
    rusage_us(UsageWho::RUSAGE_CHILDREN)
}

fn rusage_us(who: UsageWho) -> (u64, u64) {
    let Ok(ru) = getrusage(who) else { return (0, 0) };
    let us = |tv: nix::sys::time::TimeVal| tv.tv_sec() as u64 * 1_000_000 + tv.tv_usec() as u64;
    (us(ru.user_time()), us(ru.system_time()))
}

/// CPU time (user + system) of process `pid` so far, every thread it has
/// or had (io_uring's io-wq workers included: they are threads of the
/// process), from `/proc/<pid>/stat`, in microseconds (its resolution is
/// the clock tick, 10 ms at USER_HZ 100).
///
/// # Errors
/// The read's error; InvalidData for a line that does not parse.
pub fn process_cpu_us(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = stat_cpu_ticks(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/<pid>/stat"))?;
    Ok(ticks.saturating_mul(1_000_000) / clock_ticks_per_s())
}

/// utime + stime (fields 14 and 15, in clock ticks) of a `/proc/<pid>/stat`
/// line; the command name may hold spaces and parentheses, so fields are
/// counted after its last `)`.
pub fn stat_cpu_ticks(line: &str) -> Option<u64> {
    let rest = &line[line.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name: utime is the 12th of
    // these, stime the 13th.
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Clock ticks per second (USER_HZ).
pub fn clock_ticks_per_s() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// Empties the page cache of `paths` (written back, then dropped with
/// POSIX_FADV_DONTNEED) and, as root, the whole page cache
/// (/proc/sys/vm/drop_caches): the next read of them goes to the device.
pub fn drop_page_cache(paths: &[&std::path::Path]) {
    for p in paths {
        if let Ok(f) = std::fs::File::open(p) {
            let _ = f.sync_all();
            let _ = nix::fcntl::posix_fadvise(&f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        }
    }
    nix::unistd::sync();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
}

/// Sets the `RLIMIT_MEMLOCK` soft and hard limits (bytes; `None` = unlimited).
///
/// # Errors
/// The errno of `setrlimit` (EPERM raising the hard limit without
/// CAP_SYS_RESOURCE).
pub fn set_memlock_limit(limit: Option<u64>) -> io::Result<()> {
    let v = limit.unwrap_or(libc::RLIM_INFINITY);
    setrlimit(Resource::RLIMIT_MEMLOCK, v, v).map_err(io_err)
}

/// Runs `f` in a forked child under a scratch user: RLIMIT_MEMLOCK soft
/// and hard set to `memlock` bytes, then uid and gid switched to `uid`
/// (which drops every capability, CAP_IPC_LOCK among them, and gives the
/// child a `locked_vm` count of its own). Returns the child's exit code
/// (101 when `f` panics; 90 to 93 when setting the limit, the groups, the
/// gid or the uid failed). Needs root.
///
/// # Safety
/// As [`fork_child`]: the child must not wait for a lock another thread
/// of this process may have held at the fork.
///
/// # Errors
/// Those of `fork` and `waitpid`.
pub unsafe fn in_scratch_user(memlock: u64, uid: u32, f: impl FnOnce() -> i32) -> io::Result<i32> {
    let child = move || {
        if setrlimit(Resource::RLIMIT_MEMLOCK, memlock, memlock).is_err() {
            90
        } else if nix::unistd::setgroups(&[]).is_err() {
            91
        } else if nix::unistd::setgid(Gid::from_raw(uid)).is_err() {
            92
        } else if nix::unistd::setuid(Uid::from_raw(uid)).is_err() {
            93
        } else {
            f()
        }
    };
    // SAFETY: the caller upholds fork_child's contract for `f`; the rest of
    // the child is plain system calls.
    let pid = unsafe { fork_child(child) }?;
    wait_child(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_utime_plus_stime_after_the_name() {
        // A name with spaces and a parenthesis, as a thread may have.
        let line = "4242 (fio (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 269 0 0 20 0 3 0 5 0 0";
        assert_eq!(stat_cpu_ticks(line), Some(1000));
        assert_eq!(stat_cpu_ticks("12 (a) R 1"), None);
        assert_eq!(stat_cpu_ticks("no name at all"), None);
        let me = process_cpu_us(std::process::id()).unwrap();
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(60) {}
        assert!(process_cpu_us(std::process::id()).unwrap() >= me + 30_000, "60 ms of spinning shows");
    }
}
