//! Group-by: aggregate one column per distinct value of a key column.

use std::collections::HashMap;

use crate::column::{BUILD_CHUNK, ColumnBuilder, ColumnData, middles_of, with_store};
use crate::storage::{ColumnStore, GroupRow, Summary};
use crate::{Column, DType, DataFrame, Elem, FrameError, Result, Value};

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    /// Number of non-missing values (`I64`).
    Count,
    /// Sum (`I64` for integer columns, exact; `F64` otherwise).
    Sum,
    /// Mean (`F64`).
    Mean,
    /// Smallest value (the value column's type).
    Min,
    /// Largest value.
    Max,
    /// Lower median.
    Median,
}

impl Agg {
    /// Lower-case name, used in output column names (`<value>_<agg>`).
    pub fn name(self) -> &'static str {
        match self {
            Agg::Count => "count",
            Agg::Sum => "sum",
            Agg::Mean => "mean",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Median => "median",
        }
    }
}

struct Group<T: Elem> {
    key: i64,
    summary: Summary<T>,
    median: Option<T>,
}

fn push_elem<T: Elem>(b: &mut ColumnBuilder, x: Option<T>) -> Result<()> {
    match (b.dtype(), x) {
        (DType::F64, x) => b.push_f64(x.map_or(f64::NAN, Elem::to_f64)),
        (_, Some(x)) => b.push_i64(x.to_i64()),
        // Integer columns have no missing values, so a non-empty group always has a value.
        (_, None) => b.push_i64(0),
    }
}

impl DataFrame {
    /// Groups rows by `key` and aggregates `value` in each group: a frame with the key column
    /// (sorted ascending; strings alphabetically) and one column `<value>_<agg>` per aggregate.
    ///
    /// ```
    /// use farmem_frame::{Agg, Column, DataFrame, DType, LocalPlacement, Value};
    /// let p = LocalPlacement::shared();
    /// let df = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_strings("k", &["b", "a", "b"], p.as_ref()).unwrap(),
    ///     Column::from_vec("v", DType::I64, vec![1i64, 5, 3], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// let g = df.group_by_agg("k", "v", &[Agg::Sum, Agg::Count]).unwrap();
    /// assert_eq!(g.column("k").unwrap().get(0).unwrap(), Value::Str("a".into()));
    /// assert_eq!(g.column("v_sum").unwrap().get(1).unwrap(), Value::Int(4));
    /// ```
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; [`FrameError::TypeMismatch`] if `key` is a float column or
    /// a numeric aggregate is asked of a string column; storage errors.
    pub fn group_by_agg(&self, key: &str, value: &str, aggs: &[Agg]) -> Result<DataFrame> {
        let k = self.column(key)?;
        let v = self.column(value)?;
        if k.dtype() == DType::F64 {
            return Err(FrameError::TypeMismatch {
                column: key.into(),
                expected: "an integer or string key".into(),
                actual: k.dtype(),
            });
        }
        if v.dtype() == DType::Str && aggs.iter().any(|a| *a != Agg::Count) {
            return Err(FrameError::TypeMismatch {
                column: value.into(),
                expected: "a numeric column".into(),
                actual: v.dtype(),
            });
        }
        with_store!(v.data(), s => self.group_typed(k, v, s.as_ref(), aggs))
    }

