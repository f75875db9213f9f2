//! `failover --parts ceiling`: what the machine allows a copy between two servers, against the
//! bulk `get_many` rate, with no application running.
//!
//! - *through the client*: `get_many` of about 1 MiB of 8 KiB objects from one server, then
//!   `put_many` of the same bytes to another, with 1 and 4 copies in flight (each byte crosses
//!   the loopback twice and the client's CPU once); the 4-in-flight copy both over the objects
//!   the first copy made (the target's memory warm) and to new ones (fresh memory, as a
//!   drain's target has);
//! - *the pool's mover*, idle: a two-replica pool of 8 KiB objects on three servers, one drained
//!   with nothing else running, copies through the client and server to server.
//!
//! Each round measures the bulk rate next to its copies; the shares are medians over rounds.

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

/// Rounds of the ceiling: each measures the bulk rate next to its copies, and the shares
/// reported are the medians over the rounds (the machine is shared: single figures vary 2x).
const ROUNDS: usize = 3;

/// The ceilings measured: medians over [`ROUNDS`] rounds, in MiB/s, and as shares of the bulk
/// rate measured in the same round.
#[derive(Debug, Serialize)]
pub(super) struct Ceiling {
    /// Bytes copied by each measurement.
    bytes: u64,
    /// The bulk `get_many` rate, measured in each round, MiB/s.
    bulk: f64,
    /// Through the client, one batch at a time, MiB/s.
    client_copy_1: f64,
    /// Through the client, four batches in flight, over objects the target already holds (its
    /// memory is warm), MiB/s.
    client_copy_4: f64,
    /// Through the client, four batches in flight, to new objects (the target touches fresh
    /// memory, as a drain's target does), MiB/s.
    client_copy_4_fresh: f64,
    /// The pool draining a member with nothing else running, copies through the client, MiB/s.
    idle_drain_client: f64,
    /// The same, server to server, MiB/s.
    idle_drain_push: f64,
    /// Median shares of the bulk rate of the same round, in the order of the fields above.
    shares: Shares,
}

/// Median shares of the same round's bulk rate.
#[derive(Debug, Default, Serialize)]
pub(super) struct Shares {
    client_copy_1: f64,
    client_copy_4: f64,
    client_copy_4_fresh: f64,
    idle_drain_client: f64,
    idle_drain_push: f64,
}

fn connect(p: &ServerProc) -> anyhow::Result<TcpBackend> {
    TcpBackend::connect(TcpConfig::new([p.addr()]).connections_per_server(2))
        .context("connecting for the copy ceiling")
}

/// Copies `ids` from `src` to `dst` (as ids `offset` higher) in 1 MiB batches with `threads`
/// in flight; MiB/s.
fn copy(
    src: &TcpBackend,
    dst: &TcpBackend,
    ids: &[ObjectId],
    threads: usize,
    offset: u64,
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
                            .map(|(&i, d)| (i + offset, d.as_slice()))
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

/// One round: the bulk rate, then each copy; MiB/s in [`Ceiling`]'s field order.
fn round(a: &Args) -> anyhow::Result<[f64; 6]> {
    let bulk = super::bulk_bandwidth(a)?;
    let (s, d) = (ServerProc::start()?, ServerProc::start()?);
    let (src, dst) = (Arc::new(connect(&s)?), Arc::new(connect(&d)?));
    let n = ((a.bulk_mib << 20) as usize / OBJ).max(BATCH);
    let ids: Vec<ObjectId> = (1..=n as u64).collect();
    let payload = vec![0x3cu8; OBJ];
    for b in ids.chunks(BATCH) {
        let items: Vec<(ObjectId, &[u8])> = b.iter().map(|&i| (i, &payload[..])).collect();
        src.put_many(&items)?;
    }
    let client_copy_1 = copy(&src, &dst, &ids, 1, 0)?;
    let client_copy_4 = copy(&src, &dst, &ids, 4, 0)?;
    let client_copy_4_fresh = copy(&src, &dst, &ids, 4, n as u64)?;
    drop((src, dst, s, d));
    // A drained member holds about 2/3 of the pool's bytes: size the pool for `bulk_mib` moved.
    let pool_n = n * 3 / 2;
    let idle_drain_client = idle_drain(a, pool_n, false)?;
    let idle_drain_push = idle_drain(a, pool_n, true)?;
    Ok([
        bulk,
        client_copy_1,
        client_copy_4,
        client_copy_4_fresh,
        idle_drain_client,
        idle_drain_push,
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Measures the ceilings with `a.bulk_mib` MiB per copy, [`ROUNDS`] times.
pub(super) fn run(a: &Args) -> anyhow::Result<Ceiling> {
    eprintln!("ceiling: copies between two servers with nothing else running");
    let rounds = (0..ROUNDS)
        .map(|_| round(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mid = |k: usize| median(rounds.iter().map(|r| r[k]).collect());
    let share = |k: usize| median(rounds.iter().map(|r| r[k] / r[0].max(1e-9)).collect());
    let n = ((a.bulk_mib << 20) as usize / OBJ).max(BATCH);
    Ok(Ceiling {
        bytes: (n * OBJ) as u64,
        bulk: mid(0),
        client_copy_1: mid(1),
        client_copy_4: mid(2),
        client_copy_4_fresh: mid(3),
        idle_drain_client: mid(4),
        idle_drain_push: mid(5),
        shares: Shares {
            client_copy_1: share(1),
            client_copy_4: share(2),
            client_copy_4_fresh: share(3),
            idle_drain_client: share(4),
            idle_drain_push: share(5),
        },
    })
}

/// Prints the ceilings as shares of the bulk rate measured in the same rounds.
pub(super) fn print(c: &Ceiling) {
    let pct = |x: f64| x * 100.0;
    let s = &c.shares;
    println!(
        "ceiling ({:.0} MiB of 8 KiB objects, nothing else running, medians of {ROUNDS} rounds, \
         shares of the bulk rate of the same round, {:.0} MiB/s): copy through the client \
         {:.0} MiB/s ({:.0}% of bulk) one batch at a time, {:.0} MiB/s ({:.0}%) four in flight \
         over objects held, {:.0} MiB/s ({:.0}%) four in flight to new objects; pool drain \
         {:.0} MiB/s ({:.0}%) through the client, {:.0} MiB/s ({:.0}%) server to server",
        mib(c.bytes),
        c.bulk,
        c.client_copy_1,
        pct(s.client_copy_1),
        c.client_copy_4,
        pct(s.client_copy_4),
        c.client_copy_4_fresh,
        pct(s.client_copy_4_fresh),
        c.idle_drain_client,
        pct(s.idle_drain_client),
        c.idle_drain_push,
        pct(s.idle_drain_push),
    );
}
