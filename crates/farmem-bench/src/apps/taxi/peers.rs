//! The same nine steps in pandas and polars (`scripts/taxi_peers.py`, run as a Python
//! subprocess), for `farmem-bench taxi --peers`: their load and analysis times and whether their
//! answers equal farmem's.

use std::path::Path;
use std::process::Command;

use serde::Serialize;
use serde_json::{Value, json};

use super::TaxiAnswers;

/// The peer script, in the repository.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/taxi_peers.py");

/// What one peer reported.
#[derive(Clone, Debug, Serialize)]
pub struct PeerRun {
    /// `pandas` or `polars`.
    pub engine: String,
    /// Seconds of `read_csv`.
    pub load_seconds: f64,
    /// Seconds of the nine steps.
    pub analyze_seconds: f64,
    /// The answers that differ from farmem's (empty: all equal).
    pub differences: Vec<String>,
}

/// The answers as the peer script prints them (everything but the printed table of step 7).
pub fn answers_json(a: &TaxiAnswers) -> Value {
    json!({
        "rows": a.rows,
        "vendors": a.vendors,
        "passengers_vendor1": a.passengers_vendor1,
        "passengers_vendor2": a.passengers_vendor2,
        "duration_mean": a.duration_mean,
        "duration_min": a.duration_min,
        "duration_max": a.duration_max,
        "share_not_stored": a.share_not_stored,
        "vendors_stored": a.vendors_stored,
        "trips_over_100km": a.trips_over_100km,
        "pickup_min": a.pickup_min,
        "pickup_max": a.pickup_max,
        "by_hour": a.by_hour,
        "by_day": a.by_day,
        "by_month": a.by_month,
        "median_by_day": a.median_by_day,
        "median_by_month": a.median_by_month,
    })
}

/// Whether two JSON answers are equal, numbers within a relative 1e-9 (sums in another order).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// The names of the answers that differ.
pub fn differences(ours: &Value, theirs: &Value) -> Vec<String> {
    let Some(ours) = ours.as_object() else {
        return vec!["farmem's answers".into()];
    };
    ours.iter()
        .filter(|(k, v)| !theirs.get(k.as_str()).is_some_and(|t| same(v, t)))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Runs the nine steps in `engine` on `csv` and compares its answers with `ours`.
///
/// # Errors
/// A message saying why the peer was skipped (Python or the engine not installed, the script
/// failed).
pub fn run_peer(engine: &str, csv: &Path, ours: &Value) -> Result<PeerRun, String> {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .arg(engine)
        .arg(csv)
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if out.status.code() == Some(3) {
        return Err(format!(
            "{engine} is not installed (pip install {engine} numpy)"
        ));
    }
    if !out.status.success() {
        return Err(format!(
            "{engine} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{engine} printed no result: {e}"))?;
    let secs = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    Ok(PeerRun {
        engine: engine.into(),
        load_seconds: secs("load_seconds"),
        analyze_seconds: secs("analyze_seconds"),
        differences: differences(ours, v.get("answers").unwrap_or(&Value::Null)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_within_rounding_and_lists_exactly() {
        let ours = json!({"a": 830.894615, "b": [[1, 2.5]], "c": "x"});
        let theirs = json!({"a": 830.894_615_000_01, "b": [[1, 2.5]], "c": "x"});
        assert!(differences(&ours, &theirs).is_empty());
        let off = json!({"a": 830.9, "b": [[1, 2.5], [2, 1]], "c": "x"});
        assert_eq!(differences(&ours, &off), ["a", "b"]);
        assert_eq!(differences(&ours, &json!({})), ["a", "b", "c"]);
    }
}
