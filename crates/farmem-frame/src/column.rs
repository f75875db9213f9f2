//! Typed columns and their builders.

use std::collections::HashMap;
use std::sync::Arc;

use crate::storage::{Cmp, ColumnStore, Placement, Storable, Summary};
use crate::{DType, Elem, FrameError, Result, Value};

/// Rows buffered by a builder before they are appended to the store.
pub(crate) const BUILD_CHUNK: usize = 1 << 16;

/// The strings of a dictionary-encoded column; codes index `values`.
#[derive(Clone, Debug, Default)]
pub struct Dictionary {
    values: Vec<String>,
    index: HashMap<String, u32>,
}

impl Dictionary {
    /// The code of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&c) = self.index.get(s) {
            return c;
        }
        let c = self.values.len() as u32;
        self.values.push(s.to_owned());
        self.index.insert(s.to_owned(), c);
        c
    }
    /// The code of `s`, if present.
    pub fn code(&self, s: &str) -> Option<u32> {
        self.index.get(s).copied()
    }
    /// The string of a code.
    pub fn value(&self, code: u32) -> Option<&str> {
        self.values.get(code as usize).map(String::as_str)
    }
    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.values.len()
    }
    /// Whether there are no strings.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The physical storage of a column.
pub enum ColumnData {
    /// `I64` and `Timestamp` columns.
    I64(Box<dyn ColumnStore<i64>>),
    /// `I32` columns.
    I32(Box<dyn ColumnStore<i32>>),
    /// `U8` and `Bool` columns.
    U8(Box<dyn ColumnStore<u8>>),
    /// Dictionary codes of `Str` columns.
    U32(Box<dyn ColumnStore<u32>>),
    /// `F64` columns.
    F64(Box<dyn ColumnStore<f64>>),
}

impl std::fmt::Debug for ColumnData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::I64(_) => "ColumnData::I64",
            Self::I32(_) => "ColumnData::I32",
            Self::U8(_) => "ColumnData::U8",
            Self::U32(_) => "ColumnData::U32",
            Self::F64(_) => "ColumnData::F64",
        })
    }
}

/// Runs `$body` with `$s` bound to the typed store of a [`ColumnData`].
macro_rules! with_store {
    ($data:expr, $s:ident => $body:expr) => {
        match $data {
            $crate::column::ColumnData::I64($s) => $body,
            $crate::column::ColumnData::I32($s) => $body,
            $crate::column::ColumnData::U8($s) => $body,
            $crate::column::ColumnData::U32($s) => $body,
            $crate::column::ColumnData::F64($s) => $body,
        }
    };
}
pub(crate) use with_store;

impl ColumnData {
    pub(crate) fn new(dtype: DType, p: &dyn Placement) -> Self {
        match dtype {
            DType::I64 | DType::Timestamp => ColumnData::I64(p.new_i64()),
            DType::I32 => ColumnData::I32(p.new_i32()),
            DType::U8 | DType::Bool => ColumnData::U8(p.new_u8()),
            DType::Str => ColumnData::U32(p.new_u32()),
            DType::F64 => ColumnData::F64(p.new_f64()),
        }
    }

    fn empty_like(&self) -> Self {
        match self {
            ColumnData::I64(s) => ColumnData::I64(s.empty_like()),
            ColumnData::I32(s) => ColumnData::I32(s.empty_like()),
            ColumnData::U8(s) => ColumnData::U8(s.empty_like()),
            ColumnData::U32(s) => ColumnData::U32(s.empty_like()),
            ColumnData::F64(s) => ColumnData::F64(s.empty_like()),
        }
    }

    fn len(&self) -> usize {
        with_store!(self, s => s.len())
    }
}

/// A named, typed column.
pub struct Column {
    pub(crate) name: String,
    pub(crate) dtype: DType,
    pub(crate) data: ColumnData,
    pub(crate) dict: Option<Arc<Dictionary>>,
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Column({:?}: {}, {} rows)",
            self.name,
            self.dtype,
            self.len()
        )
    }
}

