//! `farmem-bench containers` (not implemented yet).

/// Options of `farmem-bench containers`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the benchmark.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("farmem-bench containers is not implemented yet")
}
