//! The taxi workload: generator determinism, CSV/direct loading and far placements giving the
//! same answers.

use crate::apps::taxi::{self, TaxiGen};
use std::sync::Arc;

use farmem::containers::Offload;
use farmem::{Runtime, RuntimeConfig};
use farmem_frame::{FarPlacement, LocalPlacement, PlacementRef, csv};

fn far(offload: Offload, budget: usize) -> PlacementRef {
    let rt = Runtime::new(RuntimeConfig::new(budget).region_size(64 << 10)).unwrap();
    Arc::new(FarPlacement::new(rt, offload))
}

#[test]
fn generator_is_deterministic() {
    let g = TaxiGen::new(7);
    assert_eq!(g.row(42), TaxiGen::new(7).row(42));
    assert!(g.row(1).vendor_id == 1 || g.row(1).vendor_id == 2);
}

/// The application's haversine expression gives the bits of the row-by-row function.
#[test]
fn haversine_expression_equals_the_scalar_function() {
    use farmem_frame::{Column, DType, DataFrame, Value};
    let p = LocalPlacement::shared();
    let pts: Vec<f64> = (0..2_000).map(|i| f64::from(i) * 0.173 - 170.0).collect();
    let lat: Vec<f64> = pts.iter().map(|x| x / 2.1).collect();
    let cols = vec![
        Column::from_vec("lon1", DType::F64, pts.clone(), p.as_ref()).unwrap(),
        Column::from_vec("lat1", DType::F64, lat.clone(), p.as_ref()).unwrap(),
        Column::from_vec(
            "lon2",
            DType::F64,
            pts.iter().rev().copied().collect(),
            p.as_ref(),
        )
        .unwrap(),
        Column::from_vec(
            "lat2",
            DType::F64,
            lat.iter().rev().copied().collect(),
            p.as_ref(),
        )
        .unwrap(),
    ];
    let df = DataFrame::from_columns(p, cols).unwrap();
    use farmem_frame::col;
    let d = df
        .eval(super::analysis::haversine(
            col("lon1"),
            col("lat1"),
            col("lon2"),
            col("lat2"),
        ))
        .unwrap();
    let n = pts.len();
    for i in 0..n {
        let want = super::analysis::haversine_km(pts[i], lat[i], pts[n - 1 - i], lat[n - 1 - i]);
        match d.get(i).unwrap() {
            Value::Float(x) => assert_eq!(x.to_bits(), want.to_bits(), "row {i}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn csv_and_direct_generation_give_identical_answers() {
    let g = TaxiGen::new(11);
    let rows = 20_000;
    let direct = taxi::generate_frame(&g, rows, LocalPlacement::shared(), &mut |_| {}).unwrap();
    let mut text = Vec::new();
    taxi::write_csv(&g, rows, &mut text, &mut |_| {}).unwrap();
    let loaded = csv::read_csv(&text[..], &taxi::csv_options(), LocalPlacement::shared()).unwrap();
    let mut steps = 0;
    let a = taxi::analyze(&direct, &mut |_, _, _| steps += 1).unwrap();
    let b = taxi::analyze(&loaded, &mut |_, _, _| {}).unwrap();
    assert_eq!(steps, 9);
    assert_eq!(a, b);
    assert_eq!(a.rows, rows);
    assert_eq!(a.vendors, [1, 2]);
    // The generator's distributions show up in the answers.
    assert!(
        a.share_not_stored > 0.98 && a.share_not_stored < 1.0,
        "{}",
        a.share_not_stored
    );
    assert_eq!(a.vendors_stored, [1, 2]);
    assert!(a.trips_over_100km > 0);
    assert_eq!(
        a.by_month.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let peak = a.by_hour.iter().max_by_key(|h| h.1).unwrap().0;
    assert!((17..=21).contains(&peak), "rush hour peak at {peak}");
    let total: u64 = a
        .passengers_vendor1
        .iter()
        .chain(&a.passengers_vendor2)
        .map(|p| p.1)
        .sum();
    assert_eq!(total, rows);
    assert!(a.duration_min == 0 && a.duration_max > 86_400);
    assert!(a.pickup_min.starts_with("2016-01-01") && a.pickup_max.starts_with("2016-06-30"));
    println!("{a}");
}

#[test]
fn taxi_answers_equal_across_placements() {
    let g = TaxiGen::new(5);
    let rows = 30_000;
    let local = taxi::generate_frame(&g, rows, LocalPlacement::shared(), &mut |_| {}).unwrap();
    let want = taxi::analyze(&local, &mut |_, _, _| {}).unwrap();
    // About 4 MiB of columns against a 1 MiB budget.
    for offload in [Offload::Remote, Offload::Local] {
        let df = taxi::generate_frame(&g, rows, far(offload, 1 << 20), &mut |_| {}).unwrap();
        let got = taxi::analyze(&df, &mut |_, _, _| {}).unwrap();
        assert_eq!(got, want, "{offload:?}");
    }
}
