//! `ringpool probe`.

use std::path::PathBuf;

use clap::Args;
use ringpool::probe::{Features, IoUringStatus};
use ringpool::types::Bytes;
use ringpool::types::{HugePages, PageKind};
use serde_json::json;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Also check O_DIRECT and its alignment in this directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Reserve the 1024 2 MiB huge pages the populated-table trial needs
    /// (given back at exit).
    #[arg(long)]
    reserve: bool,
    /// Skip the kernel-quirk trials (they mount a tiny FUSE file system,
    /// fork short-lived children and register 2 GiB when pages are free).
    #[arg(long)]
    no_quirks: bool,
}

fn quirk_json(q: &ringpool::quirks::Quirk) -> serde_json::Value {
    json!({
        "name": q.name,
        "state": format!("{:?}", q.state).to_lowercase(),
        "what_ringpool_does": q.what_ringpool_does,
        "detail": q.detail,
    })
}

fn hp_json(h: &HugePages) -> serde_json::Value {
    json!({ "total": h.total, "free": h.free, "reserved": h.reserved, "present": h.present })
}

pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let f = Features::detect();
    let dio = args.dir.as_ref().map(|d| Features::direct_io(d));
    // The FUSE trial takes the machine-state lock, which a huge page
    // reservation holds while it lives: first the trial, then the pages.
    let fuse = (!args.no_quirks).then(crate::quirk_fuse::trial);
    let _pages = if args.reserve {
        crate::util::restore_on_signal();
        Some(ringpool_testkit::machine::HugePageReservation::ensure_available(PageKind::Huge2M, 1024)?)
    } else {
        None
    };
    let quirks = match fuse {
        None => Vec::new(),
        Some(fuse) => {
            let mut q = ringpool::quirks::quirks();
            q.insert(1, fuse);
            q
        }
    };
    if args.json {
        print_json(&f, dio.as_ref(), &quirks)
    } else {
        print_words(&f, dio, &quirks);
        Ok(())
    }
}

fn print_json(
    f: &Features,
    dio: Option<&ringpool::probe::DirectIoSupport>,
    quirks: &[ringpool::quirks::Quirk],
) -> anyhow::Result<()> {
    {
        let (io_ok, io_why) = match &f.io_uring {
            IoUringStatus::Available => (true, None),
            IoUringStatus::Unavailable { reason, .. } => (false, Some(reason.clone())),
        };
        let mut v = json!({
            "kernel": f.kernel,
            "io_uring": io_ok,
            "io_uring_error": io_why,
            "clone_buffers": f.clone_buffers,
            "clone_ranges": f.clone_ranges,
            "dst_replace": match &f.dst_replace {
                ringpool::probe::DstReplace::Works => "works".to_string(),
                ringpool::probe::DstReplace::Broken(why) => format!("broken: {why}"),
                ringpool::probe::DstReplace::Unsupported => "unsupported".to_string(),
            },
            "read_write_fixed": f.read_write_fixed,
            "hugepages_2m": hp_json(&f.hugepages_2m),
            "hugepages_1g": hp_json(&f.hugepages_1g),
            "thp": format!("{:?}", f.thp).to_lowercase(),
            "memlock_limit": f.memlock_limit,
            "cap_ipc_lock": f.cap_ipc_lock,
        });
        v["quirks"] = serde_json::Value::Array(quirks.iter().map(quirk_json).collect());
        if let Some(d) = dio {
            v["direct_io"] = json!({
                "dir": d.dir,
                "supported": d.supported,
                "error": d.error,
                "mem_align": d.mem_align,
                "offset_align": d.offset_align,
                "source": format!("{:?}", d.source).to_lowercase(),
            });
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }
}

fn print_words(f: &Features, dio: Option<ringpool::probe::DirectIoSupport>, quirks: &[ringpool::quirks::Quirk]) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let row = |k: &str, v: String| println!("{k:<22} {v}");
    row("kernel", f.kernel.clone());
    row(
        "io_uring",
        match &f.io_uring {
            IoUringStatus::Available => "yes".into(),
            IoUringStatus::Unavailable { reason, .. } => format!("no: {reason}"),
        },
    );
    row("clone_buffers", format!("{} (IORING_REGISTER_CLONE_BUFFERS, Linux 6.12+)", yes(f.clone_buffers)));
    row("clone_ranges", format!("{} (offsets and DST_REPLACE, Linux 6.13+)", yes(f.clone_ranges)));
    row(
        "dst_replace self-test",
        match &f.dst_replace {
            ringpool::probe::DstReplace::Works => {
                "works (a partial DST_REPLACE clone replaced exactly its range)".into()
            }
            ringpool::probe::DstReplace::Broken(why) => format!("BROKEN: {why}; growth re-clones whole tables"),
            ringpool::probe::DstReplace::Unsupported => "not run (no ranged clone)".into(),
        },
    );
    row("read_write_fixed", format!("{} (READ_FIXED / WRITE_FIXED)", yes(f.read_write_fixed)));
    for h in [&f.hugepages_2m, &f.hugepages_1g] {
        let name = if h.page == PageKind::Huge2M { "hugepages 2 MiB" } else { "hugepages 1 GiB" };
        if h.present {
            row(
                name,
                format!(
                    "total {}, free {}, reserved {} ({})",
                    h.total,
                    h.free,
                    h.reserved,
                    HugePages::nr_hugepages_path(h.page).display()
                ),
            );
        } else {
            row(name, "not offered by this kernel".into());
        }
    }
    row("transparent hugepages", format!("{:?}", f.thp).to_lowercase());
    row("memlock limit", f.memlock_limit.map_or("unlimited".into(), |l| Bytes(l).to_string()));
    row(
        "CAP_IPC_LOCK",
        format!(
            "{} ({})",
            yes(f.cap_ipc_lock),
            if f.cap_ipc_lock {
                "pinning is not charged to the limit"
            } else {
                "registration is charged to the memlock limit"
            }
        ),
    );
    if let Some(d) = dio {
        let v = if d.supported {
            format!("yes: memory alignment {}, offset alignment {} (from {:?})", d.mem_align, d.offset_align, d.source)
        } else {
            format!("no: {}", d.error.unwrap_or_default())
        };
        row(&format!("O_DIRECT in {}", d.dir.display()), v);
    }
    if !quirks.is_empty() {
        println!();
        println!("kernel quirks:");
        for q in quirks {
            println!("  {:<42} {:<9} {}", q.name, format!("{:?}", q.state).to_lowercase(), q.detail);
            println!("  {:<42} {:<9} ringpool: {}", "", "", q.what_ringpool_does);
        }
    }
}
