//! The expression API against a plain in-memory reference, and identical on every placement
//! (all-local, far with the agent, far computed here), with nulls.

use std::collections::BTreeMap;
use std::sync::Arc;

use farmem::containers::Offload;
use farmem::{Runtime, RuntimeConfig};
use farmem_frame::prelude::*;
use farmem_frame::{ColumnBuilder, FrameError, PlacementRef};
use proptest::prelude::*;

fn far(offload: Offload) -> PlacementRef {
    let rt = Runtime::new(RuntimeConfig::new(1 << 20).region_size(64 << 10)).unwrap();
    Arc::new(FarPlacement::new(rt, offload))
}

/// One generated row: key 1 (nullable), key 2 (a string), an integer, a nullable float.
#[derive(Clone, Debug)]
struct Row {
    k1: Option<i64>,
    k2: &'static str,
    a: i64,
    x: Option<f64>,
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    let row = (
        prop::option::weighted(0.9, 0i64..4),
        prop::sample::select(vec!["a", "b", "c"]),
        -50i64..50,
        prop::option::weighted(0.8, (-400i32..400).prop_map(|v| f64::from(v) / 4.0)),
    )
        .prop_map(|(k1, k2, a, x)| Row { k1, k2, a, x });
    prop::collection::vec(row, 1..300)
}

fn frame(rows: &[Row], p: &PlacementRef) -> DataFrame {
    let mut k1 = ColumnBuilder::new("k1", DType::I64, p.as_ref());
    let mut x = ColumnBuilder::new("x", DType::F64, p.as_ref());
    for r in rows {
        k1.push_value(&r.k1.map_or(Value::Null, Value::Int))
            .unwrap();
        x.push_value(&r.x.map_or(Value::Null, Value::Float))
            .unwrap();
    }
    let k2: Vec<&str> = rows.iter().map(|r| r.k2).collect();
    let a: Vec<i64> = rows.iter().map(|r| r.a).collect();
    DataFrame::from_columns(
        p.clone(),
        vec![
            k1.finish().unwrap(),
            Column::from_strings("k2", &k2, p.as_ref()).unwrap(),
            Column::from_vec("a", DType::I64, a, p.as_ref()).unwrap(),
            x.finish().unwrap(),
        ],
    )
    .unwrap()
}

