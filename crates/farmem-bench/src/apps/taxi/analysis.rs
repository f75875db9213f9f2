//! The nine analysis steps of the AIFM taxi experiment, as a function of a frame.

use std::fmt;
use std::time::{Duration, Instant};

use farmem_frame::Result;
use farmem_frame::prelude::*;

/// Short names of the nine steps, for progress output and timings.
pub const STEP_NAMES: [&str; 9] = [
    "rows and vendors",
    "passengers, vendor 1",
    "passengers, vendor 2",
    "trip duration",
    "store-and-forward",
    "haversine distance",
    "pickup time parts",
    "median duration by day",
    "median duration by month",
];

/// The printable, comparable results of the nine steps. Every field is computed from exact
/// integer sums and counts, so all modes give identical answers.
#[derive(Clone, Debug, PartialEq)]
pub struct TaxiAnswers {
    /// 1: number of trips.
    pub rows: u64,
    /// 1: distinct vendor ids.
    pub vendors: Vec<i64>,
    /// 2: `(passenger_count, trips)` of vendor 1.
    pub passengers_vendor1: Vec<(i64, u64)>,
    /// 3: the same for vendor 2.
    pub passengers_vendor2: Vec<(i64, u64)>,
    /// 4: mean trip duration in seconds.
    pub duration_mean: f64,
    /// 4: shortest trip, seconds.
    pub duration_min: i64,
    /// 4: longest trip, seconds.
    pub duration_max: i64,
    /// 5: share of trips with `store_and_fwd_flag = N`.
    pub share_not_stored: f64,
    /// 5: vendors among the `Y` trips.
    pub vendors_stored: Vec<i64>,
    /// 6: trips longer than 100 km as the crow flies.
    pub trips_over_100km: u64,
    /// 7: first pickup.
    pub pickup_min: String,
    /// 7: last pickup.
    pub pickup_max: String,
    /// 7: `(hour, trips)`.
    pub by_hour: Vec<(i64, u64)>,
    /// 7: `(day of month 1..=31, trips)` (AIFM's `pickup_day`).
    pub by_day: Vec<(i64, u64)>,
    /// 7: `(month, trips)`.
    pub by_month: Vec<(i64, u64)>,
    /// 7: the first 10 rows of the main and derived time columns, as a table.
    pub head: String,
    /// 8: `(day of month, median duration in seconds)`; the median of an even count is the
    /// mean of the two middle values (AIFM's definition).
    pub median_by_day: Vec<(i64, f64)>,
    /// 9: `(month, median duration in seconds)`.
    pub median_by_month: Vec<(i64, f64)>,
}

fn ints(v: &[Value]) -> Vec<i64> {
    v.iter()
        .filter_map(|v| match v {
            Value::Int(x) | Value::Timestamp(x) => Some(*x),
            _ => None,
        })
        .collect()
}

fn int(v: &Value) -> i64 {
    ints(std::slice::from_ref(v)).first().copied().unwrap_or(0)
}

fn counts(v: Vec<(Value, u64)>) -> Vec<(i64, u64)> {
    v.into_iter().map(|(k, c)| (int(&k), c)).collect()
}

/// The rows of a small frame as `(column a, column b)` pairs.
fn pairs<A, B>(
    df: &DataFrame,
    a: &str,
    b: &str,
    f: impl Fn(&Value, &Value) -> (A, B),
) -> Result<Vec<(A, B)>> {
    let (ka, kb) = (df.column(a)?, df.column(b)?);
    Ok(ka
        .values(0..df.len())?
        .iter()
        .zip(&kb.values(0..df.len())?)
        .map(|(x, y)| f(x, y))
        .collect())
}

