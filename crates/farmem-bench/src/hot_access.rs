//! `farmem-bench hot-access`: element access to a resident `FarVec<u64>` against a `Vec<u64>`
//! in the same run: sequential, strided and random; reads and writes; each access form the API
//! offers (chunk slices, cursors, a whole vector pinned with `pin_all`, `read` under a scope,
//! `get`).
//!
//! Every figure is nanoseconds per element, the best of `--rounds` measurements alternating
//! with the `Vec`'s (each ratio's two sides are measured in the same stretch of time), and
//! every loop's result is checked against the `Vec`'s. Targets: random element read through a
//! cursor at most 2x the `Vec`'s; sequential iteration (chunk slices) at most 1.2x.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use farmem::containers::FarVec;
use farmem::{Runtime, RuntimeConfig};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// Options of `farmem-bench hot-access`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Elements (u64) in the vector.
    #[arg(long, default_value_t = 1 << 20)]
    pub elements: usize,
    /// Distance between two accesses of the strided pattern, in elements.
    #[arg(long, default_value_t = 17)]
    pub stride: usize,
    /// Accesses per strided or random measurement.
    #[arg(long, default_value_t = 4 << 20)]
    pub accesses: usize,
    /// Alternating rounds (best of each is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One measured row: the far form and the `Vec` reference, ns per element.
#[derive(Debug, serde::Serialize)]
struct Row {
    pattern: &'static str,
    form: &'static str,
    far_ns: f64,
    vec_ns: f64,
    ratio: f64,
}

