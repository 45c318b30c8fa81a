//! `ringpool serve` and the users of its clients: a client of another user
//! the daemon allows (`--allow-uid`) gets its ring from a holder process of
//! its own user and does verified fixed I/O; a user not allowed is refused
//! with the reason; and with `--hold-every-ring` a client of the daemon's
//! own user cannot reach the daemon (duplicate its descriptors, open its
//! memory), which the same probe does against a daemon without it.
//!
//! Run as root (CI does): the daemon and the clients switch users.

use std::ffi::CString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringpool_testkit::process::monotonic_ns;

/// `nobody` on Debian, and a user id with no account.
const NOBODY: u32 = 65534;
const STRANGER: u32 = 65533;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cmd` run as user `uid` (and its group of the same number).
fn as_user(cmd: &mut Command, uid: u32) -> &mut Command {
    std::os::unix::process::CommandExt::gid(std::os::unix::process::CommandExt::uid(cmd, uid), uid)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn wait_for(path: &Path, daemon: &mut Daemon) {
    let t = Instant::now();
    while !path.exists() {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(daemon.0.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the daemon exited ({status}): {err}");
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the daemon did not bind {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory in /var/tmp that user `uid` may use, with a 4 MiB data file
/// anyone may read and write.
fn shared_dir(uid: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::File::create(&data).unwrap().set_len(4 << 20).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    dir
}

/// One `bench service-client` as user `uid` for a second: attachments with
/// verified fixed I/O. Returns its report lines.
fn client_as(uid: u32, sock: &Path, data: &Path) -> Vec<String> {
    run_client(as_user(&mut Command::new(env!("CARGO_BIN_EXE_ringpool")), uid), 0, sock, data)
}

/// Runs `cmd` (the ringpool binary, or a program that runs it next) with the
/// arguments of a one-second `bench service-client` in file slot `slot`.
fn run_client(cmd: &mut Command, slot: u32, sock: &Path, data: &Path) -> Vec<String> {
    let until = monotonic_ns() + 1_000_000_000;
    let out = cmd
        .args(["bench", "service-client", "--slot", &slot.to_string(), "--initial-segments", "2"])
        .args(["--until-ns", &until.to_string()])
        .arg("--socket")
        .arg(sock)
        .arg("--file")
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "the client failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Whether this test may switch users (root); under RINGPOOL_STRICT a
/// test that cannot is a failure, not a skip.
fn can_switch_users() -> bool {
    if is_root() {
        return true;
    }
    assert!(std::env::var_os("RINGPOOL_STRICT").is_none(), "RINGPOOL_STRICT: this test needs root");
    eprintln!("skipped: needs root");
    false
}

fn assert_clean_attachments(lines: &[String]) {
    assert!(lines.iter().any(|l| l.starts_with("A ")), "no attachment: {lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with('M') || l.starts_with('E')), "{lines:?}");
}

/// A process of user `uid` tries to reach process `pid`: duplicate any of
/// its first 64 descriptors (`pidfd_getfd`) or open its memory. Its exit
/// code: 0 unreachable, 2 a descriptor duplicated, 3 its memory opened,
/// 4 or 5 the probe could not start.
fn probe_as(uid: u32, pid: u32) -> i32 {
    let mem = CString::new(format!("/proc/{pid}/mem")).unwrap();
    // SAFETY: the child makes only raw system calls on values prepared
    // before the fork (no allocation, no lock) and ends with _exit.
    unsafe {
        let child = libc::fork();
        assert!(child >= 0, "fork");
        if child == 0 {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                libc::_exit(4);
            }
            let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
            if pidfd < 0 {
                libc::_exit(5);
            }
            for fd in 0..64 {
                if libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) >= 0 {
                    libc::_exit(2);
                }
            }
            if libc::open(mem.as_ptr(), libc::O_RDONLY) >= 0 {
                libc::_exit(3);
            }
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(child, &mut status, 0), child);
        libc::WEXITSTATUS(status)
    }
}

/// Python that asks the ring broker at `sys.argv[1]` for a ring of 32
/// entries without lease segments and receives the handover message
/// (`msg`, all of it) and its descriptors (`fds`), as the clients the
/// tests write by hand do (they `exec` it, passed as `sys.argv[2]`).
const PY_ASK_FOR_A_RING: &str = r#"
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"RPQ1" + struct.pack("<HIH", 3, 32, 0))
msg, fds, _, _ = socket.recv_fds(s, 1 << 16, 64)
if msg.startswith(b"RPE1"):
    sys.exit("refused: " + msg[4:].decode())
total = struct.unpack("<I", msg[6:10])[0]
while len(msg) < total:
    msg += s.recv(total - len(msg))
"#;

/// As user `uid`, asks the daemon at `sock` for a ring and, without taking
/// it, looks at the holder the daemon started for it (python3: the
/// handover message's last field is the holder's pid).
fn inspect_holder_as(uid: u32, sock: &Path) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, os, socket, struct, sys, time
exec(sys.argv[2])
holder = struct.unpack("<I", msg[-4:])[0]
deadline = time.time() + 5
while True:
    try:
        status = open(f"/proc/{holder}/status").read()
        uid = [l.split()[1:] for l in status.splitlines() if l.startswith("Uid:")][0]
        if uid[0] != "0":
            fds = sorted(int(f) for f in os.listdir(f"/proc/{holder}/fd"))
            break
    except (PermissionError, FileNotFoundError):
        pass
    if time.time() > deadline:
        sys.exit(f"holder {holder} never became this user's")
    time.sleep(0.01)
field = lambda name: [l.split()[1:] for l in status.splitlines() if l.startswith(name)][0]
stat = open(f"/proc/{holder}/stat").read()
nice = stat[stat.rindex(")") + 2:].split()[16]
memlock = [l.split()[3] for l in open(f"/proc/{holder}/limits") if l.startswith("Max locked memory")][0]
print(json.dumps({"holder": holder, "fds": fds, "uid": field("Uid:"), "gid": field("Gid:"),
    "groups": field("Groups:"), "nice": nice, "memlock": memlock,
    "environ": open(f"/proc/{holder}/environ").read(), "ring": os.readlink(f"/proc/{holder}/fd/3")}))
"#;
    let out = as_user(&mut Command::new("python3"), uid)
        .args(["-c", SCRIPT])
        .arg(sock)
        .arg(PY_ASK_FOR_A_RING)
        .output()
        .expect("python3 (the README's test command needs it too)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn serve(args: &[&str], sock: &Path, uid: Option<u32>) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringpool"));
    cmd.args(["serve", "--pool", "4M", "--segment-size", "2M", "--page", "4k"])
        .args(if args.contains(&"--nice") { &[][..] } else { &["--nice", "0"][..] })
        .args(args)
        .arg("--socket")
        .arg(sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        as_user(&mut cmd, uid);
    }
    let mut d = Daemon(cmd.spawn().unwrap());
    wait_for(sock, &mut d);
    d
}

#[test]
fn an_allowed_user_gets_rings_through_a_holder_and_others_are_refused() {
    if !can_switch_users() {
        return;
    }
    let dir = shared_dir(NOBODY);
    let sock = dir.path().join("pool.sock");
    let _daemon = serve(&["--mode", "666", "--nice", "-20", "--allow-uid", &NOBODY.to_string()], &sock, None);

    let lines = client_as(NOBODY, &sock, &dir.path().join("data"));
    assert_clean_attachments(&lines);

    // The same from another pid namespace (a container's worker): the
    // holder is named by a pidfd, not by a pid that namespace lacks.
    let nobody = NOBODY.to_string();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "setpriv", "--reuid", &nobody, "--regid", &nobody, "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ringpool"));
    let lines = run_client(&mut cmd, 1, &sock, &dir.path().join("data"));
    assert_clean_attachments(&lines);

    // What the holder of a ring of that user has: only the ring and its
    // stdio, that user's ids and no groups, and nothing of the daemon's
    // priority or limits.
    let h = inspect_holder_as(NOBODY, &sock);
    eprintln!("the holder: {h}");
    assert_eq!(h["fds"], serde_json::json!([0, 1, 2, 3]), "{h}");
    assert_eq!(h["uid"], serde_json::json!(["65534", "65534", "65534", "65534"]), "{h}");
    assert_eq!(h["gid"], serde_json::json!(["65534", "65534", "65534", "65534"]), "{h}");
    assert_eq!(h["groups"], serde_json::json!([]), "{h}");
    assert_eq!(h["nice"], "0", "the daemon's -20 stays with it: {h}");
    assert_eq!(h["memlock"], "0", "{h}");
    assert_eq!(h["environ"], "", "{h}");
    assert_eq!(h["ring"], "anon_inode:[io_uring]", "{h}");

    // A user not allowed: the connection is refused, with the reason.
    let out = as_user(&mut Command::new(env!("CARGO_BIN_EXE_ringpool")), STRANGER)
        .args(["serve", "--status", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("runs as uid {STRANGER}")) && err.contains("uids [65534]"), "{err}");
}

#[test]
fn hold_every_ring_keeps_clients_of_the_daemons_user_from_reaching_it() {
    if !can_switch_users() {
        return;
    }
    // Daemon and clients run as nobody (not root, whom nothing stops).
    let dir = shared_dir(NOBODY);
    let data = dir.path().join("data");

    // Without --hold-every-ring the probe reaches the daemon: the test can
    // tell the difference.
    let open_sock = dir.path().join("open.sock");
    let open = serve(&[], &open_sock, Some(NOBODY));
    assert_clean_attachments(&client_as(NOBODY, &open_sock, &data));
    assert_eq!(probe_as(NOBODY, open.0.id()), 2, "a client of its user duplicates the daemon's descriptors");
    drop(open);

    let sock = dir.path().join("held.sock");
    let held = serve(&["--hold-every-ring"], &sock, Some(NOBODY));
    assert_clean_attachments(&client_as(NOBODY, &sock, &data));
    assert_eq!(probe_as(NOBODY, held.0.id()), 0, "a client of its user reached the daemon");
}

/// What a `bench service-probe` reported.
#[derive(Debug, Default)]
struct Probe {
    segment: u16,
    addr: u64,
    memfds: Vec<u64>,
    zeroed: bool,
    /// (slot, result, byte the write left in the file)
    tries: Vec<(u16, i32, Option<u8>)>,
    /// Trying to pin memory of its own through its ring: 0 or the errno.
    pin: Option<i32>,
}

impl Probe {
    fn parse(out: &str) -> Probe {
        let mut p = Probe::default();
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.first().copied() {
                Some("L") => (p.segment, p.addr) = (f[1].parse().unwrap(), f[2].parse().unwrap()),
                Some("F") => p.memfds = f[1..].iter().map(|x| x.parse().unwrap()).collect(),
                Some("Z") => p.zeroed = f[1] == "1",
                Some("T") => p.tries.push((f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().ok())),
                Some("P") => p.pin = Some(f[1].parse().unwrap()),
                Some("A") => {}
                _ => panic!("probe said {line:?}"),
            }
        }
        p
    }

    /// The fixed write of `try_` (0: its own segment).
    fn tried(&self, i: usize) -> (i32, Option<u8>) {
        (self.tries[i].1, self.tries[i].2)
    }
}

/// A `bench service-probe` as user `uid` filling its segment with `fill`,
/// started (its report comes as it runs).
fn start_probe(uid: u32, sock: &Path, dir: &Path, fill: u8, tries: &[String], hold_ms: u64) -> Child {
    let file = dir.join(format!("probe-{uid}-{fill}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringpool"));
    if uid != 0 {
        as_user(&mut cmd, uid);
    }
    cmd.args(["bench", "service-probe", "--fill", &fill.to_string(), "--hold-ms", &hold_ms.to_string()])
        // 64 MiB of its own, past the 8 MiB RLIMIT_MEMLOCK it has.
        .args(["--try-pin", &(64 << 20).to_string()])
        .arg("--socket")
        .arg(sock)
        .arg("--file")
        .arg(file)
        .args(["--try", "self"])
        .args(tries.iter().flat_map(|t| ["--try", t.as_str()]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Reads a started probe's report up to its last try (it then holds its
/// segment).
fn probe_report(child: &mut Child, tries: usize) -> Probe {
    use std::io::BufRead;
    let mut out = String::new();
    let mut lines = std::io::BufReader::new(child.stdout.as_mut().unwrap());
    while out.lines().filter(|l| l.starts_with('T')).count() < tries + 1 {
        let mut line = String::new();
        if lines.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the probe ended early: {out}{err}");
        }
        out.push_str(&line);
    }
    Probe::parse(&out)
}

fn run_probe(uid: u32, sock: &Path, dir: &Path, fill: u8, tries: &[String]) -> Probe {
    let out = start_probe(uid, sock, dir, fill, tries, 0).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Probe::parse(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn isolated_clients_reach_neither_each_others_slots_nor_memory() {
    if !can_switch_users() {
        return;
    }
    let dir = shared_dir(NOBODY);
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    for isolate in [false, true] {
        let sock = dir.path().join(format!("pool-{isolate}.sock"));
        let mut args = vec!["--mode", "666", "--allow-uid", "65534,65533"];
        if isolate {
            args.push("--isolate");
        }
        let daemon = serve(&args, &sock, None);

        // A fills its segment and holds it while B, of another user, tries
        // to write it out from A's table slot at A's registrar address.
        let mut a = start_probe(NOBODY, &sock, dir.path(), 0xab, &[], 30_000);
        let pa = probe_report(&mut a, 0);
        assert!(pa.zeroed, "a fresh pool");
        assert_eq!(pa.tried(0), (4096, Some(0xab)), "its own slot: {pa:?}");
        let at_a = format!("{}:{}", pa.segment, pa.addr);
        let pb = run_probe(STRANGER, &sock, dir.path(), 0xcd, &[at_a]);
        assert_eq!(pb.tried(0), (4096, Some(0xcd)), "its own slot: {pb:?}");
        // A ring the daemon (CAP_IPC_LOCK) set up charges what is pinned
        // through it to no one: a client of another user may not pin
        // memory of its own through it; the daemon's user may.
        assert_eq!(pb.pin, Some(libc::EACCES), "{pb:?}");
        let _ = a.kill();
        a.wait().unwrap();

        // C, of B's user, gets A's segment next (the first free one).
        let pc = run_probe(STRANGER, &sock, dir.path(), 0x01, &[]);
        assert_eq!(pc.segment, pa.segment, "{pc:?}");
        // D, of C's user too, after C.
        let pd = run_probe(STRANGER, &sock, dir.path(), 0x02, &[]);
        assert_eq!(pd.segment, pa.segment, "{pd:?}");
        let root = run_probe(0, &sock, dir.path(), 0x03, &[]);
        assert_eq!(root.pin, Some(0), "{root:?}");
        eprintln!("isolate {isolate}: A {pa:?}\nB {pb:?}\nC {pc:?}\nD {pd:?}");
        if !isolate {
            // The control: without --isolate, B reads A's memory through
            // its own ring, shares its memfds, and C finds A's bytes.
            assert_eq!(pb.tried(1), (4096, Some(0xab)), "{pb:?}");
            assert_eq!(pa.memfds, pb.memfds);
            assert!(!pc.zeroed);
        } else {
            // B's ring has no slot there (EFAULT), B got no memfd of A's,
            // and C got fresh memory (another user had the segment); D, of
            // C's user, C's memory as it was (one user's processes reach
            // each other anyway).
            assert_eq!(pb.tried(1), (-libc::EFAULT, None), "{pb:?}");
            assert_eq!(pa.memfds.len(), 1);
            assert!(pa.memfds.iter().all(|m| !pb.memfds.contains(m) && !pc.memfds.contains(m)), "{pa:?} {pb:?} {pc:?}");
            assert!(pc.zeroed, "C saw what A left: {pc:?}");
            assert_eq!(pd.memfds, pc.memfds);
            assert!(!pd.zeroed);
            // A ring with no lease segments would reach nothing: refused.
            let err = ringpool::handover::RingBroker::request(&sock, 32, 0).unwrap_err();
            assert!(err.to_string().contains("isolates its clients"), "{err}");
        }
        // The pool is pinned once, fresh memory or not.
        let status = Command::new(env!("CARGO_BIN_EXE_ringpool"))
            .args(["serve", "--status", "--json", "--socket"])
            .arg(&sock)
            .output()
            .unwrap();
        let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(s["vmpin_kb"], 4 * 1024, "{s}");
        drop(daemon);
    }
}

/// As user `uid` (0: root, the daemon's), speaks the broker's protocol by
/// hand (python3): asks for a ring, pulls it (from its holder, or from the
/// daemon), and before doing anything else tries to put 1 MiB of its own
/// memory in slot 0 (`IORING_REGISTER_BUFFERS_UPDATE`), then to enable it.
/// Returns the two results (what the kernel returned, or minus the errno).
fn raw_client_as(uid: u32, sock: &Path) -> serde_json::Value {
    const SCRIPT: &str = r#"
import ctypes, errno, json, mmap, os, socket, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_pidfd_open, SYS_pidfd_getfd, SYS_io_uring_register = 434, 438, 427
def sys_call(*args):
    r = libc.syscall(*[ctypes.c_long(a) for a in args])
    return r if r >= 0 else -ctypes.get_errno()
exec(sys.argv[2])
ring_fd, flags, holder = struct.unpack("<iII", msg[-12:])
if holder:
    pidfd = fds[-1]
else:
    pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    pidfd = sys_call(SYS_pidfd_open, pid, 0)
deadline = time.time() + 5
while True:
    ring = sys_call(SYS_pidfd_getfd, pidfd, ring_fd, 0)
    if ring >= 0 or ring != -errno.EPERM or time.time() > deadline:
        break
    time.sleep(0.01)
if ring < 0:
    sys.exit(f"pidfd_getfd: {ring}")
buf = mmap.mmap(-1, 1 << 20)
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
iov = struct.pack("<QQ", addr, 1 << 20)
iov_buf = ctypes.create_string_buffer(iov)
upd = struct.pack("<IIQQII", 0, 0, ctypes.addressof(iov_buf), 0, 1, 0)
upd_buf = ctypes.create_string_buffer(upd)
update = sys_call(SYS_io_uring_register, ring, 16, ctypes.addressof(upd_buf), len(upd))
enable = sys_call(SYS_io_uring_register, ring, 12, 0, 0)
print(json.dumps({"enable": enable, "update": update, "enabled_flag": bool(flags & 2)}))
"#;
    let mut cmd = Command::new("python3");
    if uid != 0 {
        as_user(&mut cmd, uid);
    }
    let out = cmd.args(["-c", SCRIPT]).arg(sock).arg(PY_ASK_FOR_A_RING).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_ring_for_another_user_arrives_enabled_and_restricted() {
    if !can_switch_users() {
        return;
    }
    let dir = shared_dir(NOBODY);
    let sock = dir.path().join("pool.sock");
    let _daemon = serve(&["--mode", "666", "--allow-uid", &NOBODY.to_string()], &sock, None);
    // Another user's ring: enabled by the daemon after it was restricted,
    // so the client never holds it unrestricted; registering memory of its
    // own on it is refused.
    let nobody = raw_client_as(NOBODY, &sock);
    assert_eq!(nobody["enabled_flag"], true, "{nobody}");
    assert_eq!(nobody["enable"], -libc::EBADFD, "{nobody}");
    assert_eq!(nobody["update"], -libc::EACCES, "{nobody}");
    // The control: a ring of the daemon's user is neither.
    let root = raw_client_as(0, &sock);
    assert_eq!(root["enabled_flag"], false, "{root}");
    assert_eq!(root["enable"], 0, "{root}");
    assert_eq!(root["update"], 1, "{root}");
}
