//! The far-memory modes of the application benchmarks: the memory server they use, a frame
//! placement on the farmem object runtime (with or without the remote agent), the web data set
//! in far containers, and runs under the paging allocator.

use std::sync::Arc;

use anyhow::Context;
use farmem::backend::{TcpBackend, TcpConfig};
use farmem::containers::{FarHashMap, HashMapConfig, Offload};
use farmem::paging::{AllocConfig, PagingAlloc};
use farmem::{Backend, FarBox, Runtime, RuntimeConfig};
use farmem_frame::{FarPlacement, PlacementRef};
use farmem_server::{Server, ServerConfig, ServerHandle};

use crate::web::{self, ELEM, WebData};

/// A memory server on loopback, started by this process for the application runs.
pub struct LoopbackServer {
    handle: Option<ServerHandle>,
    addr: String,
}

impl LoopbackServer {
    /// Starts a server with unlimited capacity on `127.0.0.1`, any free port.
    ///
    /// # Errors
    /// When the server cannot start.
    pub fn start() -> anyhow::Result<Self> {
        let handle =
            Server::start(ServerConfig::default()).context("starting a loopback memory server")?;
        let addr = handle.addr().to_string();
        Ok(Self {
            handle: Some(handle),
            addr,
        })
    }

    /// Starts one unless `external` names a server already.
    ///
    /// # Errors
    /// As [`LoopbackServer::start`].
    pub fn unless(external: Option<&str>) -> anyhow::Result<Option<Self>> {
        match external {
            Some(_) => Ok(None),
            None => Self::start().map(Some),
        }
    }

    /// `host:port` to connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

fn connect(addr: &str) -> anyhow::Result<Arc<dyn Backend>> {
    let b = TcpBackend::connect(TcpConfig::new([addr]).connections_per_server(2))
        .with_context(|| format!("connecting to the memory server at {addr}"))?;
    Ok(Arc::new(b))
}

/// A farmem object runtime on the server at `addr` with `budget` bytes of local memory.
///
/// # Errors
/// When the server is unreachable or the budget is below the runtime's minimum.
pub fn runtime(addr: &str, budget: u64) -> anyhow::Result<Runtime> {
    runtime_on(connect(addr)?, budget)
}

/// A farmem object runtime on `backend` with `budget` bytes of local memory.
///
/// # Errors
/// When the budget is below the runtime's minimum.
pub fn runtime_on(backend: Arc<dyn Backend>, budget: u64) -> anyhow::Result<Runtime> {
    let mut cfg = RuntimeConfig::new(budget as usize).custom_backend(backend);
    // Small budgets need small heap regions (the runtime needs a few regions at least).
    if cfg.minimum_budget() > budget as usize {
        cfg = cfg.region_size(
            (budget as usize / 16)
                .next_power_of_two()
                .clamp(64 << 10, 64 << 20)
                / 2,
        );
    }
    Runtime::new(cfg).context("starting the farmem runtime")
}

/// A placement whose columns live on the server at `addr`, with `budget` bytes of local cache;
/// `agent` runs aggregates, derived columns and group-bys on the server. Also returns the runtime
/// (for its traffic statistics).
///
/// # Errors
/// As [`runtime`].
pub fn far_runtime_placement(
    addr: &str,
    budget: u64,
    agent: bool,
) -> anyhow::Result<(Runtime, PlacementRef)> {
    let offload = if agent {
        Offload::Remote
    } else {
        Offload::Local
    };
    let rt = runtime(addr, budget)?;
    Ok((rt.clone(), Arc::new(FarPlacement::new(rt, offload))))
}

/// A backend for a pager on the server at `addr`: the server holds the only copy of the pages,
/// and a fault that cannot be served aborts the process, so a server stalled by a busy machine
/// must delay faults, not be declared down ([`TcpConfig::without_failover`]).
///
/// # Errors
/// When the server is unreachable.
pub fn connect_for_paging(addr: &str) -> anyhow::Result<Arc<dyn Backend>> {
    let cfg = TcpConfig::new([addr])
        .connections_per_server(2)
        .without_failover();
    let b = TcpBackend::connect(cfg)
        .with_context(|| format!("connecting to the memory server at {addr}"))?;
    Ok(Arc::new(b))
}

/// Runs `f` with the paging allocator enabled at `budget` bytes, paging to the server at `addr`.
/// Only for child processes: paging stays on until the process exits.
///
/// # Errors
/// When paging cannot be enabled, or `f` fails.
pub fn with_paging<T>(
    addr: &str,
    budget: u64,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    PagingAlloc::enable(connect_for_paging(addr)?, AllocConfig::new(budget as usize))
        .context("enabling the paging allocator")?;
    let out = f()?;
    if let Some(st) = PagingAlloc::stats() {
        eprintln!("paging counters: {}", paging_counters_of(&st));
    }
    Ok(out)
}

/// The paging allocator's counters as JSON (`null` when paging is off), for run reports.
pub fn paging_counters() -> serde_json::Value {
    PagingAlloc::stats().map_or(serde_json::Value::Null, |st| paging_counters_of(&st))
}

fn paging_counters_of(st: &farmem::paging::PagingStats) -> serde_json::Value {
    serde_json::json!({
        "fetch_faults": st.fetch_faults,
        "zero_faults": st.zero_faults,
        "wp_faults": st.wp_faults,
        "prefetched": st.prefetched,
        "prefetch_hits": st.prefetch_hits,
        "prefetch_late": st.prefetch_late,
        "prefetch_used": st.prefetch_used,
        "prefetch_wasted": st.prefetch_wasted,
        "reclaim_waits": st.reclaim_waits,
        "refaults": st.refaults,
        "sampled": st.sampled,
        "sample_hits": st.sample_hits,
        "evicted_clean": st.evicted_clean,
        "written_back": st.written_back,
        "cleaned": st.cleaned,
        "reclaim_wait_ns": st.reclaim_wait_ns,
        "bytes_sent": st.bytes_sent,
        "bytes_changed": st.bytes_changed,
        "freed_stored": st.freed_stored,
        "fetch_fault_ns": st.fetch_fault_ns,
        "fetch_backend_ns": st.fetch_backend_ns,
        "evict_ns": st.evict_ns,
    })
}

/// The web data set in far memory: a [`FarHashMap`] and an array of 8 KiB elements, one far
/// object each.
pub struct FarWeb {
    rt: Runtime,
    map: FarHashMap<u64, u64>,
    elems: Vec<FarBox<[u8; ELEM]>>,
}

impl FarWeb {
    /// Builds the data set: the map's cache gets `args.map_share` of the budget (at most what
    /// the whole map needs), the runtime (the elements) the rest.
    ///
    /// # Errors
    /// Runtime or container errors.
    pub fn build(
        addr: &str,
        args: &web::Args,
        budget: u64,
        progress: &dyn Fn(u64),
    ) -> anyhow::Result<Self> {
        Self::build_on(connect(addr)?, args, budget, progress)
    }

