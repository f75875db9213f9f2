//! Writing a frame as Parquet (snappy-compressed, dictionary-encoded where it pays).

use std::io::Write;
use std::sync::Arc;

use ::parquet::basic::Type as Physical;
use ::parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, TimestampType};
use ::parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use ::parquet::schema::types::Type;

use super::ParquetError;
use crate::column::ColumnData;
use crate::{Column, DType, DataFrame, Result};

/// Rows per row group unless told.
const ROW_GROUP: usize = 1 << 20;

fn field(c: &Column) -> ::parquet::errors::Result<Type> {
    let (physical, logical) = match c.dtype() {
        DType::I64 => (Physical::INT64, None),
        DType::Timestamp => (
            Physical::INT64,
            Some(LogicalType::Timestamp(TimestampType {
                is_adjusted_to_u_t_c: false,
                unit: TimeUnit::MICROS,
            })),
        ),
        DType::I32 | DType::U8 => (Physical::INT32, None),
        DType::Bool => (Physical::BOOLEAN, None),
        DType::F64 => (Physical::DOUBLE, None),
        DType::Str => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
    };
    let rep = if c.null_count() > 0 {
        Repetition::OPTIONAL
    } else {
        Repetition::REQUIRED
    };
    Type::primitive_type_builder(c.name(), physical)
        .with_repetition(rep)
        .with_logical_type(logical)
        .build()
}

/// Writes `df` as a Parquet file: `I64`, `I32`/`U8` (as `INT32`), `Bool`, `F64` (`DOUBLE`),
/// `Str` (`STRING`) and `Timestamp` (`TIMESTAMP(MICROS)`) columns; a column with nulls is an
/// optional field. Row groups hold `row_group` rows (0: 1 Mi rows).
///
/// # Errors
/// [`crate::FrameError::Parquet`] if the Parquet writer fails (including I/O); storage errors.
pub fn write_parquet<W: Write + Send>(df: &DataFrame, w: W, row_group: usize) -> Result<()> {
    let row_group = if row_group == 0 { ROW_GROUP } else { row_group };
    let pq = |e| ParquetError::corrupt(None, None, e);
    let fields = df
        .columns()
        .map(|c| field(c).map(Arc::new))
        .collect::<::parquet::errors::Result<Vec<_>>>()
        .map_err(pq)?;
    let schema = Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
        .map_err(pq)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut file = SerializedFileWriter::new(w, Arc::new(schema), Arc::new(props)).map_err(pq)?;
    let mut start = 0;
    while start < df.len() {
        let end = (start + row_group).min(df.len());
        let mut rg = file.next_row_group().map_err(pq)?;
        for c in df.columns() {
            let mut col = rg
                .next_column()
                .map_err(pq)?
                .ok_or_else(|| pq(::parquet::errors::ParquetError::General("no column".into())))?;
            write_column(&mut col, c, start..end)?;
            col.close().map_err(pq)?;
        }
        rg.close().map_err(pq)?;
        start = end;
    }
    file.close().map_err(pq)?;
    Ok(())
}

/// Writes rows `range` of `c`: its non-null values and, for a nullable column, one definition
/// level per row.
fn write_column(
    w: &mut SerializedColumnWriter<'_>,
    c: &Column,
    range: std::ops::Range<usize>,
) -> Result<()> {
    let pq = |e| ParquetError::corrupt(Some(c.name()), None, e);
    let valid: Option<Vec<bool>> = c
        .validity()
        .map(|v| range.clone().map(|i| v.is_valid(i)).collect());
    let def: Option<Vec<i16>> = valid
        .as_ref()
        .map(|v| v.iter().map(|&b| i16::from(b)).collect());
    fn non_null<T>(xs: Vec<T>, valid: Option<&[bool]>) -> Vec<T> {
        match valid {
            None => xs,
            Some(v) => xs
                .into_iter()
                .zip(v)
                .filter(|(_, b)| **b)
                .map(|(x, _)| x)
                .collect(),
        }
    }
    let valid = valid.as_deref();
    let def = def.as_deref();
    match (c.data(), c.dtype()) {
        (ColumnData::I64(s), DType::Timestamp) => {
            let v: Vec<i64> = non_null(s.to_vec(range)?, valid)
                .into_iter()
                .map(|x| x.saturating_mul(1_000_000))
                .collect();
            w.typed::<Int64Type>().write_batch(&v, def, None)
        }
        (ColumnData::I64(s), _) => {
            w.typed::<Int64Type>()
                .write_batch(&non_null(s.to_vec(range)?, valid), def, None)
        }
        (ColumnData::I32(s), _) => {
            w.typed::<Int32Type>()
                .write_batch(&non_null(s.to_vec(range)?, valid), def, None)
        }
        (ColumnData::U8(s), DType::Bool) => {
            let v: Vec<bool> = non_null(s.to_vec(range)?, valid)
                .into_iter()
                .map(|x| x != 0)
                .collect();
            w.typed::<BoolType>().write_batch(&v, def, None)
        }
        (ColumnData::U8(s), _) => {
            let v: Vec<i32> = non_null(s.to_vec(range)?, valid)
                .into_iter()
                .map(i32::from)
                .collect();
            w.typed::<Int32Type>().write_batch(&v, def, None)
        }
        (ColumnData::F64(s), _) => {
            w.typed::<DoubleType>()
                .write_batch(&non_null(s.to_vec(range)?, valid), def, None)
        }
        (ColumnData::U32(s), _) => {
            let d = c.dictionary();
            let v: Vec<ByteArray> = non_null(s.to_vec(range)?, valid)
                .into_iter()
                .map(|code| {
                    let s = d.and_then(|d| d.value(code)).unwrap_or_default();
                    ByteArray::from(s.as_bytes().to_vec())
                })
                .collect();
            w.typed::<ByteArrayType>().write_batch(&v, def, None)
        }
    }
    .map_err(pq)?;
    Ok(())
}
