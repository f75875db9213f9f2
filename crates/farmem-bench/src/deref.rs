//! `farmem-bench deref`: far-pointer dereference costs and evacuator stalls (AIFM figures 12, 14).
//!
//! - Hot: dereferencing local, hot `FarBox<u64>`s vs `Box<u64>`s in the same loop shape.
//! - Cold: dereferencing a far 64 B / 4 KiB object (one fetch from a loopback memory server) vs a
//!   bare TCP round trip of the same size.
//! - Stalls: the longest single dereference of mutator threads working on their hot sets while
//!   another thread churns through new objects and the evacuator moves at least `--evac-bytes`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use farmem::{BackendConfig, FarBox, Pod, Runtime, RuntimeConfig};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

use crate::common::{self, Latency, TargetServer};

/// Options of `farmem-bench deref`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Objects in the hot set of the hot-deref loop.
    #[arg(long, default_value_t = 1024)]
    hot_objects: usize,
    /// Passes over the hot set per measurement (one side of a pair).
    #[arg(long, default_value_t = 200)]
    hot_passes: usize,
    /// Interleaved pairs of `FarBox` and `Box` measurements per hot-deref figure (the median
    /// ratio and its 10-90% spread are reported).
    #[arg(long, default_value_t = 201)]
    hot_pairs: usize,
    /// Cold dereferences measured per size.
    #[arg(long, default_value_t = 2000)]
    cold_samples: usize,
    /// Bytes the evacuator must move during the stall measurement.
    #[arg(long, default_value_t = 1 << 30)]
    evac_bytes: u64,
    /// Mutator threads during the stall measurement.
    #[arg(long, default_value_t = 1)]
    mutators: usize,
    /// Use this memory server instead of starting one on loopback.
    #[arg(long)]
    server: Option<String>,
    /// Only run the stall measurement (for iterating on the evacuator).
    #[arg(long)]
    stall_only: bool,
    /// Only run the hot-deref measurements.
    #[arg(long)]
    hot_only: bool,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.stall_only {
        let stall = max_stall(args.evac_bytes, args.mutators)?;
        print_stall(&stall);
        return Ok(());
    }
    let hot = hot_deref(args.hot_objects, args.hot_passes, args.hot_pairs, false)?;
    print_hot("hot deref", &hot, " (target <= 1.2; every hit counted)");
    let rand = hot_deref(args.hot_objects, args.hot_passes, args.hot_pairs, true)?;
    print_hot("hot deref in random order", &rand, " (target <= 1.3)");
    let large = hot_deref(LARGE_HOT_SET, 2, 11, false)?;
    print_hot(
        &format!("hot deref, {LARGE_HOT_SET} objects (beyond the caches)"),
        &large,
        "",
    );
    if args.hot_only {
        return Ok(());
    }

    let server = TargetServer::start(args.server.as_deref(), 4 << 30, None)?;
    let (cold_64, rtt_64) = cold_deref::<[u8; 64]>(&server.addr, args.cold_samples)?;
    let (cold_4k, rtt_4k) = cold_deref::<[u8; 4096]>(&server.addr, args.cold_samples)?;
    println!(
        "cold deref 64 B: {:.1} us (p50), bare TCP RTT {:.1} us, ratio {:.2} (target <= 1.3)",
        cold_64.p50_us,
        rtt_64.p50_us,
        cold_64.p50_us / rtt_64.p50_us
    );
    println!(
        "cold deref 4 KiB: {:.1} us (p50), bare TCP RTT {:.1} us, ratio {:.2}",
        cold_4k.p50_us,
        rtt_4k.p50_us,
        cold_4k.p50_us / rtt_4k.p50_us
    );

    let stall = max_stall(args.evac_bytes, args.mutators)?;
    print_stall(&stall);

    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "hot_deref_ns": hot.far_ns,
            "box_deref_ns": hot.box_ns,
            "hot_ratio": hot.ratio,
            "hot_deref_random_ns": rand.far_ns,
            "box_deref_random_ns": rand.box_ns,
            "hot_ratio_random": rand.ratio,
            "hot_deref_large_ns": large.far_ns,
            "box_deref_large_ns": large.box_ns,
            "hot_ratio_large": large.ratio,
            "hot": hot.json(),
            "hot_random": rand.json(),
            "hot_large": large.json(),
            "cold_64_us": cold_64.p50_us,
            "cold_4k_us": cold_4k.p50_us,
            "tcp_rtt_64_us": rtt_64.p50_us,
            "tcp_rtt_4k_us": rtt_4k.p50_us,
            "cold_64_ratio": cold_64.p50_us / rtt_64.p50_us,
            "cold_4k_ratio": cold_4k.p50_us / rtt_4k.p50_us,
            "max_stall_us": stall.max_us,
            "max_stall_reference_us": stall.reference_max_us,
            "p999_stall_us": stall.p999_us,
            "evacuated_bytes": stall.moved,
            "stall_hot_misses": stall.hot_misses,
            "stall_placement": stall.placement,
        });
        common::write_json(path, &v)?;
    }
    Ok(())
}