/// Converts an element of a column of type `dtype` to a [`Value`].
fn to_value<T: Elem>(dtype: DType, dict: Option<&Dictionary>, x: T) -> Value {
    match dtype {
        DType::F64 => Value::Float(x.to_f64()),
        DType::Bool => Value::Bool(x.to_i64() != 0),
        DType::Timestamp => Value::Timestamp(x.to_i64()),
        DType::Str => Value::Str(
            dict.and_then(|d| d.value(x.to_i64() as u32))
                .unwrap_or_default()
                .to_owned(),
        ),
        DType::I64 | DType::I32 | DType::U8 => Value::Int(x.to_i64()),
    }
}

impl Column {
    /// A column from a local vector, stored with placement `p`.
    ///
    /// ```
    /// use farmem_frame::{Column, DType, LocalPlacement, Value};
    /// let c = Column::from_vec("x", DType::I64, vec![3i64, 1, 2], &LocalPlacement).unwrap();
    /// assert_eq!(c.max().unwrap(), Some(Value::Int(3)));
    /// ```
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] if `T` is not the storage type of `dtype` (or `dtype` is
    /// `Str`: use [`Column::from_strings`]); storage errors.
    pub fn from_vec<T: Storable>(
        name: &str,
        dtype: DType,
        v: Vec<T>,
        p: &dyn Placement,
    ) -> Result<Column> {
        let mut b = ColumnBuilder::new(name, dtype, p);
        if dtype == DType::Str || !b.accepts::<T>() {
            return Err(FrameError::TypeMismatch {
                column: name.into(),
                expected: format!("storage type {}", std::any::type_name::<T>()),
                actual: dtype,
            });
        }
        for chunk in v.chunks(BUILD_CHUNK) {
            b.push_slice(chunk)?;
        }
        b.finish()
    }

    /// A dictionary-encoded string column.
    ///
    /// # Errors
    /// Storage errors.
    pub fn from_strings<S: AsRef<str>>(name: &str, v: &[S], p: &dyn Placement) -> Result<Column> {
        let mut b = ColumnBuilder::new(name, DType::Str, p);
        for s in v {
            b.push_str_value(s.as_ref())?;
        }
        b.finish()
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The logical type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The physical storage.
    pub fn data(&self) -> &ColumnData {
        &self.data
    }

    /// The dictionary of a `Str` column.
    pub fn dictionary(&self) -> Option<&Dictionary> {
        self.dict.as_deref()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same column under another name (shares nothing: data are copied).
    ///
    /// # Errors
    /// Storage errors.
    pub fn renamed(&self, name: &str) -> Result<Column> {
        let mut c = self.slice(0..self.len())?;
        c.name = name.into();
        Ok(c)
    }

    /// The cell at row `i`.
    ///
    /// # Errors
    /// [`FrameError::OutOfRange`]; storage errors.
    pub fn get(&self, i: usize) -> Result<Value> {
        if i >= self.len() {
            return Err(FrameError::OutOfRange {
                index: i,
                len: self.len(),
            });
        }
        let i = u32::try_from(i).map_err(|_| FrameError::OutOfRange {
            index: i,
            len: self.len(),
        })?;
        with_store!(&self.data, s => {
            let v = s.gather(&[i])?;
            Ok(to_value(self.dtype, self.dict.as_deref(), v[0]))
        })
    }

    /// The cells of `range`.
    ///
    /// # Errors
    /// Storage errors.
    ///
    /// # Panics
    /// If `range` reaches past the end.
    pub fn values(&self, range: std::ops::Range<usize>) -> Result<Vec<Value>> {
        with_store!(&self.data, s => Ok(s
            .to_vec(range)?
            .into_iter()
            .map(|x| to_value(self.dtype, self.dict.as_deref(), x))
            .collect()))
    }

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
        match &self.data {
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
        self.numeric("median")?;
        with_store!(&self.data, s => {
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
        let mut out: Vec<Value> = with_store!(&self.data, s => s
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
            Matches::Rows(r) => Ok(r),
            Matches::Count(_) => unreachable!("rows were asked for"),
        }
    }

    /// The number of rows where `cell <cmp> operand` (agent-capable, without moving the rows).
    ///
    /// # Errors
    /// As [`Column::select`].
    pub fn count_where(&self, cmp: Cmp, operand: &Value) -> Result<u64> {
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
            let ColumnData::U32(store) = &self.data else {
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
            Value::Str(_) => return Err(mismatch()),
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
        with_store!(&self.data, s => go(s.as_ref(), cmp, i, f, count))
    }

    /// Count, sum, min and max in one pass (agent-capable).
    ///
    /// # Errors
    /// Storage errors.
    pub fn stats(&self) -> Result<ColumnStats> {
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
        with_store!(&self.data, s => Ok(conv(self, s.summary()?)))
    }

    /// Distinct values with their number of rows, sorted by value (strings alphabetically)
    /// (agent-capable).
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] for float columns; storage errors.
    pub fn value_counts(&self) -> Result<Vec<(Value, u64)>> {
        if self.dtype == DType::F64 {
            return Err(FrameError::TypeMismatch {
                column: self.name.clone(),
                expected: "an integer or string column".into(),
                actual: self.dtype,
            });
        }
        let d = self.dict.as_deref();
        let mut out: Vec<(Value, u64)> = with_store!(&self.data, s => s
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
        let fast = converted.and_then(|op| {
            with_store!(&self.data, s => s.value_counts_where(&mask.data, cmp, &op).map(|r| {
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

    /// A column of the given storage (which must fit `dtype`; no dictionary).
    pub(crate) fn from_data(name: &str, dtype: DType, data: ColumnData) -> Column {
        Column {
            name: name.into(),
            dtype,
            data,
            dict: None,
        }
    }

    /// The rows at `idx`, in that order, as a new column of the same placement.
    ///
    /// # Errors
    /// [`FrameError::OutOfRange`]; storage errors.
    pub fn take(&self, idx: &[u32]) -> Result<Column> {
        let data = match &self.data {
            ColumnData::I64(s) => ColumnData::I64(s.take(idx)?),
            ColumnData::I32(s) => ColumnData::I32(s.take(idx)?),
            ColumnData::U8(s) => ColumnData::U8(s.take(idx)?),
            ColumnData::U32(s) => ColumnData::U32(s.take(idx)?),
            ColumnData::F64(s) => ColumnData::F64(s.take(idx)?),
        };
        Ok(Column {
            name: self.name.clone(),
            dtype: self.dtype,
            data,
            dict: self.dict.clone(),
        })
    }

    /// Rows `range` as a new column of the same placement.
    ///
    /// # Errors
    /// Storage errors.
    ///
    /// # Panics
    /// If `range` reaches past the end.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Result<Column> {
        let mut data = self.data.empty_like();
        macro_rules! copy {
            ($src:expr, $dst:expr) => {
                $src.scan(range.clone(), &mut |_, xs| $dst.append(xs))?
            };
        }
        match (&self.data, &mut data) {
            (ColumnData::I64(a), ColumnData::I64(b)) => copy!(a, b),
            (ColumnData::I32(a), ColumnData::I32(b)) => copy!(a, b),
            (ColumnData::U8(a), ColumnData::U8(b)) => copy!(a, b),
            (ColumnData::U32(a), ColumnData::U32(b)) => copy!(a, b),
            (ColumnData::F64(a), ColumnData::F64(b)) => copy!(a, b),
            _ => unreachable!("empty_like keeps the variant"),
        }
        Ok(Column {
            name: self.name.clone(),
            dtype: self.dtype,
            data,
            dict: self.dict.clone(),
        })
    }

    /// Rows `range` converted to `i64` (floats truncate, strings give their codes).
    ///
    /// # Errors
    /// Storage errors.
    ///
    /// # Panics
    /// If `range` reaches past the end.
    pub fn read_i64(&self, range: std::ops::Range<usize>) -> Result<Vec<i64>> {
        if let ColumnData::I64(s) = &self.data {
            return s.to_vec(range);
        }
        with_store!(&self.data, s => Ok(s.to_vec(range)?.into_iter().map(Elem::to_i64).collect()))
    }

    /// Rows `range` converted to `f64`.
    ///
    /// # Errors
    /// Storage errors.
    ///
    /// # Panics
    /// If `range` reaches past the end.
    pub fn read_f64(&self, range: std::ops::Range<usize>) -> Result<Vec<f64>> {
        if let ColumnData::F64(s) = &self.data {
            return s.to_vec(range);
        }
        with_store!(&self.data, s => Ok(s.to_vec(range)?.into_iter().map(Elem::to_f64).collect()))
    }

    /// A reader of the column front to back: each call returns the next up to `n` values
    /// converted to `i64` (empty at the end).
    pub fn reader_i64(&self) -> BlockFn<'_, i64> {
        with_store!(&self.data, s => {
            let mut r = s.reader();
            let mut buf = Vec::new();
            Box::new(move |n| {
                r.next_block(n, &mut buf)?;
                Ok(buf.iter().map(|x| x.to_i64()).collect())
            })
        })
    }

    /// Like [`Column::reader_i64`], converting to `f64`.
    pub fn reader_f64(&self) -> BlockFn<'_, f64> {
        with_store!(&self.data, s => {
            let mut r = s.reader();
            let mut buf = Vec::new();
            Box::new(move |n| {
                r.next_block(n, &mut buf)?;
                Ok(buf.iter().map(|x| x.to_f64()).collect())
            })
        })
    }

    /// Like [`Column::reader_i64`], converting to [`Value`]s.
    pub fn reader_values(&self) -> BlockFn<'_, Value> {
        let (dtype, dict) = (self.dtype, self.dict.as_deref());
        with_store!(&self.data, s => {
            let mut r = s.reader();
            let mut buf = Vec::new();
            Box::new(move |n| {
                r.next_block(n, &mut buf)?;
                Ok(buf.iter().map(|x| to_value(dtype, dict, *x)).collect())
            })
        })
    }

    /// Calls `f(start, values)` on consecutive chunks of the column converted to `i64` (floats
    /// truncate, strings give their codes).
    ///
    /// # Errors
    /// Errors of `f`; storage errors.
    pub fn scan_i64(&self, f: &mut dyn FnMut(usize, &[i64]) -> Result<()>) -> Result<()> {
        if let ColumnData::I64(s) = &self.data {
            return s.scan(0..s.len(), f);
        }
        let mut buf = Vec::new();
        with_store!(&self.data, s => s.scan(0..s.len(), &mut |start, xs| {
            buf.clear();
            buf.extend(xs.iter().map(|x| x.to_i64()));
            f(start, &buf)
        }))
    }

    /// Calls `f(start, values)` on consecutive chunks of the column converted to `f64`.
    ///
    /// # Errors
    /// Errors of `f`; storage errors.
    pub fn scan_f64(&self, f: &mut dyn FnMut(usize, &[f64]) -> Result<()>) -> Result<()> {
        if let ColumnData::F64(s) = &self.data {
            return s.scan(0..s.len(), f);
        }
        let mut buf = Vec::new();
        with_store!(&self.data, s => s.scan(0..s.len(), &mut |start, xs| {
            buf.clear();
            buf.extend(xs.iter().map(|x| x.to_f64()));
            f(start, &buf)
        }))
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

/// Reads a column in blocks: each call returns the next up to `n` values, empty at the end.
pub type BlockFn<'a, T> = Box<dyn FnMut(usize) -> Result<Vec<T>> + Send + 'a>;

/// The lower median of `v` (reorders it); `None` if empty.
pub(crate) fn median_of<T: Elem>(v: &mut [T]) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let mid = (v.len() - 1) / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, T::total_cmp);
    Some(*m)
}

pub use crate::builder::ColumnBuilder;
