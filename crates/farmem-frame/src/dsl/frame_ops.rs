//! The frame methods that take expressions: filter, with_columns, select, and aggregation of
//! whole columns.

use std::sync::Arc;

use farmem_proto::expr::BinaryOp;

use super::compile::{eval_column, eval_predicate};
use super::{AggFn, Expr, stats};
use crate::storage::Cmp;
use crate::{Column, ColumnBuilder, DType, DataFrame, FrameError, Result, Value};

/// `column <cmp> constant` (either order) as a comparison the column kernels run directly.
fn simple_comparison(e: &Expr) -> Option<(&str, Cmp, &Value)> {
    let Expr::Binary(op, a, b) = e else {
        return None;
    };
    let cmp = match op {
        BinaryOp::Eq => Cmp::Eq,
        BinaryOp::Ne => Cmp::Ne,
        BinaryOp::Lt => Cmp::Lt,
        BinaryOp::Le => Cmp::Le,
        BinaryOp::Gt => Cmp::Gt,
        BinaryOp::Ge => Cmp::Ge,
        _ => return None,
    };
    let mirror = |c: Cmp| match c {
        Cmp::Lt => Cmp::Gt,
        Cmp::Le => Cmp::Ge,
        Cmp::Gt => Cmp::Lt,
        Cmp::Ge => Cmp::Le,
        c => c,
    };
    match (&**a, &**b) {
        (Expr::Column(c), Expr::Literal(v)) if !matches!(v, Value::Null) => Some((c, cmp, v)),
        (Expr::Literal(v), Expr::Column(c)) if !matches!(v, Value::Null) => {
            Some((c, mirror(cmp), v))
        }
        _ => None,
    }
}

/// The non-null, non-NaN values of a column as `f64`.
pub(crate) fn valid_f64(c: &Column) -> Result<Vec<f64>> {
    let c = c.drop_nulls()?;
    let mut v = c.read_f64(0..c.len())?;
    v.retain(|x| !x.is_nan());
    Ok(v)
}

fn float(x: Option<f64>) -> Value {
    x.map_or(Value::Null, Value::Float)
}

/// Checks that `f` applies to column `c`.
pub(crate) fn check_agg(c: &Column, f: AggFn) -> Result<()> {
    let ok = match f {
        AggFn::Count | AggFn::NUnique => true,
        _ => c.dtype() != DType::Str,
    };
    if let AggFn::Quantile(q) = f
        && !(0.0..=1.0).contains(&q)
    {
        return Err(FrameError::InvalidExpr {
            column: c.name().into(),
            reason: format!("quantile {q} outside 0..=1"),
        });
    }
    if ok {
        Ok(())
    } else {
        Err(FrameError::TypeMismatch {
            column: c.name().into(),
            expected: format!("a numeric column for {}", f.name()),
            actual: c.dtype(),
        })
    }
}

/// The type of `f`'s result over a column of type `t`.
pub(crate) fn agg_type(t: DType, f: AggFn) -> DType {
    match f {
        AggFn::Count | AggFn::NUnique => DType::I64,
        AggFn::Sum if t == DType::F64 => DType::F64,
        AggFn::Sum => DType::I64,
        AggFn::Min | AggFn::Max => t,
        AggFn::Mean | AggFn::Median | AggFn::Std | AggFn::Quantile(_) => DType::F64,
    }
}

/// `f` over the non-null values of `c`.
fn agg_value(c: &Column, f: AggFn) -> Result<Value> {
    check_agg(c, f)?;
    Ok(match f {
        AggFn::Count => Value::Int(c.count()? as i64),
        AggFn::NUnique => Value::Int(c.unique()?.len() as i64),
        AggFn::Sum if c.dtype() == DType::F64 => Value::Float(c.sum()?),
        AggFn::Sum => {
            let s = c.sum_int()?;
            Value::Int(i64::try_from(s).map_err(|_| FrameError::TypeMismatch {
                column: c.name().into(),
                expected: "a sum that fits in i64".into(),
                actual: c.dtype(),
            })?)
        }
        AggFn::Mean => float(c.mean()?),
        AggFn::Min => c.min()?.unwrap_or(Value::Null),
        AggFn::Max => c.max()?.unwrap_or(Value::Null),
        AggFn::Median => float(stats::median(&mut valid_f64(c)?)),
        AggFn::Std => float(stats::std(&valid_f64(c)?)),
        AggFn::Quantile(q) => float(stats::quantile(&mut valid_f64(c)?, q)),
    })
}

/// Evaluates an aggregation over the whole frame: a one-row column.
fn eval_scalar(df: &DataFrame, e: &Expr) -> Result<Column> {
    let (inner, name) = e.unaliased();
    let p = df.placement().clone();
    let (value, dtype) = match inner {
        Expr::Len => (Value::Int(df.len() as i64), DType::I64),
        // The sum, mean or count of `column <cmp> constant` is one counting kernel.
        Expr::Agg(f @ (AggFn::Sum | AggFn::Mean), a)
            if simple_comparison(a)
                .is_some_and(|(c, _, _)| df.column(c).is_ok_and(|c| c.validity().is_none())) =>
        {
            let (c, cmp, v) = simple_comparison(a).ok_or_else(|| FrameError::InvalidExpr {
                column: name.clone(),
                reason: "not a comparison".into(),
            })?;
            let n = df.column(c)?.count_where(cmp, v)?;
            match f {
                AggFn::Sum => (Value::Int(n as i64), DType::I64),
                _ if df.is_empty() => (Value::Null, DType::F64),
                _ => (Value::Float(n as f64 / df.len() as f64), DType::F64),
            }
        }
        Expr::Agg(f, a) => {
            let c = eval_column(df, a)?;
            let v = agg_value(&c, *f)?;
            (v, agg_type(c.dtype(), *f))
        }
        _ => {
            return Err(FrameError::InvalidExpr {
                column: name,
                reason: "only an aggregation (optionally aliased) can be mixed with others".into(),
            });
        }
    };
    let mut b = ColumnBuilder::new(&name, dtype, p.as_ref());
    b.push_value(&value)?;
    b.finish()
}

