//! CPU per I/O, counted the same way on both sides of `bench io`: the
//! whole process's CPU time (every thread, io_uring's io-wq workers
//! included: they are threads of the process that submitted) over a
//! window in which the process does nothing but the timed I/O, divided by
//! the I/Os of that window. Both sides read `/proc/<pid>/stat` (utime +
//! stime) at the window's edges: ringpool its own, from the moment its
//! workers are ready until they have joined; fio's, with fio running as
//! threads (`--thread`), from `lead` after its start to `lead + len`, well
//! inside its time-based run, so that neither fio's start-up (parsing,
//! buffer allocation, file layout) nor its teardown is counted. fio's I/Os
//! in the window are its mean IOPS times the window's length (a steady
//! run). JSON: `cpu_window` = "io" on every side.

use std::time::Duration;

/// Where the window lies in a run of fio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// From fio's spawn to the window's start.
    pub lead: Duration,
    /// The window's length.
    pub len: Duration,
}

impl Window {
    /// The window inside a time-based fio run of `runtime_s` seconds: it
    /// starts after a fifth of the run (at most 1 s: fio is set up in
    /// under 0.2 s here) and ends a tenth of the run (at most 0.5 s)
    /// before the run's end.
    pub fn inside(runtime_s: f64) -> Window {
        let r = runtime_s.max(0.0);
        let lead = (0.2 * r).min(1.0);
        let tail = (0.1 * r).min(0.5);
        Window { lead: Duration::from_secs_f64(lead), len: Duration::from_secs_f64((r - lead - tail).max(0.0)) }
    }
}

/// CPU µs per I/O: `cpu_us` spent over a window of `window_s` seconds in
/// which the process ran `iops` I/Os per second (0 when none ran).
pub fn per_io(cpu_us: u64, iops: f64, window_s: f64) -> f64 {
    let ios = iops * window_s;
    if ios.is_finite() && ios > 0.0 {
        cpu_us as f64 / ios
    } else {
        0.0
    }
}

/// This process's CPU time so far, µs (every thread, io-wq's included).
pub fn self_cpu_us() -> anyhow::Result<u64> {
    Ok(ringpool_testkit::process::process_cpu_us(std::process::id())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_sits_inside_the_run() {
        let w = Window::inside(10.0);
        assert_eq!(w.lead, Duration::from_secs(1));
        assert_eq!(w.len, Duration::from_millis(8500));
        let short = Window::inside(1.0);
        assert_eq!(short.lead, Duration::from_millis(200));
        assert!((short.len.as_secs_f64() - 0.7).abs() < 1e-9);
        assert_eq!(Window::inside(0.0).len, Duration::ZERO);
        assert_eq!(Window::inside(-3.0).len, Duration::ZERO);
    }

    #[test]
    fn cpu_per_io_divides_the_windows_cpu_by_its_ios() {
        // 8.5 s at 20,000 IOPS = 170,000 I/Os; 1.7 s of CPU = 10 µs each.
        assert!((per_io(1_700_000, 20_000.0, 8.5) - 10.0).abs() < 1e-9);
        assert_eq!(per_io(5, 0.0, 8.5), 0.0);
        assert_eq!(per_io(5, f64::NAN, 8.5), 0.0);
    }
}
