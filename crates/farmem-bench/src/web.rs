//! `farmem-bench web`: the web-service frontend of AIFM (figure 6) in every memory mode.
//!
//! Each request looks up 32 Zipf-distributed keys in a large hash map of small pairs, reads one
//! Zipf-distributed 8 KiB element of a large array, encrypts it (AES-128-CTR) and compresses it
//! (Snappy). Many client threads issue requests; the figure is throughput, with p50/p99 latency.
//! Hot keys and elements are scattered over the data (ranks are permuted), so a hot set is many
//! small objects spread over many pages: the case where object granularity beats paging.

use std::path::PathBuf;
use std::time::Instant;

use aes::cipher::{KeyIvInit, StreamCipher};
use anyhow::Context;
use rand::distr::Distribution;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::modes::{self, Mode, ModeRun};
use crate::zipf::Zipf;

/// Bytes of one array element.
pub const ELEM: usize = 8192;
/// Hash-map lookups per request.
pub const LOOKUPS: usize = 32;
/// Zipf exponent of keys and elements.
pub const SKEW: f64 = 0.85;

/// Options of `farmem-bench web`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Key-value pairs in the hash map.
    #[arg(long, default_value_t = 2_000_000)]
    pub keys: u64,
    /// 8 KiB elements in the array.
    #[arg(long, default_value_t = 32_768)]
    pub elements: u64,
    /// Requests per run.
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    /// Requests served before the timed ones (in every mode, not timed): caches, page cache
    /// and swap reach their steady state first.
    #[arg(long, default_value_t = 50_000)]
    pub warmup: u64,
    /// Client threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Requests each client thread serves together (in every mode): their data is read in one
    /// go (far containers fetch all their misses at once), then each is answered in turn. A
    /// request's latency runs from the start of its window to its response.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub window: u64,
    /// Object mode: share of the local budget for the hash map's cache (at most what the whole
    /// map needs), the rest holds array elements. Half lets the whole map (17 B per pair) stay local at 25% local memory, as
    /// kernel swap keeps the map's pages, which every request touches.
    #[arg(long, default_value = "50%", value_parser = modes::parse_ratio)]
    pub map_share: f64,
    /// Local memory as a share of the working set; repeat or comma-separate to sweep.
    #[arg(long, value_delimiter = ',', default_value = "25%", value_parser = modes::parse_ratio)]
    pub local_mem: Vec<f64>,
    /// Modes to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "local,object,paging,kswap,kswap-net"
    )]
    pub modes: Vec<Mode>,
    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Results directory (JSON and PNG).
    #[arg(long, default_value = "results/web")]
    pub out: PathBuf,
    /// Internal: run one mode in this process and print its result (used for child processes).
    #[arg(long, hide = true)]
    pub child: Option<Mode>,
    /// Internal: the child's local budget in bytes.
    #[arg(long, hide = true, default_value_t = 0)]
    pub budget_bytes: u64,
    /// Use this memory server (`host:port`) instead of starting one on loopback.
    #[arg(long)]
    pub server: Option<String>,
}

