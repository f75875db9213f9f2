//! The figures of a run as flat JSON.

use super::workload::Phases;

/// The figures as a flat JSON object (numbers, `null` for a non-finite one, and strings).
#[derive(Default)]
pub(super) struct Report(serde_json::Map<String, serde_json::Value>);

impl Report {
    pub(super) fn num(&mut self, key: &str, v: f64) {
        let v = serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into);
        self.0.insert(key.into(), v);
    }
    pub(super) fn int(&mut self, key: &str, v: u64) {
        self.0.insert(key.into(), v.into());
    }
    pub(super) fn text(&mut self, key: &str, v: &str) {
        self.0.insert(key.into(), v.into());
    }
    pub(super) fn to_json(&self) -> String {
        format!("{:#}\n", serde_json::Value::Object(self.0.clone()))
    }
}

pub(super) fn phases_json(r: &mut Report, prefix: &str, p: &Phases) {
    r.num(&format!("{prefix}_populate_s"), p.populate_s);
    r.num(&format!("{prefix}_read_ops_s"), p.read_ops_s);
    r.num(&format!("{prefix}_write_ops_s"), p.write_ops_s);
    r.int(&format!("{prefix}_read_checksum"), p.checksum);
}
