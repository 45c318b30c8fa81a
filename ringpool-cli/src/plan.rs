//! `ringpool plan`: what a pool configuration pins and is charged against
//! RLIMIT_MEMLOCK, what this process has, whether it fits, and what to
//! change.

use clap::{Args, ValueEnum};
use ringpool::plan::PlanRequest;
use ringpool::types::{parse_size, Bytes};
use ringpool::types::{PagePolicy, Sharing};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SharingArg {
    /// One registration, cloned into every ring (Linux 6.12+): the pool is pinned once.
    Clone,
    /// Every ring registers the pool itself: pinned once per ring.
    RegisterEach,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Pool size.
    #[arg(long, value_parser = parse_size)]
    pub pool: u64,
    /// Rings that use the pool (an IoPool's maximum workers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rings: u32,
    /// Page size: auto, 1g, 2m, thp or 4k.
    #[arg(long, default_value = "auto")]
    pub page: PagePolicy,
    /// How rings get the table (default: clone where the kernel has it).
    #[arg(long, value_enum)]
    pub sharing: Option<SharingArg>,
    /// Submission queue entries per ring (an IoPool's ring depth + 1).
    #[arg(long, default_value_t = 129, value_parser = clap::value_parser!(u32).range(1..=32768))]
    pub entries: u32,
    /// Compute ring memory from the kernel's layout instead of measuring it
    /// (measuring forks a few short-lived children; it needs root).
    #[arg(long)]
    pub no_trial: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &PlanArgs) -> anyhow::Result<()> {
    let sharing = match a.sharing {
        None => Sharing::Auto,
        Some(SharingArg::Clone) => Sharing::Clone,
        Some(SharingArg::RegisterEach) => Sharing::RegisterEach,
    };
    let req = PlanRequest {
        pool_bytes: a.pool,
        rings: a.rings,
        page: a.page,
        sharing,
        entries: a.entries,
        trial: !a.no_trial,
    };
    let p = req.plan()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    let row = |k: &str, v: String| println!("{k:<24} {v}");
    row("pool", format!("{} of {} pages", Bytes(p.pool_bytes), p.page_size));
    row("rings", format!("{} of {} entries, sharing by {}", p.rings, a.entries, p.sharing));
    row("pinned (VmPin)", Bytes(p.pinned_bytes).to_string());
    row("ring memory each", format!("{} ({})", Bytes(p.ring_bytes_each), p.ring_bytes_source));
    row("memlock needed", Bytes(p.memlock_needed_bytes).to_string());
    row("memlock limit", p.memlock_limit_bytes.map_or("unlimited".into(), |l| Bytes(l).to_string()));
    row("CAP_IPC_LOCK", if p.cap_ipc_lock { "yes (nothing is charged)".into() } else { "no".into() });
    if p.hugepages_needed > 0 {
        row("huge pages", format!("{} needed, {} free", p.hugepages_needed, p.hugepages_free));
    }
    row("fits", if p.fits { "yes".into() } else { "NO".into() });
    for a in &p.advice {
        println!("  - {a}");
    }
    Ok(())
}