fn all_values(df: &DataFrame) -> Vec<Vec<Value>> {
    df.columns()
        .map(|c| c.values(0..c.len()).unwrap())
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn close(a: &Value, b: Option<f64>) -> bool {
    match (a, b) {
        (Value::Float(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        (Value::Null, None) => true,
        _ => false,
    }
}

/// All operations of the API on one frame, as comparable values.
fn run_all(df: &DataFrame, t: i64) -> Vec<Vec<Vec<Value>>> {
    let pred = col("a")
        .gt(t)
        .and(col("x").lt(lit(10.0)))
        .or(col("k2").eq(lit("b")));
    let f = df.filter(pred).unwrap();
    let w = df
        .with_columns([
            (col("a") * 3 + col("k1")).alias("y"),
            col("x").is_null().alias("xn"),
        ])
        .unwrap();
    let g = df
        .group_by(["k1", "k2"])
        .agg([
            col("x").sum(),
            col("a").median().alias("a_med"),
            col("x").mean().alias("x_mean"),
            len(),
            col("a").n_unique().alias("a_nu"),
            col("x").std().alias("x_std"),
            col("a").quantile(0.25).alias("a_q"),
            col("x").median().alias("x_med"),
        ])
        .unwrap();
    let s = df.sort(&["k2", "a"], &[false, true]).unwrap();
    let sel = df
        .select([
            col("a").sum(),
            col("x").mean().alias("m"),
            col("x").median().alias("md"),
        ])
        .unwrap();
    vec![
        all_values(&f),
        all_values(&w),
        all_values(&g),
        all_values(&s),
        all_values(&sel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn expressions_match_the_reference_and_every_placement(rows in rows(), t in -40i64..40) {
        let local = frame(&rows, &LocalPlacement::shared());
        let got = run_all(&local, t);
        // filter: reference
        let want_f: Vec<i64> = rows
            .iter()
            .filter(|r| (r.a > t && r.x.is_some_and(|x| x < 10.0)) || r.k2 == "b")
            .map(|r| r.a)
            .collect();
        let got_f: Vec<Value> = got[0][2].clone();
        prop_assert_eq!(got_f, want_f.iter().map(|&a| Value::Int(a)).collect::<Vec<_>>());
        // with_columns: nulls propagate, is_null never null
        for (i, r) in rows.iter().enumerate() {
            let y = r.k1.map_or(Value::Null, |k| Value::Int(r.a * 3 + k));
            prop_assert_eq!(&got[1][4][i], &y);
            prop_assert_eq!(&got[1][5][i], &Value::Bool(r.x.is_none()));
        }
        // group_by: reference groups (rows with a null k1 are dropped)
        let mut groups: BTreeMap<(i64, &str), Vec<&Row>> = BTreeMap::new();
        for r in &rows {
            if let Some(k) = r.k1 {
                groups.entry((k, r.k2)).or_default().push(r);
            }
        }
        let g = &got[2];
        prop_assert_eq!(g[0].len(), groups.len());
        for (i, ((k1, k2), rs)) in groups.iter().enumerate() {
            prop_assert_eq!(&g[0][i], &Value::Int(*k1));
            prop_assert_eq!(&g[1][i], &Value::Str((*k2).into()));
            let xs: Vec<f64> = rs.iter().filter_map(|r| r.x).collect();
            let a: Vec<f64> = rs.iter().map(|r| r.a as f64).collect();
            prop_assert!(close(&g[2][i], Some(xs.iter().sum())), "sum {:?}", g[2][i]);
            prop_assert!(close(&g[3][i], median(a.clone())));
            prop_assert!(close(&g[4][i], (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)));
            prop_assert_eq!(&g[5][i], &Value::Int(rs.len() as i64));
            let mut nu = a.clone();
            nu.sort_by(f64::total_cmp);
            nu.dedup();
            prop_assert_eq!(&g[6][i], &Value::Int(nu.len() as i64));
            let std = (xs.len() > 1).then(|| {
                let m = xs.iter().sum::<f64>() / xs.len() as f64;
                (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
            });
            prop_assert!(close(&g[7][i], std), "std {:?} {:?}", g[7][i], std);
            let mut sa = a.clone();
            sa.sort_by(f64::total_cmp);
            let pos = 0.25 * (sa.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            prop_assert!(close(&g[8][i], Some(sa[lo] + (sa[hi] - sa[lo]) * (pos - lo as f64))));
            prop_assert!(close(&g[9][i], median(xs.clone())));
        }
        // sort: by k2 ascending then a descending
        let mut order: Vec<&Row> = rows.iter().collect();
        order.sort_by(|p, q| p.k2.cmp(q.k2).then(q.a.cmp(&p.a)));
        let sorted: Vec<Value> = order.iter().map(|r| Value::Int(r.a)).collect();
        prop_assert_eq!(&got[3][2], &sorted);
        // whole-frame aggregations
        prop_assert_eq!(&got[4][0][0], &Value::Int(rows.iter().map(|r| r.a).sum()));
        let xs: Vec<f64> = rows.iter().filter_map(|r| r.x).collect();
        prop_assert!(close(&got[4][2][0], median(xs)));
        // Far placements give the very same values.
        for off in [Offload::Remote, Offload::Local] {
            let df = frame(&rows, &far(off));
            prop_assert_eq!(&run_all(&df, t), &got, "{:?}", off);
        }
    }
}

#[test]
fn joins_inner_and_left_with_strings_and_nulls() {
    let p = LocalPlacement::shared();
    let mut k = ColumnBuilder::new("k", DType::I64, p.as_ref());
    for v in [
        Value::Int(1),
        Value::Int(2),
        Value::Null,
        Value::Int(1),
        Value::Int(7),
    ] {
        k.push_value(&v).unwrap();
    }
    let left = DataFrame::from_columns(
        p.clone(),
        vec![
            k.finish().unwrap(),
            Column::from_strings("s", &["x", "y", "x", "z", "x"], p.as_ref()).unwrap(),
        ],
    )
    .unwrap();
    for rp in [LocalPlacement::shared(), far(Offload::Remote)] {
        let right = DataFrame::from_columns(
            rp.clone(),
            vec![
                Column::from_vec("k", DType::U8, vec![1u8, 1, 2], rp.as_ref()).unwrap(),
                Column::from_strings("s", &["x", "z", "q"], rp.as_ref()).unwrap(),
                Column::from_vec("v", DType::F64, vec![10.0, 20.0, 30.0], rp.as_ref()).unwrap(),
            ],
        )
        .unwrap();
        let inner = left
            .join(&right, &["k", "s"], &["k", "s"], JoinType::Inner)
            .unwrap();
        assert_eq!(inner.names(), ["k", "s", "v"]);
        assert_eq!(
            inner["v"].values(0..inner.len()).unwrap(),
            [Value::Float(10.0), Value::Float(20.0)]
        );
        let l = left.join(&right, &["k"], &["k"], JoinType::Left).unwrap();
        assert_eq!(l.names(), ["k", "s", "s_right", "v"]);
        assert_eq!(l.len(), 7);
        let v: Vec<Value> = l["v"].values(0..l.len()).unwrap();
        assert_eq!(
            v,
            [
                Value::Float(10.0),
                Value::Float(20.0),
                Value::Float(30.0),
                Value::Null,
                Value::Float(10.0),
                Value::Float(20.0),
                Value::Null
            ]
        );
        assert_eq!(l.agg(col("v").count()).unwrap(), Value::Int(5));
        assert_eq!(l.agg(col("v").sum()).unwrap(), Value::Float(90.0));
    }
    let strs = DataFrame::from_columns(
        p.clone(),
        vec![Column::from_strings("k", &["1"], p.as_ref()).unwrap()],
    )
    .unwrap();
    assert!(matches!(
        left.join(&strs, &["k"], &["k"], JoinType::Inner),
        Err(FrameError::JoinTypeMismatch { .. })
    ));
}

#[test]
fn bad_expressions_are_typed_errors_naming_the_column() {
    let p = LocalPlacement::shared();
    let df = DataFrame::from_columns(
        p.clone(),
        vec![
            Column::from_vec("a", DType::I64, vec![1i64, 2], p.as_ref()).unwrap(),
            Column::from_strings("s", &["x", "y"], p.as_ref()).unwrap(),
        ],
    )
    .unwrap();
    assert!(
        matches!(df.filter(col("nope").gt(1)), Err(FrameError::MissingColumn(c)) if c == "nope")
    );
    match df.with_columns([(col("s") + 1).alias("t")]) {
        Err(FrameError::InvalidExpr { column, .. }) => assert_eq!(column, "t"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        df.filter(col("a") + 1),
        Err(FrameError::TypeMismatch { .. })
    ));
    assert!(matches!(
        df.filter(col("a").and(lit(true))),
        Err(FrameError::InvalidExpr { .. })
    ));
    assert!(matches!(
        df.with_columns([col("a").sum()]),
        Err(FrameError::InvalidExpr { .. })
    ));
    assert!(matches!(
        df.group_by(["a"]).agg([col("s").mean()]),
        Err(FrameError::TypeMismatch { column, .. }) if column == "s"
    ));
    assert!(matches!(
        df.group_by(["a"]).agg([col("a") + 1]),
        Err(FrameError::InvalidExpr { .. })
    ));
    assert!(matches!(
        df.agg(col("a").quantile(1.5)),
        Err(FrameError::InvalidExpr { .. })
    ));
}

#[test]
fn unique_head_describe_value_counts_and_indexing() {
    let p = LocalPlacement::shared();
    let df = DataFrame::from_columns(
        p.clone(),
        vec![
            Column::from_vec("a", DType::I64, vec![3i64, 1, 3, 2, 1], p.as_ref()).unwrap(),
            Column::from_strings("s", &["x", "y", "x", "y", "z"], p.as_ref()).unwrap(),
        ],
    )
    .unwrap();
    let u = df.unique(&["a", "s"]).unwrap();
    assert_eq!(
        u["a"].values(0..u.len()).unwrap(),
        [3, 1, 2, 1].map(Value::Int)
    );
    assert_eq!(df.head(2).unwrap().len(), 2);
    assert_eq!(
        df.value_counts("s").unwrap(),
        vec![
            (Value::Str("x".into()), 2),
            (Value::Str("y".into()), 2),
            (Value::Str("z".into()), 1)
        ]
    );
    let d = df.describe().unwrap();
    assert_eq!(d["a"].get(0).unwrap(), Value::Float(5.0));
    assert_eq!(df["s"].get(4).unwrap(), Value::Str("z".into()));
    let t = df
        .with_columns([
            (col("a") / 2).alias("half"),
            col("a").cast(DType::Bool).alias("nz"),
        ])
        .unwrap();
    assert_eq!(t["half"].get(0).unwrap(), Value::Float(1.5));
    assert_eq!(t["nz"].get(0).unwrap(), Value::Bool(true));
}

#[test]
fn date_parts_of_timestamps() {
    let p = LocalPlacement::shared();
    // 2016-02-29 13:45:00 UTC, a Monday.
    let ts = 1_456_753_500i64;
    let df = DataFrame::from_columns(
        p.clone(),
        vec![Column::from_vec("t", DType::Timestamp, vec![ts], p.as_ref()).unwrap()],
    )
    .unwrap();
    let d = df
        .select([
            col("t").dt().year().alias("y"),
            col("t").dt().month().alias("m"),
            col("t").dt().day().alias("d"),
            col("t").dt().weekday().alias("w"),
            col("t").dt().hour().alias("h"),
            col("t").dt().minute().alias("mi"),
            (col("t") + 60).alias("later"),
        ])
        .unwrap();
    let row: Vec<Value> = d.columns().map(|c| c.get(0).unwrap()).collect();
    assert_eq!(
        row,
        [
            Value::Int(2016),
            Value::Int(2),
            Value::Int(29),
            Value::Int(1),
            Value::Int(13),
            Value::Int(45),
            Value::Timestamp(ts + 60)
        ]
    );
}
