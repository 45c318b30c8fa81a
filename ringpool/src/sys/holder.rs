//! The ring holder: a short-lived process that holds one handed ring's fd
//! for its client to duplicate with `pidfd_getfd`, so that the client needs
//! ptrace access to that process only, never to the process that owns the
//! pool (which a broker with a holder makes non-dumpable).
//!
//! The broker starts the holder program with `posix_spawn` (glibc's is a
//! `CLONE_VM | CLONE_VFORK` clone: nothing of the owner's address space is
//! copied, and the call returns once the exec is done), with the ring's fd
//! as descriptor 3, a pipe as standard input, /dev/null as the output and
//! every other descriptor closed, no environment and the default signal
//! mask. After the exec it has a fresh address space (none of the owner's
//! memory, no pool mapping) and that one ring. For a client of another
//! user it runs as root until it drops to that user (its first act:
//! [`become_holder`]); the client's `pidfd_getfd` fails with EPERM until
//! then and retries.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The ring's descriptor number in the holder.
pub(crate) const HOLDER_FD: i32 = 3;

/// A running holder: its pid, a pidfd for it (signals go to that process,
/// never to a later one with the same pid), and the write end of its
/// standard input.
#[derive(Debug)]
pub(crate) struct Holder {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    _stdin: OwnedFd,
}

