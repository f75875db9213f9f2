//! Skipping row groups by their statistics: a row group is skipped when the minimum and maximum
//! of its column chunks show that no row satisfies a predicate. Conservative: anything the
//! statistics cannot decide (no statistics, expressions other than comparisons of a column with
//! a constant joined by `and`/`or`, strings, huge integers) may match.

use ::parquet::file::metadata::RowGroupMetaData;
use ::parquet::file::statistics::Statistics;
use ::parquet::schema::types::ColumnDescriptor;
use farmem_proto::expr::BinaryOp;

use super::read::{Scale, Source, natural};
use crate::Value;
use crate::dsl::Expr;

/// Largest magnitude at which every integer is an exact `f64`.
const EXACT: f64 = (1u64 << 53) as f64;

/// Whether some row of the row group may satisfy every one of `predicates`.
pub(super) fn may_match(
    predicates: &[Expr],
    rg: &RowGroupMetaData,
    columns: &[std::sync::Arc<ColumnDescriptor>],
) -> bool {
    predicates.iter().all(|p| may(p, rg, columns))
}

fn may(e: &Expr, rg: &RowGroupMetaData, columns: &[std::sync::Arc<ColumnDescriptor>]) -> bool {
    use BinaryOp::{And, Eq, Ge, Gt, Le, Lt, Ne, Or};
    match e {
        Expr::Alias(inner, _) => may(inner, rg, columns),
        Expr::Binary(And, a, b) => may(a, rg, columns) && may(b, rg, columns),
        Expr::Binary(Or, a, b) => may(a, rg, columns) || may(b, rg, columns),
        Expr::Binary(op @ (Eq | Ne | Lt | Le | Gt | Ge), a, b) => match (&**a, &**b) {
            (Expr::Column(c), Expr::Literal(v)) => compare(c, *op, v, rg, columns),
            (Expr::Literal(v), Expr::Column(c)) => compare(c, flip(*op), v, rg, columns),
            _ => true,
        },
        _ => true,
    }
}

/// `v op x` as `x op' v`.
fn flip(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::Le => BinaryOp::Ge,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::Ge => BinaryOp::Le,
        op => op,
    }
}

/// Whether a row with `min <= x <= max` may have `x op v`.
fn compare(
    column: &str,
    op: BinaryOp,
    v: &Value,
    rg: &RowGroupMetaData,
    columns: &[std::sync::Arc<ColumnDescriptor>],
) -> bool {
    let v = match v {
        Value::Int(x) | Value::Timestamp(x) => *x as f64,
        Value::Float(x) => *x,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Str(_) | Value::Null => return true,
    };
    let Some((min, max)) = bounds(column, rg, columns) else {
        return true;
    };
    if v.is_nan() || v.abs() > EXACT {
        return true;
    }
    match op {
        BinaryOp::Eq => min <= v && v <= max,
        // NaN rows (not counted in the statistics of floats) differ from every value.
        BinaryOp::Ne => true,
        BinaryOp::Lt => min < v,
        BinaryOp::Le => min <= v,
        BinaryOp::Gt => max > v,
        BinaryOp::Ge => max >= v,
        _ => true,
    }
}

/// The smallest and largest value of `column` in the row group, as loaded (timestamps in
/// seconds), when the statistics give them exactly.
fn bounds(
    column: &str,
    rg: &RowGroupMetaData,
    columns: &[std::sync::Arc<ColumnDescriptor>],
) -> Option<(f64, f64)> {
    let leaf = columns.iter().position(|c| c.path().string() == column)?;
    let (_, source) = natural(&columns[leaf])?;
    let stats = rg.column(leaf).statistics()?;
    let int = |x: i64| -> Option<f64> {
        let x = match source {
            Source::Int(Scale::Div(d)) => x.div_euclid(d),
            Source::Int(Scale::Mul(m)) => x.checked_mul(m)?,
            _ => x,
        };
        ((x as f64).abs() <= EXACT).then_some(x as f64)
    };
    let (min, max) = match stats {
        Statistics::Boolean(s) => (
            f64::from(u8::from(*s.min_opt()?)),
            f64::from(u8::from(*s.max_opt()?)),
        ),
        Statistics::Int32(s) => (
            int(i64::from(*s.min_opt()?))?,
            int(i64::from(*s.max_opt()?))?,
        ),
        Statistics::Int64(s) => (int(*s.min_opt()?)?, int(*s.max_opt()?)?),
        Statistics::Float(s) => (f64::from(*s.min_opt()?), f64::from(*s.max_opt()?)),
        Statistics::Double(s) => (*s.min_opt()?, *s.max_opt()?),
        _ => return None,
    };
    (min <= max).then_some((min, max))
}
