//! Aggregates and comparisons of one column: counts, sums, extremes, medians, distinct values,
//! selections. Far placements run them on the memory server's agent. Null rows are skipped.

use crate::column::{Column, ColumnData, median_of, to_value, with_store};
use crate::storage::{Cmp, ColumnStore, Summary};
use crate::{DType, Elem, FrameError, Result, Value};

impl Column {
    fn numeric(&self, op: &str) -> Result<()> {
        if self.dtype == DType::Str {
            return Err(FrameError::TypeMismatch {
                column: self.name.clone(),
                expected: format!("a numeric column for {op}"),
                actual: self.dtype,
            });
        }
        Ok(())
    }

    /// Number of non-missing values.
    ///
    /// # Errors
    /// Storage errors.
    pub fn count(&self) -> Result<u64> {
        Ok(self.stats()?.count)
    }

    /// The sum of an integer column, exactly.
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] for float and string columns; storage errors.
    pub fn sum_int(&self) -> Result<i128> {
        if self.validity.is_some() {
            return self.drop_nulls()?.sum_int();
        }
        match &*self.data {
            ColumnData::I64(s) => Ok(s.summary()?.sum),
            ColumnData::I32(s) => Ok(s.summary()?.sum),
            ColumnData::U8(s) => Ok(s.summary()?.sum),
            ColumnData::U32(_) | ColumnData::F64(_) => Err(FrameError::TypeMismatch {
                column: self.name.clone(),
                expected: "an integer column".into(),
                actual: self.dtype,
            }),
        }
    }

    /// The sum as a float.
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] for string columns; storage errors.
    pub fn sum(&self) -> Result<f64> {
        self.numeric("sum")?;
        Ok(self.stats()?.sum)
    }

    /// The mean of the non-missing values, `None` if there are none. Integer columns are summed
    /// exactly first, so the result does not depend on the order of summation.
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] for string columns; storage errors.
    pub fn mean(&self) -> Result<Option<f64>> {
        self.numeric("mean")?;
        let st = self.stats()?;
        let sum = st.sum_int.map_or(st.sum, |s| s as f64);
        Ok((st.count > 0).then(|| sum / st.count as f64))
    }

    /// The smallest value (strings: by code order), `None` if empty.
    ///
    /// # Errors
    /// Storage errors.
    pub fn min(&self) -> Result<Option<Value>> {
        Ok(self.stats()?.min)
    }

    /// The largest value, `None` if empty.
    ///
    /// # Errors
    /// Storage errors.
    pub fn max(&self) -> Result<Option<Value>> {
        Ok(self.stats()?.max)
    }

    /// The median of the non-missing values (the lower middle one for an even count), `None`
    /// if there are none.
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] for string columns; storage errors.
    pub fn median(&self) -> Result<Option<Value>> {
        if self.validity.is_some() {
            return self.drop_nulls()?.median();
        }
        self.numeric("median")?;
        with_store!(&*self.data, s => {
            let mut v = s.to_vec(0..s.len())?;
            v.retain(|x| !x.is_missing());
            Ok(median_of(&mut v).map(|x| to_value(self.dtype, None, x)))
        })
    }

    /// The distinct values, sorted (strings: alphabetically).
    ///
    /// # Errors
    /// Storage errors.
    pub fn unique(&self) -> Result<Vec<Value>> {
        if self.validity.is_some() {
            return self.drop_nulls()?.unique();
        }
        let mut out: Vec<Value> = with_store!(&*self.data, s => s
            .unique()?
            .into_iter()
            .map(|x| to_value(self.dtype, self.dict.as_deref(), x))
            .collect());
        if self.dtype == DType::Str {
            out.sort_by_key(Value::to_string);
        }
        Ok(out)
    }

    /// The rows where `cell <cmp> operand`, ascending. Strings support `Eq` and `Ne` only.
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] if `operand` does not fit the column; storage errors.
    pub fn select(&self, cmp: Cmp, operand: &Value) -> Result<Vec<u32>> {
        match self.matching(cmp, operand, false)? {
            Matches::Rows(mut r) => {
                if let Some(v) = self.validity.as_deref() {
                    r.retain(|&i| v.is_valid(i as usize));
                }
                Ok(r)
            }
            Matches::Count(_) => unreachable!("rows were asked for"),
        }
    }

    /// The number of rows where `cell <cmp> operand` (agent-capable, without moving the rows).
    ///
    /// # Errors
    /// As [`Column::select`].
    pub fn count_where(&self, cmp: Cmp, operand: &Value) -> Result<u64> {
        if self.validity.is_some() {
            return Ok(self.select(cmp, operand)?.len() as u64);
        }
        match self.matching(cmp, operand, true)? {
            Matches::Rows(r) => Ok(r.len() as u64),
            Matches::Count(n) => Ok(n),
        }
    }

    fn matching(&self, cmp: Cmp, operand: &Value, count: bool) -> Result<Matches> {
        let mismatch = || FrameError::TypeMismatch {
            column: self.name.clone(),
            expected: format!("a column comparable with {operand:?} by {cmp:?}"),
            actual: self.dtype,
        };
        fn run<T: Elem>(s: &dyn ColumnStore<T>, cmp: Cmp, x: T, count: bool) -> Result<Matches> {
            Ok(if count {
                Matches::Count(s.count_where(cmp, x)?)
            } else {
                Matches::Rows(s.select(cmp, x)?)
            })
        }
        if self.dtype == DType::Str {
            let Value::Str(s) = operand else {
                return Err(mismatch());
            };
            let ColumnData::U32(store) = &*self.data else {
                return Err(mismatch());
            };
            return match (self.dict.as_deref().and_then(|d| d.code(s)), cmp) {
                (Some(code), Cmp::Eq | Cmp::Ne) => run(store.as_ref(), cmp, code, count),
                (None, Cmp::Eq) => Ok(Matches::Rows(Vec::new())),
                (None, Cmp::Ne) => Ok(Matches::Rows((0..store.len() as u32).collect())),
                _ => Err(mismatch()),
            };
        }
        let (i, f) = match operand {
            Value::Int(v) | Value::Timestamp(v) => (Some(*v), *v as f64),
            Value::Bool(b) => (Some(i64::from(*b)), f64::from(u8::from(*b))),
            Value::Float(v) => (None, *v),
            Value::Str(_) | Value::Null => return Err(mismatch()),
        };
        fn go<T: Elem>(
            s: &dyn ColumnStore<T>,
            cmp: Cmp,
            i: Option<i64>,
            f: f64,
            count: bool,
        ) -> Result<Matches> {
            match i.and_then(T::from_i64).or_else(|| T::from_f64(f)) {
                Some(x) => run(s, cmp, x, count),
                // The operand lies outside the type's range or between integers: compare as floats.
                None => {
                    let mut out = Vec::new();
                    s.scan(0..s.len(), &mut |start, xs| {
                        out.extend(
                            xs.iter()
                                .enumerate()
                                .filter(|(_, x)| cmp.eval(x.to_f64(), f))
                                .map(|(k, _)| (start + k) as u32),
                        );
                        Ok(())
                    })?;
                    Ok(Matches::Rows(out))
                }
            }
        }
        with_store!(&*self.data, s => go(s.as_ref(), cmp, i, f, count))
    }

    /// Count, sum, min and max in one pass (agent-capable).
    ///
    /// # Errors
    /// Storage errors.
    pub fn stats(&self) -> Result<ColumnStats> {
        if self.validity.is_some() {
            return self.drop_nulls()?.stats();
        }
        fn conv<T: Elem>(c: &Column, s: Summary<T>) -> ColumnStats {
            let d = c.dict.as_deref();
            ColumnStats {
                count: s.count,
                sum: T::sum_to_f64(s.sum),
                sum_int: c.dtype.is_integer().then(|| T::sum_to_i128(s.sum)),
                min: s.min.map(|x| to_value(c.dtype, d, x)),
                max: s.max.map(|x| to_value(c.dtype, d, x)),
            }
        }
        with_store!(&*self.data, s => Ok(conv(self, s.summary()?)))
    }

    /// Distinct values with their number of rows, sorted by value (strings alphabetically)
    /// (agent-capable).
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] for float columns; storage errors.
    pub fn value_counts(&self) -> Result<Vec<(Value, u64)>> {
        if self.validity.is_some() {
            return self.drop_nulls()?.value_counts();
        }
        if self.dtype == DType::F64 {
            return Err(FrameError::TypeMismatch {
                column: self.name.clone(),
                expected: "an integer or string column".into(),
                actual: self.dtype,
            });
        }
        let d = self.dict.as_deref();
        let mut out: Vec<(Value, u64)> = with_store!(&*self.data, s => s
            .value_counts()?
            .into_iter()
            .map(|(x, n)| (to_value(self.dtype, d, x), n))
            .collect());
        if self.dtype == DType::Str {
            out.sort_by_key(|a| a.0.to_string());
        }
        Ok(out)
    }

    /// Distinct values among the rows where `mask <cmp> operand`, with their number of rows,
    /// sorted by value (strings alphabetically): `filter(mask <cmp> operand).value_counts()`
    /// without materialising the selection (agent-capable: far placements count on the server).
    ///
    /// ```
    /// use farmem_frame::{Cmp, Column, DType, LocalPlacement, Value};
    /// let p = LocalPlacement;
    /// let vendor = Column::from_vec("vendor", DType::U8, vec![1u8, 2, 1, 1], &p).unwrap();
    /// let pax = Column::from_vec("pax", DType::U8, vec![1u8, 5, 2, 1], &p).unwrap();
    /// let h = pax.value_counts_where(&vendor, Cmp::Eq, &Value::Int(1)).unwrap();
    /// assert_eq!(h, vec![(Value::Int(1), 2), (Value::Int(2), 1)]);
    /// ```
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] for a float column or an operand that does not fit the
    /// mask; [`FrameError::LengthMismatch`] for a mask of another length; storage errors.
    pub fn value_counts_where(
        &self,
        mask: &Column,
        cmp: Cmp,
        operand: &Value,
    ) -> Result<Vec<(Value, u64)>> {
        if self.dtype == DType::F64 {
            return Err(FrameError::TypeMismatch {
                column: self.name.clone(),
                expected: "an integer or string column".into(),
                actual: self.dtype,
            });
        }
        if mask.len() != self.len() {
            return Err(FrameError::LengthMismatch {
                column: mask.name.clone(),
                expected: self.len(),
                actual: mask.len(),
            });
        }
        // The operand in the mask's storage terms (string codes), when it has one.
        let converted = match (mask.dtype, operand, cmp) {
            (DType::Str, Value::Str(s), Cmp::Eq | Cmp::Ne) => mask
                .dict
                .as_deref()
                .and_then(|d| d.code(s))
                .map(|c| Value::Int(i64::from(c))),
            (DType::Str, _, _) | (_, Value::Str(_), _) => None,
            _ => Some(operand.clone()),
        };
        let d = self.dict.as_deref();
        let nulls = self.validity.is_some() || mask.validity.is_some();
        let fast = converted.filter(|_| !nulls).and_then(|op| {
            with_store!(&*self.data, s => s.value_counts_where(&mask.data, cmp, &op).map(|r| {
                r.map(|mut v| {
                    v.sort_by(|a, b| a.0.total_cmp(&b.0));
                    v.into_iter()
                        .map(|(x, n)| (to_value(self.dtype, d, x), n))
                        .collect::<Vec<_>>()
                })
            }))
        });
        let mut out = match fast {
            Some(r) => r?,
            None => return self.take(&mask.select(cmp, operand)?)?.value_counts(),
        };
        if self.dtype == DType::Str {
            out.sort_by_key(|a| a.0.to_string());
        }
        Ok(out)
    }
}

/// What [`Column::stats`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnStats {
    /// Non-missing values.
    pub count: u64,
    /// Their sum as a float.
    pub sum: f64,
    /// Their exact sum, for integer columns.
    pub sum_int: Option<i128>,
    /// The smallest value.
    pub min: Option<Value>,
    /// The largest value.
    pub max: Option<Value>,
}

enum Matches {
    Rows(Vec<u32>),
    Count(u64),
}
