//! `farmem-bench`: benchmarks, paper experiments and plots.

use clap::Parser;

/// farmem benchmarks and paper experiments.
#[derive(Parser)]
#[command(version, about)]
enum Cli {}

fn main() {
    let _ = Cli::parse();
}
