//! A deterministic synthetic generator of 2016 yellow-taxi trips.
//!
//! Row `i` depends only on the seed and `i`, so any range of rows can be produced independently
//! and every run with the same seed yields the same data, whatever the mode.

use std::io::Write;

use farmem_frame::{Column, ColumnBuilder, DataFrame, PlacementRef, Result};

use super::COLUMNS;

/// One trip, with the fields of the TLC files.
#[derive(Clone, Debug, PartialEq)]
pub struct TaxiRow {
    /// 1 or 2.
    pub vendor_id: u8,
    /// Pickup time, seconds since the epoch.
    pub pickup: i64,
    /// Drop-off time.
    pub dropoff: i64,
    /// Number of passengers (0..=9).
    pub passenger_count: u8,
    /// Miles.
    pub trip_distance: f64,
    /// Degrees (0 when the GPS fix is missing).
    pub pickup_longitude: f64,
    /// Degrees.
    pub pickup_latitude: f64,
    /// Rate code.
    pub ratecode_id: u8,
    /// `true` for "Y" (store and forward).
    pub store_and_fwd: bool,
    /// Degrees.
    pub dropoff_longitude: f64,
    /// Degrees.
    pub dropoff_latitude: f64,
    /// 1 card, 2 cash, 3 no charge, 4 dispute.
    pub payment_type: u8,
    /// Dollars.
    pub fare_amount: f64,
    /// Dollars.
    pub extra: f64,
    /// Dollars.
    pub mta_tax: f64,
    /// Dollars.
    pub tip_amount: f64,
    /// Dollars.
    pub tolls_amount: f64,
    /// Dollars.
    pub improvement_surcharge: f64,
    /// Dollars.
    pub total_amount: f64,
}

/// A tiny counter-based PRNG (SplitMix64 over `seed ^ row`), so rows are independent.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Picks an index with probability proportional to `weights`.
    fn pick(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut r = self.below(u64::from(total)) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if r < w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
}

/// Rounds to `d` decimals, so that values print and parse back exactly.
fn round(x: f64, d: i32) -> f64 {
    let m = 10f64.powi(d);
    (x * m).round() / m
}

/// Trips per hour of day, relative (night lull, morning and evening rush).
const HOUR_WEIGHTS: [u32; 24] = [
    36, 27, 20, 15, 11, 10, 22, 38, 46, 46, 44, 45, 48, 48, 50, 50, 48, 56, 66, 68, 62, 59, 57, 49,
];
/// 2016-01-01 00:00:00 UTC.
const START: i64 = 1_451_606_400;
/// Days covered: January to June 2016, like the six monthly files used in AIFM.
const DAYS: u64 = 182;

/// Generates synthetic trips.
///
#[derive(Clone, Copy, Debug)]
pub struct TaxiGen {
    seed: u64,
}

