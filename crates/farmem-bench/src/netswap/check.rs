//! `farmem-bench netswap`: a self-check and small measurement of kernel swap over TCP.
//!
//! A child process writes a distinct pattern into every 4 KiB page of a buffer larger than its
//! memory-cgroup limit, reads it all back (forcing swap-ins), then reads random pages; the harness
//! reports how many pages went to the memory server and fails when a page came back wrong.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::kswap::{self, SwapDevice};
use crate::modes::{self, CHILD_RESULT};

/// Options of `farmem-bench netswap`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Buffer the child touches, MiB.
    #[arg(long, default_value_t = 64)]
    mib: u64,
    /// Memory-cgroup limit of the child, MiB.
    #[arg(long, default_value_t = 16)]
    limit_mib: u64,
    /// Random page reads in the last phase.
    #[arg(long, default_value_t = 20_000)]
    random_reads: u64,
    /// Memory server (`host:port`); default: one on loopback in this process.
    #[arg(long)]
    server: Option<String>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: be the child that touches the buffer.
    #[arg(long, hide = true)]
    touch_child: bool,
}

/// What the child measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TouchResult {
    /// Pages in the buffer.
    pub pages: u64,
    /// Pages whose contents were wrong when read back (must be 0).
    pub bad_pages: u64,
    /// Seconds to write every page.
    pub write_s: f64,
    /// Seconds to read and check every page.
    pub verify_s: f64,
    /// Random 4 KiB page reads per second (one word per page).
    pub random_page_reads_s: f64,
}

/// The whole check's result.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// The child's figures.
    pub child: TouchResult,
    /// The limit in bytes.
    pub limit_bytes: u64,
    /// Peak memory of the cgroup.
    pub cgroup_peak_bytes: u64,
    /// Swap device counters.
    pub net: crate::netswap::NetSwapStats,
    /// Largest growth of the system's page cache during the run (see
    /// [`kswap::SwapRun::page_cache_growth_bytes`]).
    pub page_cache_growth_bytes: u64,
}

const PAGE: usize = 4096;

fn word(page: u64, i: u64) -> u64 {
    (page.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i).rotate_left(17)
}

fn touch(mib: u64, random_reads: u64) -> TouchResult {
    let pages = mib * 256;
    let words = PAGE / 8;
    let mut buf = vec![0u64; pages as usize * words];
    let t = Instant::now();
    for (p, page) in buf.chunks_mut(words).enumerate() {
        for (i, w) in page.iter_mut().enumerate() {
            *w = word(p as u64, i as u64);
        }
    }
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let bad_pages = buf
        .chunks(words)
        .enumerate()
        .filter(|(p, page)| {
            page.iter()
                .enumerate()
                .any(|(i, &w)| w != word(*p as u64, i as u64))
        })
        .count() as u64;
    let verify_s = t.elapsed().as_secs_f64();
    let mut x = 0x853c_49e6_748f_ea9bu64;
    let mut sum = 0u64;
    let t = Instant::now();
    for _ in 0..random_reads {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = x % pages;
        sum = sum.wrapping_add(buf[(p as usize) * words + (x as usize >> 40) % words]);
    }
    std::hint::black_box(sum);
    let random_page_reads_s = random_reads as f64 / t.elapsed().as_secs_f64().max(1e-9);
    TouchResult {
        pages,
        bad_pages,
        write_s,
        verify_s,
        random_page_reads_s,
    }
}

/// Runs the check.
///
/// # Errors
/// Bad options, set-up failures, a child that failed or read back wrong data.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.mib > 0, "--mib must be positive");
    anyhow::ensure!(args.limit_mib > 0, "--limit-mib must be positive");
    if args.touch_child {
        return modes::print_child_result(&touch(args.mib, args.random_reads));
    }
    if let Err(why) = crate::netswap::available() {
        println!("kernel swap over TCP: skipped ({why})");
        return Ok(());
    }
    let own = crate::apps_far::LoopbackServer::unless(args.server.as_deref())?;
    let server = args
        .server
        .clone()
        .or_else(|| own.as_ref().map(|s| s.addr().to_owned()))
        .unwrap_or_default();
    let exe = std::env::current_exe().context("locating the current binary")?;
    let (mib, reads) = (args.mib.to_string(), args.random_reads.to_string());
    let child_args = [
        "netswap",
        "--touch-child",
        "--mib",
        &mib,
        "--random-reads",
        &reads,
    ];
    let limit = args.limit_mib << 20;
    let run = kswap::run_under(
        limit,
        SwapDevice::Tcp { server: &server },
        &exe,
        &child_args,
    )?;
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    anyhow::ensure!(
        run.output.status.success(),
        "netswap child failed ({}): {}",
        run.output.status,
        String::from_utf8_lossy(&run.output.stderr).trim()
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(CHILD_RESULT))
        .context("netswap child printed no result")?;
    let child: TouchResult = serde_json::from_str(line)?;
    let result = CheckResult {
        child,
        limit_bytes: limit,
        cgroup_peak_bytes: run.peak_bytes,
        net: run.net.unwrap_or_default(),
        page_cache_growth_bytes: run.page_cache_growth_bytes,
    };
    println!(
        "kernel swap over TCP: {} MiB touched under a {} MiB limit; {} MiB swapped out, {} MiB \
         in; memory server received {} MiB; {} bad pages; write {:.2} s, verify {:.2} s, {:.0} \
         random 4 KiB page reads/s; system page cache grew by at most {} MiB meanwhile; up to {} \
         FUSE requests in flight",
        args.mib,
        args.limit_mib,
        result.net.daemon.pages_written >> 8,
        result.net.daemon.pages_read >> 8,
        result.net.server_bytes_written >> 20,
        result.child.bad_pages,
        result.child.write_s,
        result.child.verify_s,
        result.child.random_page_reads_s,
        result.page_cache_growth_bytes >> 20,
        result.net.daemon.max_in_flight
    );
    if let Some(path) = &args.json {
        modes::write_json(path, &result)?;
    }
    anyhow::ensure!(
        result.child.bad_pages == 0,
        "{} pages came back wrong from swap",
        result.child.bad_pages
    );
    Ok(())
}
