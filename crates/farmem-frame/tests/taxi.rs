//! The taxi workload: generator determinism and CSV/direct loading giving the same answers.

use farmem_frame::taxi::{self, TaxiGen};
use farmem_frame::{LocalPlacement, csv};

#[test]
fn csv_and_direct_generation_give_identical_answers() {
    let g = TaxiGen::new(11);
    let rows = 20_000;
    let direct = taxi::generate_frame(&g, rows, LocalPlacement::shared(), &mut |_| {}).unwrap();
    let mut text = Vec::new();
    taxi::write_csv(&g, rows, &mut text, &mut |_| {}).unwrap();
    let loaded = csv::read_csv(
        &text[..],
        &taxi::csv_options(),
        LocalPlacement::shared(),
        &mut |_| {},
    )
    .unwrap();
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