impl TaxiGen {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// Trip number `i`.
    pub fn row(&self, i: u64) -> TaxiRow {
        let mut r =
            Rng(self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
                ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        let vendor_id = if r.below(100) < 47 { 1 } else { 2 };
        let day = r.below(DAYS) as i64;
        let hour = r.pick(&HOUR_WEIGHTS) as i64;
        let pickup = START + day * 86_400 + hour * 3600 + r.below(3600) as i64;
        // Trip duration: log-normal around 11 minutes, with rare broken meter records.
        let duration = match r.below(10_000) {
            0..=4 => 0,
            5 => 86_400 + r.below(86_400) as i64,
            _ => (660.0 * (0.65 * r.normal()).exp()).clamp(30.0, 20_000.0) as i64,
        };
        let passenger_count = match vendor_id {
            1 => [1, 2, 3, 4, 5, 6, 0][r.pick(&[760, 150, 45, 22, 6, 4, 13])],
            _ => [1, 2, 3, 4, 5, 6, 0, 9][r.pick(&[680, 140, 40, 20, 70, 45, 4, 1])],
        };
        // Coordinates: Midtown-centred, 1.5% missing fixes (0, 0), 0.05% far away.
        let (plon, plat) = match r.below(10_000) {
            0..=149 => (0.0, 0.0),
            150..=154 => (-70.0 - 10.0 * r.unit(), 35.0 + 10.0 * r.unit()),
            _ => (-73.982 + 0.025 * r.normal(), 40.755 + 0.028 * r.normal()),
        };
        let speed_deg = 0.000_045 * (0.5 + r.unit()); // degrees per second, roughly 15 km/h
        let angle = std::f64::consts::TAU * r.unit();
        let reach = speed_deg * duration.min(7200) as f64;
        let (dlon, dlat) = if plon == 0.0 && r.below(2) == 0 {
            (0.0, 0.0)
        } else if plon == 0.0 {
            (-73.98 + 0.03 * r.normal(), 40.75 + 0.03 * r.normal())
        } else {
            (plon + reach * angle.cos() * 1.3, plat + reach * angle.sin())
        };
        let (plon, plat, dlon, dlat) = (
            round(plon, 6),
            round(plat, 6),
            round(dlon, 6),
            round(dlat, 6),
        );
        let miles = round((reach * 111.0 / 1.609 * (1.1 + 0.3 * r.unit())).max(0.0), 2);
        let ratecode_id = [1, 2, 5, 3, 4, 99][r.pick(&[9700, 220, 50, 20, 9, 1])];
        let store_and_fwd = match vendor_id {
            1 => r.below(1000) < 12,
            _ => r.below(1000) < 1,
        };
        let payment_type = [1, 2, 3, 4][r.pick(&[660, 330, 7, 3])];
        let fare_amount = match ratecode_id {
            2 => 52.0,
            _ => round(
                2.5 + 2.5 * miles + duration.min(7200) as f64 / 120.0 * 0.5,
                1,
            ),
        };
        let extra = match hour {
            16..=19 => 1.0,
            20..=23 | 0..=5 => 0.5,
            _ => 0.0,
        };
        let mta_tax = 0.5;
        let tolls_amount = if r.below(100) < 5 { 5.54 } else { 0.0 };
        let tip_amount = if payment_type == 1 {
            round(fare_amount * (0.1 + 0.15 * r.unit()), 2)
        } else {
            0.0
        };
        let improvement_surcharge = 0.3;
        let total_amount = round(
            fare_amount + extra + mta_tax + tip_amount + tolls_amount + improvement_surcharge,
            2,
        );
        TaxiRow {
            vendor_id,
            pickup,
            dropoff: pickup + duration,
            passenger_count,
            trip_distance: miles,
            pickup_longitude: plon,
            pickup_latitude: plat,
            ratecode_id,
            store_and_fwd,
            dropoff_longitude: dlon,
            dropoff_latitude: dlat,
            payment_type,
            fare_amount,
            extra,
            mta_tax,
            tip_amount,
            tolls_amount,
            improvement_surcharge,
            total_amount,
        }
    }
}

/// Writes `rows` trips as a TLC-layout CSV file (with header); calls `progress(rows_done)` now
/// and then.
///
/// # Errors
/// I/O errors.
pub fn write_csv(
    gen_: &TaxiGen,
    rows: u64,
    w: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
    writeln!(w, "{}", names.join(","))?;
    let ts = farmem_frame::time::format_timestamp;
    for i in 0..rows {
        let t = gen_.row(i);
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            t.vendor_id,
            ts(t.pickup),
            ts(t.dropoff),
            t.passenger_count,
            t.trip_distance,
            t.pickup_longitude,
            t.pickup_latitude,
            t.ratecode_id,
            if t.store_and_fwd { "Y" } else { "N" },
            t.dropoff_longitude,
            t.dropoff_latitude,
            t.payment_type,
            t.fare_amount,
            t.extra,
            t.mta_tax,
            t.tip_amount,
            t.tolls_amount,
            t.improvement_surcharge,
            t.total_amount,
        )?;
        if i % 65_536 == 65_535 {
            progress(i + 1);
        }
    }
    progress(rows);
    Ok(())
}

/// Generates `rows` trips straight into a frame with the TLC columns (no CSV in between); calls
/// `progress(rows_done)` now and then. Gives the same frame as writing and loading the CSV.
///
/// # Errors
/// Storage errors.
pub fn generate_frame(
    gen_: &TaxiGen,
    rows: u64,
    placement: PlacementRef,
    progress: &mut dyn FnMut(u64),
) -> Result<DataFrame> {
    let mut b: Vec<ColumnBuilder> = COLUMNS
        .iter()
        .map(|&(n, t)| ColumnBuilder::new(n, t, placement.as_ref()))
        .collect();
    for i in 0..rows {
        let t = gen_.row(i);
        let ints = [
            (0, i64::from(t.vendor_id)),
            (1, t.pickup),
            (2, t.dropoff),
            (3, i64::from(t.passenger_count)),
            (7, i64::from(t.ratecode_id)),
            (11, i64::from(t.payment_type)),
        ];
        for (c, v) in ints {
            b[c].push_i64(v)?;
        }
        b[8].push_str_value(if t.store_and_fwd { "Y" } else { "N" })?;
        let floats = [
            (4, t.trip_distance),
            (5, t.pickup_longitude),
            (6, t.pickup_latitude),
            (9, t.dropoff_longitude),
            (10, t.dropoff_latitude),
            (12, t.fare_amount),
            (13, t.extra),
            (14, t.mta_tax),
            (15, t.tip_amount),
            (16, t.tolls_amount),
            (17, t.improvement_surcharge),
            (18, t.total_amount),
        ];
        for (c, v) in floats {
            b[c].push_f64(v)?;
        }
        if i % 65_536 == 65_535 {
            progress(i + 1);
        }
    }
    progress(rows);
    let cols = b
        .into_iter()
        .map(ColumnBuilder::finish)
        .collect::<Result<Vec<Column>>>()?;
    DataFrame::from_columns(placement, cols)
}
