//! `farmem-bench taxi --sweep-rows 1000000,4000000,16000000`: how cost grows with the data.
//!
//! For each number of rows, generates the synthetic trips and runs the chosen modes at the
//! chosen local-memory shares (as `taxi` does for one size), then reports, per mode and share,
//! the load and analysis times against rows, and where time per row grows from one size to the
//! next (more than 15% per row: faster than linear). Writes `taxi-sweep.json` and
//! `taxi-sweep.png` (analysis time against millions of rows) in the results directory.

use serde_json::json;

use super::{Args, run_modes};
use crate::modes;
use crate::plot::{Series, line_chart};

/// Time per row growing by more than this factor between two sizes counts as faster than linear.
const SUPERLINEAR: f64 = 1.15;

/// One measured point.
struct Point {
    series: String,
    rows: u64,
    load: f64,
    analysis: f64,
}

/// Runs the sweep.
///
/// # Errors
/// When a size cannot be generated, or the results cannot be written.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut points: Vec<Point> = Vec::new();
    let mut all = Vec::new();
    for &rows in &args.sweep_rows {
        let mut a = args.clone();
        a.rows = rows;
        a.csv = None;
        a.input = None;
        a.peers.clear();
        eprintln!("sweep: {rows} rows");
        let (runs, agree) = run_modes(&a, true)?;
        anyhow::ensure!(agree, "{rows} rows: modes gave different answers");
        for r in &runs {
            let series = format!("{} {:.0}%", r.mode.label(), r.local_mem_ratio * 100.0);
            let load = r.detail.get("load_seconds").and_then(|v| v.as_f64());
            match (&r.skipped, load) {
                (None, Some(load)) => {
                    eprintln!(
                        "{series} at {rows} rows: load {load:.2} s, analysis {:.3} s",
                        r.seconds
                    );
                    points.push(Point {
                        series,
                        rows,
                        load,
                        analysis: r.seconds,
                    });
                }
                (why, _) => eprintln!("{series} at {rows} rows: skipped ({why:?})"),
            }
        }
        all.push(json!({ "rows": rows, "runs": runs }));
        // Written after every size, so a sweep cut short still leaves its figures.
        report(
            args,
            &points,
            &all,
            rows == args.sweep_rows.last().copied().unwrap_or(rows),
        )?;
    }
    Ok(())
}

/// Writes `taxi-sweep.json` and `taxi-sweep.png` for the points so far, and with `print` the
/// table of times per row.
fn report(
    args: &Args,
    points: &[Point],
    all: &[serde_json::Value],
    print: bool,
) -> anyhow::Result<()> {
    let mut names: Vec<&str> = Vec::new();
    for p in points {
        if !names.contains(&p.series.as_str()) {
            names.push(&p.series);
        }
    }
    let mut growth = Vec::new();
    if print {
        println!(
            "{:<28} {:>12} {:>9} {:>12} {:>14}  growth of analysis time per row",
            "mode", "rows", "load (s)", "analysis (s)", "ns/row (anal.)"
        );
    }
    for name in &names {
        let s: Vec<&Point> = points.iter().filter(|p| p.series == *name).collect();
        for (i, p) in s.iter().enumerate() {
            let per_row = p.analysis / p.rows as f64;
            let note = match i.checked_sub(1).map(|j| s[j]) {
                Some(q) => {
                    let f = per_row / (q.analysis / q.rows as f64);
                    growth.push(json!({
                        "series": name, "from_rows": q.rows, "to_rows": p.rows,
                        "per_row_factor": f, "superlinear": f > SUPERLINEAR,
                    }));
                    let tag = if f > SUPERLINEAR {
                        "faster than linear"
                    } else {
                        "linear"
                    };
                    format!("x{f:.2} per row from {} ({tag})", q.rows)
                }
                None => String::new(),
            };
            if print {
                println!(
                    "{:<28} {:>12} {:>9.2} {:>12.3} {:>14.1}  {note}",
                    name,
                    p.rows,
                    p.load,
                    p.analysis,
                    per_row * 1e9
                );
            }
        }
    }
    let dir = modes::results_dir(&args.out)?;
    modes::write_json(
        &dir.join("taxi-sweep.json"),
        &json!({
            "bench": "taxi-sweep",
            "rows": args.sweep_rows,
            "superlinear_factor": SUPERLINEAR,
            "growth": growth,
            "sizes": all,
        }),
    )?;
    let series: Vec<Series> = names
        .iter()
        .map(|name| Series {
            label: (*name).to_owned(),
            points: points
                .iter()
                .filter(|p| p.series == *name)
                .map(|p| (p.rows as f64 / 1e6, p.analysis))
                .collect(),
        })
        .collect();
    if let Err(e) = line_chart(
        &dir.join("taxi-sweep.png"),
        "NYC taxi analysis against rows",
        "rows (millions)",
        "analysis time (s)",
        &series,
    ) {
        eprintln!("no chart: {e:#}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::modes::Mode;

    #[test]
    fn sweep_writes_one_entry_per_size_and_the_growth_between_sizes() {
        let dir = std::env::temp_dir().join(format!("farmem-sweep-{}", std::process::id()));
        let mut args = crate::demo_pool::taxi_args(0, &dir);
        args.sweep_rows = vec![50_000, 100_000];
        args.modes = vec![Mode::Local, Mode::ObjectNoAgent];
        args.local_mem = vec![0.5];
        super::run(&args).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("taxi-sweep.json")).unwrap()).unwrap();
        let sizes = json["sizes"].as_array().unwrap();
        assert_eq!(sizes.len(), 2);
        assert_eq!(sizes[1]["rows"], 100_000);
        // One growth step per mode and share: all-local and object without the agent at 50%.
        let growth = json["growth"].as_array().unwrap();
        assert_eq!(growth.len(), 2, "{growth:?}");
        assert!(
            growth
                .iter()
                .all(|g| g["per_row_factor"].as_f64().unwrap() > 0.0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
