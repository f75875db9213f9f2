//! `farmem-bench demo` (not implemented yet).

/// Options of `farmem-bench demo`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the benchmark.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("farmem-bench demo is not implemented yet")
}
