//! Building columns row by row.

#[allow(unused_imports)]
use crate::column::*;
use crate::storage::Placement;
use std::sync::Arc;

use crate::{DType, Elem, FrameError, Result, Validity};

/// The error of a CSV field that does not parse as its column's type.
pub(crate) fn bad_field(
    name: &str,
    dtype: DType,
    field: &[u8],
    line: u64,
    why: &str,
) -> FrameError {
    let field = String::from_utf8_lossy(field);
    FrameError::BadRow {
        line,
        reason: format!("column {name:?} ({dtype}): {why} {field:?}"),
    }
}

/// Builds a column row by row: buffers a chunk locally, then appends it to the store.
pub struct ColumnBuilder {
    name: String,
    dtype: DType,
    data: ColumnData,
    buf: Buffer,
    dict: Dictionary,
    /// Null mask, created at the first null.
    validity: Option<Validity>,
}

enum Buffer {
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    U32(Vec<u32>),
    F64(Vec<f64>),
}

impl std::fmt::Debug for ColumnBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnBuilder")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

impl ColumnBuilder {
    /// An empty column of type `dtype` stored with placement `p`.
    pub fn new(name: &str, dtype: DType, p: &dyn Placement) -> Self {
        let data = ColumnData::new(dtype, p);
        let buf = match &data {
            ColumnData::I64(_) => Buffer::I64(Vec::new()),
            ColumnData::I32(_) => Buffer::I32(Vec::new()),
            ColumnData::U8(_) => Buffer::U8(Vec::new()),
            ColumnData::U32(_) => Buffer::U32(Vec::new()),
            ColumnData::F64(_) => Buffer::F64(Vec::new()),
        };
        Self {
            name: name.into(),
            dtype,
            data,
            buf,
            dict: Dictionary::default(),
            validity: None,
        }
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The column's type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub(crate) fn accepts<T: 'static>(&self) -> bool {
        use std::any::TypeId;
        let t = TypeId::of::<T>();
        match self.buf {
            Buffer::I64(_) => t == TypeId::of::<i64>(),
            Buffer::I32(_) => t == TypeId::of::<i32>(),
            Buffer::U8(_) => t == TypeId::of::<u8>(),
            Buffer::U32(_) => t == TypeId::of::<u32>(),
            Buffer::F64(_) => t == TypeId::of::<f64>(),
        }
    }

    fn flush(&mut self) -> Result<()> {
        match (&mut self.buf, &mut self.data) {
            (Buffer::I64(b), ColumnData::I64(s)) => s.append(b)?,
            (Buffer::I32(b), ColumnData::I32(s)) => s.append(b)?,
            (Buffer::U8(b), ColumnData::U8(s)) => s.append(b)?,
            (Buffer::U32(b), ColumnData::U32(s)) => s.append(b)?,
            (Buffer::F64(b), ColumnData::F64(s)) => s.append(b)?,
            _ => unreachable!("buffer and store have the same type"),
        }
        match &mut self.buf {
            Buffer::I64(b) => b.clear(),
            Buffer::I32(b) => b.clear(),
            Buffer::U8(b) => b.clear(),
            Buffer::U32(b) => b.clear(),
            Buffer::F64(b) => b.clear(),
        }
        Ok(())
    }

    fn buffered(&self) -> usize {
        match &self.buf {
            Buffer::I64(b) => b.len(),
            Buffer::I32(b) => b.len(),
            Buffer::U8(b) => b.len(),
            Buffer::U32(b) => b.len(),
            Buffer::F64(b) => b.len(),
        }
    }

    fn after_push(&mut self) -> Result<()> {
        if let Some(v) = &mut self.validity {
            v.push(true);
        }
        if self.buffered() >= BUILD_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends a null (a placeholder value under a clear validity bit).
    ///
    /// # Errors
    /// Storage errors.
    pub fn push_null(&mut self) -> Result<()> {
        if self.validity.is_none() {
            let rows = self.data_len() + self.buffered();
            self.validity = Some(Validity::from_bools(std::iter::repeat_n(true, rows)));
        }
        match &mut self.buf {
            Buffer::I64(b) => b.push(0),
            Buffer::I32(b) => b.push(0),
            Buffer::U8(b) => b.push(0),
            Buffer::U32(b) => b.push(self.dict.intern("")),
            Buffer::F64(b) => b.push(f64::NAN),
        }
        if let Some(v) = &mut self.validity {
            v.push(false);
        }
        if self.buffered() >= BUILD_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends a value or a null.
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] if the value does not fit the column's type; storage errors.
    pub fn push_value(&mut self, v: &crate::Value) -> Result<()> {
        use crate::Value;
        match v {
            Value::Null => self.push_null(),
            Value::Int(x) | Value::Timestamp(x) => self.push_i64(*x),
            Value::Bool(b) => self.push_i64(i64::from(*b)),
            Value::Float(x) => self.push_f64(*x),
            Value::Str(s) => self.push_str_value(s),
        }
    }

    fn data_len(&self) -> usize {
        with_store!(&self.data, s => s.len())
    }

    pub(crate) fn push_slice<T: Elem>(&mut self, xs: &[T]) -> Result<()> {
        if let Some(v) = &mut self.validity {
            for _ in 1..xs.len() {
                v.push(true);
            }
            if xs.is_empty() {
                return Ok(());
            }
        }
        let bytes: &[u8] = bytemuck::cast_slice(xs);
        match &mut self.buf {
            Buffer::I64(b) => b.extend_from_slice(bytemuck::cast_slice(bytes)),
            Buffer::I32(b) => b.extend_from_slice(bytemuck::cast_slice(bytes)),
            Buffer::U8(b) => b.extend_from_slice(bytes),
            Buffer::U32(b) => b.extend_from_slice(bytemuck::cast_slice(bytes)),
            Buffer::F64(b) => b.extend_from_slice(bytemuck::cast_slice(bytes)),
        }
        self.after_push()
    }

    /// Appends an integer (timestamps: seconds; booleans: 0 or 1).
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] if the value does not fit the column's type.
    pub fn push_i64(&mut self, v: i64) -> Result<()> {
        let ok = match &mut self.buf {
            Buffer::I64(b) if self.dtype != DType::Str => {
                b.push(v);
                true
            }
            Buffer::I32(b) => i32::try_from(v).map(|x| b.push(x)).is_ok(),
            Buffer::U8(b) if self.dtype != DType::Bool || v == 0 || v == 1 => {
                u8::try_from(v).map(|x| b.push(x)).is_ok()
            }
            Buffer::F64(b) => {
                b.push(v as f64);
                true
            }
            _ => false,
        };
        if !ok {
            return Err(self.mismatch(&v.to_string()));
        }
        self.after_push()
    }

    /// Appends a float.
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] unless the column is `F64`.
    pub fn push_f64(&mut self, v: f64) -> Result<()> {
        match &mut self.buf {
            Buffer::F64(b) => b.push(v),
            _ => return Err(self.mismatch(&v.to_string())),
        }
        self.after_push()
    }

