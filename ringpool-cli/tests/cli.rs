//! The `ringpool` command, run as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

fn ringpool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringpool")).args(args).output().expect("run ringpool")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = ringpool(args);
    assert!(
        out.status.success(),
        "ringpool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

fn strict() -> bool {
    std::env::var("RINGPOOL_STRICT").is_ok_and(|v| v == "1")
}

fn scratch() -> tempfile::TempDir {
    let base = std::env::var("RINGPOOL_TEST_DIR").unwrap_or_else(|_| "/var/tmp".into());
    tempfile::Builder::new().prefix("ringpool-cli-").tempdir_in(base).unwrap()
}

#[test]
fn probe_json_has_the_documented_keys() {
    let v = ok_json(&["probe", "--json", "--dir", "/var/tmp"]);
    assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(v["kernel"].as_str().unwrap(), release.trim(), "kernel is uname -r");
    for k in ["io_uring", "clone_buffers", "clone_ranges", "read_write_fixed", "cap_ipc_lock"] {
        assert!(v[k].is_boolean(), "{k} is a boolean: {v}");
    }
    for k in ["hugepages_2m", "hugepages_1g"] {
        assert!(v[k]["total"].is_u64() && v[k]["free"].is_u64(), "{k}: {v}");
    }
    assert!(v["memlock_limit"].is_u64() || v["memlock_limit"].is_null());
    assert!(v["direct_io"]["supported"].is_boolean());
    let quirks = v["quirks"].as_array().expect("quirks is a list");
    let names: Vec<&str> = quirks.iter().filter_map(|q| q["name"].as_str()).collect();
    for want in [
        "dst_replace_keeps_entries_outside_range",
        "fuse_short_read_no_duplication",
        "ring_memory_not_charged_to_memlock",
        "clone_refused_across_accounting_contexts",
        "registration_into_populated_table_fast",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for q in quirks {
        let state = q["state"].as_str().unwrap_or("");
        assert!(["works", "broken", "absent", "untested"].contains(&state), "{q}");
        assert!(q["what_ringpool_does"].as_str().is_some_and(|s| !s.is_empty()), "{q}");
    }
    if strict() {
        assert_eq!(v["clone_buffers"], true, "this machine has clone");
    }
}

#[test]
fn probe_table_is_readable() {
    let out = ringpool(&["probe"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for row in ["kernel", "io_uring", "clone_buffers", "memlock limit", "CAP_IPC_LOCK"] {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
}

#[test]
fn bench_register_json_reports_each_size() {
    let v = ok_json(&[
        "bench", "register", "--page", "4k", "--sizes", "32M,64M", "--clones", "3", "--repeat", "1", "--json",
    ]);
    assert_eq!(v["page_size"], "4k");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        for k in ["bytes", "segments", "prefault_ms", "register_us", "raw_register_us", "spinup_us_median"] {
            assert!(r[k].is_number(), "{k}: {r}");
        }
        for k in ["clone_us_median", "clone_us_min", "raw_clone_us_median", "speedup"] {
            assert!(r[k].is_number() || (!strict() && r[k].is_null()), "{k}: {r}");
        }
    }
    assert_eq!(results[0]["bytes"], 32 << 20);
    assert_eq!(results[1]["segments"].as_u64().unwrap(), 2 * results[0]["segments"].as_u64().unwrap());
}

#[test]
fn bench_register_human_output_has_the_seed_lines_and_a_chart() {
    let dir = scratch();
    let svg = dir.path().join("r.svg");
    let out = ringpool(&[
        "bench",
        "register",
        "--page",
        "4k",
        "--sizes",
        "16M",
        "--clones",
        "2",
        "--repeat",
        "1",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Registered 1 pages in "), "{text}");
    assert!(text.contains("Cloned 1 pages in ") || !strict(), "{text}");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("clone median"), "not our chart");
}

#[test]
fn bench_churn_json_compares_clone_and_register_each() {
    let v = ok_json(&["bench", "churn", "--pool", "64M", "--page", "4k", "--rings", "5", "--json"]);
    assert_eq!(v["pool_bytes"], 64 << 20);
    for side in ["clone", "register_each"] {
        for k in ["p50_us", "p99_us", "rings_per_s"] {
            assert!(v[side][k].as_f64().is_some_and(|x| x > 0.0), "{side}.{k}: {v}");
        }
    }
    assert!(v["ratio_p50"].as_f64().is_some_and(|x| x > 0.0));
    assert_eq!(v["clone"]["path"], "clone");
    assert_eq!(v["register_each"]["path"], "register-each");
}

fn io(file: &Path, rw: &str, extra: &[&str]) -> serde_json::Value {
    let mut args =
        vec!["bench", "io", "--file", file.to_str().unwrap(), "--size", "16M", "--runtime", "0.5", "--rw", rw];
    args.extend_from_slice(extra);
    args.push("--json");
    ok_json(&args)
}

#[test]
fn bench_io_verify_passes_for_every_rw_mode() {
    let dir = scratch();
    let file = dir.path().join("verify.dat");
    for rw in ["write", "randwrite", "read", "randread", "randrw"] {
        for workers in ["1", "2"] {
            let v = io(&file, rw, &["--verify", "--iodepth", "8", "--workers", workers, "--bs", "8k"]);
            assert_eq!(v["rw"], rw);
            assert!(v["iops"].as_f64().unwrap() > 0.0, "{rw}: {v}");
            assert!(v["verified_blocks"].as_u64().unwrap() > 0, "{rw}: nothing verified: {v}");
            for k in ["p50", "p99", "p999"] {
                assert!(v["lat_us"][k].as_f64().unwrap() > 0.0);
            }
            assert!(v["cpu_us_per_io"].as_f64().unwrap() > 0.0);
            assert!(v["fio"].is_null() && v["ratio_iops"].is_null());
        }
    }
}

#[test]
fn bench_io_vectored_operations_verify_and_report_their_opcode() {
    let dir = scratch();
    let file = dir.path().join("vec.dat");
    let readv = ringpool::probe::Features::get().readv_fixed;
    for (rw, op) in [("randwrite", "WRITEV_FIXED"), ("randread", "READV_FIXED"), ("write", "WRITEV_FIXED")] {
        let v = io(&file, rw, &["--verify", "--vec", "8", "--iodepth", "4"]);
        assert_eq!(v["vec"], 8);
        let want = if readv { op.to_string() } else { op.replace("V_FIXED", "_FIXED") };
        assert_eq!(v["opcode"], want.as_str(), "{v}");
        assert!(v["verified_blocks"].as_u64().unwrap() > 0, "{rw}: nothing verified: {v}");
        let (iops, blocks) = (v["iops"].as_f64().unwrap(), v["blocks_per_s"].as_f64().unwrap());
        assert!((blocks - 8.0 * iops).abs() < 1e-6 * blocks.max(1.0), "{v}");
    }
    // Vectored operations and fio do not compare.
    let out = ringpool(&["bench", "io", "--file", file.to_str().unwrap(), "--vec", "4", "--vs-fio"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--vec"));
}

/// zram0 for a test, under the machine-state lock, reset when dropped (as
/// ringpool's own tests do; a skip fails under RINGPOOL_STRICT=1).
struct Zram {
    _lock: ringpool_testkit::machine::MachineLock,
}

impl Zram {
    fn setup(test: &str, size: &str) -> Option<Zram> {
        let skip = |why: &str| {
            assert!(!strict(), "{test}: {why} (RINGPOOL_STRICT=1)");
            eprintln!("skipping {test}: {why}");
            None
        };
        let lock = ringpool_testkit::machine::MachineLock::acquire().expect("machine-state lock");
        let sys = Path::new("/sys/block/zram0");
        if !sys.exists() && Path::new("/sys/class/zram-control/hot_add").exists() {
            let _ = std::fs::read_to_string("/sys/class/zram-control/hot_add");
        }
        if !sys.exists() {
            return skip("no zram device");
        }
        if std::fs::read_to_string(sys.join("disksize")).unwrap_or_default().trim() != "0" {
            return skip("zram0 is in use");
        }
        if std::fs::write(sys.join("disksize"), size).is_err() {
            return skip("cannot size zram0 (not root?)");
        }
        Some(Zram { _lock: lock })
    }
}

impl Drop for Zram {
    fn drop(&mut self) {
        // The bench's rings may hold the device a moment after it exits.
        ringpool_testkit::machine::reset_zram();
    }
}

#[test]
fn bench_io_verify_passes_with_every_engine() {
    let dir = scratch();
    let file = dir.path().join("engines.dat");
    for engine in ["io_uring", "inline"] {
        for rw in ["write", "randwrite", "read", "randread", "randrw"] {
            let v = io(&file, rw, &["--verify", "--iodepth", "8", "--engine", engine]);
            assert!(v["verified_blocks"].as_u64().unwrap() > 0, "{engine} {rw}: nothing verified: {v}");
            assert_eq!(v["engine"], engine, "{v}");
        }
    }
    // zram has no NOWAIT: auto serves it inline at depth 1, io_uring deep.
    let Some(_z) = Zram::setup("bench_io_verify_passes_with_every_engine", "64M") else { return };
    for (rw, depth) in [("write", "1"), ("randread", "1"), ("randwrite", "1"), ("randrw", "64")] {
        let v = io(Path::new("/dev/zram0"), rw, &["--verify", "--iodepth", depth]);
        assert!(v["verified_blocks"].as_u64().unwrap() > 0, "{rw}: nothing verified: {v}");
        if depth == "1" {
            assert_eq!(v["engine"], "inline", "{v}");
        } else {
            assert_ne!(v["engine"], "io_uring", "the shallow start runs inline: {v}");
        }
    }
}

#[test]
fn bench_io_compares_with_every_fio_engine() {
    if !ringpool(&["--version"]).status.success() || Command::new("fio").arg("--version").output().is_err() {
        assert!(!strict(), "fio is missing (RINGPOOL_STRICT=1)");
        eprintln!("skipping bench_io_compares_with_every_fio_engine: no fio");
        return;
    }
    let dir = scratch();
    let file = dir.path().join("fio.dat");
    let v = io(&file, "randread", &["--vs-fio", "--rounds", "1", "--iodepth", "4"]);
    let engines = v["fio_engines"].as_object().expect("fio_engines");
    for e in ["io_uring", "libaio", "pvsync2"] {
        let f = &engines[e];
        assert!(f["iops"].as_f64().unwrap() > 0.0, "{e}: {v}");
        assert!(f["lat_us"]["p50"].as_f64().unwrap() > 0.0 && f["cpu_us_per_io"].as_f64().unwrap() > 0.0);
        assert!(v["fio_commands"][e].as_str().unwrap().contains(&format!("--ioengine={e}")));
    }
    let best = v["fio_best"]["engine"].as_str().unwrap();
    let top = engines.iter().map(|(_, f)| f["iops"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(engines[best]["iops"].as_f64().unwrap(), top, "the best is the one with most IOPS");
    for k in ["ratio_best_iops", "ratio_best_lat_p50", "ratio_best_cpu_per_io", "ratio_iops"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {v}");
    }
    assert_eq!(v["fio_runs"].as_array().unwrap().len(), 1);
}

#[test]
fn bench_pool_latency_reports_both_sides() {
    let dir = scratch();
    let file = dir.path().join("lat.dat");
    io(&file, "write", &["--iodepth", "4"]);
    let v = ok_json(&[
        "bench",
        "pool-latency",
        "--file",
        file.to_str().unwrap(),
        "--ops",
        "2000",
        "--rounds",
        "2",
        "--json",
    ]);
    for k in ["pool_p50_us", "pool_p99_us", "pread_p50_us", "pread_p99_us", "ratio_p50"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {v}");
    }
    assert_eq!(v["engine"], "io_uring", "an ext4 file serves NOWAIT: {v}");
}

#[test]
fn bench_io_verify_names_the_corrupted_offset() {
    use std::os::unix::fs::FileExt;
    let dir = scratch();
    let file = dir.path().join("corrupt.dat");
    io(&file, "write", &["--verify", "--iodepth", "4"]);
    // Flip one byte inside the block at 1 MiB + 4 KiB.
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&file).unwrap();
    let at = (1 << 20) + 4096 + 100;
    let mut b = [0u8; 1];
    f.read_at(&mut b, at).unwrap();
    f.write_at(&[b[0] ^ 0xff], at).unwrap();
    f.sync_all().unwrap();
    let out = ringpool(&[
        "bench",
        "io",
        "--file",
        file.to_str().unwrap(),
        "--size",
        "16M",
        "--runtime",
        "3",
        "--rw",
        "read",
        "--verify",
        "--iodepth",
        "4",
    ]);
    assert!(!out.status.success(), "corruption went unnoticed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("offset {}", (1 << 20) + 4096)) && err.contains("checksum"), "{err}");
}

#[test]
fn bad_arguments_fail_cleanly() {
    for args in [
        &["bench", "io", "--file", "/var/tmp/x", "--bs", "0"][..],
        &["bench", "io", "--file", "/var/tmp/x", "--rw", "sideways"],
        &["bench", "register", "--sizes", "0"],
        &["bench", "register", "--page", "3m"],
        &["bench", "churn", "--pool", "lots"],
        &["probe", "--dir", "/nonexistent/dir"],
    ] {
        let out = ringpool(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        if args[0] != "probe" {
            assert!(!out.status.success(), "{args:?} should fail");
        }
    }
}

#[test]
fn plan_json_has_the_pinned_keys_and_counts_register_each_per_ring() {
    let clone = ok_json(&["plan", "--pool", "64M", "--rings", "4", "--page", "4k", "--sharing", "clone", "--json"]);
    for k in [
        "pool_bytes",
        "rings",
        "page_size",
        "sharing",
        "pinned_bytes",
        "ring_bytes_each",
        "memlock_needed_bytes",
        "memlock_limit_bytes",
        "cap_ipc_lock",
        "hugepages_needed",
        "hugepages_free",
        "fits",
        "advice",
    ] {
        assert!(clone.get(k).is_some(), "{k} missing: {clone}");
    }
    assert_eq!(clone["pool_bytes"], 64u64 << 20);
    assert_eq!(clone["pinned_bytes"], 64u64 << 20, "clone pins the pool once");
    assert_eq!(clone["sharing"], "clone");
    let each =
        ok_json(&["plan", "--pool", "64M", "--rings", "4", "--page", "4k", "--sharing", "register-each", "--json"]);
    assert_eq!(each["pinned_bytes"], 5 * (64u64 << 20), "four rings and the template");
    assert!(each["advice"].is_array());
    let out = ringpool(&["plan", "--pool", "0", "--rings", "1"]);
    assert!(!out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn bench_prefork_json_reports_both_sides_and_the_broker() {
    let v = ok_json(&[
        "bench",
        "prefork",
        "--procs",
        "4",
        "--pool",
        "64M",
        "--page",
        "4k",
        "--rounds",
        "1",
        "--broker-trips",
        "10",
        "--json",
    ]);
    for k in ["procs", "pool_bytes", "ratio_ready", "ratio_pinned"] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    for side in ["clone", "register_each"] {
        for k in ["ready_ms", "per_proc_p50_us", "pinned_kb"] {
            assert!(v[side][k].is_number(), "{side}.{k}: {v}");
        }
    }
    let pool_kb = (64u64 << 20) / 1024;
    let clone_kb = v["clone"]["pinned_kb"].as_u64().unwrap();
    assert!(clone_kb >= pool_kb && clone_kb as f64 <= pool_kb as f64 * 1.05, "clone pins the pool once: {v}");
    let each_kb = v["register_each"]["pinned_kb"].as_u64().unwrap();
    assert!(each_kb >= 4 * pool_kb, "each of 4 processes pins the pool: {v}");
    assert!(v["broker"]["round_trip_p50_us"].as_f64().is_some_and(|t| t > 0.0), "{v}");
}

#[test]
fn bench_grow_shrink_reports_the_shrink() {
    let v = ok_json(&[
        "bench",
        "grow",
        "--pool",
        "64M",
        "--grow",
        "64M",
        "--page",
        "4k",
        "--workers",
        "2",
        "--shrink",
        "--json",
    ]);
    assert_eq!(v["shrink_bytes"], 64u64 << 20, "{v}");
    assert!(v["shrink_ready_us"].as_f64().is_some_and(|t| t > 0.0), "{v}");
    let after = v["vmpin_after_shrink_kb"].as_u64().unwrap();
    let before = v["vmpin_before_shrink_kb"].as_u64().unwrap();
    assert!(before >= after + (63 << 10), "VmPin falls by the 64 MiB released: {before} -> {after}");
}

#[test]
fn soak_grow_shrink_json_has_the_cycles_and_the_stats() {
    let v = ok_json(&["soak", "--duration", "3s", "--grow-shrink", "--json"]);
    assert!(v["grow_cycles"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert!(v["shrink_cycles"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(v["mismatches"], 0);
    let stats = &v["stats"];
    for k in ["per_worker", "segments", "pinned_bytes", "pool_bytes", "alloc", "workers"] {
        assert!(stats.get(k).is_some(), "stats.{k} missing: {stats}");
    }
}

/// The long mode: `cargo test -p ringpool-cli -- --ignored` (a minute).
#[test]
#[ignore = "long mode: cargo test -p ringpool-cli -- --ignored"]
fn soak_grow_shrink_for_a_minute() {
    let v = ok_json(&["soak", "--duration", "60s", "--grow-shrink", "--json"]);
    assert!(v["shrink_cycles"].as_u64().is_some_and(|n| n > 100), "{v}");
    assert_eq!((v["mismatches"].as_u64(), v["op_errors"].as_u64()), (Some(0), Some(0)), "{v}");
}
