//! `ringpool bench ...`.

use clap::Subcommand;

pub mod churn;
pub mod grow;
pub mod io;
pub mod pool_latency;
pub mod prefork;
pub mod register;
pub mod service;
pub mod service_client;
pub mod service_probe;
pub mod thread_churn;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Register a pool once vs clone it into fresh rings (the seed's experiment), against the bare io-uring crate.
    Register(register::RegisterArgs),
    /// Start and stop pool workers (thread + ring + table) with clone and with register-each.
    Churn(churn::ChurnArgs),
    /// fio-style O_DIRECT benchmark through the pool, with fio beside it (--vs-fio).
    Io(io::IoArgs),
    /// Chart IOPS against iodepth from `bench io --json` reports (ringpool and fio).
    IoChart(io::ChartArgs),
    /// Grow a live pool under I/O: time until every ring can use the new memory, vs re-registering.
    Grow(grow::GrowArgs),
    /// One caller reading through an IoPool and waiting each time, against pread on its own thread.
    PoolLatency(pool_latency::PoolLatencyArgs),
    /// N short-lived threads, one verified 4 KiB first read each through the pool, against
    /// thread-local rings made by hand (Qdrant-style) and per-thread registration (tokio-uring-style).
    ThreadChurn(thread_churn::ThreadChurnArgs),
    /// N forked worker processes with fixed I/O on the whole pool: clone into handed-over rings vs each registering.
    Prefork(prefork::PreforkArgs),
    /// Load and faults against `ringpool serve`: client processes attaching and detaching with verified I/O,
    /// SIGKILLs, growth reaching every live client.
    Service(service::ServiceArgs),
    /// One client process of `bench service` (started by it).
    #[command(hide = true)]
    ServiceClient(service_client::ServiceClientArgs),
    /// A client that tries to reach other clients' memory (tests of `serve --isolate`).
    #[command(hide = true)]
    ServiceProbe(service_probe::ServiceProbeArgs),
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Register(a) => register::run(&a),
        BenchCmd::Churn(a) => churn::run(&a),
        BenchCmd::Io(a) => io::run(&a),
        BenchCmd::IoChart(a) => io::chart(&a),
        BenchCmd::Grow(a) => grow::run(&a),
        BenchCmd::PoolLatency(a) => pool_latency::run(&a),
        BenchCmd::Prefork(a) => prefork::run(&a),
        BenchCmd::ThreadChurn(a) => thread_churn::run(&a),
        BenchCmd::Service(a) => service::run(&a),
        BenchCmd::ServiceClient(a) => service_client::run(&a),
        BenchCmd::ServiceProbe(a) => service_probe::run(&a),
    }
}