/// The data a request reads: the hash map and the array, wherever they live.
pub trait WebData: Sync {
    /// The value under `key`.
    ///
    /// # Errors
    /// Storage errors; a missing key.
    fn lookup(&self, key: u64) -> anyhow::Result<u64>;
    /// The values under `keys`, in order (containers may batch the misses).
    ///
    /// # Errors
    /// As [`WebData::lookup`].
    fn lookup_many(&self, keys: &[u64], out: &mut Vec<u64>) -> anyhow::Result<()> {
        out.clear();
        for &k in keys {
            out.push(self.lookup(k)?);
        }
        Ok(())
    }
    /// Copies element `i` into `out`.
    ///
    /// # Errors
    /// Storage errors.
    fn element(&self, i: u64, out: &mut [u8; ELEM]) -> anyhow::Result<()>;
    /// Reads what a window of requests needs: the values of `keys` into `values` (in order)
    /// and element `elems[j]` into `out[j]`. The default looks the keys up with
    /// [`WebData::lookup_many`] and copies the elements one by one; far containers overlap it
    /// all.
    ///
    /// # Errors
    /// As [`WebData::lookup`] and [`WebData::element`].
    fn fetch(
        &self,
        keys: &[u64],
        values: &mut Vec<u64>,
        elems: &[u64],
        out: &mut [Box<[u8; ELEM]>],
    ) -> anyhow::Result<()> {
        self.lookup_many(keys, values)?;
        for (o, &i) in out.iter_mut().zip(elems) {
            self.element(i, o)?;
        }
        Ok(())
    }
    /// Counters worth reporting after a run (round trips, misses), if any.
    fn counters(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// The key of rank `r`: ranks are scattered over the key space.
pub fn key_of(rank: u64) -> u64 {
    rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995
}

/// The golden-ratio increment of SplitMix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a cheap, well-mixed 64-bit hash (not a random source).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The value stored under the key of rank `r`.
pub fn value_of(rank: u64) -> u64 {
    mix64((rank ^ 0xdead_beef).wrapping_add(GOLDEN))
}

/// The index of the element of rank `r` among `n`: a permutation of `0..n`.
pub fn element_index(rank: u64, n: u64) -> u64 {
    // 2^61 - 1 is prime, so it is coprime with any n it does not divide.
    const P: u64 = (1 << 61) - 1;
    let p = if n.is_multiple_of(P) { 1 } else { P % n };
    let p = if gcd(p, n) == 1 { p } else { 1 };
    ((u128::from(rank) * u128::from(p)) % u128::from(n)) as u64
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Fills element `i`: compressible text-like bytes that depend on `i`.
pub fn fill_element(i: u64, out: &mut [u8]) {
    const WORDS: [&[u8]; 8] = [
        b"farmem ",
        b"remote ",
        b"memory ",
        b"object ",
        b"server ",
        b"request ",
        b"cache ",
        b"page ",
    ];
    let mut rng = SmallRng::seed_from_u64(i);
    let mut pos = 0;
    while pos < out.len() {
        let r = rng.next_u64();
        let w = if r & 7 == 0 {
            &r.to_le_bytes()[..]
        } else {
            WORDS[(r >> 3) as usize % WORDS.len()]
        };
        let n = w.len().min(out.len() - pos);
        out[pos..pos + n].copy_from_slice(&w[..n]);
        pos += n;
    }
}

/// Everything in local memory: std `HashMap` and `Vec` (also what paging and kernel swap run).
pub struct LocalWeb {
    map: std::collections::HashMap<u64, u64>,
    elems: Vec<[u8; ELEM]>,
    /// Address span of the map's table: its values' lowest and highest addresses, stretched
    /// by the control bytes after the slots (one per slot and a group's worth more).
    table: (usize, usize),
}

impl LocalWeb {
    /// Builds the data set.
    pub fn build(keys: u64, elements: u64, progress: &dyn Fn(u64)) -> Self {
        let mut map = std::collections::HashMap::with_capacity(keys as usize);
        let (mut lo, mut hi) = (usize::MAX, 0);
        for r in 0..keys {
            map.insert(key_of(r), value_of(r));
            if let Some(v) = map.get(&key_of(r)) {
                let a = std::ptr::from_ref(v) as usize;
                (lo, hi) = (lo.min(a), hi.max(a));
            }
            if r.is_multiple_of(65_536) {
                progress(r);
            }
        }
        let mut elems = Vec::with_capacity(elements as usize);
        for i in 0..elements {
            let mut e = [0u8; ELEM];
            fill_element(i, &mut e);
            elems.push(e);
            if i.is_multiple_of(1024) {
                progress(keys + i * 64);
            }
        }
        let slots = (hi.saturating_sub(lo) / 16 + 1).next_power_of_two();
        let table = (lo, hi + 8 + slots + 16);
        Self { map, elems, table }
    }

    /// Shares of the map's table and of the element array resident now (`mincore`): the
    /// replacement policy's split of local memory between the two.
    fn residency(&self) -> serde_json::Value {
        let share = |addr: usize, len: usize| {
            crate::common::resident_pages(addr, len).map(|(r, n)| r as f64 / n.max(1) as f64)
        };
        let (lo, hi) = self.table;
        let elems = self.elems.as_ptr() as usize;
        serde_json::json!({
            "kernel_major_faults": major_faults(),
            "table_resident_share": share(lo, hi.saturating_sub(lo)),
            "elements_resident_share": share(elems, self.elems.len() * ELEM),
        })
    }
}

impl WebData for LocalWeb {
    fn lookup(&self, key: u64) -> anyhow::Result<u64> {
        self.map
            .get(&key)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("key {key:#x} missing"))
    }
    fn element(&self, i: u64, out: &mut [u8; ELEM]) -> anyhow::Result<()> {
        *out = *self
            .elems
            .get(i as usize)
            .ok_or_else(|| anyhow::anyhow!("element {i} missing"))?;
        Ok(())
    }
    fn counters(&self) -> serde_json::Value {
        // In the paging child the data lives in paged memory: its pager's counters. Both
        // swapping children add which shares of the table and the array are resident (shares
        // are not summed over the run, they are read at its end).
        let mut c = crate::apps_far::paging_counters();
        if !c.is_object() {
            c = serde_json::json!({});
        }
        if let (Some(m), Some(r)) = (c.as_object_mut(), self.residency().as_object()) {
            m.extend(r.clone());
        }
        c
    }
}

/// This process's major page faults so far (`/proc/self/stat`; under kernel swap, swap-ins).
fn major_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) start at the state, field 3; majflt is 12.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(9)?.parse().ok()
}