impl DataFrame {
    /// The rows where `predicate` (a boolean expression) is true; null counts as false.
    /// `column <cmp> constant` runs as one column kernel; other predicates are evaluated as a
    /// boolean column first (next to the data when the columns are far).
    ///
    /// ```
    /// use farmem_frame::prelude::*;
    /// let p = LocalPlacement::shared();
    /// let df = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_vec("a", DType::I64, vec![1i64, 5, 9], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// assert_eq!(df.filter(col("a").gt(2).and(col("a").lt(9))).unwrap().len(), 1);
    /// ```
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; [`FrameError::InvalidExpr`] or
    /// [`FrameError::TypeMismatch`] for a predicate that is not boolean; storage errors.
    pub fn filter(&self, predicate: impl Into<Expr>) -> Result<Self> {
        let rows = self.filter_rows(&predicate.into())?;
        self.take(&rows)
    }

    /// The rows (ascending) where `predicate` is true (see [`DataFrame::filter`]).
    ///
    /// # Errors
    /// As [`DataFrame::filter`].
    pub fn filter_rows(&self, predicate: &Expr) -> Result<Vec<u32>> {
        if let Some((c, cmp, v)) = simple_comparison(predicate) {
            return self.column(c)?.select(cmp, v);
        }
        let m = eval_predicate(self, predicate)?;
        if m.dtype() != DType::Bool {
            return Err(FrameError::TypeMismatch {
                column: m.name().into(),
                expected: "a boolean predicate".into(),
                actual: m.dtype(),
            });
        }
        m.select(Cmp::Eq, &Value::Bool(true))
    }

    /// The frame with the columns computed by `exprs` (over this frame, all of them) added, or
    /// replacing the columns of the same name.
    ///
    /// ```
    /// use farmem_frame::prelude::*;
    /// let p = LocalPlacement::shared();
    /// let df = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_vec("a", DType::I64, vec![1i64, 2], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// let df = df.with_columns([(col("a") * 10).alias("b"), col("a").cast(DType::F64)]).unwrap();
    /// assert_eq!(df.names(), ["a", "b"]);
    /// assert_eq!(df["b"].get(1).unwrap(), Value::Int(20));
    /// assert_eq!(df["a"].get(1).unwrap(), Value::Float(2.0));
    /// ```
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`], [`FrameError::InvalidExpr`] (an aggregation, ill-typed
    /// operands); storage errors.
    pub fn with_columns<E: Into<Expr>>(&self, exprs: impl IntoIterator<Item = E>) -> Result<Self> {
        let new = exprs
            .into_iter()
            .map(|e| eval_column(self, &e.into()))
            .collect::<Result<Vec<_>>>()?;
        let mut out = self.clone();
        for c in new {
            out = out.replace_or_add(c)?;
        }
        Ok(out)
    }

    /// A frame of the columns computed by `exprs`: column names (`"a"` or `col("a")`) and row
    /// expressions give columns of the frame's length; aggregations (`col("a").sum()`,
    /// [`super::len`]) give a one-row frame.
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`], [`FrameError::InvalidExpr`],
    /// [`FrameError::DuplicateColumn`]; [`FrameError::LengthMismatch`] when aggregations and
    /// row expressions are mixed; storage errors.
    pub fn select<E: Into<Expr>>(&self, exprs: impl IntoIterator<Item = E>) -> Result<Self> {
        let exprs: Vec<Expr> = exprs.into_iter().map(Into::into).collect();
        let agg = exprs.iter().any(Expr::is_aggregation);
        let cols = exprs
            .iter()
            .map(|e| {
                if agg && e.is_aggregation() {
                    eval_scalar(self, e)
                } else {
                    eval_column(self, e)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        DataFrame::from_columns(self.placement().clone(), cols)
    }

    /// The value of a single aggregation over the whole frame: `df.agg(col("fare").mean())`.
    ///
    /// # Errors
    /// As [`DataFrame::select`].
    pub fn agg(&self, e: impl Into<Expr>) -> Result<Value> {
        eval_scalar(self, &e.into())?.get(0)
    }

    /// The column computed by a row expression (a bare column is shared).
    ///
    /// # Errors
    /// As [`DataFrame::with_columns`].
    pub fn eval(&self, e: impl Into<Expr>) -> Result<Column> {
        eval_column(self, &e.into())
    }

    fn replace_or_add(mut self, c: Column) -> Result<Self> {
        if c.len() != self.len() && !self.is_empty_frame() {
            return Err(FrameError::LengthMismatch {
                column: c.name().into(),
                expected: self.len(),
                actual: c.len(),
            });
        }
        match self.columns.iter().position(|x| x.name() == c.name()) {
            Some(i) => self.columns[i] = Arc::new(c),
            None => self.columns.push(Arc::new(c)),
        }
        Ok(self)
    }

    fn is_empty_frame(&self) -> bool {
        self.columns.is_empty()
    }
}

impl std::ops::Index<&str> for DataFrame {
    type Output = Column;

    /// The column called `name`.
    ///
    /// # Panics
    /// If there is no such column (use [`DataFrame::column`] for an error instead).
    fn index(&self, name: &str) -> &Column {
        match self.column(name) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }
}
