//! `group_by([keys]).agg([exprs])`: several keys, several aggregations of expressions.
//!
//! Several keys are packed into one `i64` key per row (`Σ (key_i - min_i) · stride_i`, computed
//! next to the data for far columns) when their ranges allow it, else numbered here. Count,
//! sum, mean, min, max and median then run as the placement's group-by (the agent's kernels for
//! far columns); the median of an even count is the mean of the two middle values, which the
//! group-by finds together in one pass. `n_unique`, `std` and `quantile`
//! group here. Rows with a null key are dropped (as pandas does); aggregations skip null values.

use std::cmp::Ordering;
use std::collections::HashMap;

use farmem_proto::expr::{Expr as Wire, Type};

use super::compile::eval_column;
use super::frame_ops::{agg_type, check_agg};
use super::{AggFn, Expr, stats};
use crate::column::{to_value, with_store};
use crate::groupby::group_rows_any;
use crate::storage::ColumnStore;
use crate::{Column, ColumnBuilder, DType, DataFrame, Elem, FrameError, Result, Validity, Value};

/// The rows of a frame grouped by key expressions, from [`DataFrame::group_by`].
#[derive(Debug)]
pub struct GroupBy<'a> {
    df: &'a DataFrame,
    keys: Vec<Expr>,
}

/// How a packed group key maps back to the key columns' raw values.
enum KeyCodec {
    /// One key column: the key is its raw value.
    Single,
    /// `(min, range, stride)` per key column.
    Packed(Vec<(i64, i64, i64)>),
    /// Group numbers into a table of raw values.
    Table(Vec<Vec<i64>>),
}

impl KeyCodec {
    fn decode(&self, g: i64) -> Vec<i64> {
        match self {
            KeyCodec::Single => vec![g],
            KeyCodec::Packed(p) => p
                .iter()
                .map(|&(min, range, stride)| (g / stride) % range + min)
                .collect(),
            KeyCodec::Table(t) => t.get(g as usize).cloned().unwrap_or_default(),
        }
    }
}

/// Smallest and largest raw (storage) value of a column without nulls.
fn raw_range(c: &Column) -> Result<(i64, i64)> {
    with_store!(c.data(), s => {
        let st = s.summary()?;
        Ok((st.min.map_or(0, Elem::to_i64), st.max.map_or(0, Elem::to_i64)))
    })
}

/// One `i64` group key per row for several key columns.
fn pack_keys(df: &DataFrame, keys: &[Column]) -> Result<(Column, KeyCodec)> {
    if let [k] = keys {
        return Ok((k.alias("\u{0}key"), KeyCodec::Single));
    }
    let ranges = keys.iter().map(raw_range).collect::<Result<Vec<_>>>()?;
    let mut stride = 1i64;
    let mut packed = vec![(0, 0, 0); keys.len()];
    let mut fits = true;
    for (i, &(min, max)) in ranges.iter().enumerate().rev() {
        let range = max.checked_sub(min).and_then(|r| r.checked_add(1));
        match range.and_then(|r| stride.checked_mul(r).map(|s| (r, s))) {
            Some((r, next)) if next < 1 << 62 => {
                packed[i] = (min, r, stride);
                stride = next;
            }
            _ => fits = false,
        }
    }
    if fits {
        let mut wire: Option<Wire> = None;
        for (i, &(min, _, stride)) in packed.iter().enumerate() {
            let term = Wire::col(i as u16)
                .cast(Type::I64)
                .sub(Wire::lit_i64(min))
                .mul(Wire::lit_i64(stride));
            wire = Some(match wire {
                None => term,
                Some(w) => w.add(term),
            });
        }
        let refs: Vec<&Column> = keys.iter().collect();
        let mut wire = wire.unwrap_or_else(|| Wire::lit_i64(0));
        // The narrowest key type: fewer bytes to write and to group.
        if stride <= 256 {
            wire = wire.cast(Type::U8);
        } else if stride <= i64::from(i32::MAX) {
            wire = wire.cast(Type::I32);
        }
        let gk = df.derive_cols("\u{0}key", &wire, &refs)?;
        return Ok((gk, KeyCodec::Packed(packed)));
    }
    // Ranges too wide to pack: number the distinct key tuples here.
    let raw = keys
        .iter()
        .map(|k| k.read_i64(0..k.len()))
        .collect::<Result<Vec<_>>>()?;
    let mut ids: HashMap<Vec<i64>, i64> = HashMap::new();
    let mut table = Vec::new();
    let n = df.len();
    let mut gk = Vec::with_capacity(n);
    for row in 0..n {
        let t: Vec<i64> = raw.iter().map(|c| c[row]).collect();
        let id = *ids.entry(t.clone()).or_insert_with(|| {
            table.push(t);
            table.len() as i64 - 1
        });
        gk.push(id);
    }
    let p = df.placement().clone();
    let gk = Column::from_vec("\u{0}key", DType::I64, gk, p.as_ref())?;
    Ok((gk, KeyCodec::Table(table)))
}

