//! `farmem-bench taxi` (not implemented yet).

/// Options of `farmem-bench taxi`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the benchmark.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("farmem-bench taxi is not implemented yet")
}
