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
        // Joins, heads and uniques over a Parquet scan (its column names come from the footer).
        let dims = csv::read_csv(KINDS.as_bytes(), &kinds_opts(), p.clone()).unwrap();
        for (name, lazy, eager) in join_queries() {
            let q = lazy(
                LazyFrame::scan_parquet(pf.clone(), Default::default(), far()),
                dims.lazy(),
            );
            let got = q.clone().collect().unwrap();
            let want = eager(&whole, &dims).unwrap();
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

/// A small table keyed by `kind` (0-3 in [`csv_text`]): kind 3 is missing, kind 1 has two rows
/// (a left row matches twice), one row has no kind (matches nothing). `fare` clashes with the
/// left side's `fare` (it becomes `fare_right`).
const KINDS: &str =
    "kind,label,fare,rank\n0,zero,1.5,10\n1,one,2.5,20\n1,uno,3.5,30\n2,two,,40\n,none,9.5,50\n";

type JoinQuery = fn(LazyFrame, LazyFrame) -> LazyFrame;
type JoinEager = fn(&DataFrame, &DataFrame) -> farmem_frame::Result<DataFrame>;

/// Pairs of the same query over two inputs (trips and [`KINDS`]), lazy and eager: joins,
/// `head` and `unique`, with filters and projections the rewrites move.
fn join_queries() -> Vec<(&'static str, JoinQuery, JoinEager)> {
    vec![
        (
            "inner join, filters on either side, select",
            |l, r| {
                l.join(r, &["kind"], &["kind"], JoinType::Inner)
                    .filter(col("fare").gt(8))
                    .filter(col("rank").gt_eq(20))
                    .select([col("id"), col("label"), col("fare_right"), col("fare")])
            },
            |l, r| {
                l.join(r, &["kind"], &["kind"], JoinType::Inner)?
                    .filter(col("fare").gt(8))?
                    .filter(col("rank").gt_eq(20))?
                    .select([col("id"), col("label"), col("fare_right"), col("fare")])
            },
        ),
        (
            "left join keeps unmatched rows; a filter on the right side stays above",
            |l, r| {
                l.join(r, &["kind"], &["kind"], JoinType::Left)
                    .filter(col("rank").is_null().or(col("rank").lt(40)))
                    .filter(col("id").lt(120))
                    .sort(&["label", "id"], &[false, true])
            },
            |l, r| {
                l.join(r, &["kind"], &["kind"], JoinType::Left)?
                    .filter(col("rank").is_null().or(col("rank").lt(40)))?
                    .filter(col("id").lt(120))?
                    .sort(&["label", "id"], &[false, true])
            },
        ),
        (
            "join then group",
            |l, r| {
                l.join(r, &["kind"], &["kind"], JoinType::Left)
                    .group_by(["label"])
                    .agg([col("fare").sum(), len()])
                    .sort(&["label"], &[false])
            },
            |l, r| {
                l.join(r, &["kind"], &["kind"], JoinType::Left)?
                    .group_by(["label"])
                    .agg([col("fare").sum(), len()])?
                    .sort(&["label"], &[false])
            },
        ),
        (
            "head of a derived selection, head of a join",
            |l, r| {
                l.with_columns([(col("fare") * 2).alias("double")])
                    .select([col("id"), col("double")])
                    .head(17)
                    .join(r.head(3), &["id"], &["rank"], JoinType::Left)
            },
            |l, r| {
                l.with_columns([(col("fare") * 2).alias("double")])?
                    .select([col("id"), col("double")])?
                    .head(17)?
                    .join(&r.head(3)?, &["id"], &["rank"], JoinType::Left)
            },
        ),
        (
            "filter then head, head then filter",
            |l, _| {
                l.filter(col("kind").eq(1))
                    .head(9)
                    .filter(col("fare").gt(3))
                    .select([col("id"), col("fare")])
            },
            |l, _| {
                l.filter(col("kind").eq(1))?
                    .head(9)?
                    .filter(col("fare").gt(3))?
                    .select([col("id"), col("fare")])
            },
        ),
        (
            "unique on keys with a filter on them and on another column",
            |l, _| {
                l.unique(&["kind", "flag"])
                    .filter(col("kind").neq(0))
                    .filter(col("id").gt(3))
                    .select([col("id"), col("kind"), col("flag")])
            },
            |l, _| {
                l.unique(&["kind", "flag"])?
                    .filter(col("kind").neq(0))?
                    .filter(col("id").gt(3))?
                    .select([col("id"), col("kind"), col("flag")])
            },
        ),
        (
            "unique rows of a selection",
            |l, _| {
                l.select([col("kind"), col("flag")])
                    .unique::<&str>(&[])
                    .filter(col("flag").eq(lit("Y")))
            },
            |l, _| {
                l.select([col("kind"), col("flag")])?
                    .unique::<&str>(&[])?
                    .filter(col("flag").eq(lit("Y")))
            },
        ),
    ]
}

fn kinds_opts() -> csv::CsvOptions {
    let t = [
        ("kind", DType::I64),
        ("label", DType::Str),
        ("fare", DType::F64),
        ("rank", DType::I64),
    ];
    csv::CsvOptions {
        schema: t.iter().map(|&(n, t)| (n.to_owned(), t)).collect(),
        ..Default::default()
    }
}

fn check_joins(n: usize, seed: u64, p: &PlacementRef) {
    let text = csv_text(n, seed);
    let file = TempFile::new("csv", text.as_bytes());
    let kinds = TempFile::new("csv", KINDS.as_bytes());
    let whole = csv::read_csv(text.as_bytes(), &typed(), p.clone()).unwrap();
    let dims = csv::read_csv(KINDS.as_bytes(), &kinds_opts(), p.clone()).unwrap();
    for (name, lazy, eager) in join_queries() {
        let want = eager(&whole, &dims).unwrap();
        // Both sides scanned.
        let q = lazy(
            LazyFrame::scan_csv(&file.0, typed(), p.clone()),
            LazyFrame::scan_csv(&kinds.0, kinds_opts(), p.clone()),
        );
        let got = q.clone().collect().unwrap();
        assert_eq!(rows(&got), rows(&want), "{name}\n{}", q.explain());
        // A scan joined with an eager frame, and two eager frames.
        let got = lazy(
            LazyFrame::scan_csv(&file.0, typed(), p.clone()),
            dims.lazy(),
        )
        .collect()
        .unwrap();
        assert_eq!(rows(&got), rows(&want), "{name} (scan and frame)");
        let got = lazy(whole.lazy(), dims.clone().into()).collect().unwrap();
        assert_eq!(rows(&got), rows(&want), "{name} (frames)");
    }
}

#[test]
fn lazy_joins_head_and_unique_equal_eager_local_and_far() {
    check_joins(200, 7, &LocalPlacement::shared());
    check_joins(200, 11, &far());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]
    #[test]
    fn lazy_joins_head_and_unique_equal_eager_for_any_data(n in 0usize..250, seed in 1u64..u64::MAX) {
        check_joins(n, seed, &LocalPlacement::shared());
    }
}

