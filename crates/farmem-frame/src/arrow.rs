//! Export to and import from Arrow record batches (`arrow-array`), for interop with Arrow-based
//! tools: each column becomes one Arrow array with its nulls.
//!
//! | [`DType`] | Arrow |
//! | --- | --- |
//! | `I64`, `I32`, `U8` | `Int64`, `Int32`, `UInt8` |
//! | `Bool` | `Boolean` |
//! | `F64` | `Float64` |
//! | `Timestamp` | `Timestamp(Second)` |
//! | `Str` | `Dictionary(UInt32, Utf8)` (the column's own dictionary and codes) |
//!
//! Import also takes plain `Utf8` string arrays.

use std::sync::Arc;

use arrow_array::types::{Int32Type, Int64Type, TimestampSecondType, UInt8Type, UInt32Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float64Array, PrimitiveArray, RecordBatch,
    StringArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::column::ColumnData;
use crate::{Column, ColumnBuilder, DType, DataFrame, FrameError, PlacementRef, Result};

fn nulls(c: &Column) -> Option<NullBuffer> {
    c.validity()
        .map(|v| NullBuffer::from((0..c.len()).map(|i| v.is_valid(i)).collect::<Vec<bool>>()))
}

fn array(c: &Column) -> Result<ArrayRef> {
    let n = nulls(c);
    let all = 0..c.len();
    Ok(match (c.data(), c.dtype()) {
        (ColumnData::I64(s), DType::Timestamp) => Arc::new(
            PrimitiveArray::<TimestampSecondType>::new(s.to_vec(all)?.into(), n),
        ),
        (ColumnData::I64(s), _) => {
            Arc::new(PrimitiveArray::<Int64Type>::new(s.to_vec(all)?.into(), n))
        }
        (ColumnData::I32(s), _) => {
            Arc::new(PrimitiveArray::<Int32Type>::new(s.to_vec(all)?.into(), n))
        }
        (ColumnData::U8(s), DType::Bool) => {
            let v: Vec<bool> = s.to_vec(all)?.into_iter().map(|x| x != 0).collect();
            Arc::new(BooleanArray::new(v.into(), n))
        }
        (ColumnData::U8(s), _) => {
            Arc::new(PrimitiveArray::<UInt8Type>::new(s.to_vec(all)?.into(), n))
        }
        (ColumnData::F64(s), _) => Arc::new(Float64Array::new(s.to_vec(all)?.into(), n)),
        (ColumnData::U32(s), _) => {
            let d = c.dictionary();
            let words: Vec<&str> = (0..d.map_or(0, |d| d.len()))
                .map(|code| d.and_then(|d| d.value(code as u32)).unwrap_or_default())
                .collect();
            let keys = PrimitiveArray::<UInt32Type>::new(s.to_vec(all)?.into(), n);
            let values: ArrayRef = Arc::new(StringArray::from(words));
            Arc::new(DictionaryArray::<UInt32Type>::try_new(keys, values)?)
        }
    })
}

fn arrow_type(t: DType) -> DataType {
    match t {
        DType::I64 => DataType::Int64,
        DType::I32 => DataType::Int32,
        DType::U8 => DataType::UInt8,
        DType::Bool => DataType::Boolean,
        DType::F64 => DataType::Float64,
        DType::Timestamp => DataType::Timestamp(TimeUnit::Second, None),
        DType::Str => DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8)),
    }
}

