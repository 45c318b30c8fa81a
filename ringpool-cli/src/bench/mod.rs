//! `ringpool bench ...`.

use clap::Subcommand;

pub mod churn;
pub mod register;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Register a pool once vs clone it into fresh rings (the seed's experiment), against the bare io-uring crate.
    Register(register::RegisterArgs),
    /// Start and stop pool workers (thread + ring + table) with clone and with register-each.
    Churn(churn::ChurnArgs),
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Register(a) => register::run(&a),
        BenchCmd::Churn(a) => churn::run(&a),
    }
}
