//! Frames on far memory (object mode, with and without the remote agent) give exactly the answers
//! of all-local frames, with a local budget well under the data size.

use farmem::containers::Offload;
use farmem::{Runtime, RuntimeConfig};
use farmem_frame::taxi::{self, TaxiGen};
use farmem_frame::{Agg, Cmp, DType, FarPlacement, LocalPlacement, PlacementRef, Value};
use std::sync::Arc;

fn far(offload: Offload, budget: usize) -> PlacementRef {
    let rt = Runtime::new(RuntimeConfig::new(budget).region_size(64 << 10)).unwrap();
    Arc::new(FarPlacement::new(rt, offload))
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
        let f = df.filter("v", Cmp::Gt, &Value::Float(50.0)).unwrap();
        let g = f
            .group_by(
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