/// The frame as one Arrow record batch (far columns are read into local Arrow buffers).
///
/// ```
/// use farmem_frame::{arrow::to_record_batch, csv, LocalPlacement};
/// let df = csv::read_csv("a,b\n1,x\n2,\n".as_bytes(), &Default::default(), LocalPlacement::shared()).unwrap();
/// let batch = to_record_batch(&df).unwrap();
/// assert_eq!((batch.num_rows(), batch.num_columns()), (2, 2));
/// assert_eq!(batch.column(1).null_count(), 1);
/// ```
///
/// # Errors
/// [`FrameError::Arrow`] if Arrow rejects an array; storage errors.
pub fn to_record_batch(df: &DataFrame) -> Result<RecordBatch> {
    let fields: Vec<Field> = df
        .columns()
        .map(|c| Field::new(c.name(), arrow_type(c.dtype()), c.null_count() > 0))
        .collect();
    let arrays = df.columns().map(array).collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// Appends an Arrow array's values, nulls kept.
fn append<T: crate::Elem>(
    b: &mut ColumnBuilder,
    a: &dyn Array,
    vals: impl Iterator<Item = T>,
) -> Result<()> {
    for (i, x) in vals.enumerate() {
        if a.is_null(i) {
            b.push_null()?;
        } else {
            b.push_slice(std::slice::from_ref(&x))?;
        }
    }
    Ok(())
}

fn column(name: &str, a: &dyn Array, p: &PlacementRef) -> Result<Column> {
    let unsupported = || FrameError::ArrowType {
        column: name.into(),
        found: a.data_type().to_string(),
    };
    let dtype = match a.data_type() {
        DataType::Int64 => DType::I64,
        DataType::Int32 => DType::I32,
        DataType::UInt8 => DType::U8,
        DataType::Boolean => DType::Bool,
        DataType::Float64 => DType::F64,
        DataType::Timestamp(TimeUnit::Second, _) => DType::Timestamp,
        DataType::Utf8 => DType::Str,
        DataType::Dictionary(k, v) if **k == DataType::UInt32 && **v == DataType::Utf8 => {
            DType::Str
        }
        _ => return Err(unsupported()),
    };
    let mut b = ColumnBuilder::new(name, dtype, p.as_ref());
    let any = a.as_any();
    if let Some(x) = any.downcast_ref::<PrimitiveArray<Int64Type>>() {
        append(&mut b, a, x.values().iter().copied())?;
    } else if let Some(x) = any.downcast_ref::<PrimitiveArray<TimestampSecondType>>() {
        append(&mut b, a, x.values().iter().copied())?;
    } else if let Some(x) = any.downcast_ref::<PrimitiveArray<Int32Type>>() {
        append(&mut b, a, x.values().iter().copied())?;
    } else if let Some(x) = any.downcast_ref::<PrimitiveArray<UInt8Type>>() {
        append(&mut b, a, x.values().iter().copied())?;
    } else if let Some(x) = any.downcast_ref::<BooleanArray>() {
        append(&mut b, a, x.values().iter().map(u8::from))?;
    } else if let Some(x) = any.downcast_ref::<Float64Array>() {
        append(&mut b, a, x.values().iter().copied())?;
    } else if let Some(x) = any.downcast_ref::<StringArray>() {
        for i in 0..x.len() {
            if x.is_null(i) {
                b.push_null()?;
            } else {
                b.push_str_value(x.value(i))?;
            }
        }
    } else if let Some(x) = any.downcast_ref::<DictionaryArray<UInt32Type>>() {
        let words = x
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(unsupported)?;
        for (i, &k) in x.keys().values().iter().enumerate() {
            if x.is_null(i) || words.is_null(k as usize) {
                b.push_null()?;
            } else if (k as usize) < words.len() {
                b.push_str_value(words.value(k as usize))?;
            } else {
                return Err(unsupported());
            }
        }
    } else {
        return Err(unsupported());
    }
    b.finish()
}

/// A frame of an Arrow record batch, its columns stored with `placement` (the types of the
/// [module table](self), plus `Utf8` strings).
///
/// # Errors
/// [`FrameError::ArrowType`] for a column of another Arrow type; storage errors.
pub fn from_record_batch(batch: &RecordBatch, placement: PlacementRef) -> Result<DataFrame> {
    let cols = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| column(f.name(), a.as_ref(), &placement))
        .collect::<Result<Vec<_>>>()?;
    DataFrame::from_columns(placement, cols)
}