    fn group_typed<T: Elem>(
        &self,
        k: &Column,
        v: &Column,
        vs: &dyn ColumnStore<T>,
        aggs: &[Agg],
    ) -> Result<DataFrame> {
        let keep_values = aggs.contains(&Agg::Median);
        let mut groups: Vec<Group<T>> = group_rows_any(k, vs, keep_values)?
            .into_iter()
            .map(|r| Group {
                key: r.key,
                summary: r.summary,
                median: r.middles.map(|m| m.0),
            })
            .collect();
        if k.dtype() == DType::Str {
            let d = k.dictionary();
            let name = |c: i64| {
                d.and_then(|d| d.value(c as u32))
                    .unwrap_or_default()
                    .to_owned()
            };
            groups.sort_by_cached_key(|g| name(g.key));
        } else {
            groups.sort_by_key(|g| g.key);
        }
        let p = self.placement().clone();
        let key_col = match k.data() {
            ColumnData::U32(_) => {
                let d = k.dictionary();
                let names: Vec<&str> = groups
                    .iter()
                    .map(|g| d.and_then(|d| d.value(g.key as u32)).unwrap_or_default())
                    .collect();
                Column::from_strings(k.name(), &names, p.as_ref())?
            }
            _ => {
                let mut b = ColumnBuilder::new(k.name(), k.dtype(), p.as_ref());
                for g in &groups {
                    b.push_i64(g.key)?;
                }
                b.finish()?
            }
        };
        let mut out = vec![key_col];
        for &agg in aggs {
            let out_type = match agg {
                Agg::Count => DType::I64,
                Agg::Mean => DType::F64,
                Agg::Sum if v.dtype().is_integer() => DType::I64,
                Agg::Sum => DType::F64,
                Agg::Min | Agg::Max | Agg::Median => v.dtype(),
            };
            let name = format!("{}_{}", v.name(), agg.name());
            let mut b = ColumnBuilder::new(&name, out_type, p.as_ref());
            for g in &groups {
                let s = &g.summary;
                match agg {
                    Agg::Count => b.push_i64(s.count as i64)?,
                    Agg::Sum if out_type == DType::I64 => {
                        b.push_i64(i64::try_from(T::sum_to_i128(s.sum)).map_err(|_| {
                            FrameError::TypeMismatch {
                                column: name.clone(),
                                expected: "a sum that fits in i64".into(),
                                actual: out_type,
                            }
                        })?)?
                    }
                    Agg::Sum => b.push_f64(T::sum_to_f64(s.sum))?,
                    Agg::Mean => b.push_f64(if s.count == 0 {
                        f64::NAN
                    } else {
                        T::sum_to_f64(s.sum) / s.count as f64
                    })?,
                    Agg::Min => push_elem(&mut b, s.min)?,
                    Agg::Max => push_elem(&mut b, s.max)?,
                    Agg::Median => push_elem(&mut b, g.median)?,
                }
            }
            out.push(b.finish()?);
        }
        DataFrame::from_columns(p, out)
    }

    /// Distinct values of `column` with their number of rows, sorted by value (see
    /// [`Column::value_counts`]).
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; [`FrameError::TypeMismatch`] for float columns; storage errors.
    pub fn value_counts(&self, column: &str) -> Result<Vec<(Value, u64)>> {
        self.column(column)?.value_counts()
    }
}

/// Groups the values `vs` by the key column `k`: by the placement (far placements: on the
/// server) when it can, else here, reading both columns in blocks. The two middle values of
/// each group if asked.
pub(crate) fn group_rows_any<T: Elem>(
    k: &Column,
    vs: &dyn ColumnStore<T>,
    medians: bool,
) -> Result<Vec<GroupRow<T>>> {
    if let Some(rows) = vs.group_rows(k.data(), medians) {
        return rows;
    }
    let mut slot: HashMap<i64, usize> = HashMap::new();
    let mut groups: Vec<(GroupRow<T>, Vec<T>)> = Vec::new();
    let mut keys_in = k.reader_i64();
    let mut vals_in = vs.reader();
    let mut vals = Vec::new();
    loop {
        let keys = keys_in(BUILD_CHUNK)?;
        vals_in.next_block(BUILD_CHUNK, &mut vals)?;
        if keys.is_empty() || vals.is_empty() {
            break;
        }
        for (&key, &x) in keys.iter().zip(&vals) {
            let g = *slot.entry(key).or_insert_with(|| {
                let row = GroupRow {
                    key,
                    summary: Summary::default(),
                    middles: None,
                };
                groups.push((row, Vec::new()));
                groups.len() - 1
            });
            let (row, values) = &mut groups[g];
            row.summary.add_slice(std::slice::from_ref(&x));
            if medians && !x.is_missing() {
                values.push(x);
            }
        }
    }
    Ok(groups
        .into_iter()
        .map(|(mut row, mut values)| {
            if medians {
                row.middles = middles_of(&mut values);
            }
            row
        })
        .collect())
}
