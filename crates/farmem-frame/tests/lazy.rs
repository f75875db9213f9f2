//! Lazy queries give the same frames as the same steps run eagerly on the whole file, for CSV
//! and Parquet scans and eager frames, local and far; the rewrites push filters and projections
//! into the scans (only the needed columns load; Parquet row groups are skipped by statistics).

use std::path::PathBuf;
use std::sync::Arc;

use farmem::containers::Offload;
use farmem::{Runtime, RuntimeConfig};
use farmem_frame::prelude::*;
use farmem_frame::{FrameError, PlacementRef, csv};
use proptest::prelude::*;

fn far() -> PlacementRef {
    let rt = Runtime::new(RuntimeConfig::new(1 << 20).region_size(64 << 10)).unwrap();
    Arc::new(FarPlacement::new(rt, Offload::Remote))
}

/// A CSV of `n` rows: ints, floats with empty fields, strings, timestamps, a column that never
/// parses as a number (so it must not be parsed unless asked for).
fn csv_text(n: usize, seed: u64) -> String {
    let mut s = String::from("id,kind,fare,flag,ts,note\n");
    let mut x = seed | 1;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let fare = if x.is_multiple_of(9) {
            String::new()
        } else {
            format!("{}.{}", x % 50, x % 10)
        };
        let flag = ["N", "Y", ""][(x >> 8) as usize % 3];
        s += &format!(
            "{i},{},{fare},{flag},2016-01-{:02} {:02}:00:00,n{}\n",
            (x >> 4) % 4,
            1 + (x >> 12) % 28,
            (x >> 20) % 24,
            x % 1000
        );
    }
    s
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("farmem-lazy-{}-{k}.{tag}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        Self(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn rows(df: &DataFrame) -> Vec<Vec<String>> {
    let mut out = vec![df.names().iter().map(|s| s.to_string()).collect()];
    df.for_each_row(&mut |r| {
        out.push(r.iter().map(|v| format!("{v:?}")).collect());
        Ok(())
    })
    .unwrap();
    out
}

type Query = fn(LazyFrame) -> LazyFrame;
type Eager = fn(&DataFrame) -> farmem_frame::Result<DataFrame>;

/// Pairs of the same query, lazy and eager.
fn queries() -> Vec<(&'static str, Query, Eager)> {
    vec![
        (
            "filter, group, sort",
            |q| {
                q.filter(col("fare").gt(10).and(col("kind").neq(2)))
                    .group_by(["kind", "flag"])
                    .agg([
                        col("fare").mean().alias("mean"),
                        col("fare").median(),
                        len(),
                    ])
                    .sort(&["kind", "flag"], &[false, true])
            },
            |df| {
                df.filter(col("fare").gt(10).and(col("kind").neq(2)))?
                    .group_by(["kind", "flag"])
                    .agg([
                        col("fare").mean().alias("mean"),
                        col("fare").median(),
                        len(),
                    ])?
                    .sort(&["kind", "flag"], &[false, true])
            },
        ),
        (
            "with_columns then filter on old and new columns, select",
            |q| {
                q.with_columns([(col("fare") * 2).alias("double"), col("ts").dt().hour()])
                    .filter(col("id").lt(150))
                    .filter(col("double").gt_eq(20))
                    .select([col("id"), col("double"), col("ts")])
            },
            |df| {
                df.with_columns([(col("fare") * 2).alias("double"), col("ts").dt().hour()])?
                    .filter(col("id").lt(150))?
                    .filter(col("double").gt_eq(20))?
                    .select([col("id"), col("double"), col("ts")])
            },
        ),
        (
            "sort then filter keeps every column",
            |q| {
                q.sort(&["fare"], &[true])
                    .filter(col("flag").eq(lit("N")).or(col("id").gt(190)))
            },
            |df| {
                df.sort(&["fare"], &[true])?
                    .filter(col("flag").eq(lit("N")).or(col("id").gt(190)))
            },
        ),
        (
            "aggregates of a selection",
            |q| {
                q.select([col("fare"), col("kind")])
                    .filter(col("kind").eq(1))
                    .select([col("fare").sum(), col("fare").count().alias("n"), len()])
            },
            |df| {
                df.select([col("fare"), col("kind")])?
                    .filter(col("kind").eq(1))?
                    .select([col("fare").sum(), col("fare").count().alias("n"), len()])
            },
        ),
        (
            "row count only",
            |q| q.select([len()]),
            |df| df.select([len()]),
        ),
    ]
}

/// The types of [`csv_text`]'s columns (a small file could infer others).
fn typed() -> csv::CsvOptions {
    let t = [
        ("id", DType::I64),
        ("kind", DType::I64),
        ("fare", DType::F64),
        ("flag", DType::Str),
        ("ts", DType::Timestamp),
        ("note", DType::Str),
    ];
    csv::CsvOptions {
        schema: t.iter().map(|&(n, t)| (n.to_owned(), t)).collect(),
        ..Default::default()
    }
}

