//! DataFrame operations against plain in-memory reference computations, and CSV edge cases.

use std::collections::BTreeMap;

use farmem_frame::{Agg, Cmp, Column, DType, DataFrame, FrameError, LocalPlacement, Value, csv};
use proptest::prelude::*;

fn load(s: &str) -> Result<DataFrame, FrameError> {
    csv::read_csv(s.as_bytes(), &Default::default(), LocalPlacement::shared())
}

fn frame(keys: &[i64], vals: &[f64]) -> DataFrame {
    let p = LocalPlacement::shared();
    DataFrame::from_columns(
        p.clone(),
        vec![
            Column::from_vec("k", DType::I64, keys.to_vec(), p.as_ref()).unwrap(),
            Column::from_vec("v", DType::F64, vals.to_vec(), p.as_ref()).unwrap(),
        ],
    )
    .unwrap()
}

#[test]
fn csv_edge_cases_load() {
    let df = load("id,name,score,when\r\n1,\"a, \"\"quoted\"\" name\",2.5,2016-01-01 10:00:00\r\n2,,,2016-01-02 00:00:00\r\n\r\n3,\"two\nlines\",-1,2016-01-03 00:00:00\r\n").unwrap();
    assert_eq!(df.len(), 3);
    assert_eq!(df.column("id").unwrap().dtype(), DType::I64);
    assert_eq!(df.column("score").unwrap().dtype(), DType::F64);
    assert_eq!(df.column("when").unwrap().dtype(), DType::Timestamp);
    let name = df.column("name").unwrap();
    assert_eq!(
        name.get(0).unwrap(),
        Value::Str("a, \"quoted\" name".into())
    );
    // Empty fields are nulls.
    assert_eq!(name.get(1).unwrap(), Value::Null);
    assert_eq!(name.null_count(), 1);
    assert_eq!(name.get(2).unwrap(), Value::Str("two\nlines".into()));
    let score = df.column("score").unwrap();
    assert_eq!(score.get(1).unwrap(), Value::Null);
    // The empty score is null: not counted, not summed.
    assert_eq!(score.count().unwrap(), 2);
    assert_eq!(score.mean().unwrap(), Some(0.75));
    // Writing and reading back gives the same frame.
    let mut out = Vec::new();
    df.write_csv(&mut out).unwrap();
    let back = load(std::str::from_utf8(&out).unwrap()).unwrap();
    assert_eq!(back.to_string(), df.to_string());
}