/// Bytes of the data set: map pairs (16 B plus about 1 B of control per slot, at 7/8 load) and
/// elements.
pub fn working_set_bytes(keys: u64, elements: u64) -> u64 {
    keys * 16 * 8 / 7 + keys + elements * ELEM as u64
}

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The request distributions of a run.
pub struct Workload {
    keys: Zipf,
    elems: Zipf,
    n_elems: u64,
}

impl Workload {
    /// Zipf keys over `keys` ranks and elements over `elements`.
    pub fn new(keys: u64, elements: u64) -> Self {
        Self {
            keys: Zipf::new(keys.max(2), SKEW),
            elems: Zipf::new(elements.max(2), SKEW),
            n_elems: elements.max(1),
        }
    }

    /// Appends the [`LOOKUPS`] keys of request `id` to `keys` and returns its element index.
    pub fn plan(&self, id: u64, keys: &mut Vec<u64>) -> u64 {
        let mut rng = SmallRng::seed_from_u64(id);
        keys.extend((0..LOOKUPS).map(|_| key_of(self.keys.sample(&mut rng))));
        element_index(self.elems.sample(&mut rng), self.n_elems)
    }
}

/// Scratch space of one client thread (reused by every window, so requests allocate nothing).
pub struct Client {
    keys: Vec<u64>,
    values: Vec<u64>,
    idx: Vec<u64>,
    elems: Vec<Box<[u8; ELEM]>>,
    out: Vec<u8>,
    enc: snap::raw::Encoder,
}

impl Default for Client {
    fn default() -> Self {
        Self {
            keys: Vec::with_capacity(LOOKUPS),
            values: Vec::with_capacity(LOOKUPS),
            idx: Vec::new(),
            elems: Vec::new(),
            out: vec![0; snap::raw::max_compress_len(ELEM)],
            enc: snap::raw::Encoder::new(),
        }
    }
}

impl Client {
    /// Reads the data of requests `ids` (one window) from `data`.
    ///
    /// # Errors
    /// Storage errors from `data`.
    pub fn fetch(
        &mut self,
        data: &dyn WebData,
        w: &Workload,
        ids: impl Iterator<Item = u64>,
    ) -> anyhow::Result<()> {
        self.keys.clear();
        self.idx.clear();
        for id in ids {
            let i = w.plan(id, &mut self.keys);
            self.idx.push(i);
        }
        while self.elems.len() < self.idx.len() {
            self.elems.push(Box::new([0; ELEM]));
        }
        let n = self.idx.len();
        data.fetch(
            &self.keys,
            &mut self.values,
            &self.idx,
            &mut self.elems[..n],
        )?;
        anyhow::ensure!(
            self.values.len() == self.keys.len(),
            "{} values for {} keys",
            self.values.len(),
            self.keys.len()
        );
        Ok(())
    }

