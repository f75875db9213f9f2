//! `farmem-bench graph`: PageRank and BFS on a CSR graph (generated with power-law degrees, or
//! read from an edge-list file) in every memory mode, with a local-memory sweep and a chart.
//!
//! Modes: all-local (`Vec`s), farmem object mode (far vectors on a memory server over TCP;
//! `object` runs PageRank on the server's agent, `object-noagent` on the client), paging, and
//! kernel swap (zram, or to the memory server over TCP; root only). The answers (every bit of
//! the final ranks, every BFS distance) must agree across modes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::apps::graph::{self, Answers, Csr, far, local};
use crate::modes::{self, Mode, ModeRun};

/// Options of `farmem-bench graph`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Vertices of the generated graph.
    #[arg(long, default_value_t = 1_000_000)]
    pub vertices: u64,
    /// Edges of the generated graph.
    #[arg(long, default_value_t = 10_000_000)]
    pub edges: u64,
    /// Seed of the generated graph.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Read the graph from this edge-list file (`source target` per line) instead.
    #[arg(long)]
    pub edge_list: Option<PathBuf>,
    /// PageRank iterations.
    #[arg(long, default_value_t = 10)]
    pub iters: u32,
    /// Local memory as a share of the working set; repeat or comma-separate to sweep.
    #[arg(long, value_delimiter = ',', default_value = "25%", value_parser = modes::parse_ratio)]
    pub local_mem: Vec<f64>,
    /// Modes to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "local,object-noagent,paging,kswap,kswap-net"
    )]
    pub modes: Vec<Mode>,
    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Results directory (JSON and PNG).
    #[arg(long, default_value = "results/graph")]
    pub out: PathBuf,
    /// Internal: run one mode in this process and print its result (used for child processes).
    #[arg(long, hide = true)]
    pub child: Option<Mode>,
    /// Internal: the child's local budget in bytes.
    #[arg(long, hide = true, default_value_t = 0)]
    pub budget_bytes: u64,
    /// Internal: once the graph is built, lower the child's own kernel-swap cgroup limit to
    /// this many bytes (0: leave it).
    #[arg(long, hide = true, default_value_t = 0)]
    pub limit_after_build: u64,
    /// Use this memory server (`host:port`) instead of starting one on loopback.
    #[arg(long)]
    pub server: Option<String>,
}

/// What one run reports.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GraphRun {
    /// Seconds to build (or read) the graph and place it.
    pub build_seconds: f64,
    /// Seconds of the PageRank iterations.
    pub pagerank_seconds: f64,
    /// Seconds of the BFS.
    pub bfs_seconds: f64,
    /// The answers.
    pub answers: Answers,
    /// Far modes: misses (objects fetched on demand) during the kernels.
    #[serde(default)]
    pub misses: u64,
    /// Far modes: bytes fetched during the kernels.
    #[serde(default)]
    pub bytes_fetched: u64,
}

fn load(args: &Args) -> anyhow::Result<Csr> {
    match &args.edge_list {
        Some(p) => graph::read_edge_list(p),
        None => graph::generate(args.vertices, args.edges, args.seed),
    }
}

fn run_local(args: &Args) -> anyhow::Result<GraphRun> {
    let t = Instant::now();
    let g = load(args)?;
    if args.limit_after_build > 0 {
        // The build's scratch (the edge list) is freed: hand it back to the system, then let
        // the kernel swap out the rest above the budget before the kernels run.
        // SAFETY: malloc_trim only releases free heap memory; no pointer is invalidated.
        unsafe { libc::malloc_trim(0) };
        crate::kswap::tighten_own_limit(args.limit_after_build)?;
    }
    if args.child == Some(Mode::Paging) {
        // Built under the same loose budget as kernel swap; now down to the real one.
        farmem::paging::PagingAlloc::set_budget(args.budget_bytes as usize)
            .context("tightening the paging budget")?;
    }
    let build_seconds = t.elapsed().as_secs_f64();
    let (answers, pagerank_seconds, bfs_seconds) = local::run(&g, args.iters);
    Ok(GraphRun {
        build_seconds,
        pagerank_seconds,
        bfs_seconds,
        answers,
        misses: 0,
        bytes_fetched: 0,
    })
}

fn run_far(args: &Args, server: &str, budget: u64, agent: bool) -> anyhow::Result<GraphRun> {
    let t = Instant::now();
    let rt = crate::apps_far::runtime(server, budget)?;
    let fg = {
        let g = load(args)?;
        far::FarGraph::load(&rt, &g)?
    };
    let build_seconds = t.elapsed().as_secs_f64();
    let before = rt.stats();
    let (answers, pagerank_seconds, bfs_seconds) = far::run(&rt, &fg, args.iters, agent)?;
    let after = rt.stats();
    Ok(GraphRun {
        build_seconds,
        pagerank_seconds,
        bfs_seconds,
        answers,
        misses: after.misses - before.misses,
        bytes_fetched: after.bytes_fetched - before.bytes_fetched,
    })
}

/// The vertex and edge counts of the graph the options describe (reads an edge-list file).
fn graph_size(args: &Args) -> anyhow::Result<(u64, u64)> {
    match &args.edge_list {
        Some(p) => {
            let g = graph::read_edge_list(p)?;
            Ok((g.vertices() as u64, g.edges() as u64))
        }
        None => Ok((args.vertices, args.edges)),
    }
}

