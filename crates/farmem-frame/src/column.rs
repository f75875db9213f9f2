//! Typed columns and their builders.

use std::collections::HashMap;
use std::sync::Arc;

use crate::storage::{ColumnStore, Placement, Storable};
use crate::{DType, Elem, FrameError, Result, Validity, Value};

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
    pub(crate) data: Arc<ColumnData>,
    pub(crate) dict: Option<Arc<Dictionary>>,
    /// Which rows hold a value; `None` when none is null.
    pub(crate) validity: Option<Arc<Validity>>,
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
pub(crate) fn to_value<T: Elem>(dtype: DType, dict: Option<&Dictionary>, x: T) -> Value {
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
        Self::from_slice(name, dtype, &v, p)
    }

    /// [`Column::from_vec`] from a borrowed slice (its values are copied into the column's
    /// storage either way).
    ///
    /// # Errors
    /// As [`Column::from_vec`].
    pub fn from_slice<T: Storable>(
        name: &str,
        dtype: DType,
        v: &[T],
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

    /// The same column under another name (the data are shared, not copied).
    ///
    /// # Errors
    /// None today; kept fallible for placements that may need to copy.
    pub fn renamed(&self, name: &str) -> Result<Column> {
        Ok(self.alias(name))
    }

    /// The same column under another name, sharing the data.
    pub fn alias(&self, name: &str) -> Column {
        Column {
            name: name.into(),
            dtype: self.dtype,
            data: self.data.clone(),
            dict: self.dict.clone(),
            validity: self.validity.clone(),
        }
    }

    /// Which rows hold a value; `None` when no row is null.
    pub fn validity(&self) -> Option<&Validity> {
        self.validity.as_deref()
    }

    /// Number of null rows.
    pub fn null_count(&self) -> usize {
        self.validity.as_ref().map_or(0, |v| v.null_count())
    }

    /// Whether row `i` holds a value.
    pub fn is_valid(&self, i: usize) -> bool {
        self.validity.as_ref().is_none_or(|v| v.is_valid(i))
    }

    /// The column with `validity` as its null mask (`None`: no nulls).
    ///
    /// # Errors
    /// [`FrameError::LengthMismatch`] if the bitmap has another length.
    pub fn with_validity(mut self, validity: Option<Validity>) -> Result<Column> {
        let validity = validity.and_then(Validity::into_option);
        if let Some(v) = &validity
            && v.len() != self.len()
        {
            return Err(FrameError::LengthMismatch {
                column: self.name.clone(),
                expected: self.len(),
                actual: v.len(),
            });
        }
        self.validity = validity.map(Arc::new);
        Ok(self)
    }

    /// The column without its null rows (itself, shared, when it has none).
    ///
    /// # Errors
    /// Storage errors.
    pub fn drop_nulls(&self) -> Result<Column> {
        match &self.validity {
            None => Ok(self.alias(&self.name)),
            Some(v) => self.take(&v.valid_rows()),
        }
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
        if !self.is_valid(i as usize) {
            return Ok(Value::Null);
        }
        with_store!(&*self.data, s => {
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
        let start = range.start;
        with_store!(&*self.data, s => Ok(s
            .to_vec(range)?
            .into_iter()
            .enumerate()
            .map(|(k, x)| if self.is_valid(start + k) {
                to_value(self.dtype, self.dict.as_deref(), x)
            } else {
                Value::Null
            })
            .collect()))
    }

    /// A column of the given storage (which must fit `dtype`; no dictionary).
    pub(crate) fn from_data(name: &str, dtype: DType, data: ColumnData) -> Column {
        Column {
            name: name.into(),
            dtype,
            data: Arc::new(data),
            dict: None,
            validity: None,
        }
    }

    /// The rows at `idx`, in that order, as a new column of the same placement.
    ///
    /// # Errors
    /// [`FrameError::OutOfRange`]; storage errors.
    pub fn take(&self, idx: &[u32]) -> Result<Column> {
        let data = match &*self.data {
            ColumnData::I64(s) => ColumnData::I64(s.take(idx)?),
            ColumnData::I32(s) => ColumnData::I32(s.take(idx)?),
            ColumnData::U8(s) => ColumnData::U8(s.take(idx)?),
            ColumnData::U32(s) => ColumnData::U32(s.take(idx)?),
            ColumnData::F64(s) => ColumnData::F64(s.take(idx)?),
        };
        Ok(Column {
            name: self.name.clone(),
            dtype: self.dtype,
            data: Arc::new(data),
            dict: self.dict.clone(),
            validity: self
                .validity
                .as_ref()
                .and_then(|v| v.take(idx).into_option())
                .map(Arc::new),
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
        match (&*self.data, &mut data) {
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
            data: Arc::new(data),
            dict: self.dict.clone(),
            validity: self
                .validity
                .as_ref()
                .and_then(|v| v.slice(range.clone()).into_option())
                .map(Arc::new),
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
        if let ColumnData::I64(s) = &*self.data {
            return s.to_vec(range);
        }
        with_store!(&*self.data, s => Ok(s.to_vec(range)?.into_iter().map(Elem::to_i64).collect()))
    }

    /// Rows `range` converted to `f64`.
    ///
    /// # Errors
    /// Storage errors.
    ///
    /// # Panics
    /// If `range` reaches past the end.
    pub fn read_f64(&self, range: std::ops::Range<usize>) -> Result<Vec<f64>> {
        if let ColumnData::F64(s) = &*self.data {
            return s.to_vec(range);
        }
        with_store!(&*self.data, s => Ok(s.to_vec(range)?.into_iter().map(Elem::to_f64).collect()))
    }

    /// A reader of the column front to back: each call returns the next up to `n` values
    /// converted to `i64` (empty at the end).
    pub fn reader_i64(&self) -> BlockFn<'_, i64> {
        with_store!(&*self.data, s => {
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
        with_store!(&*self.data, s => {
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
        let (dtype, dict, valid) = (self.dtype, self.dict.as_deref(), self.validity.as_deref());
        let mut row = 0;
        with_store!(&*self.data, s => {
            let mut r = s.reader();
            let mut buf = Vec::new();
            Box::new(move |n| {
                r.next_block(n, &mut buf)?;
                let out = buf
                    .iter()
                    .enumerate()
                    .map(|(k, x)| match valid {
                        Some(v) if !v.is_valid(row + k) => Value::Null,
                        _ => to_value(dtype, dict, *x),
                    })
                    .collect();
                row += buf.len();
                Ok(out)
            })
        })
    }

    /// Calls `f(start, values)` on consecutive chunks of the column converted to `i64` (floats
    /// truncate, strings give their codes).
    ///
    /// # Errors
    /// Errors of `f`; storage errors.
    pub fn scan_i64(&self, f: &mut dyn FnMut(usize, &[i64]) -> Result<()>) -> Result<()> {
        if let ColumnData::I64(s) = &*self.data {
            return s.scan(0..s.len(), f);
        }
        let mut buf = Vec::new();
        with_store!(&*self.data, s => s.scan(0..s.len(), &mut |start, xs| {
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
        if let ColumnData::F64(s) = &*self.data {
            return s.scan(0..s.len(), f);
        }
        let mut buf = Vec::new();
        with_store!(&*self.data, s => s.scan(0..s.len(), &mut |start, xs| {
            buf.clear();
            buf.extend(xs.iter().map(|x| x.to_f64()));
            f(start, &buf)
        }))
    }
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

/// The two middle values of `v` (lower, upper; equal for an odd count), found with one
/// selection and a scan of the upper part (reorders `v`); `None` if empty.
pub(crate) fn middles_of<T: Elem>(v: &mut [T]) -> Option<(T, T)> {
    let n = v.len();
    let mid = n.checked_sub(1)? / 2;
    let (_, m, above) = v.select_nth_unstable_by(mid, T::total_cmp);
    let m = *m;
    if n % 2 == 1 {
        return Some((m, m));
    }
    Some((m, above.iter().copied().min_by(T::total_cmp).unwrap_or(m)))
}

pub use crate::builder::ColumnBuilder;
