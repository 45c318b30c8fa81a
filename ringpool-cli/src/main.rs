//! `ringpool`: probe the kernel, benchmark registration against clone.

mod bench;
mod plan;
mod plot;
mod probe;
mod quirk_fuse;
mod serve;
mod soak;
mod util;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "ringpool", version, about = "One registered io_uring IO memory pool, cloned onto any ring")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// What this kernel and machine offer: io_uring, clone, huge pages, memlock, O_DIRECT.
    Probe(probe::ProbeArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Verified random I/O while workers come and go; checks nothing was lost or leaked.
    Soak(soak::SoakArgs),
    /// What a pool configuration pins and is charged against RLIMIT_MEMLOCK, and whether it fits.
    Plan(plan::PlanArgs),
    /// A daemon that owns one shared pool and hands rings to client processes (--status: its state).
    Serve(serve::ServeArgs),
    /// Holds one handed ring (descriptor 3) until its client took it: `ringpool serve` starts one per ring.
    #[command(hide = true)]
    HoldRing,
}

fn main() {
    // A ring holder (started per handed ring by `ringpool serve`) needs
    // none of the rest: it starts as fast as it can.
    if std::env::args_os().nth(1).is_some_and(|a| a == "hold-ring") {
        serve::hold_ring();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RINGPOOL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Probe(args) => probe::run(&args),
        Cmd::Bench(cmd) => bench::run(cmd),
        Cmd::Soak(args) => soak::run(&args),
        Cmd::Plan(args) => plan::run(&args),
        Cmd::Serve(args) => serve::run(&args),
        Cmd::HoldRing => serve::hold_ring(),
    };
    if let Err(e) = result {
        // ringpool's errors already include their OS cause in their text:
        // print each cause of the chain only if it adds something.
        let mut msg = String::new();
        for cause in e.chain() {
            let text = cause.to_string();
            if !msg.contains(&text) {
                if !msg.is_empty() {
                    msg.push_str(": ");
                }
                msg.push_str(&text);
            }
        }
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
