//! `ringpool bench ...`.

use clap::Subcommand;

pub mod register;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Register a pool once vs clone it into fresh rings (the seed's experiment), against the bare io-uring crate.
    Register(register::RegisterArgs),
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Register(a) => register::run(&a),
    }
}
