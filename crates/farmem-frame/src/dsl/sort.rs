//! Sorting by several columns, distinct rows, and the key views that sorting and joining share.

use std::cmp::Ordering;

use crate::{Column, DType, DataFrame, FrameError, Result};

/// A column's values as comparable keys, read here: integers (strings by alphabetical rank),
/// or floats; plus validity.
pub(crate) enum Keys {
    /// Integer-like values (string columns: rank of the string in alphabetical order).
    Int(Vec<i64>),
    /// Floats.
    Float(Vec<f64>),
}

impl Keys {
    /// Reads column `c`'s keys (strings ranked alphabetically within its dictionary).
    pub(crate) fn of(c: &Column) -> Result<Self> {
        Ok(match c.dtype() {
            DType::F64 => Keys::Float(c.read_f64(0..c.len())?),
            DType::Str => {
                let codes = c.read_i64(0..c.len())?;
                let dict = c.dictionary();
                let n = dict.map_or(0, |d| d.len());
                let mut order: Vec<u32> = (0..n as u32).collect();
                order.sort_by_key(|&i| dict.and_then(|d| d.value(i)).unwrap_or_default());
                let mut rank = vec![0i64; n];
                for (r, &code) in order.iter().enumerate() {
                    rank[code as usize] = r as i64;
                }
                Keys::Int(
                    codes
                        .into_iter()
                        .map(|c| rank.get(c as usize).copied().unwrap_or(-1))
                        .collect(),
                )
            }
            _ => Keys::Int(c.read_i64(0..c.len())?),
        })
    }

    fn cmp(&self, a: usize, b: usize) -> Ordering {
        match self {
            Keys::Int(v) => v[a].cmp(&v[b]),
            Keys::Float(v) => crate::Elem::total_cmp(&v[a], &v[b]),
        }
    }
}

impl DataFrame {
    /// The frame sorted by the columns `by` (stable; the first column first). `descending`
    /// gives the direction per column, or one for all (empty: ascending). Nulls and NaN sort
    /// last in either direction; strings alphabetically.
    ///
    /// ```
    /// use farmem_frame::prelude::*;
    /// let p = LocalPlacement::shared();
    /// let df = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_vec("a", DType::I64, vec![1i64, 2, 1], p.as_ref()).unwrap(),
    ///     Column::from_vec("b", DType::F64, vec![1.0, 0.0, 3.0], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// let s = df.sort(&["a", "b"], &[false, true]).unwrap();
    /// assert_eq!(s["b"].get(0).unwrap(), Value::Float(3.0));
    /// ```
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; [`FrameError::InvalidExpr`] if `descending` has neither
    /// one nor `by.len()` entries; storage errors.
    pub fn sort<S: AsRef<str>>(&self, by: &[S], descending: &[bool]) -> Result<Self> {
        if descending.len() > 1 && descending.len() != by.len() {
            return Err(FrameError::InvalidExpr {
                column: by.first().map_or("", |s| s.as_ref()).into(),
                reason: format!(
                    "{} sort directions for {} columns",
                    descending.len(),
                    by.len()
                ),
            });
        }
        let cols = by
            .iter()
            .map(|n| self.column(n.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let keys = cols
            .iter()
            .map(|c| Keys::of(c))
            .collect::<Result<Vec<_>>>()?;
        let desc = |i: usize| descending.get(i).or(descending.first()).copied() == Some(true);
        let mut idx: Vec<u32> = (0..self.len() as u32).collect();
        idx.sort_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            for (i, (c, k)) in cols.iter().zip(&keys).enumerate() {
                let o = match (c.is_valid(a), c.is_valid(b)) {
                    (true, true) => {
                        let o = k.cmp(a, b);
                        if desc(i) { o.reverse() } else { o }
                    }
                    (false, true) => Ordering::Greater,
                    (true, false) => Ordering::Less,
                    (false, false) => Ordering::Equal,
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        self.take(&idx)
    }

    /// The distinct rows over the columns `subset` (all columns if empty), each kept at its
    /// first occurrence, in their original order.
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; storage errors.
    pub fn unique<S: AsRef<str>>(&self, subset: &[S]) -> Result<Self> {
        let cols: Vec<&Column> = if subset.is_empty() {
            self.columns().collect()
        } else {
            subset
                .iter()
                .map(|n| self.column(n.as_ref()))
                .collect::<Result<_>>()?
        };
        let keys = cols
            .iter()
            .map(|c| Keys::of(c))
            .collect::<Result<Vec<_>>>()?;
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::new();
        for r in 0..self.len() {
            let t: Vec<Option<u64>> = cols
                .iter()
                .zip(&keys)
                .map(|(c, k)| {
                    c.is_valid(r).then(|| match k {
                        Keys::Int(v) => v[r] as u64,
                        Keys::Float(v) => v[r].to_bits(),
                    })
                })
                .collect();
            if seen.insert(t) {
                rows.push(r as u32);
            }
        }
        self.take(&rows)
    }
}
