//! `farmem-bench demo`: the main job. With no set-up, starts a memory server on loopback,
//! generates a modest trip data set, runs the taxi analysis all-local and in farmem object mode
//! at 25% local memory, and prints the answers and the comparison.

use std::path::PathBuf;

use crate::modes::{self, Mode};

/// Options of `farmem-bench demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Synthetic trips (about 140 bytes each in memory).
    #[arg(long, default_value_t = 6_000_000)]
    pub rows: u64,
    /// Local memory as a share of the working set.
    #[arg(long, default_value = "25%", value_parser = modes::parse_ratio)]
    pub local_mem: f64,
    /// Results directory.
    #[arg(long, default_value = "results/demo")]
    pub out: PathBuf,
    /// Run over a pool of this many memory servers (child processes) instead of one loopback
    /// server (0: one server, no pool).
    #[arg(long, default_value_t = 0)]
    pub servers: usize,
    /// Copies of every object in the pool (with --servers).
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Erasure-code the pool as `K+M` instead of replicating it (with --servers, at least K+M
    /// of them): large objects coded, small ones on M + 1 servers.
    #[arg(long, value_parser = crate::failover::parse_scheme)]
    pub coded: Option<(u8, u8)>,
    /// Kill one server with SIGKILL in the middle of the analysis (with --servers).
    #[arg(long)]
    pub kill_one: bool,
}

/// Runs the demo.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.servers > 0 {
        return crate::demo_pool::run(&args);
    }
    println!(
        "farmem demo: NYC-taxi analysis on {} synthetic trips, all-local vs farmem object mode at {:.0}% local memory",
        args.rows,
        args.local_mem * 100.0
    );
    let taxi_args = crate::taxi::Args {
        rows: args.rows,
        csv: None,
        input: None,
        write_parquet: None,
        seed: 2016,
        local_mem: vec![args.local_mem],
        modes: vec![Mode::Local, Mode::Object],
        json: false,
        out: args.out.clone(),
        write_csv: None,
        child: None,
        budget_bytes: 0,
        server: None,
        peers: Vec::new(),
        sweep_rows: Vec::new(),
        child_time_limit: None,
    };
    let (runs, agree) = crate::taxi::run_modes(&taxi_args, false)?;
    if let Some(a) = runs.iter().find_map(|r| r.detail.get("answers")?.as_str()) {
        println!("\n{a}\n");
    }
    modes::print_table(&runs, false);
    crate::taxi::print_traffic(&runs);
    let dir = modes::results_dir(&args.out)?;
    modes::write_json(
        &dir.join("demo.json"),
        &serde_json::json!({ "bench": "demo", "rows": args.rows, "answers_agree": agree, "runs": runs }),
    )?;
    println!("answers identical across modes: {agree}");
    anyhow::ensure!(agree, "modes gave different answers");
    if let Some(r) = runs.iter().find(|r| r.skipped.is_some()) {
        anyhow::bail!(
            "{} did not run: {}",
            r.mode.label(),
            r.skipped.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}
