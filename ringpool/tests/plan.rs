//! The memlock planner against reality: 20 configurations, each built in a
//! child process under a scratch user with RLIMIT_MEMLOCK set; `fits` must
//! be true exactly when the build succeeds, and `pinned_bytes` within 1% of
//! the VmPin then measured.

mod common;

use std::io::{Read, Write};

use ringpool::plan::PlanRequest;
use ringpool::types::{HugePages, PageKind, PagePolicy, Sharing, TablePath};
use ringpool::{BufferTable, DirectFile, Error, IoMemory, IoPool, MemoryOptions, RingOptions, TableOptions};

const MIB: u64 = 1 << 20;

/// (pool, rings, sharing, limit relative to the plan's need): each at
/// exactly what the plan needs, and one page less.
fn configs() -> Vec<(u64, u32, Sharing, i64)> {
    // Small enough for a hard RLIMIT_MEMLOCK of 8 MiB (a container without
    // CAP_SYS_RESOURCE cannot raise it).
    let base = [
        (MIB, 1, Sharing::Clone),
        (MIB, 4, Sharing::Clone),
        (2 * MIB, 2, Sharing::RegisterEach),
        (2 * MIB, 8, Sharing::Clone),
        (MIB / 2, 1, Sharing::RegisterEach),
        (MIB, 3, Sharing::RegisterEach),
        (4 * MIB, 2, Sharing::Clone),
        (6 * MIB, 8, Sharing::Clone),
        (MIB / 4, 16, Sharing::RegisterEach),
        (3 * MIB, 3, Sharing::Clone),
    ];
    // Exactly what the plan says is needed, and one page less.
    base.iter().flat_map(|&(p, r, s)| [(p, r, s, 0), (p, r, s, -4096)]).collect()
}

/// Builds what the plan describes: the pool, its table, and `rings` rings.
fn build(pool: u64, rings: u32, sharing: Sharing) -> ringpool::Result<(IoMemory, BufferTable, Vec<ringpool::Ring>)> {
    let mem = IoMemory::map_with(pool, &MemoryOptions::new().page(PagePolicy::Base))?;
    mem.prefault(|_| {})?;
    let table = BufferTable::register_with(&mem, &TableOptions { sharing, ..TableOptions::default() })?;
    let rings =
        (0..rings).map(|_| table.ring_with(&RingOptions::new().entries(129))).collect::<ringpool::Result<_>>()?;
    Ok((mem, table, rings))
}

