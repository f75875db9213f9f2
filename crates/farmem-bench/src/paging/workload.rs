//! The workload (populate, random reads, random writes) and the memories it runs on.

use std::sync::Arc;
use std::time::Instant;

use farmem::paging::{AllocConfig, PagedRegion, PagingAlloc, PagingStats};
use farmem::{Backend, FarSlice, Runtime, RuntimeConfig};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

use super::Args;
use super::child::{ServerProcess, make_backend};

/// Runs the workload on an ordinary `Vec` allocated through the transparent paging allocator.
pub(super) fn transparent(
    args: &Args,
    budget: usize,
    ws: usize,
) -> anyhow::Result<(Phases, Option<ServerProcess>)> {
    let (backend, server) = make_backend(args.backend, 2 * ws as u64)?;
    let mut config = AllocConfig::new(budget);
    config.paging.pager_spin_us = args.spin_us;
    PagingAlloc::enable(backend, config)?;
    let mut v = vec![0u64; ws / 8];
    anyhow::ensure!(
        PagingAlloc::paged_bytes() as usize >= ws,
        "the working set was not placed in paged memory"
    );
    let p = workload(&mut v, args.ops);
    drop(v);
    Ok((p, server))
}

/// Timings of one mode.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Phases {
    pub(super) populate_s: f64,
    pub(super) read_ops_s: f64,
    pub(super) write_ops_s: f64,
    pub(super) checksum: u64,
}

/// The access stream's generator: seeded, so every mode makes the same accesses.
pub(super) fn access_rng() -> SmallRng {
    SmallRng::seed_from_u64(0xDEAD_BEEF_1234_5678)
}

/// Memory the workload runs on.
pub(super) trait Words {
    fn ptr(&mut self) -> *mut u64;
    fn words(&self) -> usize;
    /// Called between phases (e.g. to flush dirty pages); returns nothing.
    fn between(&mut self, _phase: &str) {}
}

impl Words for Vec<u64> {
    fn ptr(&mut self) -> *mut u64 {
        self.as_mut_ptr()
    }
    fn words(&self) -> usize {
        self.len()
    }
}

/// The three phases over `mem`.
pub(super) fn workload(mem: &mut dyn Words, ops: usize) -> Phases {
    let n = mem.words();
    let p = mem.ptr();
    let t = Instant::now();
    for i in 0..n {
        // SAFETY: `i < n`, the memory holds `n` words and is alive for the call.
        unsafe { p.add(i).write(i as u64 * 0x9E37_79B9) };
    }
    let populate_s = t.elapsed().as_secs_f64();
    mem.between("populate");
    let mut rng = access_rng();
    let mut checksum = 0u64;
    let t = Instant::now();
    for _ in 0..ops {
        let i = rng.random_range(0..n);
        // SAFETY: as above.
        checksum = checksum.wrapping_add(unsafe { p.add(i).read_volatile() });
    }
    let read_s = t.elapsed().as_secs_f64();
    mem.between("reads");
    let t = Instant::now();
    for _ in 0..ops {
        let r = rng.next_u64();
        let i = r as usize % n;
        // SAFETY: as above.
        unsafe { p.add(i).write_volatile(r) };
    }
    let write_s = t.elapsed().as_secs_f64();
    mem.between("writes");
    Phases {
        populate_s,
        read_ops_s: ops as f64 / read_s,
        write_ops_s: ops as f64 / write_s,
        // 52 bits, so that it survives a round trip through a JSON number.
        checksum: checksum & ((1 << 52) - 1),
    }
}

/// A paged region as workload memory, recording its counters after each phase.
pub(super) struct Paged {
    pub(super) region: PagedRegion,
    pub(super) marks: Vec<(String, PagingStats)>,
}

impl Words for Paged {
    fn ptr(&mut self) -> *mut u64 {
        self.region.as_ptr().cast()
    }
    fn words(&self) -> usize {
        self.region.len() / 8
    }
    fn between(&mut self, phase: &str) {
        // Write back what the phase dirtied, so each phase's write-back is counted on its own.
        if let Err(e) = self.region.flush() {
            tracing::error!("flush after {phase}: {e}");
        }
        self.marks.push((phase.to_string(), self.region.stats()));
    }
}

/// The same three phases on far objects: the working set as `FarSlice<u64>` chunks of
/// `chunk_bytes` in an object runtime with the same local budget.
pub(super) fn object_mode(
    backend: Arc<dyn Backend>,
    budget: usize,
    ws: usize,
    ops: usize,
    chunk_bytes: usize,
) -> anyhow::Result<(Phases, farmem::Stats)> {
    let rt = Runtime::new(RuntimeConfig::new(budget).custom_backend(backend))?;
    let cw = (chunk_bytes / 8).max(1);
    let n = ws / 8;
    let mut chunks: Vec<FarSlice<u64>> = Vec::with_capacity(n.div_ceil(cw));
    let t = Instant::now();
    for c in 0..n.div_ceil(cw) {
        let len = cw.min(n - c * cw);
        let mut chunk = FarSlice::new_zeroed(&rt, len)?;
        {
            let s = rt.scope();
            for (k, w) in chunk.write(&s)?.iter_mut().enumerate() {
                *w = (c * cw + k) as u64 * 0x9E37_79B9;
            }
        }
        chunks.push(chunk);
    }
    let populate_s = t.elapsed().as_secs_f64();
    let mut rng = access_rng();
    let mut checksum = 0u64;
    let t = Instant::now();
    {
        let mut s = rt.scope();
        for op in 0..ops {
            let i = rng.random_range(0..n);
            checksum = checksum.wrapping_add(chunks[i / cw].read(&s)?[i % cw]);
            if op % 64 == 63 {
                s.renew();
            }
        }
    }
    let read_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    {
        let mut s = rt.scope();
        for op in 0..ops {
            let r = rng.next_u64();
            let i = r as usize % n;
            chunks[i / cw].write(&s)?[i % cw] = r;
            if op % 64 == 63 {
                s.renew();
            }
        }
    }
    let write_s = t.elapsed().as_secs_f64();
    let stats = rt.stats();
    drop(chunks);
    Ok((
        Phases {
            populate_s,
            read_ops_s: ops as f64 / read_s,
            write_ops_s: ops as f64 / write_s,
            checksum: checksum & ((1 << 52) - 1),
        },
        stats,
    ))
}