impl Holder {
    pub(crate) fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Its pidfd (what its client duplicates the ring through: it names
    /// this process in any pid namespace).
    pub(crate) fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Sends it SIGKILL (through its pidfd).
    pub(crate) fn kill(&self) {
        // SAFETY: pidfd_send_signal with a pidfd we own and no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }

    /// Kills it and waits until it is reaped.
    pub(crate) fn kill_and_reap(self) {
        self.kill();
        let mut status = 0;
        // SAFETY: waitpid on our own child, status a valid out-parameter;
        // ECHILD (reaped elsewhere) ends it too.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }

    /// Whether it has exited (and is reaped now).
    pub(crate) fn try_reap(&self) -> bool {
        let mut status = 0;
        // SAFETY: waitpid on our own child, status a valid out-parameter.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        rc == self.pid || (rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    // posix_spawn* return the error number rather than setting errno.
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Starts `program args [--uid U --gid G]` holding `ring` as descriptor
/// [`HOLDER_FD`]; with `creds` (uid, gid) it drops to that user first
/// thing (the caller must be root).
pub(crate) fn spawn_holder(
    program: &Path,
    args: &[OsString],
    ring: BorrowedFd<'_>,
    creds: Option<(u32, u32)>,
) -> io::Result<Holder> {
    let prog = cstring(program.as_os_str().as_bytes())?;
    let mut argv: Vec<CString> = vec![prog.clone()];
    for a in args {
        argv.push(cstring(a.as_bytes())?);
    }
    // The holder checks that its parent is still this process.
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    argv.push(cstring(b"--parent")?);
    argv.push(cstring(me.to_string().as_bytes())?);
    if let Some((uid, gid)) = creds {
        for a in ["--uid".to_string(), uid.to_string(), "--gid".to_string(), gid.to_string()] {
            argv.push(cstring(a.as_bytes())?);
        }
    }
    let mut argp: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argp.push(std::ptr::null_mut());
    let envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];
    let devnull = cstring(b"/dev/null")?;

    let (read_end, write_end) = super::socket::pipe()?;
    // The ring must not already be descriptor 3 (a dup2 onto itself may
    // leave it close-on-exec): a copy above the range the actions use.
    // SAFETY: fcntl with integers; a new descriptor is owned at once.
    let ring_copy = unsafe {
        let fd = libc::fcntl(ring.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd as RawFd)
    };

    // SAFETY: the actions and attributes are initialized before use and
    // destroyed on every path below; every pointer handed to posix_spawn
    // (program, argv, envp, /dev/null) outlives the call.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut fa))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut fa);
            return Err(e);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        let mut defaults: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigemptyset(&mut defaults);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE, libc::SIGCHLD] {
            libc::sigaddset(&mut defaults, s);
        }
        let mut pid: libc::pid_t = 0;
        let flags = (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
        let r = check(libc::posix_spawn_file_actions_adddup2(&mut fa, read_end.as_raw_fd(), 0))
            .and_then(|()| {
                check(libc::posix_spawn_file_actions_addopen(&mut fa, 1, devnull.as_ptr(), libc::O_WRONLY, 0))
            })
            .and_then(|()| check(libc::posix_spawn_file_actions_adddup2(&mut fa, 1, 2)))
            .and_then(|()| check(libc::posix_spawn_file_actions_adddup2(&mut fa, ring_copy.as_raw_fd(), HOLDER_FD)))
            // Nothing else of the owner's goes to the holder.
            .and_then(|()| check(libc::posix_spawn_file_actions_addclosefrom_np(&mut fa, HOLDER_FD + 1)))
            .and_then(|()| check(libc::posix_spawnattr_setflags(&mut attr, flags)))
            .and_then(|()| check(libc::posix_spawnattr_setsigmask(&mut attr, &empty)))
            .and_then(|()| check(libc::posix_spawnattr_setsigdefault(&mut attr, &defaults)))
            .and_then(|()| check(libc::posix_spawn(&mut pid, prog.as_ptr(), &fa, &attr, argp.as_ptr(), envp.as_ptr())));
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut attr);
        r?;
        // Not reaped yet (nothing here reaps it): the pid is still this
        // child's.
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if pidfd < 0 {
            let e = io::Error::last_os_error();
            let mut status = 0;
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut status, 0);
            return Err(e);
        }
        Ok(Holder { pid, pidfd: OwnedFd::from_raw_fd(pidfd as RawFd), _stdin: write_end })
    }
}

/// The holder's first act: leave what it inherited from the broker's
/// thread behind (its nice value, scheduling policy, working directory,
/// umask, and limits: it may lock no memory and open few files; whoever may
/// pull the ring may ptrace the holder, and make it do anything), drop to
/// user `creds` (uid, gid; no supplementary groups) when given, become
/// dumpable (so that its client may duplicate its descriptor), and die
/// with its parent, `parent`, which must still be its parent.
pub(crate) fn become_holder(creds: Option<(u32, u32)>, parent: u32) -> io::Result<()> {
    let fail = || Err(io::Error::last_os_error());
    let root = std::ffi::CString::new("/").expect("no NUL");
    // SAFETY: system calls with integer arguments or pointers to values
    // that live across the call (the path, the limits, the parameters).
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) != 0
            || libc::setpriority(libc::PRIO_PROCESS, 0, 0) != 0
            || libc::chdir(root.as_ptr()) != 0
        {
            return fail();
        }
        libc::umask(0o077);
        for (resource, n) in [(libc::RLIMIT_MEMLOCK, 0), (libc::RLIMIT_NOFILE, 16), (libc::RLIMIT_CORE, 0)] {
            let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
            if libc::setrlimit(resource, &lim) != 0 {
                return fail();
            }
        }
        if let Some((uid, gid)) = creds {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return fail();
            }
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 1 as libc::c_ulong, 0, 0, 0) < 0
            || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0
        {
            return fail();
        }
        // The broker may have died before the death signal was set.
        if libc::getppid() as u32 != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// Makes this process non-dumpable (`PR_SET_DUMPABLE` 0): a process of the
/// same user without CAP_SYS_PTRACE can no longer ptrace it, read its
/// memory through /proc, or duplicate its descriptors with `pidfd_getfd`.
pub(crate) fn make_undumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_PEERGROUPS` (asm-generic/socket.h; Linux 4.13+), not in libc.
const SO_PEERGROUPS: libc::c_int = 59;

/// The peer's supplementary groups (SO_PEERGROUPS, as they were when it
/// connected).
pub(crate) fn peer_groups(sock: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: groups holds len bytes; the kernel writes at most len
        // and says how many it has.
        let rc = unsafe {
            libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, SO_PEERGROUPS, groups.as_mut_ptr().cast(), &mut len)
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // ERANGE: len says how many bytes it needs.
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}
