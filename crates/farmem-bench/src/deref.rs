//! `farmem-bench deref` (not implemented yet).

/// Options of `farmem-bench deref`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the benchmark.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("farmem-bench deref is not implemented yet")
}