fn check_csv(n: usize, seed: u64, p: &PlacementRef) {
    let text = csv_text(n, seed);
    let file = TempFile::new("csv", text.as_bytes());
    let whole = csv::read_csv(text.as_bytes(), &typed(), p.clone()).unwrap();
    for (name, lazy, eager) in queries() {
        let q = lazy(LazyFrame::scan_csv(&file.0, typed(), p.clone()));
        let got = q.clone().collect().unwrap();
        let want = eager(&whole).unwrap();
        assert_eq!(rows(&got), rows(&want), "{name}\n{}", q.explain());
        // The same over an eager frame.
        let got = lazy(whole.lazy()).collect().unwrap();
        assert_eq!(rows(&got), rows(&want), "{name} (frame)");
    }
}

#[test]
fn lazy_csv_equals_eager_local_and_far() {
    check_csv(200, 7, &LocalPlacement::shared());
    check_csv(200, 11, &far());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn lazy_csv_equals_eager_for_any_data(n in 0usize..300, seed in 1u64..u64::MAX) {
        check_csv(n, seed, &LocalPlacement::shared());
    }
}

#[test]
fn projection_reaches_the_csv_parser() {
    // `note` is declared an integer: parsing it would fail, so the query must not parse it.
    let text = csv_text(50, 3);
    let file = TempFile::new("csv", text.as_bytes());
    let opts = csv::CsvOptions {
        schema: vec![("note".into(), DType::I64)],
        ..Default::default()
    };
    let q = LazyFrame::scan_csv(&file.0, opts.clone(), LocalPlacement::shared())
        .filter(col("kind").eq(3))
        .select([col("id"), col("fare")]);
    let plan = q.explain();
    assert!(plan.contains("columns [id, fare, kind]"), "{plan}");
    assert!(plan.contains("filters"), "{plan}");
    let df = q.collect().unwrap();
    assert_eq!(df.names(), ["id", "fare"]);
    assert!(!df.is_empty());
    // Eagerly, the whole file does not load.
    match csv::read_csv(text.as_bytes(), &opts, LocalPlacement::shared()) {
        Err(FrameError::BadRow { line: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Asking for a column the file lacks is an error naming it.
    let missing = LazyFrame::scan_csv(&file.0, Default::default(), LocalPlacement::shared())
        .select([col("nope")])
        .collect();
    assert!(matches!(missing, Err(FrameError::MissingColumn(c)) if c == "nope"));
}

#[test]
fn filters_stay_above_steps_that_make_their_columns() {
    let text = csv_text(20, 5);
    let file = TempFile::new("csv", text.as_bytes());
    let q = LazyFrame::scan_csv(&file.0, Default::default(), LocalPlacement::shared())
        .with_columns([(col("fare") + 1).alias("fare")])
        .filter(col("fare").gt(5))
        .group_by(["kind"])
        .agg([len()])
        .filter(col("len").gt(1));
    let plan = q.explain();
    let lines: Vec<&str> = plan.lines().collect();
    assert!(lines[0].starts_with("FILTER"), "{plan}");
    assert!(lines[2].trim_start().starts_with("FILTER"), "{plan}");
    assert!(lines.last().unwrap().contains("filters []"), "{plan}");
}

#[cfg(feature = "parquet")]
mod parquet {
    use super::*;
    use farmem_frame::parquet::{ParquetFile, ParquetOptions, read_parquet, write_parquet};

    #[test]
    fn lazy_parquet_equals_eager_and_skips_row_groups() {
        let p = LocalPlacement::shared();
        let text = csv_text(400, 13);
        let whole = csv::read_csv(text.as_bytes(), &typed(), p.clone()).unwrap();
        let mut bytes = Vec::new();
        write_parquet(&whole, &mut bytes, 64).unwrap();
        let file = TempFile::new("parquet", &bytes);
        let pf = ParquetFile::open(&file.0).unwrap();
        for (name, lazy, eager) in queries() {
            let q = lazy(LazyFrame::scan_parquet(
                pf.clone(),
                Default::default(),
                far(),
            ));
            let got = q.clone().collect().unwrap();
            let want = eager(&whole).unwrap();
            assert_eq!(rows(&got), rows(&want), "{name}\n{}", q.explain());
        }
        // `id` ascends: row groups of 64 rows, `id < 100 or id >= 390` needs groups 0, 1, 6.
        let pred = col("id").lt(100).or(col("id").gt_eq(390));
        let opts = ParquetOptions {
            row_group_filter: vec![pred.clone()],
            ..Default::default()
        };
        let loaded = read_parquet(&pf, &opts, p.clone()).unwrap();
        assert_eq!(loaded.len(), 64 * 2 + (400 - 384));
        let lazy = LazyFrame::scan_parquet(pf.clone(), Default::default(), p.clone())
            .filter(pred.clone())
            .collect()
            .unwrap();
        assert_eq!(rows(&lazy), rows(&whole.filter(pred).unwrap()));
        // Statistics of timestamps are compared in seconds; nothing matches before 2016.
        let none = ParquetOptions {
            row_group_filter: vec![lit(1_000_000_000i64).gt(col("ts"))],
            ..Default::default()
        };
        assert_eq!(read_parquet(&pf, &none, p).unwrap().len(), 0);
    }
}