/// Times `far` and `vec` (each touching `per` elements) in `rounds` alternating rounds, so that
/// both sides of a ratio are measured in the same stretch of time (on a loaded machine, two
/// batches measured one after the other can see different loads); the best ns per element of
/// each and its last round's result.
fn pair(
    rounds: usize,
    per: usize,
    mut far: impl FnMut() -> anyhow::Result<u64>,
    mut vec: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<((f64, u64), (f64, u64))> {
    let per = per.max(1) as f64;
    let (mut f, mut v) = ((f64::MAX, 0), (f64::MAX, 0));
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        v.1 = black_box(vec()?);
        v.0 = v.0.min(t.elapsed().as_nanos() as f64 / per);
        let t = Instant::now();
        f.1 = black_box(far()?);
        f.0 = f.0.min(t.elapsed().as_nanos() as f64 / per);
    }
    Ok((f, v))
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    let n = args.elements.max(1);
    let rt = Runtime::new(RuntimeConfig::new((n * 8 * 4).max(64 << 20)))?;
    let data: Vec<u64> = (0..n as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9) >> 7)
        .collect();
    let mut far = FarVec::from_slice(&rt, &data)?;
    let mut vec = data.clone();
    let mut rng = SmallRng::seed_from_u64(7);
    let random: Vec<usize> = (0..args.accesses).map(|_| rng.random_range(0..n)).collect();
    let strided: Vec<usize> = (0..args.accesses).map(|k| (k * args.stride) % n).collect();
    let r = args.rounds;
    let mut rows = Vec::new();
    let mut row = |pattern, form, (far, v): ((f64, u64), (f64, u64))| -> anyhow::Result<()> {
        anyhow::ensure!(
            far.1 == v.1,
            "{pattern} {form}: far result differs from the Vec's"
        );
        rows.push(Row {
            pattern,
            form,
            far_ns: far.0,
            vec_ns: v.0,
            ratio: far.0 / v.0,
        });
        Ok(())
    };

    // Sequential reads.
    let v_seq = || Ok(black_box(&vec).iter().fold(0u64, |a, &x| a.wrapping_add(x)));
    let f_chunks = || {
        let mut a = 0u64;
        for c in far.chunks() {
            a = c?.iter().fold(a, |a, &x| a.wrapping_add(x));
        }
        Ok(a)
    };
    row(
        "sequential read",
        "chunks() slices",
        pair(r, n, f_chunks, v_seq)?,
    )?;
    let f_iter = || {
        let mut a = 0u64;
        for x in far.iter() {
            a = a.wrapping_add(x?);
        }
        Ok(a)
    };
    row("sequential read", "iter()", pair(r, n, f_iter, v_seq)?)?;
    let f_cursor = || {
        let mut c = far.reader();
        let mut a = 0u64;
        for i in 0..n {
            a = a.wrapping_add(c.get(i)?);
        }
        Ok(a)
    };
    row(
        "sequential read",
        "reader().get(i)",
        pair(r, n, f_cursor, v_seq)?,
    )?;

    // Strided and random reads through an index array (the same for both sides).
    for (pattern, idx) in [("strided read", &strided), ("random read", &random)] {
        let v_r = || {
            let v = black_box(&vec);
            Ok(idx.iter().fold(0u64, |a, &i| a.wrapping_add(v[i])))
        };
        let f_c = || {
            let mut c = far.reader();
            let mut a = 0u64;
            for &i in idx {
                a = a.wrapping_add(c.get(i)?);
            }
            Ok(a)
        };
        row(pattern, "reader().get(i)", pair(r, idx.len(), f_c, v_r)?)?;
        let f_p = || {
            let p = far.pin_all()?;
            Ok(idx.iter().fold(0u64, |a, &i| a.wrapping_add(p[i])))
        };
        row(pattern, "pin_all()[i]", pair(r, idx.len(), f_p, v_r)?)?;
        let f_s = || {
            let s = rt.scope();
            let mut a = 0u64;
            for &i in idx {
                a = a.wrapping_add(*far.read(&s, i)?);
            }
            Ok(a)
        };
        row(pattern, "read(&scope, i)", pair(r, idx.len(), f_s, v_r)?)?;
        let some = &idx[..idx.len() / 16];
        let v_g = || {
            let v = black_box(&vec);
            Ok(some.iter().fold(0u64, |a, &i| a.wrapping_add(v[i])))
        };
        let f_g = || {
            let mut a = 0u64;
            for &i in some {
                a = a.wrapping_add(far.get(i)?);
            }
            Ok(a)
        };
        row(pattern, "get(i)", pair(r, some.len(), f_g, v_g)?)?;
    }

    // Writes: sequential (slices), then strided and random read-modify-writes through a cursor.
    // Each round adds to both sides, so the checksums (after the same number of rounds) agree.
    let f_w = pair(
        r,
        n,
        || {
            for c in far.chunks_mut() {
                c?.iter_mut().for_each(|x| *x = x.wrapping_add(1));
            }
            Ok(far.get(n - 1)?)
        },
        || {
            let v = black_box(&mut vec);
            v.iter_mut().for_each(|x| *x = x.wrapping_add(1));
            Ok(v[n - 1])
        },
    )?;
    row("sequential write", "chunks_mut() slices", f_w)?;
    for (pattern, idx) in [("strided write", &strided), ("random write", &random)] {
        let f_c = pair(
            r,
            idx.len(),
            || {
                let mut w = far.writer();
                for &i in idx {
                    let x = w.get(i)?;
                    w.set(i, x.wrapping_add(3))?;
                }
                Ok(w.get(idx[0])?)
            },
            || {
                let v = black_box(&mut vec);
                for &i in idx {
                    v[i] = v[i].wrapping_add(3);
                }
                Ok(v[idx[0]])
            },
        )?;
        row(pattern, "writer().get/set(i)", f_c)?;
    }
    anyhow::ensure!(
        far.to_vec()? == vec,
        "far vector differs from the Vec after the writes"
    );
    anyhow::ensure!(rt.stats().misses == 0, "the vector did not stay resident");

    println!(
        "{:<18} {:<22} {:>9} {:>9} {:>7}",
        "pattern", "FarVec form", "far ns", "Vec ns", "ratio"
    );
    for x in &rows {
        println!(
            "{:<18} {:<22} {:>9.2} {:>9.2} {:>6.2}x",
            x.pattern, x.form, x.far_ns, x.vec_ns, x.ratio
        );
    }
    if let Some(path) = &args.json {
        crate::common::write_json(
            path,
            &serde_json::json!({
                "bench": "hot-access",
                "elements": n,
                "stride": args.stride,
                "accesses": args.accesses,
                "rows": rows,
            }),
        )?;
    }
    Ok(())
}