fn print_hot(what: &str, h: &Hot, target: &str) {
    println!(
        "{what}: FarBox {:.2} ns, Box {:.2} ns, ratio {:.2} (median of {} interleaved pairs, p10-p90 {:.2}-{:.2}){target}",
        h.far_ns, h.box_ns, h.ratio, h.pairs, h.ratio_p10, h.ratio_p90
    );
}

/// Objects in the second hot-deref loop, whose hot set does not fit in the CPU caches.
const LARGE_HOT_SET: usize = 1 << 20;

/// Figures of one hot-deref experiment: medians over interleaved `FarBox` / `Box` runs.
#[derive(Clone, Copy, Debug)]
struct Hot {
    /// Median nanoseconds per `FarBox` dereference.
    far_ns: f64,
    /// Median nanoseconds per `Box` dereference.
    box_ns: f64,
    /// Median of the per-pair ratios `far / box`.
    ratio: f64,
    /// 10th and 90th percentile of the per-pair ratios.
    ratio_p10: f64,
    ratio_p90: f64,
    /// Pairs measured.
    pairs: usize,
}

impl Hot {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "far_ns": self.far_ns,
            "box_ns": self.box_ns,
            "ratio_median": self.ratio,
            "ratio_p10": self.ratio_p10,
            "ratio_p90": self.ratio_p90,
            "pairs": self.pairs,
        })
    }
}

/// The `q` quantile (0..=1) of `v`, sorting it.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// One `FarBox` run: `passes` passes over `far` (in `order` if given); returns the sum.
#[inline(never)]
fn far_run(
    far: &[FarBox<u64>],
    order: Option<&[usize]>,
    passes: usize,
    s: &farmem::Scope<'_>,
) -> farmem::Result<u64> {
    let mut sum = 0u64;
    match order {
        Some(order) => {
            for _ in 0..passes {
                for &i in order {
                    sum += *far[i].read(s)?;
                }
                sum = black_box(sum);
            }
        }
        None => {
            for _ in 0..passes {
                for b in far {
                    sum += *b.read(s)?;
                }
                sum = black_box(sum);
            }
        }
    }
    Ok(sum)
}

/// One `Box` run, the same shape as [`far_run`].
#[inline(never)]
fn box_run(boxed: &[Box<u64>], order: Option<&[usize]>, passes: usize) -> u64 {
    let mut sum = 0u64;
    match order {
        Some(order) => {
            for _ in 0..passes {
                for &i in order {
                    sum += *boxed[i];
                }
                sum = black_box(sum);
            }
        }
        None => {
            for _ in 0..passes {
                for b in boxed {
                    sum += **b;
                }
                sum = black_box(sum);
            }
        }
    }
    sum
}