    /// The code of `s` in this column's dictionary, adding it if new.
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        self.dict.intern(s)
    }

    /// Appends a string to a `Str` column.
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] unless the column is `Str`.
    pub fn push_str_value(&mut self, s: &str) -> Result<()> {
        let code = self.dict.intern(s);
        match &mut self.buf {
            Buffer::U32(b) if self.dtype == DType::Str => b.push(code),
            _ => return Err(self.mismatch(s)),
        }
        self.after_push()
    }

    fn mismatch(&self, what: &str) -> FrameError {
        FrameError::TypeMismatch {
            column: self.name.clone(),
            expected: format!("a value that fits, got {what:?}"),
            actual: self.dtype,
        }
    }

    /// Parses a CSV field and appends it. An empty (or blank) field is a null.
    ///
    /// # Errors
    /// [`FrameError::BadRow`] naming `line` if the field does not parse.
    pub fn push_field(&mut self, field: &str, line: u64) -> Result<()> {
        self.push_field_bytes(field.as_bytes(), line)
    }

    /// [`ColumnBuilder::push_field`] of the field's bytes (only string columns need UTF-8).
    pub(crate) fn push_field_bytes(&mut self, field: &[u8], line: u64) -> Result<()> {
        use crate::parse::{parse_f64, parse_i64};
        let t = field.trim_ascii();
        let v = match self.dtype {
            _ if t.is_empty() => return self.push_null(),
            DType::Str => match std::str::from_utf8(field) {
                Ok(s) => return self.push_str_value(s),
                Err(_) => return Err(self.bad_field(field, line, "invalid UTF-8:")),
            },
            DType::F64 => match parse_f64(t) {
                Some(v) => return self.push_f64(v),
                None => return Err(self.bad_field(field, line, "not a number:")),
            },
            DType::Bool => match t {
                b"1" | b"true" | b"True" | b"TRUE" | b"Y" => 1,
                b"0" | b"false" | b"False" | b"FALSE" | b"N" => 0,
                _ => return Err(self.bad_field(field, line, "not a boolean:")),
            },
            DType::Timestamp => crate::time::parse_timestamp_bytes(t)
                .ok_or_else(|| self.bad_field(field, line, "not a timestamp:"))?,
            _ => parse_i64(t).ok_or_else(|| self.bad_field(field, line, "not an integer:"))?,
        };
        self.push_i64(v)
            .map_err(|_| self.bad_field(field, line, "out of range:"))
    }

    fn bad_field(&self, field: &[u8], line: u64, why: &str) -> FrameError {
        bad_field(&self.name, self.dtype, field, line, why)
    }

    /// Appends a chunk of values straight to the store (after any buffered rows); `nulls`
    /// (ascending indices into `xs`) are null rows, whose slots hold placeholders.
    ///
    /// # Errors
    /// [`FrameError::TypeMismatch`] if `T` is not the column's storage type; storage errors.
    pub(crate) fn append_chunk<T: Elem>(&mut self, xs: &[T], nulls: &[u32]) -> Result<()> {
        if !self.accepts::<T>() {
            return Err(self.mismatch(std::any::type_name::<T>()));
        }
        if self.buffered() > 0 {
            self.flush()?;
        }
        if !nulls.is_empty() && self.validity.is_none() {
            self.validity = Some(Validity::from_bools(std::iter::repeat_n(
                true,
                self.data_len(),
            )));
        }
        if let Some(v) = &mut self.validity {
            let mut next = nulls.iter().peekable();
            for i in 0..xs.len() {
                let null = next.next_if(|&&n| n as usize == i).is_some();
                v.push(!null);
            }
        }
        let bytes: &[u8] = bytemuck::cast_slice(xs);
        match &mut self.data {
            ColumnData::I64(s) => s.append(bytemuck::cast_slice(bytes)),
            ColumnData::I32(s) => s.append(bytemuck::cast_slice(bytes)),
            ColumnData::U8(s) => s.append(bytes),
            ColumnData::U32(s) => s.append(bytemuck::cast_slice(bytes)),
            ColumnData::F64(s) => s.append(bytemuck::cast_slice(bytes)),
        }
    }

    /// Flushes the buffer and returns the column.
    ///
    /// # Errors
    /// Storage errors.
    pub fn finish(mut self) -> Result<Column> {
        self.flush()?;
        let dict = (self.dtype == DType::Str).then(|| Arc::new(std::mem::take(&mut self.dict)));
        Ok(Column {
            name: self.name,
            dtype: self.dtype,
            data: Arc::new(self.data),
            dict,
            validity: self.validity.and_then(Validity::into_option).map(Arc::new),
        })
    }
}