#[test]
fn join_filters_and_projections_reach_the_side_that_has_the_columns() {
    let text = csv_text(100, 9);
    let file = TempFile::new("csv", text.as_bytes());
    let kinds = TempFile::new("csv", KINDS.as_bytes());
    let q = LazyFrame::scan_csv(&file.0, typed(), LocalPlacement::shared())
        .join(
            LazyFrame::scan_csv(&kinds.0, kinds_opts(), LocalPlacement::shared()),
            &["kind"],
            &["kind"],
            JoinType::Inner,
        )
        .filter(col("id").gt(10))
        .filter(col("rank").lt(30))
        .select([col("id"), col("label")]);
    let plan = q.explain();
    let scans: Vec<&str> = plan.lines().filter(|l| l.contains("SCAN")).collect();
    assert_eq!(scans.len(), 2, "{plan}");
    // Left: the key and the selected column, filtered by `id`; `note`, `ts`... are not parsed.
    assert!(scans[0].contains("columns [kind, id]"), "{plan}");
    assert!(scans[0].contains("id") && scans[0].contains("Gt"), "{plan}");
    // Right: the key, `label`, and `rank` for its filter; its `fare` is not loaded.
    assert!(scans[1].contains("columns [kind, label, rank]"), "{plan}");
    assert!(scans[1].contains("rank"), "{plan}");
    assert!(
        !plan.lines().any(|l| l.trim_start().starts_with("FILTER")),
        "{plan}"
    );
    // A left join keeps a filter on right columns above it.
    let left = LazyFrame::scan_csv(&file.0, typed(), LocalPlacement::shared())
        .join(
            LazyFrame::scan_csv(&kinds.0, kinds_opts(), LocalPlacement::shared()),
            &["kind"],
            &["kind"],
            JoinType::Left,
        )
        .filter(col("rank").lt(30));
    assert!(left.explain().starts_with("FILTER"), "{}", left.explain());
    // A head right above a scan stops the CSV reader.
    let head = LazyFrame::scan_csv(&file.0, typed(), LocalPlacement::shared())
        .select([col("id")])
        .head(5);
    assert!(
        head.explain().contains("first 5 rows"),
        "{}",
        head.explain()
    );
    assert_eq!(head.collect().unwrap().len(), 5);
}
