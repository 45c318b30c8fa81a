//! fio's side of `bench io --vs-fio`: the equivalent job, run and read.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::ValueEnum;
use ringpool::types::PageKind;

use super::cpu::{per_io, Window};
use super::{Figures, Lat, Rw};

/// An fio I/O engine ringpool compares with.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FioEngine {
    /// io_uring, with fixed buffers and registered files when ringpool's side has them.
    #[value(name = "io_uring")]
    IoUring,
    /// Linux native AIO.
    Libaio,
    /// preadv2 / pwritev2, synchronous (fio caps the depth at 1).
    Pvsync2,
}

impl FioEngine {
    pub fn name(self) -> &'static str {
        match self {
            FioEngine::IoUring => "io_uring",
            FioEngine::Libaio => "libaio",
            FioEngine::Pvsync2 => "pvsync2",
        }
    }
}

/// The fio job equivalent to a ringpool run.
#[derive(Debug, Clone, PartialEq)]
pub struct FioJob {
    pub engine: FioEngine,
    pub file: PathBuf,
    pub size: u64,
    pub rw: Rw,
    pub bs: u64,
    pub iodepth: u32,
    pub numjobs: u32,
    pub runtime: f64,
    pub fixedbufs: bool,
    pub registerfiles: bool,
    pub hugepages: Option<PageKind>,
    /// Submit queued I/Os once this many wait (fio's iodepth_batch_submit,
    /// ringpool's --submit-batch).
    pub batch_submit: u32,
    /// fio's scramble_buffers (ringpool's --scramble).
    pub scramble: bool,
}

impl FioJob {
    /// The run's length as fio is given it (whole seconds, at least 1).
    pub fn runtime_s(&self) -> u64 {
        (self.runtime.ceil() as u64).max(1)
    }

    /// fio's command-line arguments (JSON output on stdout).
    pub fn args(&self) -> Vec<String> {
        let mut v = vec![
            "--name=ringpool-vs-fio".to_string(),
            format!("--filename={}", self.file.display()),
            format!("--size={}", self.size),
            format!("--rw={}", self.rw.name()),
            format!("--bs={}", self.bs),
            format!("--iodepth={}", self.iodepth),
            format!("--numjobs={}", self.numjobs),
            format!("--runtime={}", self.runtime_s()),
            "--time_based=1".into(),
            format!("--ioengine={}", self.engine.name()),
            format!("--iodepth_batch_submit={}", self.batch_submit),
            format!("--scramble_buffers={}", u8::from(self.scramble)),
            "--direct=1".into(),
            "--thread=1".into(),
            "--group_reporting=1".into(),
            "--lat_percentiles=1".into(),
            "--randrepeat=0".into(),
            "--norandommap=1".into(),
            "--output-format=json".into(),
        ];
        // io_uring's own options; the other engines do not take them.
        if self.engine == FioEngine::IoUring && self.fixedbufs {
            v.push("--fixedbufs=1".into());
        }
        if self.engine == FioEngine::IoUring && self.registerfiles {
            v.push("--registerfiles=1".into());
        }
        if self.rw == Rw::Randrw {
            v.push("--rwmixread=50".into());
        }
        match self.hugepages {
            Some(PageKind::Huge2M) => v.extend(["--iomem=mmaphuge".into(), "--hugepage-size=2m".into()]),
            Some(PageKind::Huge1G) => v.extend(["--iomem=mmaphuge".into(), "--hugepage-size=1g".into()]),
            _ => {}
        }
        v
    }

    /// Huge pages fio needs for its buffers (per job: its buffers rounded up,
    /// plus two for fio's alignment, as measured with fio 3.33).
    pub fn hugepages_needed(&self) -> u64 {
        match self.hugepages {
            Some(k) => self.numjobs as u64 * ((self.iodepth as u64 * self.bs).div_ceil(k.bytes()) + 2),
            None => 0,
        }
    }
}

