//! The nine analysis steps of the AIFM taxi experiment, as a function of a frame.

use std::fmt;
use std::time::{Duration, Instant};

use farmem_frame::expr::{Expr, Type};
use farmem_frame::{Agg, Cmp, DataFrame, Result, Value};

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
    /// 7: `(day of week 1 = Monday .. 7 = Sunday, trips)`.
    pub by_day: Vec<(i64, u64)>,
    /// 7: `(month, trips)`.
    pub by_month: Vec<(i64, u64)>,
    /// 7: the first 10 rows of the main and derived time columns, as a table.
    pub head: String,
    /// 8: `(day of week, median duration in seconds)`.
    pub median_by_day: Vec<(i64, i64)>,
    /// 9: `(month, median duration in seconds)`.
    pub median_by_month: Vec<(i64, i64)>,
}

fn ints(v: &[Value]) -> Vec<i64> {
    v.iter()
        .filter_map(|v| match v {
            Value::Int(x) | Value::Timestamp(x) => Some(*x),
            _ => None,
        })
        .collect()
}

fn counts(v: Vec<(Value, u64)>) -> Vec<(i64, u64)> {
    v.into_iter()
        .filter_map(|(k, c)| match k {
            Value::Int(x) => Some((x, c)),
            _ => None,
        })
        .collect()
}

fn pairs(g: &DataFrame) -> Result<Vec<(i64, i64)>> {
    let cols: Vec<_> = g.columns().collect();
    let (Some(k), Some(v)) = (cols.first(), cols.get(1)) else {
        return Ok(Vec::new());
    };
    Ok(k.read_i64(0..g.len())?
        .into_iter()
        .zip(v.read_i64(0..g.len())?)
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

/// Great-circle distance in km (Earth radius 6371 km) between `(lon1, lat1)` = columns 0, 1 and
/// `(lon2, lat2)` = columns 2, 3, in degrees: the same operations in the same order as
/// [`haversine_km`], so the same bits.
pub fn haversine() -> Expr {
    let (p1, p2) = (Expr::col(1).to_radians(), Expr::col(3).to_radians());
    let dp = p2.clone().sub(p1.clone());
    let dl = Expr::col(2).sub(Expr::col(0)).to_radians();
    let s1 = dp.div(Expr::lit_f64(2.0)).sin();
    let s2 = dl.div(Expr::lit_f64(2.0)).sin();
    let a = s1
        .clone()
        .mul(s1)
        .add(p1.cos().mul(p2.cos()).mul(s2.clone().mul(s2)));
    Expr::lit_f64(2.0 * 6371.0).mul(a.sqrt().asin())
}

/// Trip duration in seconds: column 1 (dropoff) minus column 0 (pickup), `i64`.
pub fn duration() -> Expr {
    Expr::col(1).sub(Expr::col(0))
}

/// A calendar part of timestamp column 0 as `u8` (`Expr::hour`, `Expr::weekday`, ...).
pub fn time_part(part: fn(Expr) -> Expr) -> Expr {
    part(Expr::col(0)).cast(Type::U8)
}

/// Runs the nine steps on a frame with the TLC columns. `on_step(i, name, elapsed)` is called
/// after step `i` (0-based) with its wall time.
///
/// # Errors
/// [`farmem_frame::FrameError::MissingColumn`] or [`farmem_frame::FrameError::TypeMismatch`] if the frame lacks the TLC
/// columns; storage errors.
pub fn analyze(
    df: &DataFrame,
    on_step: &mut dyn FnMut(usize, &str, Duration),
) -> Result<TaxiAnswers> {
    let mut t = Instant::now();
    let mut done = |i: usize, t: &mut Instant| {
        on_step(i, STEP_NAMES[i], t.elapsed());
        *t = Instant::now();
    };
    let vendor = df.column("VendorID")?;
    // 1
    let rows = df.len() as u64;
    let vendors = ints(&vendor.unique()?);
    done(0, &mut t);
    // 2, 3
    let passengers = df.column("passenger_count")?;
    let hist = |id: i64| -> Result<Vec<(i64, u64)>> {
        Ok(counts(passengers.value_counts_where(
            vendor,
            Cmp::Eq,
            &Value::Int(id),
        )?))
    };
    let passengers_vendor1 = hist(1)?;
    done(1, &mut t);
    let passengers_vendor2 = hist(2)?;
    done(2, &mut t);
    // 4
    let duration = df.derive(
        "trip_duration",
        &duration(),
        &["tpep_pickup_datetime", "tpep_dropoff_datetime"],
    )?;
    let st = duration.stats()?;
    let duration_mean = match (st.count, st.sum_int) {
        (0, _) | (_, None) => 0.0,
        (n, Some(sum)) => sum as f64 / n as f64,
    };
    let int_of = |v: Option<Value>| match v {
        Some(Value::Int(x) | Value::Timestamp(x)) => x,
        _ => 0,
    };
    let duration_min = int_of(st.min);
    let duration_max = int_of(st.max);
    let df = df.clone().with_column(duration)?;
    done(3, &mut t);
    // 5
    let flag = df.column("store_and_fwd_flag")?;
    let not_stored = flag.count_where(Cmp::Eq, &Value::Str("N".into()))? as f64;
    let share_not_stored = if rows == 0 {
        0.0
    } else {
        not_stored / rows as f64
    };
    let vendors_stored = vendor
        .value_counts_where(flag, Cmp::Eq, &Value::Str("Y".into()))?
        .into_iter()
        .filter_map(|(v, _)| match v {
            Value::Int(x) => Some(x),
            _ => None,
        })
        .collect();
    done(4, &mut t);
    // 6
    let dist = df.derive(
        "distance_km",
        &haversine(),
        &[
            "pickup_longitude",
            "pickup_latitude",
            "dropoff_longitude",
            "dropoff_latitude",
        ],
    )?;
    let trips_over_100km = dist.count_where(Cmp::Gt, &Value::Float(100.0))?;
    let df = df.with_column(dist)?;
    done(5, &mut t);
    // 7
    let pickup = df.column("tpep_pickup_datetime")?;
    let ts = |v: Option<Value>| v.map(|v| v.to_string()).unwrap_or_default();
    let st = pickup.stats()?;
    let (pickup_min, pickup_max) = (ts(st.min), ts(st.max));
    let p = ["tpep_pickup_datetime"];
    let hour = df.derive("pickup_hour", &time_part(Expr::hour), &p)?;
    let day = df.derive("pickup_day", &time_part(Expr::weekday), &p)?;
    let month = df.derive("pickup_month", &time_part(Expr::month), &p)?;
    let df = df.with_column(hour)?.with_column(day)?.with_column(month)?;
    let by_hour = counts(df.value_counts("pickup_hour")?);
    let by_day = counts(df.value_counts("pickup_day")?);
    let by_month = counts(df.value_counts("pickup_month")?);
    let head = df
        .select(&[
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
    let median_by_day = pairs(&df.group_by("pickup_day", "trip_duration", &[Agg::Median])?)?;
    done(7, &mut t);
    let median_by_month = pairs(&df.group_by("pickup_month", "trip_duration", &[Agg::Median])?)?;
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
        let med = |v: &[(i64, i64)]| {
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
