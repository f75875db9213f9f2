//! `farmem-bench web` (not implemented yet).

/// Options of `farmem-bench web`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the benchmark.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("farmem-bench web is not implemented yet")
}
