//! `ringpool probe`.

use std::path::PathBuf;

use clap::Args;
use ringpool::units::Bytes;
use ringpool::{Features, HugePages, IoUringStatus, PageKind};
use serde_json::json;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Also check O_DIRECT and its alignment in this directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn hp_json(h: &HugePages) -> serde_json::Value {
    json!({ "total": h.total, "free": h.free, "reserved": h.reserved, "present": h.present })
}

pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let f = Features::detect();
    let dio = args.dir.as_ref().map(|d| Features::direct_io(d));
    if args.json {
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
                ringpool::DstReplace::Works => "works".to_string(),
                ringpool::DstReplace::Broken(why) => format!("broken: {why}"),
                ringpool::DstReplace::Unsupported => "unsupported".to_string(),
            },
            "read_write_fixed": f.read_write_fixed,
            "hugepages_2m": hp_json(&f.hugepages_2m),
            "hugepages_1g": hp_json(&f.hugepages_1g),
            "thp": format!("{:?}", f.thp).to_lowercase(),
            "memlock_limit": f.memlock_limit,
            "cap_ipc_lock": f.cap_ipc_lock,
        });
        if let Some(d) = &dio {
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
        return Ok(());
    }
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
            ringpool::DstReplace::Works => "works (a partial DST_REPLACE clone replaced exactly its range)".into(),
            ringpool::DstReplace::Broken(why) => format!("BROKEN: {why}; growth re-clones whole tables"),
            ringpool::DstReplace::Unsupported => "not run (no ranged clone)".into(),
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
    Ok(())
}
