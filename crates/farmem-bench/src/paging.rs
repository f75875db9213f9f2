//! `farmem-bench paging` (not implemented yet).

/// Options of `farmem-bench paging`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the benchmark.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("farmem-bench paging is not implemented yet")
}