pub(super) fn fio_available() -> bool {
    std::process::Command::new("fio").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn pct(v: &serde_json::Value, key: &str) -> f64 {
    v.get("percentile").and_then(|p| p.get(key)).and_then(|x| x.as_f64()).unwrap_or(0.0) / 1e3
}

/// Runs fio once and reads its JSON; its CPU per I/O is counted over the
/// I/O window (see [`super::cpu`]).
pub(super) fn run_fio(job: &FioJob) -> anyhow::Result<Figures> {
    use std::process::Stdio;
    let (u0, s0) = ringpool_testkit::process::rusage_children_us();
    let child = std::process::Command::new("fio")
        .args(job.args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running fio")?;
    let pid = child.id();
    let window = Window::inside(job.runtime_s() as f64);
    std::thread::sleep(window.lead);
    let c0 = ringpool_testkit::process::process_cpu_us(pid);
    let t0 = std::time::Instant::now();
    std::thread::sleep(window.len);
    let c1 = ringpool_testkit::process::process_cpu_us(pid);
    let window_s = t0.elapsed().as_secs_f64();
    let out = child.wait_with_output().context("waiting for fio")?;
    let (u1, s1) = ringpool_testkit::process::rusage_children_us();
    let lifetime_cpu_us = ((u1 - u0) + (s1 - s0)) as f64;
    let text = String::from_utf8_lossy(&out.stdout);
    let json_at = text
        .find('{')
        .ok_or_else(|| anyhow::anyhow!("fio printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    let v: serde_json::Value = serde_json::from_str(&text[json_at..]).context("parsing fio's JSON")?;
    let j = &v["jobs"][0];
    let err = j["error"].as_i64().unwrap_or(0);
    if !out.status.success() || err != 0 {
        bail!("fio failed (error {err}): {}{}", &text[..json_at], String::from_utf8_lossy(&out.stderr));
    }
    let (c0, c1) = match (c0, c1) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => bail!("reading fio's CPU time in /proc (did it end before its runtime?): {e}"),
    };
    let (r, w) = (&j["read"], &j["write"]);
    let ios = r["total_ios"].as_u64().unwrap_or(0) + w["total_ios"].as_u64().unwrap_or(0);
    let bytes = r["io_bytes"].as_u64().unwrap_or(0) + w["io_bytes"].as_u64().unwrap_or(0);
    let runtime_ms = r["runtime"].as_u64().unwrap_or(0).max(w["runtime"].as_u64().unwrap_or(0)).max(1);
    let secs = runtime_ms as f64 / 1e3;
    let iops = ios as f64 / secs;
    // usr_cpu / sys_cpu: percent of one CPU over the job's run, summed over
    // the group's jobs.
    let cpu_pct = j["usr_cpu"].as_f64().unwrap_or(0.0) + j["sys_cpu"].as_f64().unwrap_or(0.0);
    let cpu_us = cpu_pct / 100.0 * secs * 1e6;
    // The dominant direction's total latency percentiles (randrw: reads).
    let lat = if r["total_ios"].as_u64().unwrap_or(0) > 0 { &r["lat_ns"] } else { &w["lat_ns"] };
    Ok(Figures {
        iops,
        mib_s: bytes as f64 / secs / (1 << 20) as f64,
        lat_us: Lat { p50: pct(lat, "50.000000"), p99: pct(lat, "99.000000"), p999: pct(lat, "99.900000") },
        cpu_us_per_io: per_io(c1.saturating_sub(c0), iops, window_s),
        cpu_window: "io",
        fio_reported_cpu_us_per_io: Some(cpu_us / ios.max(1) as f64),
        lifetime_cpu_us_per_io: Some(lifetime_cpu_us / ios.max(1) as f64),
        ios,
        seconds: secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> FioJob {
        FioJob {
            engine: FioEngine::IoUring,
            file: "/dev/zram0".into(),
            size: 4 << 30,
            rw: Rw::Randread,
            bs: 4096,
            iodepth: 32,
            numjobs: 1,
            runtime: 10.0,
            fixedbufs: true,
            registerfiles: true,
            hugepages: None,
            batch_submit: 1,
            scramble: false,
        }
    }

    #[test]
    fn fio_args_for_the_default_job() {
        assert_eq!(
            job().args(),
            [
                "--name=ringpool-vs-fio",
                "--filename=/dev/zram0",
                "--size=4294967296",
                "--rw=randread",
                "--bs=4096",
                "--iodepth=32",
                "--numjobs=1",
                "--runtime=10",
                "--time_based=1",
                "--ioengine=io_uring",
                "--iodepth_batch_submit=1",
                "--scramble_buffers=0",
                "--direct=1",
                "--thread=1",
                "--group_reporting=1",
                "--lat_percentiles=1",
                "--randrepeat=0",
                "--norandommap=1",
                "--output-format=json",
                "--fixedbufs=1",
                "--registerfiles=1",
            ]
        );
    }

    #[test]
    fn fio_args_follow_each_option() {
        let unreg = FioJob { fixedbufs: false, ..job() };
        assert!(!unreg.args().iter().any(|a| a.starts_with("--fixedbufs")));
        let nofiles = FioJob { registerfiles: false, ..job() };
        assert!(!nofiles.args().iter().any(|a| a.starts_with("--registerfiles")));
        let mixed = FioJob { rw: Rw::Randrw, numjobs: 2, runtime: 2.5, ..job() };
        let args = mixed.args();
        assert!(args.contains(&"--rw=randrw".to_string()) && args.contains(&"--rwmixread=50".to_string()));
        assert!(args.contains(&"--numjobs=2".to_string()) && args.contains(&"--runtime=3".to_string()));
        let huge = FioJob { hugepages: Some(PageKind::Huge2M), bs: 128 << 10, ..job() };
        let args = huge.args();
        assert!(args.contains(&"--iomem=mmaphuge".to_string()) && args.contains(&"--hugepage-size=2m".to_string()));
        assert_eq!(huge.hugepages_needed(), 4);
        let libaio = FioJob { engine: FioEngine::Libaio, hugepages: Some(PageKind::Huge2M), ..job() };
        let args = libaio.args();
        assert!(args.contains(&"--ioengine=libaio".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--fixedbufs") || a.starts_with("--registerfiles")), "{args:?}");
        assert!(args.contains(&"--iomem=mmaphuge".to_string()), "every engine gets the pool's huge pages");
        let batched = FioJob { batch_submit: 4, scramble: true, ..job() };
        let args = batched.args();
        assert!(args.contains(&"--iodepth_batch_submit=4".to_string()), "{args:?}");
        assert!(args.contains(&"--scramble_buffers=1".to_string()), "{args:?}");
        let sync = FioJob { engine: FioEngine::Pvsync2, ..job() };
        assert!(sync.args().contains(&"--ioengine=pvsync2".to_string()));
        let thp = FioJob { hugepages: Some(PageKind::Transparent), ..job() };
        assert!(!thp.args().iter().any(|a| a.starts_with("--iomem")));
        for rw in [Rw::Read, Rw::Write, Rw::Randwrite] {
            assert!(FioJob { rw, ..job() }.args().contains(&format!("--rw={}", rw.name())));
        }
    }
}