/// Memory the graph build needs beyond the working set: the edge list (8 bytes per edge) and
/// allocator slack. Kernel-swap children build under a limit this much looser than their
/// budget, then tighten it.
fn build_scratch_bytes(ws: u64, edges: u64) -> u64 {
    ws + 8 * edges + (64 << 20)
}

fn child_args(args: &Args, mode: Mode, budget: u64, server: &str) -> Vec<String> {
    let tighten = if matches!(mode, Mode::Kswap | Mode::KswapNet) {
        budget + modes::KSWAP_SLACK
    } else {
        0
    };
    let mut v: Vec<String> = [
        "graph",
        "--child",
        mode.name(),
        "--budget-bytes",
        &budget.to_string(),
        "--vertices",
        &args.vertices.to_string(),
        "--edges",
        &args.edges.to_string(),
        "--seed",
        &args.seed.to_string(),
        "--iters",
        &args.iters.to_string(),
        "--server",
        server,
        "--limit-after-build",
        &tighten.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(p) = &args.edge_list {
        v.push("--edge-list".into());
        v.push(p.display().to_string());
    }
    v
}

/// The graph's size: working set and edge count.
#[derive(Clone, Copy, Debug)]
struct Size {
    ws: u64,
    edges: u64,
}

fn run_mode(args: &Args, size: Size, mode: Mode, ratio: f64, server: &str) -> ModeRun {
    let ws = size.ws;
    let budget = if mode == Mode::Local {
        0
    } else {
        (ws as f64 * ratio) as u64
    };
    let ratio = if mode == Mode::Local { 1.0 } else { ratio };
    let result: anyhow::Result<GraphRun> = match mode {
        Mode::Local => run_local(args),
        Mode::Object => run_far(args, server, budget, true),
        Mode::ObjectNoAgent => run_far(args, server, budget, false),
        Mode::Paging | Mode::Kswap | Mode::KswapNet => {
            match modes::run_child_mode_with_setup(
                mode,
                &child_args(args, mode, budget, server),
                budget,
                build_scratch_bytes(ws, size.edges),
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
            seconds: r.pagerank_seconds + r.bfs_seconds,
            throughput: None,
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
                // The graph is built under a budget as loose as kernel swap's build limit
                // (the counting sort scatters every edge to a random page of the edge array),
                // then the budget is tightened before the kernels run.
                let (n, m) = graph_size(&args)?;
                let build =
                    build_scratch_bytes(graph::working_set_bytes(n, m), m).max(args.budget_bytes);
                crate::apps_far::with_paging(server, build, || run_local(&args))?
            }
            _ => run_local(&args)?,
        };
        return modes::print_child_result(&run);
    }
    let (n, m) = graph_size(&args)?;
    let ws = graph::working_set_bytes(n, m);
    let size = Size { ws, edges: m };
    if !args.json {
        eprintln!(
            "graph: {n} vertices, {m} edges; working set {:.1} MiB",
            ws as f64 / (1 << 20) as f64
        );
    }
    let own_server = crate::apps_far::LoopbackServer::unless(args.server.as_deref())?;
    let server = args
        .server
        .clone()
        .or_else(|| own_server.as_ref().map(|s| s.addr().to_owned()))
        .unwrap_or_default();
    let mut runs = Vec::new();
    if args.modes.contains(&Mode::Local) {
        runs.push(run_mode(&args, size, Mode::Local, 1.0, &server));
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
            runs.push(run_mode(&args, size, mode, ratio, &server));
        }
    }
    let answers: Vec<&serde_json::Value> = runs
        .iter()
        .filter_map(|r| r.detail.get("answers"))
        .collect();
    let agree = answers.windows(2).all(|w| w[0] == w[1]);
    let dir = modes::results_dir(&args.out)?;
    let summary = serde_json::json!({
        "bench": "graph",
        "vertices": n,
        "edges": m,
        "seed": args.seed,
        "edge_list": args.edge_list,
        "iters": args.iters,
        "working_set_bytes": ws,
        "answers_agree": agree,
        "runs": runs,
    });
    modes::write_json(&dir.join("graph.json"), &summary)?;
    let secs =
        |k: &'static str| move |r: &ModeRun| r.detail.get(k).and_then(serde_json::Value::as_f64);
    modes::plot_runs(
        &dir.join("graph.png"),
        "Graph: PageRank + BFS",
        "time (s)",
        &runs,
        |r| Some(r.seconds),
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        modes::print_table(&runs, false);
        let pr = secs("pagerank_seconds");
        let bfs = secs("bfs_seconds");
        let base = runs
            .iter()
            .find(|r| r.mode == Mode::Local && r.skipped.is_none())
            .and_then(pr);
        for r in runs.iter().filter(|r| r.skipped.is_none()) {
            let p = pr(r).unwrap_or(0.0);
            println!(
                "{:<26} {:>4.0}%  PageRank {:>8.3} s ({:>6}), BFS {:>8.3} s, misses {}",
                r.mode.label(),
                r.local_mem_ratio * 100.0,
                p,
                base.map_or("-".into(), |b| format!("{:.2}x", p / b)),
                bfs(r).unwrap_or(0.0),
                r.detail
                    .get("misses")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
            );
        }
        println!("answers identical across modes: {agree}");
    }
    anyhow::ensure!(agree, "modes gave different answers");
    Ok(())
}
