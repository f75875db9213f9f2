//! Frames on far memory (object mode, with and without the remote agent) give exactly the answers
//! of all-local frames, with a local budget well under the data size.

use farmem::containers::Offload;
use farmem::{Runtime, RuntimeConfig};
use farmem_frame::{Agg, Cmp, DType, FarPlacement, LocalPlacement, PlacementRef, Value};
use std::sync::Arc;

fn far(offload: Offload, budget: usize) -> PlacementRef {
    let rt = Runtime::new(RuntimeConfig::new(budget).region_size(64 << 10)).unwrap();
    Arc::new(FarPlacement::new(rt, offload))
}

#[test]
fn frame_ops_equal_across_placements() {
    let p_local = LocalPlacement::shared();
    let p_far = far(Offload::Remote, 1 << 20);
    let keys: Vec<i64> = (0..50_000).map(|i| (i * 7919) % 13).collect();
    let vals: Vec<f64> = (0..50_000)
        .map(|i| f64::from(i % 1000) * 0.5 - 100.0)
        .collect();
    let build = |p: &PlacementRef| {
        farmem_frame::DataFrame::from_columns(
            p.clone(),
            vec![
                farmem_frame::Column::from_vec("k", DType::I64, keys.clone(), p.as_ref()).unwrap(),
                farmem_frame::Column::from_vec("v", DType::F64, vals.clone(), p.as_ref()).unwrap(),
            ],
        )
        .unwrap()
    };
    let (a, b) = (build(&p_local), build(&p_far));
    let show = |df: &farmem_frame::DataFrame| {
        let f = df.filter_cmp("v", Cmp::Gt, &Value::Float(50.0)).unwrap();
        let g = f
            .group_by_agg(
                "k",
                "v",
                &[Agg::Count, Agg::Sum, Agg::Min, Agg::Max, Agg::Median],
            )
            .unwrap();
        let s = df.sort_by("v", true).unwrap().head(5).unwrap();
        format!(
            "{g}\n{s}\n{:?}\n{:?}\n{:?}",
            df.column("k").unwrap().unique().unwrap(),
            df.column("k").unwrap().mean().unwrap(),
            df.column("v").unwrap().get(49_999).unwrap()
        )
    };
    assert_eq!(show(&a), show(&b));
    assert!(matches!(
        b.column("v").unwrap().get(50_000),
        Err(farmem_frame::FrameError::OutOfRange { .. })
    ));
}

/// Derived columns, filtered value counts and group medians (the operations far placements run
/// on the agent) equal the all-local ones, offloaded and client-side; bad inputs are errors.
#[test]
fn agent_frame_ops_equal_across_placements() {
    use farmem_frame::expr::{Expr, Type};
    use farmem_frame::{Column, DataFrame, FrameError};
    let n = 40_000i64;
    let t0: Vec<i64> = (0..n).map(|i| 1_451_606_400 + i * 3_917).collect();
    let t1: Vec<i64> = t0.iter().map(|t| t + t % 5_003).collect();
    let pts: Vec<f64> = (0..n).map(|i| (i % 720) as f64 * 0.5 - 180.0).collect();
    let vendor: Vec<u8> = (0..n).map(|i| (i % 3 + 1) as u8).collect();
    let flags: Vec<&str> = (0..n)
        .map(|i| if i % 11 == 0 { "Y" } else { "N" })
        .collect();
    let build = |p: PlacementRef| {
        let q = p.as_ref();
        DataFrame::from_columns(
            p.clone(),
            vec![
                Column::from_vec("a", DType::Timestamp, t0.clone(), q).unwrap(),
                Column::from_vec("b", DType::Timestamp, t1.clone(), q).unwrap(),
                Column::from_vec("x", DType::F64, pts.clone(), q).unwrap(),
                Column::from_vec("vendor", DType::U8, vendor.clone(), q).unwrap(),
                Column::from_strings("flag", &flags, q).unwrap(),
            ],
        )
        .unwrap()
    };
    let show = |df: DataFrame| {
        let diff = Expr::col(1).sub(Expr::col(0));
        let d = df.derive("d", &diff, &["a", "b"]).unwrap();
        // A float expression over four inputs, and a u8 and a bool output.
        let dist = Expr::col(0)
            .to_radians()
            .sin()
            .mul(Expr::col(1).cos())
            .add(Expr::col(2).sub(Expr::col(3)).abs().sqrt())
            .mul(Expr::lit_f64(6371.0));
        let h = df.derive("h", &dist, &["x", "x", "x", "x"]).unwrap();
        let m = df
            .derive("m", &Expr::col(0).month().cast(Type::U8), &["a"])
            .unwrap();
        let w = df
            .derive("w", &Expr::col(0).weekday().cast(Type::U8), &["b"])
            .unwrap();
        let late = df
            .derive(
                "late",
                &Expr::col(0)
                    .hour()
                    .ge(Expr::lit_i64(20))
                    .and(Expr::col(1).cast(Type::U64).ne(Expr::lit_u64(2))),
                &["a", "vendor"],
            )
            .unwrap();
        assert_eq!(late.dtype(), DType::Bool);
        let df = df.with_column(late).unwrap();
        let df = df.with_column(d).unwrap().with_column(h).unwrap();
        let df = df.with_column(m).unwrap().with_column(w).unwrap();
        let vendor = df.column("vendor").unwrap();
        let flag = df.column("flag").unwrap();
        let vc = df
            .column("m")
            .unwrap()
            .value_counts_where(vendor, Cmp::Eq, &Value::Int(2))
            .unwrap();
        let vy = vendor
            .value_counts_where(flag, Cmp::Eq, &Value::Str("Y".into()))
            .unwrap();
        let none = vendor
            .value_counts_where(flag, Cmp::Eq, &Value::Str("?".into()))
            .unwrap();
        let med = df
            .group_by_agg("w", "d", &[Agg::Median, Agg::Count, Agg::Mean])
            .unwrap();
        let over = df
            .column("h")
            .unwrap()
            .count_where(Cmp::Gt, &Value::Float(0.0));
        // Bad input: a column past the inputs, an ill-typed expression, a string input, a mask
        // of another length.
        assert!(matches!(
            df.derive("e", &diff, &["a"]),
            Err(FrameError::Expr(_))
        ));
        assert!(matches!(
            df.derive("e", &Expr::col(0).hour(), &["x"]),
            Err(FrameError::Expr(_))
        ));
        assert!(matches!(
            df.derive("e", &Expr::col(0).hour(), &["flag"]),
            Err(FrameError::TypeMismatch { .. })
        ));
        let short = df.head(10).unwrap();
        assert!(matches!(
            vendor.value_counts_where(short.column("flag").unwrap(), Cmp::Eq, &Value::Int(1)),
            Err(FrameError::LengthMismatch { .. })
        ));
        format!(
            "{}\n{vc:?}\n{vy:?}\n{none:?}\n{med}\n{over:?}",
            df.head(20).unwrap()
        )
    };
    let want = show(build(LocalPlacement::shared()));
    for offload in [Offload::Remote, Offload::Local] {
        assert_eq!(show(build(far(offload, 1 << 20))), want, "{offload:?}");
    }
}