    /// [`FarWeb::build`] on any backend (a pool, for `failover`).
    ///
    /// # Errors
    /// Runtime or container errors.
    pub fn build_on(
        backend: Arc<dyn Backend>,
        args: &web::Args,
        budget: u64,
        progress: &dyn Fn(u64),
    ) -> anyhow::Result<Self> {
        // Never more than the whole map needs (a quarter more than its entries, for the sets a
        // key may not leave): the rest of the budget is worth more to the elements.
        let whole_map = args.keys * FarHashMap::<u64, u64>::bytes_per_entry() as u64 * 5 / 4;
        let map_budget = ((budget as f64 * args.map_share) as u64).min(whole_map);
        // One budget: the map's cache is lent out of the runtime's (the heap keeps at least an
        // eighth of it, and eight regions).
        let budget = budget.max(map_budget + (8 << 20));
        let rt = runtime_on(backend, budget)?;
        let map_budget = map_budget.min(budget * 7 / 8);
        let map = FarHashMap::new(&rt, HashMapConfig::within_runtime(map_budget as usize))?;
        for r in 0..args.keys {
            map.insert(web::key_of(r), web::value_of(r))?;
            if r.is_multiple_of(65_536) {
                progress(r);
            }
        }
        map.flush()?;
        let mut elems = Vec::with_capacity(args.elements as usize);
        let mut e = [0u8; ELEM];
        for i in 0..args.elements {
            web::fill_element(i, &mut e);
            elems.push(FarBox::new(&rt, e)?);
            if i.is_multiple_of(1024) {
                progress(args.keys + i * 64);
            }
        }
        rt.flush_many(elems.iter())?;
        Ok(Self { rt, map, elems })
    }
}

impl WebData for FarWeb {
    fn lookup(&self, key: u64) -> anyhow::Result<u64> {
        self.map
            .get(&key)?
            .ok_or_else(|| anyhow::anyhow!("key {key:#x} missing"))
    }

    fn lookup_many(&self, keys: &[u64], out: &mut Vec<u64>) -> anyhow::Result<()> {
        out.clear();
        for (k, v) in keys.iter().zip(self.map.get_many(keys)?) {
            out.push(v.ok_or_else(|| anyhow::anyhow!("key {k:#x} missing"))?);
        }
        Ok(())
    }

    fn element(&self, i: u64, out: &mut [u8; ELEM]) -> anyhow::Result<()> {
        *out = self.elem(i)?.get()?;
        Ok(())
    }

    /// Sends the map's misses, fetches the missing elements in one batch while that request is
    /// in flight, then collects the values: at most two overlapping round trips per window.
    fn fetch(
        &self,
        keys: &[u64],
        values: &mut Vec<u64>,
        elems: &[u64],
        out: &mut [Box<[u8; ELEM]>],
    ) -> anyhow::Result<()> {
        let boxes = elems
            .iter()
            .map(|&i| self.elem(i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let pending = self.map.get_many_submit(keys);
        self.rt.prefetch(boxes.iter().copied())?;
        values.clear();
        for (k, v) in keys.iter().zip(pending.wait()?) {
            values.push(v.ok_or_else(|| anyhow::anyhow!("key {k:#x} missing"))?);
        }
        let s = self.rt.scope();
        for (o, b) in out.iter_mut().zip(boxes) {
            **o = *b.read(&s)?;
        }
        Ok(())
    }

    fn counters(&self) -> serde_json::Value {
        let m = self.map.stats();
        let r = self.rt.stats();
        serde_json::json!({
            "map_hits": m.hits,
            "map_misses": m.misses,
            "map_round_trips": m.round_trips,
            "element_hits": r.hits,
            "element_misses": r.misses,
            "elements_prefetched": r.prefetched,
            "bytes_fetched": r.bytes_fetched,
        })
    }
}

impl FarWeb {
    fn elem(&self, i: u64) -> anyhow::Result<&FarBox<[u8; ELEM]>> {
        self.elems
            .get(i as usize)
            .ok_or_else(|| anyhow::anyhow!("element {i} missing"))
    }
}

/// Runs the web frontend with its data on the server at `addr`.
///
/// # Errors
/// When the runtime cannot be set up, or a request fails.
pub fn run_web_far(
    addr: &str,
    args: &web::Args,
    budget: u64,
    quiet: bool,
) -> anyhow::Result<web::WebRun> {
    web::run_with(args, quiet, |p| FarWeb::build(addr, args, budget, p))
}
