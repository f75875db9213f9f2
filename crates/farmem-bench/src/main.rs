//! `farmem-bench`: benchmarks, paper experiments and plots.
//!
//! Each subcommand lives in its own module and exposes `Args` (clap) and `run`.

mod apps;
mod apps_far;
mod common;
mod containers;
mod demo;
mod demo_pool;
mod deref;
mod durable;
mod failover;
mod graph;
mod hot_access;
mod kswap;
mod mapinsert;
mod modes;
mod netswap;
mod paging;
mod plot;
mod pool_rig;
mod run_numpy;
mod run_pandas;
mod smaps;
mod taxi;
#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod test_support;
mod transport;
mod transport_refs;
mod web;
mod zipf;

use clap::{Parser, Subcommand};

/// farmem benchmarks and paper experiments.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: taxi analysis at 25% local memory against a loopback server.
    Demo(demo::Args),
    /// Memory-server transport: get/put throughput and latency vs a bare TCP round trip.
    Transport(transport::Args),
    /// Far-pointer deref costs (hot, cold) and evacuator stalls (AIFM figures 12 and 14).
    Deref(deref::Args),
    /// Remoteable containers: far scan, Zipf hash map, offloaded aggregates.
    Containers(containers::Args),
    /// Hot container access (sequential, strided, random; read and write) against `Vec`.
    HotAccess(hot_access::Args),
    /// FarHashMap inserts of fresh keys vs pipelined puts, and server memory per entry.
    MapInsert(mapinsert::Args),
    /// Paging mode vs object mode vs kernel swap vs all-local.
    Paging(paging::Args),
    /// NYC-taxi DataFrame analysis across modes (AIFM figure 7).
    Taxi(taxi::Args),
    /// Web-service frontend across modes (AIFM figure 6).
    Web(web::Args),
    /// Graph analytics (PageRank, BFS) on a power-law CSR graph across modes.
    Graph(graph::Args),
    /// Kernel swap to a memory server over TCP: self-check and page-touch figures (root).
    Netswap(netswap::Args),
    /// Memory pool with replicas over three loopback servers: overhead, failures, repair, drain.
    Failover(failover::Args),
    /// pandas taxi steps under a memory cgroup: plain, kernel swap over TCP, farmem-run.
    RunPandas(run_pandas::Args),
    /// numpy's reduction over an array 4x the local budget under farmem-run, against bulk.
    RunNumpy(run_numpy::Args),
    /// The cost of `farmem-server --data-dir` on puts, and recovery time per GiB.
    Durable(durable::Args),
    /// Internal: a memory server child process (used by `demo --servers` and `failover`).
    #[command(hide = true)]
    Serve(pool_rig::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo(a) => demo::run(a),
        Command::Transport(a) => transport::run(a),
        Command::Deref(a) => deref::run(a),
        Command::Containers(a) => containers::run(a),
        Command::HotAccess(a) => hot_access::run(a),
        Command::MapInsert(a) => mapinsert::run(a),
        Command::Paging(a) => paging::run(a),
        Command::Taxi(a) => taxi::run(a),
        Command::Web(a) => web::run(a),
        Command::Graph(a) => graph::run(a),
        Command::Netswap(a) => netswap::run(a),
        Command::Failover(a) => failover::run(a),
        Command::RunPandas(a) => run_pandas::run(a),
        Command::RunNumpy(a) => run_numpy::run(a),
        Command::Durable(a) => durable::run(a),
        Command::Serve(a) => pool_rig::serve(a),
    }
}
