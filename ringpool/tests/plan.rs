//! The memlock planner against reality: 20 configurations, each built in a
//! child process under a scratch user with RLIMIT_MEMLOCK set; `fits` must
//! be true exactly when the build succeeds, and `pinned_bytes` within 1% of
//! the VmPin then measured.

mod common;

use std::io::{Read, Write};

use ringpool::{BufferTable, IoMemory, MemoryOptions, PagePolicy, PlanRequest, RingOptions, Sharing, TableOptions};

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
    let _ = ringpool::Features::get();
    let mut failures = Vec::new();
    for (i, (pool, rings, sharing, delta)) in configs().into_iter().enumerate() {
        let req = PlanRequest { pool_bytes: pool, rings, page: PagePolicy::Base, sharing, entries: 129, trial: false };
        // Here (root, CAP_IPC_LOCK): the need; the ring layout is cached for
        // the child, which must not make a ring to compute it.
        let need = ringpool::plan(&req).unwrap().memlock_needed_bytes;
        let limit = need.checked_add_signed(delta).unwrap();
        let (mut rx, tx) = std::io::pipe().unwrap();
        let uid = 0x6ff0_0000 + (std::process::id() % 0x1000) * 0x40 + i as u32;
        // SAFETY: this child test process runs one thread.
        let code = unsafe {
            ringpool::process::in_scratch_user(limit, uid, move || {
                let mut tx = tx;
                let plan = match ringpool::plan(&req) {
                    Ok(p) => p,
                    Err(_) => return 3,
                };
                let built = build(pool, rings, sharing);
                let pinned = ringpool::process::vm_pinned_kb(std::process::id()).unwrap_or(0) * 1024;
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

#[test]
fn plans_count_what_they_say() {
    let clone = ringpool::plan(&PlanRequest {
        sharing: Sharing::Clone,
        page: PagePolicy::Base,
        ..PlanRequest::new(64 * MIB, 8)
    })
    .unwrap();
    assert_eq!((clone.pool_bytes, clone.pinned_bytes, clone.sharing.as_str()), (64 * MIB, 64 * MIB, "clone"));
    let each = ringpool::plan(&PlanRequest {
        sharing: Sharing::RegisterEach,
        page: PagePolicy::Base,
        ..PlanRequest::new(64 * MIB, 8)
    })
    .unwrap();
    assert_eq!(each.pinned_bytes, 9 * 64 * MIB, "eight rings and the template");
    assert_eq!(
        each.memlock_needed_bytes - clone.memlock_needed_bytes,
        8 * 64 * MIB,
        "the rings' memory is the same either way"
    );
    // A pool that is not a whole number of pages is rounded up.
    let odd = ringpool::plan(&PlanRequest { page: PagePolicy::Base, ..PlanRequest::new(MIB + 1, 1) }).unwrap();
    assert_eq!(odd.pool_bytes, MIB + 4096);
    // Bad requests are typed errors.
    assert!(ringpool::plan(&PlanRequest::new(0, 1)).is_err());
    assert!(ringpool::plan(&PlanRequest { entries: 0, ..PlanRequest::new(MIB, 1) }).is_err());
    assert!(ringpool::plan(&PlanRequest { page: PagePolicy::Base, ..PlanRequest::new(u64::MAX, 1) }).is_err());
    // Huge pages beyond what is free: it does not fit, and says how to fix it.
    let free = ringpool::HugePages::read(ringpool::PageKind::Huge2M);
    if free.present {
        let p = ringpool::plan(&PlanRequest {
            page: PagePolicy::Huge2M,
            ..PlanRequest::new((free.available() + 8) * 2 * MIB, 1)
        })
        .unwrap();
        assert!(!p.fits && p.advice.iter().any(|a| a.contains("nr_hugepages")), "{p:?}");
    }
}