/// Count/sum/mean/min/max per group of `v` (no nulls) by the placement's group-by.
fn summaries<T: Elem>(
    gk: &Column,
    vs: &dyn ColumnStore<T>,
    v: &Column,
    f: AggFn,
) -> Result<HashMap<i64, Value>> {
    let d = v.dictionary();
    let int = v.dtype() != DType::F64;
    Ok(group_rows_any(gk, vs, false)?
        .into_iter()
        .map(|r| {
            let s = &r.summary;
            let val = match f {
                AggFn::Count => Value::Int(s.count as i64),
                AggFn::Sum if int => Value::Int(T::sum_to_i128(s.sum) as i64),
                AggFn::Sum => Value::Float(T::sum_to_f64(s.sum)),
                AggFn::Mean if s.count > 0 => Value::Float(T::sum_to_f64(s.sum) / s.count as f64),
                AggFn::Min => s.min.map_or(Value::Null, |x| to_value(v.dtype(), d, x)),
                AggFn::Max => s.max.map_or(Value::Null, |x| to_value(v.dtype(), d, x)),
                _ => Value::Null,
            };
            (r.key, val)
        })
        .collect())
}

/// The median per group of a column without nulls: the mean of its two middle values, both
/// found in one pass by the placement's group-by.
fn medians(gk: &Column, v: &Column) -> Result<HashMap<i64, Value>> {
    with_store!(v.data(), s => Ok(group_rows_any(gk, s.as_ref(), true)?
        .into_iter()
        .filter_map(|r| {
            let (lo, hi) = r.middles?;
            Some((r.key, Value::Float(stats::mid(lo.to_f64(), hi.to_f64()))))
        })
        .collect()))
}

/// `n_unique`, `std` or `quantile` per group, here.
fn local_stats(gk: &Column, v: &Column, f: AggFn) -> Result<HashMap<i64, Value>> {
    let keys = gk.read_i64(0..gk.len())?;
    let vals = v.read_f64(0..v.len())?;
    let mut by: HashMap<i64, Vec<f64>> = HashMap::new();
    for (k, x) in keys.into_iter().zip(vals) {
        let g = by.entry(k).or_default();
        if !x.is_nan() {
            g.push(x);
        }
    }
    let f64v = |x: Option<f64>| x.map_or(Value::Null, Value::Float);
    Ok(by
        .into_iter()
        .map(|(k, mut xs)| {
            let val = match f {
                AggFn::NUnique => Value::Int(stats::n_unique(&xs) as i64),
                AggFn::Std => f64v(stats::std(&xs)),
                AggFn::Quantile(q) => f64v(stats::quantile(&mut xs, q)),
                _ => Value::Null,
            };
            (k, val)
        })
        .collect())
}

impl DataFrame {
    /// Groups the rows by the values of `keys` (column names or row expressions); aggregate
    /// with [`GroupBy::agg`].
    ///
    /// ```
    /// use farmem_frame::prelude::*;
    /// let p = LocalPlacement::shared();
    /// let df = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_strings("city", &["Oslo", "Rome", "Oslo", "Oslo"], p.as_ref()).unwrap(),
    ///     Column::from_vec("year", DType::I64, vec![2020i64, 2020, 2020, 2021], p.as_ref()).unwrap(),
    ///     Column::from_vec("temp", DType::F64, vec![3.0, 18.0, 5.0, 4.0], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// let g = df.group_by(["city", "year"])
    ///     .agg([col("temp").mean().alias("mean"), col("temp").median(), len()])
    ///     .unwrap();
    /// assert_eq!(g.names(), ["city", "year", "mean", "temp", "len"]);
    /// assert_eq!(g["mean"].get(0).unwrap(), Value::Float(4.0));
    /// assert_eq!(g["len"].get(0).unwrap(), Value::Int(2));
    /// ```
    pub fn group_by<E: Into<Expr>>(&self, keys: impl IntoIterator<Item = E>) -> GroupBy<'_> {
        GroupBy {
            df: self,
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }
}