/// Reads of row ranges (values, slices, heads) give the local rows, for ranges inside one chunk,
/// across chunk boundaries and at the end, with most chunks far.
#[test]
fn row_ranges_equal_across_placements() {
    let xs: Vec<i64> = (0..100_000).map(|i| i * 3 - 7).collect();
    let cols: Vec<farmem_frame::Column> = [
        LocalPlacement::shared(),
        far(Offload::Remote, 1 << 20),
        far(Offload::Local, 1 << 20),
    ]
    .iter()
    .map(|p| farmem_frame::Column::from_vec("x", DType::I64, xs.clone(), p.as_ref()).unwrap())
    .collect();
    for r in [0..10, 8_190..8_200, 12_345..70_000, 99_990..100_000, 5..5] {
        let want: Vec<Value> = xs[r.clone()].iter().map(|&x| Value::Int(x)).collect();
        for c in &cols {
            assert_eq!(c.values(r.clone()).unwrap(), want, "{r:?}");
            assert_eq!(
                c.slice(r.clone()).unwrap().values(0..r.len()).unwrap(),
                want
            );
            assert_eq!(c.read_i64(r.clone()).unwrap(), xs[r.clone()].to_vec());
        }
    }
}

/// The all-local placement runs the agent's kernels over its vectors (with the agent's threads):
/// on columns long enough to be split over threads and with more distinct values than the agent
/// answers (far placements then count on the client), every placement gives the same answers.
#[test]
fn local_kernels_equal_agent_on_large_columns() {
    use farmem_frame::{Column, DataFrame};
    let n = 600_000i64;
    let keys: Vec<i64> = (0..n).map(|i| (i * 7_919) % 100_003).collect();
    let small: Vec<u8> = (0..n).map(|i| ((i * 31) % 9) as u8).collect();
    let vals: Vec<i64> = (0..n).map(|i| (i * 104_729) % 5_000 - 2_500).collect();
    let show = |p: PlacementRef| {
        let q = p.as_ref();
        let df = DataFrame::from_columns(
            p.clone(),
            vec![
                Column::from_vec("k", DType::I64, keys.clone(), q).unwrap(),
                Column::from_vec("s", DType::U8, small.clone(), q).unwrap(),
                Column::from_vec("v", DType::I64, vals.clone(), q).unwrap(),
            ],
        )
        .unwrap();
        let k = df.column("k").unwrap();
        let s = df.column("s").unwrap();
        let vc = k.value_counts().unwrap();
        let uniq = k.unique().unwrap().len();
        let sw = s
            .value_counts_where(df.column("v").unwrap(), Cmp::Gt, &Value::Int(0))
            .unwrap();
        let by_s = df
            .group_by_agg("s", "v", &[Agg::Median, Agg::Sum, Agg::Min])
            .unwrap();
        let by_k = df
            .group_by_agg("k", "v", &[Agg::Median, Agg::Count])
            .unwrap();
        format!(
            "{} {:?} {uniq}\n{sw:?}\n{by_s}\n{}",
            vc.len(),
            &vc[..5],
            by_k.head(30).unwrap()
        )
    };
    let want = show(LocalPlacement::shared());
    for offload in [Offload::Remote, Offload::Local] {
        assert_eq!(show(far(offload, 4 << 20)), want, "{offload:?}");
    }
}
