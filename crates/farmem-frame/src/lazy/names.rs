//! The column names a query step produces, when they are known without running it: what the
//! rewrites need to send a join's filters and projections to the side that has the columns.

use std::io::BufRead;

use super::{Plan, Scan, Source};
use crate::dsl::Expr;

/// The names of `plan`'s output columns, or `None` when only running it would tell (a CSV
/// header that needs unquoting, an unreadable file: its scan reports the error at `collect`).
pub(super) fn names(plan: &Plan) -> Option<Vec<String>> {
    match plan {
        Plan::Scan(s) => scan_names(s),
        Plan::Frame(df) => Some(df.names().iter().map(|s| s.to_string()).collect()),
        Plan::Filter(i, _)
        | Plan::Sort { input: i, .. }
        | Plan::Head(i, _)
        | Plan::Unique(i, _) => names(i),
        Plan::Select(_, exprs) => Some(exprs.iter().map(Expr::output_name).collect()),
        Plan::WithColumns(i, exprs) => {
            let mut n = names(i)?;
            for e in exprs {
                let made = e.output_name();
                if !n.contains(&made) {
                    n.push(made);
                }
            }
            Some(n)
        }
        Plan::GroupBy { keys, aggs, .. } => {
            Some(keys.iter().chain(aggs).map(Expr::output_name).collect())
        }
        Plan::Join {
            left,
            right,
            right_on,
            ..
        } => {
            let (l, r) = (names(left)?, names(right)?);
            let mut out = l.clone();
            out.extend(right_outputs(&l, &r, right_on).into_iter().map(|(o, _)| o));
            Some(out)
        }
    }
}

/// The right side's columns in a join's output: `(output name, right name)`, in order, as
/// [`crate::DataFrame::join`] names them (a name already taken gets the suffix `_right`).
pub(super) fn right_outputs(
    left: &[String],
    right: &[String],
    right_on: &[String],
) -> Vec<(String, String)> {
    let mut taken: Vec<String> = left.to_vec();
    let mut out = Vec::new();
    for c in right.iter().filter(|c| !right_on.contains(c)) {
        let name = if taken.contains(c) {
            format!("{c}_right")
        } else {
            c.clone()
        };
        taken.push(name.clone());
        out.push((name, c.clone()));
    }
    out
}

fn scan_names(s: &Scan) -> Option<Vec<String>> {
    if let Some(c) = &s.columns {
        return Some(c.clone());
    }
    match &s.source {
        Source::Csv { path, opts } => {
            if let Some(c) = &opts.columns {
                return Some(c.clone());
            }
            let f = std::fs::File::open(path).ok()?;
            let mut line = String::new();
            std::io::BufReader::new(f).read_line(&mut line).ok()?;
            // Quoted names would need the CSV reader's unquoting: leave them unknown.
            if line.contains('"') {
                return None;
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                return None;
            }
            Some(line.split(',').map(|f| f.trim().to_owned()).collect())
        }
        #[cfg(feature = "parquet")]
        Source::Parquet { file, opts } => match &opts.columns {
            Some(c) => Some(c.clone()),
            None => crate::parquet::column_names(file).ok(),
        },
    }
}