/// Hot dereferences of `n` objects: `pairs` pairs of a `FarBox` run and a `Box` run of `passes`
/// passes each, back to back (which one goes first alternates), so that both sides of a pair
/// see the same machine state. Reported: the median time of each side and the median and
/// spread of the per-pair ratios, which a preempted or disturbed run moves little.
///
/// With `random`, both loops visit the objects in the same shuffled order (through an index
/// array), so hardware prefetching and loop unrolling help neither side much.
///
/// Every hit is counted in the runtime's statistics; the run checks that none was missed.
fn hot_deref(n: usize, passes: usize, pairs: usize, random: bool) -> anyhow::Result<Hot> {
    let rt = Runtime::new(RuntimeConfig::new(256 << 20))?;
    let far: Vec<FarBox<u64>> = (0..n as u64)
        .map(|i| FarBox::new(&rt, i))
        .collect::<Result<_, _>>()?;
    let boxed: Vec<Box<u64>> = (0..n as u64).map(Box::new).collect();
    let expect: u64 = (0..n as u64).sum::<u64>() * passes as u64;
    let mut order: Vec<usize> = (0..n).collect();
    if random {
        // A fixed seed: the same order on every run.
        order.shuffle(&mut SmallRng::seed_from_u64(0x9e37_79b9_7f4a_7c15));
    }
    let order = random.then_some(order.as_slice());
    let per = |t: Instant| t.elapsed().as_nanos() as f64 / (n * passes) as f64;
    let time_far = || -> anyhow::Result<f64> {
        let hits_before = rt.stats().hits;
        let t = Instant::now();
        let s = rt.scope();
        let sum = far_run(black_box(&far), order, passes, &s)?;
        drop(s);
        let ns = per(t);
        anyhow::ensure!(sum == expect, "wrong far sum");
        let hits = rt.stats().hits - hits_before;
        anyhow::ensure!(
            hits == (n * passes) as u64,
            "{hits} hits counted for {} dereferences",
            n * passes
        );
        Ok(ns)
    };
    let time_box = || -> anyhow::Result<f64> {
        let t = Instant::now();
        let sum = box_run(black_box(&boxed), order, passes);
        let ns = per(t);
        anyhow::ensure!(sum == expect, "wrong box sum");
        Ok(ns)
    };
    // Warm-up: caches, branch predictors, CPU frequency.
    time_far()?;
    time_box()?;
    let (mut far_ns, mut box_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for p in 0..pairs.max(1) {
        let (f, b) = if p % 2 == 0 {
            let f = time_far()?;
            (f, time_box()?)
        } else {
            let b = time_box()?;
            (time_far()?, b)
        };
        far_ns.push(f);
        box_ns.push(b);
        ratios.push(f / b);
    }
    Ok(Hot {
        far_ns: quantile(&mut far_ns, 0.5),
        box_ns: quantile(&mut box_ns, 0.5),
        ratio: quantile(&mut ratios, 0.5),
        ratio_p10: quantile(&mut ratios, 0.1),
        ratio_p90: quantile(&mut ratios, 0.9),
        pairs: ratios.len(),
    })
}

/// Rounds in which cold dereferences and bare TCP round trips alternate, so that both see the
/// same machine state (loopback latency on a VM moves a lot with CPU placement and idle states).
const COLD_ROUNDS: usize = 10;

/// Latency of dereferencing an object that is only in far memory, and of a bare TCP round trip
/// of the same size, measured in alternating rounds: `(cold deref, bare TCP)`.
fn cold_deref<T: Pod>(addr: &str, samples: usize) -> anyhow::Result<(Latency, Latency)> {
    let rt = Runtime::new(
        RuntimeConfig::new(64 << 20).backend(BackendConfig::Servers {
            addrs: vec![addr.to_string()],
            token: String::new(),
        }),
    )
    .context("connecting to the memory server")?;
    let mut objs: Vec<FarBox<T>> = (0..samples)
        .map(|_| FarBox::new_zeroed(&rt))
        .collect::<Result<_, _>>()?;
    for o in &mut objs {
        o.flush()?;
        o.invalidate_local()?;
    }
    let mut ns = Vec::with_capacity(samples);
    let mut rtt = Vec::with_capacity(samples);
    let per_round = samples.div_ceil(COLD_ROUNDS);
    for round in objs.chunks(per_round) {
        for o in round {
            let s = rt.scope();
            let t = Instant::now();
            black_box(o.read(&s)?);
            ns.push(t.elapsed().as_nanos() as u64);
        }
        rtt.extend(common::tcp_rtt_samples(
            size_of::<T>(),
            round.len(),
            None,
            None,
        )?);
    }
    anyhow::ensure!(
        rt.stats().misses as usize >= samples,
        "objects were not far"
    );
    Ok((Latency::from_nanos(&mut ns), Latency::from_nanos(&mut rtt)))
}

struct Stall {
    max_us: f64,
    p999_us: f64,
    moved: u64,
    seconds: f64,
    /// Dereferences of the mutators' hot sets that had to fetch (their objects were evicted).
    hot_misses: u64,
    /// Where the threads ran.
    placement: String,
    /// Reference, same placement and duration: the longest single write of a thread doing the
    /// same loop on `Box`es while another thread churns through plain heap allocations (what
    /// the OS and the VM alone do to a pinned thread).
    reference_max_us: f64,
}

fn print_stall(stall: &Stall) {
    println!(
        "evacuator moved {} MiB in {:.1} s; longest mutator deref {:.0} us (target <= 1000), p99.9 {:.1} us; hot-set misses {}; {}",
        stall.moved >> 20,
        stall.seconds,
        stall.max_us,
        stall.p999_us,
        stall.hot_misses,
        stall.placement
    );
    println!(
        "reference: the same loop on Boxes next to a plain allocation churn, same placement and time: longest write {:.0} us",
        stall.reference_max_us
    );
}

/// Mutators time every dereference of their hot sets while a churn thread allocates objects
/// (which the evacuator must write back and evict) until it has moved `bytes`.
///
/// With two or more CPUs the mutators run on CPU 0 and the churn thread and the evacuator (which
/// inherits the affinity of the thread creating the runtime) on the last CPU, so that what is
/// measured is waiting on the runtime, not the OS scheduler time-slicing threads on one CPU.
fn max_stall(bytes: u64, mutators: usize) -> anyhow::Result<Stall> {
    let cpus = common::cpus();
    let (mutator_cpu, churn_cpu) = if cpus >= 2 {
        (Some(0), Some(cpus - 1))
    } else {
        (None, None)
    };
    let rt = common::on_cpu(churn_cpu, || Runtime::new(RuntimeConfig::new(128 << 20)))?;
    if let Some(c) = churn_cpu {
        common::pin_to_cpu(c);
    }
    let placement = match (mutator_cpu, churn_cpu) {
        (Some(m), Some(c)) => format!("mutators pinned to CPU {m}, churn + evacuator to CPU {c}"),
        _ => "threads not pinned (one CPU)".to_string(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let start = rt.stats();
    let moved = |rt: &Runtime| {
        let s = rt.stats();
        (s.bytes_written_back - start.bytes_written_back)
            + (s.objects_compacted - start.objects_compacted) * 4096
    };
    let (samples, total) = std::thread::scope(|sc| -> anyhow::Result<(Vec<u64>, usize)> {
        let mut handles = Vec::new();
        for _ in 0..mutators {
            let rt = rt.clone();
            let stop = stop.clone();
            handles.push(sc.spawn(move || -> anyhow::Result<(Vec<u64>, usize)> {
                if let Some(c) = mutator_cpu {
                    common::pin_to_cpu(c);
                }
                let mut hot: Vec<FarBox<[u64; 512]>> = (0..256)
                    .map(|i| FarBox::new(&rt, [i; 512]))
                    .collect::<Result<_, _>>()?;
                // Only samples above 1 us are kept (with the total count), to bound memory.
                let mut slow = Vec::new();
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let s = rt.scope();
                    let i = k % hot.len();
                    let t = Instant::now();
                    let v = hot[i].write(&s)?;
                    v[k % 512] += 1;
                    let ns = t.elapsed().as_nanos() as u64;
                    if ns > 1000 {
                        slow.push(ns);
                    }
                    k += 1;
                }
                Ok((slow, k))
            }));
        }
        // Churn: a window of live objects larger than the budget, so each is evicted first.
        let mut window = std::collections::VecDeque::new();
        while moved(&rt) < bytes {
            window.push_back(FarBox::new(&rt, [7u64; 512])?);
            if window.len() > (192 << 20) / 4096 {
                window.pop_front();
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (mut all, mut total) = (Vec::new(), 0);
        for h in handles {
            let (slow, n) = h
                .join()
                .map_err(|_| anyhow::anyhow!("mutator panicked"))??;
            all.extend(slow);
            total += n;
        }
        Ok((all, total))
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let reference_max_us = reference_max_stall(seconds, mutator_cpu)?;
    let mut samples = samples;
    samples.sort_unstable_by(|a, b| b.cmp(a));
    // The p99.9 sample counted from the top among all `total` samples (1 us if not among the slow).
    let rank = total / 1000;
    let p999 = samples.get(rank).copied().unwrap_or(1000);
    Ok(Stall {
        max_us: samples.first().copied().unwrap_or(0) as f64 / 1e3,
        p999_us: p999 as f64 / 1e3,
        moved: moved(&rt),
        seconds,
        hot_misses: rt.stats().misses - start.misses,
        placement,
        reference_max_us,
    })
}

/// The reference of [`max_stall`]: for `seconds`, a thread on `mutator_cpu` times writes to 256
/// boxed 4 KiB arrays while the calling thread (already on the churn CPU) allocates and frees
/// 4 KiB boxes through a 192 MiB window. Returns the longest single write in µs.
fn reference_max_stall(seconds: f64, mutator_cpu: Option<usize>) -> anyhow::Result<f64> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            if let Some(c) = mutator_cpu {
                common::pin_to_cpu(c);
            }
            let mut hot: Vec<Box<[u64; 512]>> = (0..256).map(|i| Box::new([i; 512])).collect();
            let (mut k, mut max) = (0usize, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let v = black_box(&mut hot[k % 256]);
                v[k % 512] += 1;
                max = max.max(t.elapsed().as_nanos() as u64);
                k += 1;
            }
            max
        });
        let t0 = Instant::now();
        let mut window = std::collections::VecDeque::new();
        while t0.elapsed().as_secs_f64() < seconds {
            window.push_back(black_box(Box::new([7u64; 512])));
            if window.len() > (192 << 20) / 4096 {
                window.pop_front();
            }
        }
        stop.store(true, Ordering::Relaxed);
        h.join()
            .map(|max| max as f64 / 1e3)
            .map_err(|_| anyhow::anyhow!("reference thread panicked"))
    })
}