/// Child side of `the_planner_is_exact_in_twenty_configurations`.
#[test]
#[ignore = "runs in a child process started by the_planner_is_exact_in_twenty_configurations"]
fn plan_child() {
    assert_eq!(std::env::var("RINGPOOL_PLAN_CHILD").as_deref(), Ok("1"), "run only as a child");
    // Probed here, once, so that no child makes (and closes) probe rings,
    // whose charge the kernel releases only later.
    let _ = ringpool::probe::Features::get();
    let mut failures = Vec::new();
    for (i, (pool, rings, sharing, delta)) in configs().into_iter().enumerate() {
        let req = PlanRequest { pool_bytes: pool, rings, page: PagePolicy::Base, sharing, entries: 129, trial: false };
        // Here (root, CAP_IPC_LOCK): the need; the ring layout is cached for
        // the child, which must not make a ring to compute it.
        let need = req.plan().unwrap().memlock_needed_bytes;
        let limit = need.checked_add_signed(delta).unwrap();
        let (mut rx, tx) = std::io::pipe().unwrap();
        let uid = 0x6ff0_0000 + (std::process::id() % 0x1000) * 0x40 + i as u32;
        // SAFETY: this child test process runs one thread.
        let code = unsafe {
            ringpool_testkit::process::in_scratch_user(limit, uid, move || {
                let mut tx = tx;
                let plan = match req.plan() {
                    Ok(p) => p,
                    Err(_) => return 3,
                };
                let built = build(pool, rings, sharing);
                let pinned = ringpool_testkit::process::vm_pinned_kb(std::process::id()).unwrap_or(0) * 1024;
                let line = format!(
                    "{} {} {} {} {}\n",
                    plan.fits,
                    built.is_ok(),
                    plan.pinned_bytes,
                    pinned,
                    built.as_ref().err().map(|e| e.to_string().replace(' ', "_")).unwrap_or_default()
                );
                let _ = tx.write_all(line.as_bytes());
                0
            })
        }
        .unwrap();
        let mut out = String::new();
        rx.read_to_string(&mut out).unwrap();
        let f: Vec<&str> = out.split_whitespace().collect();
        if code != 0 || f.len() < 4 {
            failures.push(format!("config {i}: child exit {code}, output {out:?}"));
            continue;
        }
        let (fits, built) = (f[0] == "true", f[1] == "true");
        let (planned, pinned): (u64, u64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        println!(
            "config {i}: pool {} KiB, {rings} rings, {sharing:?}, limit {limit} (need {need}{delta:+}): fits {fits}, \
             built {built}, pinned planned {planned} measured {pinned} {}",
            pool / 1024,
            f.get(4).unwrap_or(&"")
        );
        if fits != built {
            failures
                .push(format!("config {i}: the plan says fits={fits}, the build {}", f.get(4).unwrap_or(&"succeeded")));
        }
        if built && (planned as f64 - pinned as f64).abs() > planned as f64 * 0.01 {
            failures.push(format!("config {i}: planned {planned} pinned bytes, VmPin {pinned}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    println!("plan checks passed");
}

#[test]
fn the_planner_is_exact_in_twenty_configurations() {
    if !common::require_clone("the_planner_is_exact_in_twenty_configurations")
        || !common::require(common::is_root(), "the_planner_is_exact", "needs root to run children as scratch users")
    {
        return;
    }
    let (ok, out) = common::run_child("plan_child", &[("RINGPOOL_PLAN_CHILD", "1")]);
    assert!(ok && out.contains("plan checks passed"), "{out}");
}

/// The pool the builder test builds: 1 MiB of 4 KiB pages, two workers.
fn builder_request() -> PlanRequest {
    PlanRequest {
        pool_bytes: MIB,
        rings: 2,
        page: PagePolicy::Base,
        sharing: Sharing::Auto,
        entries: 129,
        trial: false,
    }
}

/// Child side of `the_builder_fits_in_exactly_the_planned_limit`: a fresh
/// process (nothing probed, no ring made yet) forks a scratch user under
/// the limit given, which builds the pool and does verified I/O through it.
#[test]
#[ignore = "runs in a child process started by the_builder_fits_in_exactly_the_planned_limit"]
fn builder_child() {
    let limit: u64 = std::env::var("RINGPOOL_BUILDER_LIMIT").expect("run only as a child").parse().unwrap();
    let dir = common::disk_dir();
    let path = dir.path().join("builder");
    std::fs::write(&path, vec![0u8; 64 << 10]).unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let uid = 0x6fe0_0000 + (std::process::id() % 0x1000) * 0x10;
    // SAFETY: this child test process runs one test thread, and the child
    // makes no use of locks another thread may hold.
    let code = unsafe {
        ringpool_testkit::process::in_scratch_user(limit, uid, move || {
            let req = builder_request();
            let built = IoPool::builder()
                .size(req.pool_bytes)
                .memory(MemoryOptions::new().page(req.page))
                .ring(RingOptions::new().entries(req.entries))
                .workers(2, 2)
                .build();
            let pool = match built {
                Ok(p) => p,
                Err(e) => {
                    println!("build failed: {e}");
                    return if matches!(e, Error::DoesNotFit { .. }) { 10 } else { 11 };
                }
            };
            let Ok(file) = DirectFile::options().read(true).write(true).open(&path) else { return 12 };
            let Ok(mut w) = pool.memory().try_alloc(8192) else { return 13 };
            w.fill(0x5a);
            if pool.write_at(&file, 4096, w).wait().result.ok() != Some(8192) {
                return 14;
            }
            let (n, r) = pool.read_at(&file, 4096, pool.memory().try_alloc(8192).unwrap()).wait().into_one();
            if n.ok() != Some(8192) || r.iter().any(|&b| b != 0x5a) {
                return 15;
            }
            0
        })
    }
    .unwrap();
    println!("builder child exit {code}");
}

#[test]
fn the_builder_fits_in_exactly_the_planned_limit() {
    if !common::require_clone("the_builder_fits_in_exactly_the_planned_limit")
        || !common::require(common::is_root(), "the_builder_fits", "needs root to run children as scratch users")
    {
        return;
    }
    // Planned here (with CAP_IPC_LOCK); built in a fresh process that has
    // probed nothing, under exactly that limit, and one page less.
    let need = builder_request().plan().unwrap().memlock_needed_bytes;
    for (limit, want) in [(need, "builder child exit 0"), (need - 4096, "builder child exit 10")] {
        let (ok, out) = common::run_child("builder_child", &[("RINGPOOL_BUILDER_LIMIT", &limit.to_string())]);
        assert!(ok && out.contains(want), "limit {limit} (need {need}): expected {want:?}\n{out}");
    }
}

#[test]
fn plans_count_what_they_say() {
    let clone = PlanRequest { sharing: Sharing::Clone, page: PagePolicy::Base, ..PlanRequest::new(64 * MIB, 8) }
        .plan()
        .unwrap();
    assert_eq!((clone.pool_bytes, clone.pinned_bytes, clone.sharing), (64 * MIB, 64 * MIB, TablePath::Cloned));
    let each = PlanRequest { sharing: Sharing::RegisterEach, page: PagePolicy::Base, ..PlanRequest::new(64 * MIB, 8) }
        .plan()
        .unwrap();
    assert_eq!(each.pinned_bytes, 9 * 64 * MIB, "eight rings and the template");
    assert_eq!(
        each.memlock_needed_bytes - clone.memlock_needed_bytes,
        8 * 64 * MIB,
        "the rings' memory is the same either way"
    );
    // A pool that is not a whole number of pages is rounded up.
    let odd = PlanRequest { page: PagePolicy::Base, ..PlanRequest::new(MIB + 1, 1) }.plan().unwrap();
    assert_eq!(odd.pool_bytes, MIB + 4096);
    // Huge pages beyond what is free: it does not fit, and says how to fix it.
    let free = HugePages::read(PageKind::Huge2M);
    if free.present {
        let p = PlanRequest { page: PagePolicy::Huge2M, ..PlanRequest::new((free.available() + 8) * 2 * MIB, 1) }
            .plan()
            .unwrap();
        assert!(!p.fits && p.advice.iter().any(|a| a.contains("nr_hugepages")), "{p:?}");
    }
}

#[test]
fn bad_requests_are_typed_errors() {
    let invalid = |r: PlanRequest, what: &str| match r.plan() {
        Err(Error::InvalidArgument { what: w, .. }) => assert_eq!(w, what),
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    };
    invalid(PlanRequest::new(0, 1), "pool size");
    invalid(PlanRequest::new(MIB, 0), "rings");
    invalid(PlanRequest { entries: 0, ..PlanRequest::new(MIB, 1) }, "ring entries");
    invalid(PlanRequest { entries: 32769, ..PlanRequest::new(MIB, 1) }, "ring entries");
    invalid(PlanRequest { page: PagePolicy::Base, ..PlanRequest::new(u64::MAX, 1) }, "pool size");
}