impl GroupBy<'_> {
    /// One row per distinct key tuple (sorted ascending by the keys; strings alphabetically):
    /// the key columns, then one column per aggregation (named by [`Expr::output_name`]).
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; [`FrameError::TypeMismatch`] for a float key or a numeric
    /// aggregation of strings; [`FrameError::InvalidExpr`] for an expression that does not
    /// aggregate; [`FrameError::DuplicateColumn`]; storage errors.
    pub fn agg<E: Into<Expr>>(&self, aggs: impl IntoIterator<Item = E>) -> Result<DataFrame> {
        let mut work = self.df.clone();
        let mut keys = self
            .keys
            .iter()
            .map(|k| eval_column(&work, k))
            .collect::<Result<Vec<_>>>()?;
        if let Some(k) = keys.iter().find(|k| k.dtype() == DType::F64) {
            return Err(FrameError::TypeMismatch {
                column: k.name().into(),
                expected: "an integer, boolean, timestamp or string key".into(),
                actual: k.dtype(),
            });
        }
        let mut valid: Option<Validity> = None;
        for k in &keys {
            if let Some(v) = k.validity() {
                valid = Some(valid.map_or_else(|| v.clone(), |a| a.and(v)));
            }
        }
        if let Some(valid) = valid {
            let rows = valid.valid_rows();
            work = work.take(&rows)?;
            keys = keys.iter().map(|k| k.take(&rows)).collect::<Result<_>>()?;
        }
        let (gk, codec) = pack_keys(&work, &keys)?;
        let aggs: Vec<Expr> = aggs.into_iter().map(Into::into).collect();
        // The groups and their sizes: counted separately only when an aggregation may miss a
        // group (nulls) or asks for the sizes; else the first aggregation lists the groups.
        let mut counts: Option<Vec<(i64, u64)>> = None;
        let count_groups = || -> Result<Vec<(i64, u64)>> {
            Ok(with_store!(gk.data(), s => s
                .value_counts()?
                .into_iter()
                .map(|(k, n)| (k.to_i64(), n))
                .collect()))
        };
        // (name, type, value per group, value of a group without non-null values)
        let mut results: Vec<(String, DType, HashMap<i64, Value>, Value)> = Vec::new();
        for a in &aggs {
            let (inner, name) = a.unaliased();
            let (dtype, values, empty) = match inner {
                Expr::Len => {
                    if counts.is_none() {
                        counts = Some(count_groups()?);
                    }
                    let sizes = counts.iter().flatten();
                    (
                        DType::I64,
                        sizes.map(|&(k, n)| (k, Value::Int(n as i64))).collect(),
                        Value::Int(0),
                    )
                }
                Expr::Agg(f, x) => {
                    let v = eval_column(&work, x)?;
                    check_agg(&v, *f)?;
                    if v.dtype() == DType::F64 && counts.is_none() {
                        // NaN values are missing to the kernels: a group may have none.
                        counts = Some(count_groups()?);
                    }
                    let (gk, v) = match v.validity() {
                        None => (gk.alias("\u{0}key"), v),
                        Some(valid) => {
                            if counts.is_none() {
                                counts = Some(count_groups()?);
                            }
                            let rows = valid.valid_rows();
                            (gk.take(&rows)?, v.take(&rows)?)
                        }
                    };
                    let values = match f {
                        AggFn::Median => medians(&gk, &v)?,
                        AggFn::NUnique | AggFn::Std | AggFn::Quantile(_) => {
                            local_stats(&gk, &v, *f)?
                        }
                        _ => with_store!(v.data(), s => summaries(&gk, s.as_ref(), &v, *f)?),
                    };
                    let dtype = agg_type(v.dtype(), *f);
                    let empty = match f {
                        AggFn::Count | AggFn::NUnique => Value::Int(0),
                        AggFn::Sum if dtype == DType::F64 => Value::Float(0.0),
                        AggFn::Sum => Value::Int(0),
                        _ => Value::Null,
                    };
                    (dtype, values, empty)
                }
                _ => {
                    return Err(FrameError::InvalidExpr {
                        column: name,
                        reason: "group_by().agg() takes aggregations (sum, mean, len, ...)".into(),
                    });
                }
            };
            results.push((name, dtype, values, empty));
        }
        // Order the groups by their key tuples.
        let keys_found: Vec<i64> = match (&counts, results.first()) {
            (Some(c), _) => c.iter().map(|&(g, _)| g).collect(),
            (None, Some(r)) => r.2.keys().copied().collect(),
            (None, None) => count_groups()?.into_iter().map(|(g, _)| g).collect(),
        };
        let mut groups: Vec<(i64, Vec<i64>)> = keys_found
            .into_iter()
            .map(|g| (g, codec.decode(g)))
            .collect();
        let name_of = |k: &Column, code: i64| -> String {
            k.dictionary()
                .and_then(|d| d.value(code as u32))
                .unwrap_or_default()
                .to_owned()
        };
        groups.sort_by(|a, b| {
            for (i, k) in keys.iter().enumerate() {
                let o = if k.dtype() == DType::Str {
                    name_of(k, a.1[i]).cmp(&name_of(k, b.1[i]))
                } else {
                    a.1[i].cmp(&b.1[i])
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        let p = work.placement().clone();
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if k.dtype() == DType::Str {
                let names: Vec<String> = groups.iter().map(|g| name_of(k, g.1[i])).collect();
                out.push(Column::from_strings(k.name(), &names, p.as_ref())?);
            } else {
                let mut b = ColumnBuilder::new(k.name(), k.dtype(), p.as_ref());
                for g in &groups {
                    b.push_i64(g.1[i])?;
                }
                out.push(b.finish()?);
            }
        }
        for (name, dtype, values, empty) in results {
            let mut b = ColumnBuilder::new(&name, dtype, p.as_ref());
            for g in &groups {
                b.push_value(values.get(&g.0).unwrap_or(&empty))?;
            }
            out.push(b.finish()?);
        }
        DataFrame::from_columns(p, out)
    }
}