    /// Answers request `id`, the `j`th of the window fetched last, and returns its digest.
    ///
    /// # Errors
    /// Compression errors.
    pub fn respond(&mut self, j: usize, id: u64) -> anyhow::Result<u64> {
        let values = &self.values[j * LOOKUPS..(j + 1) * LOOKUPS];
        let acc = values.iter().fold(0u64, |acc, v| acc.rotate_left(5) ^ v);
        let idx = self.idx[j];
        let elem = &mut self.elems[j];
        let key: [u8; 16] = (u128::from(acc) << 64 | u128::from(id)).to_le_bytes();
        let iv: [u8; 16] = u128::from(idx).to_le_bytes();
        Aes128Ctr::new(&key.into(), &iv.into()).apply_keystream(&mut elem[..]);
        let n = self
            .enc
            .compress(&elem[..], &mut self.out)
            .context("snappy")?;
        // Cheap on purpose (one xor and add per word, one mix at the end): it runs on every
        // request's compressed output in every mode.
        let mut h = acc ^ n as u64;
        for chunk in self.out[..n].chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(w)).wrapping_add(GOLDEN);
        }
        Ok(mix64(h.wrapping_add(GOLDEN)))
    }
}

/// What one run reports.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct WebRun {
    /// Seconds to build the data set.
    pub build_seconds: f64,
    /// Seconds to serve all requests.
    pub seconds: f64,
    /// Requests per second.
    pub throughput: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency, microseconds.
    pub p99_us: f64,
    /// XOR of all response digests: equal in every mode.
    pub digest: String,
    /// CPU time this process used per request (client threads, and in object mode the
    /// loopback memory server it runs): stable when other programs share the CPUs.
    #[serde(default)]
    pub cpu_us_per_request: f64,
    /// The data's counters over the timed requests (far modes: round trips, misses).
    #[serde(default)]
    pub counters: serde_json::Value,
}

/// Serves requests `ids` from `threads` clients against `data`; returns the seconds taken, the
/// latencies (ns) and the XOR of the response digests.
///
/// # Errors
/// The first request error.
pub fn drive(
    data: &dyn WebData,
    args: &Args,
    ids: std::ops::Range<u64>,
    quiet: bool,
) -> anyhow::Result<(f64, Vec<u32>, u64)> {
    let w = Workload::new(args.keys, args.elements);
    let window = args.window.max(1) as usize;
    let pb = modes::progress(ids.end - ids.start, "requests", quiet);
    let t = Instant::now();
    let threads = args.threads.max(1) as u64;
    let results: Vec<anyhow::Result<(Vec<u32>, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (w, pb, ids) = (&w, &pb, ids.clone());
                s.spawn(move || -> anyhow::Result<(Vec<u32>, u64)> {
                    let mut c = Client::default();
                    let mut lat = Vec::new();
                    let mut digest = 0u64;
                    let ids: Vec<u64> =
                        (ids.start + t..ids.end).step_by(threads as usize).collect();
                    for win in ids.chunks(window) {
                        let t0 = Instant::now();
                        c.fetch(data, w, win.iter().copied())?;
                        for (j, &id) in win.iter().enumerate() {
                            digest ^= c.respond(j, id)?;
                            lat.push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
                        }
                        pb.inc(win.len() as u64);
                    }
                    Ok((lat, digest))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked")))
            })
            .collect()
    });
    let secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let mut lat = Vec::new();
    let mut digest = 0;
    for r in results {
        let (l, d) = r?;
        lat.extend(l);
        digest ^= d;
    }
    Ok((secs, lat, digest))
}

/// `after - before` for every numeric field of `after`.
fn counter_delta(mut after: serde_json::Value, before: &serde_json::Value) -> serde_json::Value {
    if let Some(map) = after.as_object_mut() {
        for (k, v) in map.iter_mut() {
            if let (Some(a), Some(b)) = (v.as_u64(), before.get(k).and_then(|b| b.as_u64())) {
                *v = a.saturating_sub(b).into();
            }
        }
    }
    after
}

