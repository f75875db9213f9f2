//! Running a rewritten lazy query: the scans with what was pushed into them, then the eager
//! steps.

use super::{Plan, Scan, Source};
use crate::{DataFrame, FrameError, Result};

/// Runs `plan`.
pub(super) fn execute(plan: Plan) -> Result<DataFrame> {
    match plan {
        Plan::Scan(s) => scan(s),
        Plan::Frame(df) => Ok(df),
        Plan::Filter(input, p) => execute(*input)?.filter(p),
        Plan::Select(input, exprs) => execute(*input)?.select(exprs),
        Plan::WithColumns(input, exprs) => execute(*input)?.with_columns(exprs),
        Plan::GroupBy { input, keys, aggs } => execute(*input)?.group_by(keys).agg(aggs),
        Plan::Sort {
            input,
            by,
            descending,
        } => execute(*input)?.sort(&by, &descending),
        Plan::Join {
            left,
            right,
            left_on,
            right_on,
            how,
        } => execute(*left)?.join(&execute(*right)?, &left_on, &right_on, how),
        Plan::Head(input, n) => execute(*input)?.head(n),
        Plan::Unique(input, subset) => execute(*input)?.unique(&subset),
    }
}

fn scan(s: Scan) -> Result<DataFrame> {
    let df = match s.source {
        Source::Csv { path, mut opts } => {
            opts.columns = s.columns;
            if let Some(n) = s.limit {
                opts.max_rows = Some(opts.max_rows.map_or(n, |m| m.min(n)));
            }
            let f = std::fs::File::open(&path).map_err(FrameError::Io)?;
            let r = std::io::BufReader::with_capacity(1 << 20, f);
            crate::csv::read_csv(r, &opts, s.placement)?
        }
        #[cfg(feature = "parquet")]
        Source::Parquet { file, mut opts } => {
            opts.columns = s.columns;
            opts.row_group_filter = s.predicates.clone();
            let df = crate::parquet::read_parquet(&file, &opts, s.placement)?;
            match s.limit {
                Some(n) => df.head(usize::try_from(n).unwrap_or(usize::MAX))?,
                None => df,
            }
        }
    };
    s.predicates.into_iter().try_fold(df, |df, p| df.filter(p))
}
