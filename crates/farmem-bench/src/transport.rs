//! `farmem-bench transport` (not implemented yet).

/// Options of `farmem-bench transport`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the benchmark.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("farmem-bench transport is not implemented yet")
}
