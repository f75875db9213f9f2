//! The far-memory modes of the application benchmarks: a frame placement on the farmem object
//! runtime (with or without the remote agent) and runs under the paging allocator.

use farmem_frame::PlacementRef;

/// A placement whose columns live in far memory with `budget` bytes of local cache.
///
/// # Errors
/// When the object runtime cannot be set up.
pub fn far_placement(budget: u64, agent: bool) -> anyhow::Result<PlacementRef> {
    let _ = (budget, agent);
    anyhow::bail!("object mode is not wired up yet")
}

/// Runs `f` with the paging allocator enabled at `budget` bytes.
///
/// # Errors
/// When paging cannot be enabled, or `f` fails.
pub fn with_paging<T>(budget: u64, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let _ = (budget, f);
    anyhow::bail!("paging mode is not wired up yet")
}

/// Runs the web frontend with its data in far memory.
///
/// # Errors
/// When the object runtime cannot be set up, or a request fails.
pub fn run_web_far(
    args: &crate::web::Args,
    budget: u64,
    quiet: bool,
) -> anyhow::Result<crate::web::WebRun> {
    let _ = (args, budget, quiet);
    anyhow::bail!("object mode is not wired up yet")
}