#[test]
fn bad_rows_report_their_line() {
    match load("a,b\n1,2\n3\n") {
        Err(FrameError::BadRow { line: 3, reason }) => {
            assert!(reason.contains("1 fields"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let opts = csv::CsvOptions {
        schema: vec![("a".into(), DType::I64)],
        ..Default::default()
    };
    let r = csv::read_csv(
        "a,b\n1,x\n\"q\",y\n".as_bytes(),
        &opts,
        LocalPlacement::shared(),
    );
    match r {
        Err(FrameError::BadRow { line: 3, reason }) => {
            assert!(reason.contains("not an integer"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let opts = csv::CsvOptions {
        schema: vec![("nope".into(), DType::I64)],
        ..Default::default()
    };
    let r = csv::read_csv("a\n1\n".as_bytes(), &opts, LocalPlacement::shared());
    assert!(matches!(r, Err(FrameError::MissingColumn(c)) if c == "nope"));
    let opts = csv::CsvOptions {
        schema: vec![("a".into(), DType::U8)],
        ..Default::default()
    };
    let r = csv::read_csv("a\n300\n".as_bytes(), &opts, LocalPlacement::shared());
    assert!(
        matches!(r, Err(FrameError::BadRow { line: 2, .. })),
        "{r:?}"
    );
}

#[test]
fn typed_errors() {
    let df = frame(&[1, 2], &[1.0, 2.0]);
    assert!(matches!(df.column("x"), Err(FrameError::MissingColumn(_))));
    assert!(matches!(
        df.group_by_agg("v", "k", &[Agg::Sum]),
        Err(FrameError::TypeMismatch { .. })
    ));
    assert!(matches!(
        df.select_rows("k", Cmp::Eq, &Value::Str("a".into())),
        Err(FrameError::TypeMismatch { .. })
    ));
    let p = LocalPlacement::shared();
    let short = Column::from_vec("s", DType::I64, vec![1i64], p.as_ref()).unwrap();
    assert!(matches!(
        df.clone().with_column(short),
        Err(FrameError::LengthMismatch { .. })
    ));
    let dup = Column::from_vec("k", DType::I64, vec![1i64, 2], p.as_ref()).unwrap();
    assert!(matches!(
        df.with_column(dup),
        Err(FrameError::DuplicateColumn(_))
    ));
}

#[test]
fn sort_head_describe_json() {
    let df = frame(&[3, 1, 2, 1], &[0.5, 2.0, -1.0, 4.0]);
    let s = df.sort_by("k", false).unwrap();
    assert_eq!(
        s.column("v").unwrap().read_f64(0..4).unwrap(),
        [2.0, 4.0, -1.0, 0.5]
    );
    let s = df.sort_by("k", true).unwrap();
    assert_eq!(
        s.column("v").unwrap().read_f64(0..4).unwrap(),
        [0.5, -1.0, 2.0, 4.0]
    );
    assert_eq!(df.head(2).unwrap().len(), 2);
    let d = df.describe().unwrap();
    assert_eq!(
        d.column("k").unwrap().read_f64(0..5).unwrap(),
        [4.0, 1.75, 1.0, 3.0, 1.0]
    );
    let mut out = Vec::new();
    df.head(1).unwrap().write_json(&mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "[\n  {\"k\": 3, \"v\": 0.5}\n]\n"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ops_match_reference(rows in proptest::collection::vec((0i64..6, -100i32..100), 0..300), cut in -100i32..100) {
        let keys: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let vals: Vec<f64> = rows.iter().map(|r| f64::from(r.1)).collect();
        let df = frame(&keys, &vals);
        // filter
        let f = df.filter_cmp("v", Cmp::Ge, &Value::Float(f64::from(cut))).unwrap();
        let want: Vec<f64> = vals.iter().copied().filter(|&v| v >= f64::from(cut)).collect();
        prop_assert_eq!(f.column("v").unwrap().read_f64(0..f.len()).unwrap(), want);
        // group-by with every aggregate
        let mut groups: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (k, v) in keys.iter().zip(&vals) {
            groups.entry(*k).or_default().push(*v);
        }
        let g = df.group_by_agg("k", "v", &[Agg::Count, Agg::Sum, Agg::Mean, Agg::Min, Agg::Max, Agg::Median]).unwrap();
        prop_assert_eq!(g.column("k").unwrap().read_i64(0..g.len()).unwrap(), groups.keys().copied().collect::<Vec<_>>());
        for (i, vs) in groups.values().enumerate() {
            let mut s = vs.clone();
            s.sort_by(f64::total_cmp);
            let row = |c: &str| g.column(c).unwrap().read_f64(i..i + 1).unwrap()[0];
            prop_assert_eq!(row("v_count"), vs.len() as f64);
            prop_assert_eq!(row("v_sum"), vs.iter().sum::<f64>());
            prop_assert_eq!(row("v_mean"), vs.iter().sum::<f64>() / vs.len() as f64);
            prop_assert_eq!(row("v_min"), s[0]);
            prop_assert_eq!(row("v_max"), s[s.len() - 1]);
            prop_assert_eq!(row("v_median"), s[(s.len() - 1) / 2]);
        }
        // unique, value counts, sort
        let u: Vec<Value> = groups.keys().map(|&k| Value::Int(k)).collect();
        prop_assert_eq!(df.column("k").unwrap().unique().unwrap(), u);
        let vc: Vec<(Value, u64)> = groups.iter().map(|(k, v)| (Value::Int(*k), v.len() as u64)).collect();
        prop_assert_eq!(df.value_counts("k").unwrap(), vc);
        let mut sorted = vals.clone();
        sorted.sort_by(f64::total_cmp);
        let s = df.sort_by("v", false).unwrap();
        prop_assert_eq!(s.column("v").unwrap().read_f64(0..s.len()).unwrap(), sorted);
        // derived column
        let d = df.derive_i64("kk", DType::I64, &["k", "v"], |x| x[0] * 2 + x[1]).unwrap();
        let want: Vec<i64> = keys.iter().zip(&vals).map(|(k, v)| k * 2 + *v as i64).collect();
        prop_assert_eq!(d.read_i64(0..d.len()).unwrap(), want);
    }
}

/// A file of several blocks loads the same with one and two parsing threads, quoted fields that
/// span lines included, and a bad record far into it is reported at its line.
#[test]
fn parallel_csv_loading_matches_sequential_and_names_lines() {
    let mut text = String::from("i,x,s,n\n");
    let mut line = 1u64;
    for i in 0..480_000u64 {
        line += 1;
        match i % 1000 {
            7 => {
                text.push_str(&format!("{i},{}.5,\"two\nlines {i}\",\n", i / 2));
                line += 1;
            }
            _ => text.push_str(&format!("{i},{}.5,s{},{}\n", i / 2, i % 13, i % 5)),
        }
    }
    assert!(
        text.len() > 2 * (4 << 20),
        "{} bytes: more than one block",
        text.len()
    );
    let load_with = |threads: usize, t: &str| {
        let opts = csv::CsvOptions {
            threads,
            ..Default::default()
        };
        csv::read_csv(t.as_bytes(), &opts, LocalPlacement::shared())
    };
    let one = load_with(1, &text).unwrap();
    let two = load_with(2, &text).unwrap();
    assert_eq!(one.len(), 480_000);
    assert_eq!(
        one.head(50).unwrap().to_string(),
        two.head(50).unwrap().to_string()
    );
    for name in ["i", "x", "s", "n"] {
        let (a, b) = (&one[name], &two[name]);
        assert_eq!(
            a.values(0..a.len()).unwrap(),
            b.values(0..b.len()).unwrap(),
            "{name}"
        );
    }
    assert_eq!(two["n"].null_count(), 480);
    assert_eq!(
        two["s"].get(1007).unwrap(),
        Value::Str("two\nlines 1007".into())
    );
    let bad = format!("{text}1,2.5,x\n{line_after}", line_after = "oops,1,x,1\n");
    match load_with(2, &bad) {
        Err(FrameError::BadRow { line: l, reason }) => {
            assert_eq!(l, line + 1, "{reason}");
            assert!(reason.contains("fields"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
