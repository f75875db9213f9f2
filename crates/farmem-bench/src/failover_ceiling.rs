//! `failover --parts ceiling`: what the machine allows a copy between two servers, against the
//! bulk `get_many` rate, with no application running.
//!
//! - *through the client*: `get_many` of about 1 MiB of 8 KiB objects from one server, then
//!   `put_many` of the same bytes to another, with 1 and 4 copies in flight (each byte crosses
//!   the loopback twice and the client's CPU once);
//! - *the pool's mover*, idle: a two-replica pool of 8 KiB objects on three servers, one drained
//!   with nothing else running, copies through the client and server to server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use farmem::backend::{MemberId, Redundancy, TcpBackend, TcpConfig};
use farmem::{Backend, ObjectId};
use serde::Serialize;

use super::{Args, mib};
use crate::pool_rig::{PoolRig, ServerProc};

/// Object size of the copies (the web frontend's elements).
const OBJ: usize = 8 << 10;
/// Objects per copy batch (1 MiB).
const BATCH: usize = 128;

/// The ceilings measured.
#[derive(Debug, Serialize)]
pub(super) struct Ceiling {
    /// Bytes copied by each measurement.
    bytes: u64,
    /// Through the client, one batch at a time, MiB/s.
    client_copy_1: f64,
    /// Through the client, four batches in flight, MiB/s.
    client_copy_4: f64,
    /// The pool draining a member with nothing else running, copies through the client, MiB/s.
    idle_drain_client: f64,
    /// The same, server to server, MiB/s.
    idle_drain_push: f64,
}

fn connect(p: &ServerProc) -> anyhow::Result<TcpBackend> {
    TcpBackend::connect(TcpConfig::new([p.addr()]).connections_per_server(2))
        .context("connecting for the copy ceiling")
}

/// Copies `ids` from `src` to `dst` in 1 MiB batches with `threads` in flight; MiB/s.
fn copy(
    src: &TcpBackend,
    dst: &TcpBackend,
    ids: &[ObjectId],
    threads: usize,
) -> anyhow::Result<f64> {
    let next = AtomicUsize::new(0);
    let batches: Vec<&[ObjectId]> = ids.chunks(BATCH).collect();
    let t = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let Some(b) = batches.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            return Ok(());
                        };
                        let data = src.get_many(b)?;
                        let items: Vec<(ObjectId, &[u8])> = b
                            .iter()
                            .zip(&data)
                            .map(|(&i, d)| (i, d.as_slice()))
                            .collect();
                        dst.put_many(&items)?;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("copy thread panicked")))?;
        }
        Ok(())
    })?;
    Ok(mib((ids.len() * OBJ) as u64) / t.elapsed().as_secs_f64().max(1e-9))
}

/// A two-replica pool of `n` 8 KiB objects on three servers; member 1 drained idle; MiB/s.
fn idle_drain(a: &Args, n: usize, push: bool) -> anyhow::Result<f64> {
    let rig = PoolRig::start_with(
        3,
        Redundancy::replicas(2),
        std::time::Duration::from_millis(a.timeout_ms),
        None,
        push,
        a.repair_share,
    )?;
    let payload = vec![0xa5u8; OBJ];
    let ids: Vec<ObjectId> = (1..=n as u64).collect();
    for b in ids.chunks(BATCH) {
        let items: Vec<(ObjectId, &[u8])> = b.iter().map(|&i| (i, &payload[..])).collect();
        rig.pool.put_many(&items)?;
    }
    let before = rig.pool.repair_stats().bytes_copied;
    let t = Instant::now();
    rig.pool
        .drain_member(MemberId(1))
        .context("draining idle")?;
    let secs = t.elapsed().as_secs_f64();
    let copied = rig.pool.repair_stats().bytes_copied - before;
    for b in ids.chunks(4096) {
        for d in rig.pool.get_many(b)? {
            anyhow::ensure!(d == payload, "a drained object changed");
        }
    }
    Ok(mib(copied) / secs.max(1e-9))
}

/// Measures the ceilings with `a.bulk_mib` MiB per copy.
pub(super) fn run(a: &Args) -> anyhow::Result<Ceiling> {
    eprintln!("ceiling: copies between two servers with nothing else running");
    let (s, d) = (ServerProc::start()?, ServerProc::start()?);
    let (src, dst) = (Arc::new(connect(&s)?), Arc::new(connect(&d)?));
    let n = ((a.bulk_mib << 20) as usize / OBJ).max(BATCH);
    let ids: Vec<ObjectId> = (1..=n as u64).collect();
    let payload = vec![0x3cu8; OBJ];
    for b in ids.chunks(BATCH) {
        let items: Vec<(ObjectId, &[u8])> = b.iter().map(|&i| (i, &payload[..])).collect();
        src.put_many(&items)?;
    }
    let client_copy_1 = copy(&src, &dst, &ids, 1)?;
    let client_copy_4 = copy(&src, &dst, &ids, 4)?;
    drop((src, dst, s, d));
    // A drained member holds about 2/3 of the pool's bytes: size the pool for `bulk_mib` moved.
    let pool_n = n * 3 / 2;
    let idle_drain_client = idle_drain(a, pool_n, false)?;
    let idle_drain_push = idle_drain(a, pool_n, true)?;
    Ok(Ceiling {
        bytes: (n * OBJ) as u64,
        client_copy_1,
        client_copy_4,
        idle_drain_client,
        idle_drain_push,
    })
}

/// Prints the ceilings as shares of `bulk` MiB/s.
pub(super) fn print(c: &Ceiling, bulk: f64) {
    let pct = |x: f64| x / bulk.max(1e-9) * 100.0;
    println!(
        "ceiling ({:.0} MiB of 8 KiB objects, nothing else running): copy through the client \
         {:.0} MiB/s ({:.0}% of bulk) one batch at a time, {:.0} MiB/s ({:.0}%) four in flight; \
         pool drain {:.0} MiB/s ({:.0}%) through the client, {:.0} MiB/s ({:.0}%) server to server",
        mib(c.bytes),
        c.client_copy_1,
        pct(c.client_copy_1),
        c.client_copy_4,
        pct(c.client_copy_4),
        c.idle_drain_client,
        pct(c.idle_drain_client),
        c.idle_drain_push,
        pct(c.idle_drain_push),
    );
}