/// Great-circle distance in km between `(lon, lat)` points in degrees, row by row (a reference
/// for [`haversine`]).
#[cfg(test)]
pub fn haversine_km(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

/// Great-circle distance in km (Earth radius 6371 km) between `(lon1, lat1)` and `(lon2, lat2)`
/// in degrees: the same operations in the same order as `haversine_km`, so the same
/// bits.
pub fn haversine(lon1: Expr, lat1: Expr, lon2: Expr, lat2: Expr) -> Expr {
    let (p1, p2) = (lat1.radians(), lat2.radians());
    let s1 = ((p2.clone() - p1.clone()) / 2.0).sin();
    let s2 = ((lon2 - lon1).radians() / 2.0).sin();
    let a = s1.clone() * s1 + p1.cos() * p2.cos() * (s2.clone() * s2);
    lit(2.0 * 6371.0) * a.sqrt().arcsin()
}

/// Runs the nine steps on a frame with the TLC columns. `on_step(i, name, elapsed)` is called
/// after step `i` (0-based) with its wall time.
///
/// # Errors
/// [`farmem_frame::FrameError::MissingColumn`] or [`farmem_frame::FrameError::TypeMismatch`]
/// if the frame lacks the TLC columns; storage errors.
pub fn analyze(
    df: &DataFrame,
    on_step: &mut dyn FnMut(usize, &str, Duration),
) -> Result<TaxiAnswers> {
    let mut t = Instant::now();
    let mut done = |i: usize, t: &mut Instant| {
        on_step(i, STEP_NAMES[i], t.elapsed());
        *t = Instant::now();
    };
    // 1
    let rows = df.len() as u64;
    let vendors = ints(&df.column("VendorID")?.unique()?);
    done(0, &mut t);
    // 2, 3: trips per (vendor, passengers) in one group-by.
    let pv = df.group_by(["VendorID", "passenger_count"]).agg([len()])?;
    let hist = |id: i64| {
        let v = pv.filter(col("VendorID").eq(id))?;
        pairs(&v, "passenger_count", "len", |p, n| (int(p), int(n) as u64))
    };
    let passengers_vendor1 = hist(1)?;
    done(1, &mut t);
    let passengers_vendor2 = hist(2)?;
    done(2, &mut t);
    // 4
    let dur = col("tpep_dropoff_datetime") - col("tpep_pickup_datetime");
    let df = df.with_columns([dur.alias("trip_duration")])?;
    let d = col("trip_duration");
    let duration_mean = match df.agg(d.clone().mean())? {
        Value::Float(x) => x,
        _ => 0.0,
    };
    let duration_min = int(&df.agg(d.clone().min())?);
    let duration_max = int(&df.agg(d.max())?);
    done(3, &mut t);
    // 5
    let flag = col("store_and_fwd_flag");
    let share_not_stored = match df.agg(flag.eq(lit("N")).mean())? {
        Value::Float(x) => x,
        _ => 0.0,
    };
    let fv = df
        .group_by(["store_and_fwd_flag", "VendorID"])
        .agg([len()])?;
    let vendors_stored =
        ints(&fv.filter(col("store_and_fwd_flag").eq(lit("Y")))?["VendorID"].unique()?);
    done(4, &mut t);
    // 6
    let (lon1, lat1) = (col("pickup_longitude"), col("pickup_latitude"));
    let (lon2, lat2) = (col("dropoff_longitude"), col("dropoff_latitude"));
    let df = df.with_columns([haversine(lon1, lat1, lon2, lat2).alias("distance_km")])?;
    let trips_over_100km = int(&df.agg(col("distance_km").gt(100.0).sum())?) as u64;
    done(5, &mut t);
    // 7
    let pickup = col("tpep_pickup_datetime");
    let pickup_min = df.agg(pickup.clone().min())?.to_string();
    let pickup_max = df.agg(pickup.clone().max())?.to_string();
    let df = df.with_columns([
        pickup.clone().dt().hour().alias("pickup_hour"),
        pickup.clone().dt().day().alias("pickup_day"),
        pickup.dt().month().alias("pickup_month"),
    ])?;
    let by_hour = counts(df.value_counts("pickup_hour")?);
    let by_day = counts(df.value_counts("pickup_day")?);
    let by_month = counts(df.value_counts("pickup_month")?);
    let head = df
        .select([
            "VendorID",
            "tpep_pickup_datetime",
            "passenger_count",
            "trip_duration",
            "distance_km",
            "pickup_hour",
            "pickup_day",
            "pickup_month",
        ])?
        .head(10)?
        .to_string();
    done(6, &mut t);
    // 8, 9
    let median_by = |key: &str| {
        let g = df.group_by([key]).agg([col("trip_duration").median()])?;
        pairs(&g, key, "trip_duration", |k, m| match m {
            Value::Float(m) => (int(k), *m),
            _ => (int(k), f64::NAN),
        })
    };
    let median_by_day = median_by("pickup_day")?;
    done(7, &mut t);
    let median_by_month = median_by("pickup_month")?;
    done(8, &mut t);
    Ok(TaxiAnswers {
        rows,
        vendors,
        passengers_vendor1,
        passengers_vendor2,
        duration_mean,
        duration_min,
        duration_max,
        share_not_stored,
        vendors_stored,
        trips_over_100km,
        pickup_min,
        pickup_max,
        by_hour,
        by_day,
        by_month,
        head,
        median_by_day,
        median_by_month,
    })
}

impl fmt::Display for TaxiAnswers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hist = |v: &[(i64, u64)]| {
            v.iter()
                .map(|(k, c)| format!("{k}:{c}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let med = |v: &[(i64, f64)]| {
            v.iter()
                .map(|(k, c)| format!("{k}:{c}s"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(f, "1. trips: {}, vendors: {:?}", self.rows, self.vendors)?;
        writeln!(
            f,
            "2. passengers (vendor 1): {}",
            hist(&self.passengers_vendor1)
        )?;
        writeln!(
            f,
            "3. passengers (vendor 2): {}",
            hist(&self.passengers_vendor2)
        )?;
        writeln!(
            f,
            "4. trip duration: mean {:.3} s, min {} s, max {} s",
            self.duration_mean, self.duration_min, self.duration_max
        )?;
        writeln!(
            f,
            "5. store_and_fwd = N: {:.4}%, vendors with Y: {:?}",
            self.share_not_stored * 100.0,
            self.vendors_stored
        )?;
        writeln!(f, "6. trips over 100 km: {}", self.trips_over_100km)?;
        writeln!(
            f,
            "7. pickups from {} to {}",
            self.pickup_min, self.pickup_max
        )?;
        writeln!(f, "   by hour:  {}", hist(&self.by_hour))?;
        writeln!(f, "   by day:   {}", hist(&self.by_day))?;
        writeln!(f, "   by month: {}", hist(&self.by_month))?;
        for line in self.head.lines() {
            writeln!(f, "   {line}")?;
        }
        writeln!(
            f,
            "8. median duration by day:   {}",
            med(&self.median_by_day)
        )?;
        write!(
            f,
            "9. median duration by month: {}",
            med(&self.median_by_month)
        )
    }
}
