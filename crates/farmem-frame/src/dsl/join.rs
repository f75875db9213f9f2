//! Hash joins (inner and left) on one or more key columns.

use std::collections::HashMap;

use super::sort::Keys;
use crate::{Column, ColumnBuilder, DType, DataFrame, FrameError, Result, Validity};

/// Which rows a join keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinType {
    /// Rows whose keys match on both sides.
    Inner,
    /// Every left row; right columns are null where no right row matches.
    Left,
}

/// The join key class of a column type: integers join with integers, others only with their
/// own type.
fn key_class(t: DType) -> DType {
    match t {
        DType::I64 | DType::I32 | DType::U8 => DType::I64,
        t => t,
    }
}

/// Each row's key values (`None` for a row with a null key). String codes of the right side are
/// translated into the left side's dictionary (absent strings get codes that match nothing).
fn row_keys(cols: &[&Column], left: &[&Column]) -> Result<Vec<Option<Vec<i64>>>> {
    let mut per_col = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let v: Vec<i64> = match Keys::of(c)? {
            Keys::Float(v) => v
                .into_iter()
                .map(|x| if x == 0.0 { 0 } else { x.to_bits() as i64 })
                .collect(),
            Keys::Int(_) if c.dtype() == DType::Str => {
                let codes = c.read_i64(0..c.len())?;
                let (from, to) = (c.dictionary(), left[i].dictionary());
                codes
                    .into_iter()
                    .map(|code| {
                        from.and_then(|d| d.value(code as u32))
                            .and_then(|s| to.and_then(|t| t.code(s)))
                            .map_or(-1 - code, i64::from)
                    })
                    .collect()
            }
            Keys::Int(v) => v,
        };
        per_col.push(v);
    }
    let n = cols.first().map_or(0, |c| c.len());
    Ok((0..n)
        .map(|r| {
            cols.iter()
                .all(|c| c.is_valid(r))
                .then(|| per_col.iter().map(|v| v[r]).collect())
        })
        .collect())
}

impl DataFrame {
    /// Joins `other` on `left_on[i] == right_on[i]`: the left columns, then the right columns
    /// except its keys (a name already on the left gets the suffix `_right`). Rows come in left
    /// order, matches of one left row in right order. Null keys match nothing.
    ///
    /// ```
    /// use farmem_frame::prelude::*;
    /// let p = LocalPlacement::shared();
    /// let trips = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_vec("vendor", DType::I64, vec![1i64, 2, 3], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// let names = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_vec("id", DType::I64, vec![2i64, 1], p.as_ref()).unwrap(),
    ///     Column::from_strings("name", &["Verifone", "CMT"], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// let j = trips.join(&names, &["vendor"], &["id"], JoinType::Left).unwrap();
    /// assert_eq!(j["name"].get(0).unwrap(), Value::Str("CMT".into()));
    /// assert_eq!(j["name"].get(2).unwrap(), Value::Null);
    /// ```
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; [`FrameError::JoinTypeMismatch`] for keys of different
    /// types; [`FrameError::InvalidExpr`] for key lists of different lengths; storage errors.
    pub fn join<S: AsRef<str>>(
        &self,
        other: &DataFrame,
        left_on: &[S],
        right_on: &[S],
        how: JoinType,
    ) -> Result<DataFrame> {
        if left_on.len() != right_on.len() || left_on.is_empty() {
            return Err(FrameError::InvalidExpr {
                column: left_on.first().map_or("", |s| s.as_ref()).into(),
                reason: format!(
                    "join on {} left and {} right keys",
                    left_on.len(),
                    right_on.len()
                ),
            });
        }
        let lk = left_on
            .iter()
            .map(|n| self.column(n.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let rk = right_on
            .iter()
            .map(|n| other.column(n.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        for (l, r) in lk.iter().zip(&rk) {
            if key_class(l.dtype()) != key_class(r.dtype()) {
                return Err(FrameError::JoinTypeMismatch {
                    left: l.name().into(),
                    left_type: l.dtype(),
                    right: r.name().into(),
                    right_type: r.dtype(),
                });
            }
        }
        let mut table: HashMap<Vec<i64>, Vec<u32>> = HashMap::new();
        for (r, k) in row_keys(&rk, &lk)?.into_iter().enumerate() {
            if let Some(k) = k {
                table.entry(k).or_default().push(r as u32);
            }
        }
        let (mut li, mut ri) = (Vec::new(), Vec::new());
        for (l, k) in row_keys(&lk, &lk)?.into_iter().enumerate() {
            match k.as_ref().and_then(|k| table.get(k)) {
                Some(rows) => {
                    for &r in rows {
                        li.push(l as u32);
                        ri.push(Some(r));
                    }
                }
                None if how == JoinType::Left => {
                    li.push(l as u32);
                    ri.push(None);
                }
                None => {}
            }
        }
        let mut out = self.take(&li)?;
        let filled: Vec<u32> = ri.iter().map(|r| r.unwrap_or(0)).collect();
        let valid = Validity::from_bools(ri.iter().map(Option::is_some));
        let p = self.placement().clone();
        for c in other.columns() {
            if right_on.iter().any(|n| n.as_ref() == c.name()) {
                continue;
            }
            let name = if out.column(c.name()).is_ok() {
                format!("{}_right", c.name())
            } else {
                c.name().to_owned()
            };
            let col = if other.is_empty() {
                let mut b = ColumnBuilder::new(&name, c.dtype(), p.as_ref());
                for _ in 0..ri.len() {
                    b.push_null()?;
                }
                b.finish()?
            } else {
                let t = c.take(&filled)?.alias(&name);
                let v = match t.validity() {
                    Some(tv) => tv.and(&valid),
                    None => valid.clone(),
                };
                t.with_validity(Some(v))?
            };
            out.add_column(col)?;
        }
        Ok(out)
    }
}