fn percentile_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// Builds with `build` and serves the requests.
///
/// # Errors
/// Build or request errors.
pub fn run_with<D: WebData>(
    args: &Args,
    quiet: bool,
    build: impl FnOnce(&dyn Fn(u64)) -> anyhow::Result<D>,
) -> anyhow::Result<WebRun> {
    let pb = modes::progress(args.keys + args.elements * 64, "building data", quiet);
    let t = Instant::now();
    let data = build(&|n| pb.set_position(n))?;
    let build_seconds = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let end = args.requests.saturating_add(args.warmup);
    drive(&data, args, args.requests..end, quiet).context("warm-up")?;
    let before = data.counters();
    let cpu0 = crate::transport::cpu_seconds();
    let (seconds, mut lat, digest) = drive(&data, args, 0..args.requests, quiet)?;
    let cpu_us_per_request =
        (crate::transport::cpu_seconds() - cpu0) * 1e6 / args.requests.max(1) as f64;
    let counters = counter_delta(data.counters(), &before);
    lat.sort_unstable();
    Ok(WebRun {
        build_seconds,
        seconds,
        throughput: args.requests as f64 / seconds.max(1e-9),
        p50_us: percentile_us(&lat, 0.5),
        p99_us: percentile_us(&lat, 0.99),
        digest: format!("{digest:016x}"),
        cpu_us_per_request,
        counters,
    })
}

fn run_local(args: &Args, quiet: bool) -> anyhow::Result<WebRun> {
    run_with(args, quiet, |p| {
        Ok(LocalWeb::build(args.keys, args.elements, p))
    })
}

