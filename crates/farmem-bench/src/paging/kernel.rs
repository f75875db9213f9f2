//! Kernel swap (zram, or over TCP to a memory server) running the same workload.

use anyhow::Context;

use super::Args;
use super::child::ServerProcess;
use super::report::{Report, phases_json};
use super::workload::Phases;
use crate::kswap;

/// The all-local workload in a child under a memory cgroup of `budget` bytes swapping to zram
/// (`net == false`) or to a memory server over TCP in another process (`net == true`). `None`
/// when the device is not available here.
pub(super) fn kernel_swap(
    args: &Args,
    budget: usize,
    ws: usize,
    net: bool,
    r: &mut Report,
) -> anyhow::Result<Option<Phases>> {
    let (key, label) = if net {
        ("kswap_net", "kernel swap over TCP")
    } else {
        ("kswap", "kernel swap (zram)")
    };
    let why = if net {
        crate::netswap::available()
    } else {
        kswap::available()
    };
    if let Err(why) = why {
        println!("{label}: skipped ({why})");
        r.text(&format!("{key}_skipped"), &why);
        return Ok(None);
    }
    let exe = std::env::current_exe().context("locating the current binary")?;
    let (b, f, o) = (
        args.budget_mib.to_string(),
        args.factor.to_string(),
        args.ops.to_string(),
    );
    let child_args = [
        "paging",
        "--kswap-child",
        "--budget-mib",
        &b,
        "--factor",
        &f,
        "--ops",
        &o,
    ];
    // The swap server: like the other modes' servers, a separate process on loopback.
    let server = if net {
        Some(ServerProcess::start(2 * ws as u64, true)?)
    } else {
        None
    };
    let device = match &server {
        Some(s) => kswap::SwapDevice::Tcp { server: &s.addr },
        None => kswap::SwapDevice::Zram,
    };
    let run = kswap::run_under_retrying(budget as u64, device, &exe, &child_args)?;
    drop(server);
    let out = String::from_utf8_lossy(&run.output.stdout);
    anyhow::ensure!(
        run.output.status.success(),
        "{label} child failed ({}): {}",
        run.output.status,
        String::from_utf8_lossy(&run.output.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("child output is not JSON: {out}"))?;
    let get = |k: &str| {
        figures[k]
            .as_f64()
            .with_context(|| format!("child output lacks {k}: {out}"))
    };
    let p = Phases {
        populate_s: get("local_populate_s")?,
        read_ops_s: get("local_read_ops_s")?,
        write_ops_s: get("local_write_ops_s")?,
        checksum: figures["local_read_checksum"]
            .as_u64()
            .with_context(|| format!("child output lacks local_read_checksum: {out}"))?,
    };
    phases_json(r, key, &p);
    r.num(&format!("{key}_cgroup_peak_bytes"), run.peak_bytes as f64);
    r.num(&format!("{key}_oom_retries"), f64::from(run.oom_retries));
    let swapped = match &run.net {
        Some(n) => {
            anyhow::ensure!(
                n.daemon.backend_errors == 0,
                "{label}: {} swap requests to the memory server failed",
                n.daemon.backend_errors
            );
            r.num("kswap_net_pages_out", n.daemon.pages_written as f64);
            r.num("kswap_net_pages_in", n.daemon.pages_read as f64);
            r.num(
                "kswap_net_server_bytes_written",
                n.server_bytes_written as f64,
            );
            format!(
                "{} MiB out, {} MiB in over TCP",
                n.daemon.pages_written >> 8,
                n.daemon.pages_read >> 8
            )
        }
        None => {
            r.num("kswap_zram_peak_bytes", run.zram_peak_bytes as f64);
            r.num(
                "kswap_zram_peak_compr_bytes",
                run.zram_peak_compr_bytes as f64,
            );
            format!("zram, peak {} MiB swapped out", run.zram_peak_bytes >> 20)
        }
    };
    println!(
        "{:<13} reads {:>12.0} ops/s   writes {:>12.0} ops/s   ({swapped})",
        format!("{}:", if net { "kswap-net" } else { "kernel swap" }),
        p.read_ops_s,
        p.write_ops_s
    );
    Ok(Some(p))
}
