//! What this crate's tests share: skipping a test whose machine lacks what it needs, pool
//! members with fault switches.

/// Skips a test whose machine lacks what it needs (root, userfaultfd, `/dev/fuse`, zram, a
/// memory cgroup): prints `why` and returns, and the caller returns too.
///
/// # Panics
/// When `FARMEM_REQUIRE_PRIVILEGED` is set (to anything but `0`), as CI does: there every test
/// must run, so a missing facility fails the test instead of skipping it.
pub fn skip_or_fail(why: &str) {
    match std::env::var("FARMEM_REQUIRE_PRIVILEGED") {
        Ok(v) if !v.is_empty() && v != "0" => {
            panic!("FARMEM_REQUIRE_PRIVILEGED is set, but this test cannot run: {why}")
        }
        _ => eprintln!("skipping: {why}"),
    }
}

/// Whether paged regions work here (userfaultfd); if not, skips (or fails, see
/// [`skip_or_fail`]) and returns `false`. Not every test crate that shares this module pages.
#[allow(dead_code)]
pub fn paging_usable() -> bool {
    match farmem::paging::available() {
        Ok(()) => true,
        Err(e) => {
            skip_or_fail(&format!("paged region: {e}"));
            false
        }
    }
}

/// `n` embedded stores behind fault switches (named `m0`, `m1`, ...), and the same as pool
/// members.
#[allow(dead_code)]
pub fn faulty_members(
    n: usize,
) -> (
    Vec<std::sync::Arc<farmem::backend::FaultyBackend>>,
    Vec<std::sync::Arc<dyn farmem::Backend>>,
) {
    use std::sync::Arc;
    let stores: Vec<Arc<farmem::backend::FaultyBackend>> = (0..n)
        .map(|i| {
            Arc::new(farmem::backend::FaultyBackend::new(
                Arc::new(farmem::EmbeddedStore::new()),
                format!("m{i}"),
            ))
        })
        .collect();
    let members = stores
        .iter()
        .map(|s| s.clone() as Arc<dyn farmem::Backend>)
        .collect();
    (stores, members)
}