fn child_args(args: &Args, mode: Mode, budget: u64, server: &str) -> Vec<String> {
    [
        "web",
        "--child",
        mode.name(),
        "--budget-bytes",
        &budget.to_string(),
        "--keys",
        &args.keys.to_string(),
        "--elements",
        &args.elements.to_string(),
        "--requests",
        &args.requests.to_string(),
        "--threads",
        &args.threads.to_string(),
        "--window",
        &args.window.to_string(),
        "--warmup",
        &args.warmup.to_string(),
        "--server",
        server,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn run_mode(args: &Args, mode: Mode, ratio: f64, server: &str, quiet: bool) -> ModeRun {
    let ws = working_set_bytes(args.keys, args.elements);
    let budget = if mode == Mode::Local {
        0
    } else {
        (ws as f64 * ratio) as u64
    };
    let ratio = if mode == Mode::Local { 1.0 } else { ratio };
    let result: anyhow::Result<WebRun> = match mode {
        Mode::Local => run_local(args, quiet),
        Mode::Object | Mode::ObjectNoAgent => {
            crate::apps_far::run_web_far(server, args, budget, quiet)
        }
        Mode::Paging | Mode::Kswap | Mode::KswapNet => {
            match modes::run_child_mode(
                mode,
                &child_args(args, mode, budget, server),
                budget,
                server,
            ) {
                Ok(r) => r,
                Err(why) => return ModeRun::skipped(mode, ratio, budget, why),
            }
        }
    };
    match result {
        Ok(r) => ModeRun {
            mode,
            local_mem_ratio: ratio,
            budget_bytes: budget,
            skipped: None,
            seconds: r.seconds,
            throughput: Some(r.throughput),
            detail: serde_json::to_value(&r).unwrap_or_default(),
        },
        Err(e) => ModeRun::skipped(mode, ratio, budget, format!("failed: {e:#}")),
    }
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(mode) = args.child {
        let run = match mode {
            Mode::Paging => {
                let server = args
                    .server
                    .as_deref()
                    .context("a memory server address (--server) is needed")?;
                crate::apps_far::with_paging(server, args.budget_bytes, || run_local(&args, true))?
            }
            _ => run_local(&args, true)?,
        };
        return modes::print_child_result(&run);
    }
    let ws = working_set_bytes(args.keys, args.elements);
    if !args.json {
        eprintln!("working set: {:.1} MiB", ws as f64 / (1 << 20) as f64);
    }
    let own_server = crate::apps_far::LoopbackServer::unless(args.server.as_deref())?;
    let server = args
        .server
        .clone()
        .or_else(|| own_server.as_ref().map(|s| s.addr().to_owned()))
        .unwrap_or_default();
    let mut runs = Vec::new();
    if args.modes.contains(&Mode::Local) {
        runs.push(run_mode(&args, Mode::Local, 1.0, &server, args.json));
    }
    for &ratio in &args.local_mem {
        for &mode in args.modes.iter().filter(|m| **m != Mode::Local) {
            if !args.json {
                eprintln!(
                    "running {} at {:.0}% local memory",
                    mode.label(),
                    ratio * 100.0
                );
            }
            runs.push(run_mode(&args, mode, ratio, &server, args.json));
        }
    }
    let digests: Vec<&str> = runs
        .iter()
        .filter_map(|r| r.detail.get("digest")?.as_str())
        .collect();
    let agree = digests.windows(2).all(|w| w[0] == w[1]);
    let dir = modes::results_dir(&args.out)?;
    let summary = serde_json::json!({
        "bench": "web",
        "keys": args.keys,
        "elements": args.elements,
        "requests": args.requests,
        "threads": args.threads,
        "window": args.window,
        "warmup": args.warmup,
        "map_share": args.map_share,
        "working_set_bytes": ws,
        "responses_agree": agree,
        "runs": runs,
    });
    modes::write_json(&dir.join("web.json"), &summary)?;
    modes::plot_runs(
        &dir.join("web.png"),
        "Web frontend",
        "throughput (requests/s)",
        &runs,
        |r| r.throughput,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        modes::print_table(&runs, true);
        for r in runs.iter().filter(|r| r.skipped.is_none()) {
            let us = |k: &str| {
                r.detail
                    .get(k)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(0.0)
            };
            println!(
                "{:<26} p50 {:>9.1} us  p99 {:>9.1} us  cpu {:>7.1} us/request",
                r.mode.label(),
                us("p50_us"),
                us("p99_us"),
                us("cpu_us_per_request")
            );
            let c = |k: &str| r.detail.get("counters").and_then(|c| c.get(k)?.as_f64());
            if let (Some(t), Some(e)) = (c("table_resident_share"), c("elements_resident_share")) {
                let per_req = |n: Option<f64>| n.unwrap_or(0.0) / args.requests.max(1) as f64;
                println!(
                    "{:<26} resident: map table {:>5.1}%, elements {:>5.1}%; per request: {:.2} \
                     network faults ({:.2} refaults), {:.2} kernel major faults",
                    "",
                    t * 100.0,
                    e * 100.0,
                    per_req(c("fetch_faults")),
                    per_req(c("refaults")),
                    per_req(c("kernel_major_faults")),
                );
            }
        }
        println!("responses identical across modes: {agree}");
    }
    anyhow::ensure!(agree, "modes gave different responses");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves request number `id` alone and returns a digest of its response (equal in every
    /// mode, and to what a window holding it gives).
    ///
    /// # Errors
    /// Storage errors from `data`; compression errors.
    fn serve(data: &dyn WebData, w: &Workload, id: u64, c: &mut Client) -> anyhow::Result<u64> {
        c.fetch(data, w, std::iter::once(id))?;
        c.respond(0, id)
    }

    #[test]
    fn element_index_is_a_permutation() {
        for n in [1u64, 2, 7, 64, 1000, 4096] {
            let mut seen: Vec<u64> = (0..n).map(|r| element_index(r, n)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn requests_are_deterministic_and_read_their_data() {
        let data = LocalWeb::build(1000, 16, &|_| {});
        let w = Workload::new(1000, 16);
        let mut c = Client::default();
        let a: Vec<u64> = (0..50)
            .map(|id| serve(&data, &w, id, &mut c).unwrap())
            .collect();
        let b: Vec<u64> = (0..50)
            .map(|id| serve(&data, &w, id, &mut c).unwrap())
            .collect();
        assert_eq!(a, b);
        // Serving in windows gives the same responses.
        let mut windowed = Vec::new();
        for win in (0..50u64).collect::<Vec<_>>().chunks(7) {
            c.fetch(&data, &w, win.iter().copied()).unwrap();
            for (j, &id) in win.iter().enumerate() {
                windowed.push(c.respond(j, id).unwrap());
            }
        }
        assert_eq!(a, windowed);
        // Different data, different responses.
        let other = LocalWeb::build(1000, 16, &|_| {});
        let mut other = other;
        other.elems.iter_mut().for_each(|e| e[0] ^= 1);
        let d: Vec<u64> = (0..50)
            .map(|id| serve(&other, &w, id, &mut c).unwrap())
            .collect();
        assert_ne!(a, d);
        // A missing key is an error, not a panic.
        let empty = LocalWeb::build(0, 16, &|_| {});
        assert!(serve(&empty, &w, 1, &mut c).is_err());
    }
}
