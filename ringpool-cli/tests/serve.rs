//! `ringpool serve`: the daemon started as a process, this test process its
//! client: rings with the table cloned in and fixed I/O through them, the
//! per-client quota, growth on demand reaching the rings that follow it,
//! `--status`, and a graceful stop on SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringpool::handover::RingBroker;
use ringpool::types::EnginePolicy;
use ringpool::{DirectFile, Error, Op, RingOptions};

const MIB: u64 = 1 << 20;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "the daemon did not bind {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_json(sock: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ringpool"))
        .args(["serve", "--status", "--json", "--socket"])
        .arg(sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn serve_hands_rings_grows_on_demand_and_stops_on_sigterm() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let sock = dir.path().join("pool.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_ringpool"))
        .args(["serve", "--pool", "8M", "--segment-size", "4M", "--page", "4k", "--grow-to", "16M"])
        .args(["--max-rings-per-client", "3", "--max-lease-bytes-per-client", "12M", "--drain", "1", "--socket"])
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    wait_for(&sock);
    let mode = std::fs::metadata(&sock).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap();
    assert_eq!(mode & 0o777, 0o600, "the socket is this user's only");

    // A ring with one lease segment: fixed I/O through the daemon's table.
    let handed = RingBroker::request(&sock, 32, 1).expect("a ring from the daemon");
    let mut ring = handed.enable_with(&RingOptions::new().engine(EnginePolicy::IoUring)).unwrap();
    let file = DirectFile::options().read(true).write(true).create(true).open(dir.path().join("data")).unwrap();
    file.set_len(MIB).unwrap();
    let mut buf = ring.memory().unwrap().try_alloc(64 << 10).unwrap();
    buf.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7) as u8);
    let (r, buf) = ring.run(Op::write(&file, 0, buf)).into_one();
    assert_eq!(r.unwrap(), 64 << 10);
    let (r, back) = ring.run(Op::read(&file, 0, ring.memory().unwrap().try_alloc(64 << 10).unwrap())).into_one();
    assert_eq!(r.unwrap(), 64 << 10);
    assert!(back[..] == buf[..]);

    let s = status_json(&sock);
    assert_eq!(s["pool_bytes"], 8 * MIB);
    assert_eq!(s["segments"], 2);
    assert_eq!(s["capacity"], 4);
    assert_eq!(s["following_rings"], 1, "{s}");
    assert!(s["clients"].as_array().unwrap().iter().any(|c| c["pid"] == std::process::id()), "{s}");

    // Two more lease segments: one is free, so the pool grows by two.
    let second = RingBroker::request(&sock, 32, 2).expect("the pool grows on demand");
    let s = status_json(&sock);
    assert_eq!(s["pool_bytes"], 16 * MIB, "{s}");
    assert_eq!(s["segments"], 4);
    // The quota counts this process's connections: 3 lease segments held.
    match RingBroker::request(&sock, 32, 1) {
        Err(Error::PeerRefused { reason }) => assert!(reason.contains("per client process"), "{reason}"),
        other => panic!("a fourth lease segment was not refused: {other:?}"),
    }
    let third = RingBroker::request(&sock, 32, 0).expect("a third ring, no leases");
    match RingBroker::request(&sock, 32, 0) {
        Err(Error::PeerRefused { reason }) => assert!(reason.contains("rings"), "{reason}"),
        other => panic!("a fourth ring was not refused: {other:?}"),
    }

    // SIGTERM: the socket goes at once; the daemon waits --drain for the
    // connections holding lease segments, then exits cleanly.
    let t = Instant::now();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket file is removed");
    let mut err = String::new();
    std::io::Read::read_to_string(daemon.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("stopped accepting"), "{err}");
    // The rings outlive the daemon: the table lives in the rings.
    let (r, _) = ring.run(Op::read(&file, 0, ring.memory().unwrap().try_alloc(4096).unwrap())).into_one();
    assert_eq!(r.unwrap(), 4096);
    drop((second, third));
}

#[test]
fn bench_service_grows_shrinks_kills_and_reclaims_with_no_mismatch() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringpool"))
        .args(["bench", "service", "--clients", "4", "--duration", "5", "--pool", "96M", "--page", "4k"])
        .args(["--shrink-idle", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mismatches"], 0, "{r}");
    assert_eq!(r["client_errors"], 0, "{r}");
    assert!(r["attaches"].as_u64().unwrap() > 10, "{r}");
    assert!(r["killed"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["reclaimed_segments"], r["killed"], "every killed client's segments come back: {r}");
    assert_eq!(r["growths"], 2, "{r}");
    assert_eq!(r["grow_reached_procs"], r["grow_live_procs"], "every live client reached the growth: {r}");
    // The grown memory goes once idle: the pool is back to its first size,
    // its growths' memfds closed.
    assert!(r["shrinks"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["shrink_timeouts"], 0, "{r}");
    assert_eq!(r["segments_after"], r["segments_initial"], "{r}");
    assert_eq!(r["daemon_fds_after"], r["daemon_fds_before"], "no fd left behind: {r}");
    assert_eq!(r["daemon_fds_expected"], r["daemon_fds_before"], "{r}");
    assert_eq!(r["vmpin_after_kb"], r["vmpin_before_kb"], "the grown memory is unpinned: {r}");
    assert!(r["vmpin_peak_ratio"].as_f64().unwrap() <= 1.05, "pinned once: {r}");
}

#[test]
fn sighup_reloads_the_quotas_file() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let sock = dir.path().join("pool.sock");
    let quotas = dir.path().join("quotas");
    std::fs::write(&quotas, "# at most one ring per client\nmax-rings-per-client = 1\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ringpool"))
        .args(["serve", "--pool", "8M", "--segment-size", "4M", "--page", "4k", "--max-rings-per-client", "8"])
        .arg("--quotas")
        .arg(&quotas)
        .arg("--socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    wait_for(&sock);
    // The file wins over the flag: one ring, the second refused.
    let first = RingBroker::request(&sock, 8, 0).expect("a first ring");
    let err = RingBroker::request(&sock, 8, 0).unwrap_err();
    assert!(matches!(err, Error::PeerRefused { .. }) && err.to_string().contains("at most 1"), "{err}");

    // A bad file on SIGHUP leaves the quotas as they were.
    let hup = |d: &Daemon| {
        // SAFETY: a signal to our own child.
        assert_eq!(unsafe { libc::kill(d.0.id() as i32, libc::SIGHUP) }, 0);
        std::thread::sleep(Duration::from_millis(300));
    };
    std::fs::write(&quotas, "max-rings-per-client = many\n").unwrap();
    hup(&daemon);
    assert!(RingBroker::request(&sock, 8, 0).is_err(), "still at most 1");
    std::fs::write(&quotas, "max-rings-per-client = 3\nmax-clients = 16\n").unwrap();
    hup(&daemon);
    let second = RingBroker::request(&sock, 8, 0).expect("a second ring after the reload");
    let third = RingBroker::request(&sock, 8, 0).expect("a third");
    assert!(RingBroker::request(&sock, 8, 0).is_err(), "at most 3 now");
    drop((first, second, third, daemon));
}
