//! Reading Parquet into a frame: per row group, slices of rows decoded column by column on
//! several threads into local chunks, then appended in order to the frame's columns.

use ::parquet::basic::{ConvertedType, LogicalType, TimeUnit, Type as Physical};
use ::parquet::column::reader::ColumnReader;
use ::parquet::data_type::ByteArray;
use ::parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use ::parquet::schema::types::ColumnDescriptor;

use crate::column::{ColumnData, with_store};
use crate::storage::local_slice;

use super::{ParquetError, ParquetFile, ParquetOptions};
use crate::{
    Column, ColumnBuilder, DType, DataFrame, Elem, FrameError, LocalPlacement, PlacementRef, Result,
};

/// Rows of a row group decoded at once (per column: at most this many values held locally).
const STEP: u64 = 1 << 18;

/// How the stored integers of a column become its values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scale {
    /// As stored.
    One,
    /// Divided (rounding down) by this many units per second.
    Div(i64),
    /// Multiplied (days to seconds).
    Mul(i64),
}

/// What a column chunk decodes to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Source {
    Bool,
    Int(Scale),
    Float,
    Str,
}

/// One column to load.
#[derive(Debug)]
struct Plan {
    /// Leaf index in the file.
    leaf: usize,
    name: String,
    dtype: DType,
    source: Source,
    /// Nullable when above 0.
    max_def: i16,
}

/// Decoded values (non-null ones only).
enum Values {
    I64(Vec<i64>),
    F64(Vec<f64>),
    Str(Vec<ByteArray>),
}

/// Values in the column's storage type.
enum Typed {
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    F64(Vec<f64>),
}

fn describe(d: &ColumnDescriptor) -> String {
    match d.logical_type_ref() {
        Some(l) => format!("{} ({l:?})", d.physical_type()),
        None if d.converted_type() != ConvertedType::NONE => {
            format!("{} ({})", d.physical_type(), d.converted_type())
        }
        None => d.physical_type().to_string(),
    }
}

/// The natural type of a leaf column and how it decodes.
pub(super) fn natural(d: &ColumnDescriptor) -> Option<(DType, Source)> {
    let logical = d.logical_type_ref();
    let per_second = |u: &TimeUnit| match u {
        TimeUnit::MILLIS => 1_000,
        TimeUnit::MICROS => 1_000_000,
        TimeUnit::NANOS => 1_000_000_000,
    };
    Some(match d.physical_type() {
        Physical::BOOLEAN => (DType::Bool, Source::Bool),
        Physical::INT32 => match (logical, d.converted_type()) {
            (Some(LogicalType::Date), _) | (None, ConvertedType::DATE) => {
                (DType::Timestamp, Source::Int(Scale::Mul(86_400)))
            }
            (Some(LogicalType::Integer(i)), _) if !i.is_signed && i.bit_width == 32 => {
                (DType::I64, Source::Int(Scale::One))
            }
            (None, ConvertedType::UINT_32) => (DType::I64, Source::Int(Scale::One)),
            (None | Some(LogicalType::Integer(_)), _) => (DType::I32, Source::Int(Scale::One)),
            _ => return None,
        },
        Physical::INT64 => match (logical, d.converted_type()) {
            (Some(LogicalType::Timestamp(t)), _) => (
                DType::Timestamp,
                Source::Int(Scale::Div(per_second(&t.unit))),
            ),
            (None, ConvertedType::TIMESTAMP_MILLIS) => {
                (DType::Timestamp, Source::Int(Scale::Div(1_000)))
            }
            (None, ConvertedType::TIMESTAMP_MICROS) => {
                (DType::Timestamp, Source::Int(Scale::Div(1_000_000)))
            }
            (None | Some(LogicalType::Integer(_)), _) => (DType::I64, Source::Int(Scale::One)),
            _ => return None,
        },
        Physical::FLOAT | Physical::DOUBLE => (DType::F64, Source::Float),
        Physical::BYTE_ARRAY => match (logical, d.converted_type()) {
            (
                None | Some(LogicalType::String | LogicalType::Enum | LogicalType::Json),
                ConvertedType::NONE
                | ConvertedType::UTF8
                | ConvertedType::ENUM
                | ConvertedType::JSON,
            ) => (DType::Str, Source::Str),
            _ => return None,
        },
        _ => return None,
    })
}

/// Whether a column decoding as `source` (natural type `nat`) may load as `wanted`.
fn loads_as(source: Source, nat: DType, wanted: DType) -> bool {
    match (source, wanted) {
        (Source::Str, w) => w == DType::Str,
        (_, DType::Str) => false,
        (_, DType::Timestamp) => nat == DType::Timestamp,
        _ => true,
    }
}

/// The columns to load, in order.
fn plan(d: &[std::sync::Arc<ColumnDescriptor>], opts: &ParquetOptions) -> Result<Vec<Plan>> {
    let name_of = |c: &ColumnDescriptor| c.path().string();
    for (name, _) in &opts.schema {
        if !d.iter().any(|c| name_of(c) == *name) {
            return Err(FrameError::MissingColumn(name.clone()));
        }
    }
    let leaves: Vec<usize> = match &opts.columns {
        None => (0..d.len()).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                d.iter()
                    .position(|c| name_of(c) == *n)
                    .ok_or_else(|| FrameError::MissingColumn(n.clone()))
            })
            .collect::<Result<_>>()?,
    };
    leaves
        .into_iter()
        .map(|leaf| {
            let c = &d[leaf];
            let name = name_of(c);
            let unsupported = || ParquetError::Unsupported {
                column: name.clone(),
                found: describe(c),
            };
            if c.max_rep_level() > 0 || c.path().parts().len() != 1 {
                return Err(unsupported().into());
            }
            let (nat, source) = natural(c).ok_or_else(unsupported)?;
            let dtype = opts
                .schema
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(nat, |&(_, t)| t);
            if !loads_as(source, nat, dtype) {
                return Err(ParquetError::TypeMismatch {
                    column: name,
                    found: describe(c),
                    wanted: dtype,
                }
                .into());
            }
            Ok(Plan {
                leaf,
                max_def: c.max_def_level(),
                name,
                dtype,
                source,
            })
        })
        .collect()
}

/// Loads a Parquet file into a frame whose columns use `placement`, row group by row group.
///
/// ```
/// use farmem_frame::parquet::{read_parquet_bytes, write_parquet, ParquetOptions};
/// use farmem_frame::{csv, DType, LocalPlacement, Value};
/// let p = LocalPlacement::shared();
/// let df = csv::read_csv("id,fare\n1,2.5\n2,\n".as_bytes(), &Default::default(), p.clone()).unwrap();
/// let mut file = Vec::new();
/// write_parquet(&df, &mut file, 0).unwrap();
/// let opts = ParquetOptions { schema: vec![("id".into(), DType::U8)], ..Default::default() };
/// let back = read_parquet_bytes(bytes::Bytes::from(file), &opts, p).unwrap();
/// assert_eq!(back["id"].dtype(), DType::U8);
/// assert_eq!(back["fare"].get(1).unwrap(), Value::Null);
/// ```
///
/// # Errors
/// [`FrameError::MissingColumn`] for a column of `opts` not in the file;
/// [`FrameError::Parquet`]: a corrupt file or page, a type that does not load as asked, a value
/// that does not fit (naming the column and row group), a nested column; storage errors. On an
/// error nothing is kept (the partial columns are freed).
pub fn read_parquet(
    file: &ParquetFile,
    opts: &ParquetOptions,
    placement: PlacementRef,
) -> Result<DataFrame> {
    read_from(file.clone(), opts, placement)
}

/// [`read_parquet`] of a file held in memory.
///
/// # Errors
/// As [`read_parquet`].
pub fn read_parquet_bytes(
    file: bytes::Bytes,
    opts: &ParquetOptions,
    placement: PlacementRef,
) -> Result<DataFrame> {
    read_from(file, opts, placement)
}

fn read_from<R: ChunkReader + 'static>(
    r: R,
    opts: &ParquetOptions,
    placement: PlacementRef,
) -> Result<DataFrame> {
    let file = SerializedFileReader::new(r).map_err(|e| ParquetError::corrupt(None, None, e))?;
    let meta = file.metadata();
    let plans = plan(meta.file_metadata().schema_descr().columns(), opts)?;
    let threads = match opts.threads {
        0 => farmem_kernels::default_threads(),
        n => n,
    }
    .clamp(1, plans.len().max(1));
    let mut builders: Vec<ColumnBuilder> = plans
        .iter()
        .map(|p| ColumnBuilder::new(&p.name, p.dtype, placement.as_ref()))
        .collect();
    for g in 0..meta.num_row_groups() {
        let columns = meta.file_metadata().schema_descr().columns();
        if !super::prune::may_match(&opts.row_group_filter, meta.row_group(g), columns) {
            continue;
        }
        let rg = file
            .get_row_group(g)
            .map_err(|e| ParquetError::corrupt(None, Some(g), e))?;
        let rows = u64::try_from(rg.metadata().num_rows()).unwrap_or(0);
        let mut readers = plans
            .iter()
            .map(|p| {
                rg.get_column_reader(p.leaf)
                    .map_err(|e| FrameError::from(ParquetError::corrupt(Some(&p.name), Some(g), e)))
            })
            .collect::<Result<Vec<ColumnReader>>>()?;
        let per = readers.len().div_ceil(threads).max(1);
        let mut left = rows;
        while left > 0 {
            let step = left.min(STEP) as usize;
            let decode_all = |rs: &mut [ColumnReader], ps: &[Plan]| -> Result<Vec<Column>> {
                rs.iter_mut()
                    .zip(ps)
                    .map(|(r, p)| decode(r, p, step, g))
                    .collect()
            };
            let parsed: Vec<Result<Vec<Column>>> = if threads == 1 {
                vec![decode_all(&mut readers, &plans)]
            } else {
                std::thread::scope(|s| {
                    let hs: Vec<_> = readers
                        .chunks_mut(per)
                        .zip(plans.chunks(per))
                        .map(|(rs, ps)| s.spawn(move || decode_all(rs, ps)))
                        .collect();
                    hs.into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(FrameError::ThreadPanicked("Parquet decoder"))
                            })
                        })
                        .collect()
                })
            };
            let mut b = builders.iter_mut();
            for cols in parsed {
                for c in cols? {
                    if let Some(b) = b.next() {
                        b.append_local(&c)?;
                    }
                }
            }
            left -= step as u64;
        }
    }
    let cols = builders
        .into_iter()
        .map(ColumnBuilder::finish)
        .collect::<Result<Vec<Column>>>()?;
    DataFrame::from_columns(placement, cols)
}

/// Number of rows of a Parquet file, from its footer.
///
/// # Errors
/// [`FrameError::Parquet`] if the footer is unreadable.
pub fn parquet_rows(file: &ParquetFile) -> Result<u64> {
    let file = SerializedFileReader::new(file.clone())
        .map_err(|e| ParquetError::corrupt(None, None, e))?;
    Ok(u64::try_from(file.metadata().file_metadata().num_rows()).unwrap_or(0))
}

/// Names of a Parquet file's columns, in file order, from its footer.
///
/// # Errors
/// [`FrameError::Parquet`] if the footer is unreadable.
pub fn column_names(file: &ParquetFile) -> Result<Vec<String>> {
    let file = SerializedFileReader::new(file.clone())
        .map_err(|e| ParquetError::corrupt(None, None, e))?;
    let schema = file.metadata().file_metadata().schema_descr();
    Ok(schema.columns().iter().map(|c| c.path().string()).collect())
}

/// Reads up to `want` records of a column chunk: the non-null values, and the definition
/// levels when the column is nullable.
macro_rules! read_records {
    ($r:expr, $p:expr, $want:expr, $vals:expr, $def:expr) => {{
        let mut got = 0;
        while got < $want {
            let def = ($p.max_def > 0).then_some(&mut $def);
            let (recs, _, _) = $r.read_records($want - got, def, None, &mut $vals)?;
            if recs == 0 {
                break;
            }
            got += recs;
        }
        got
    }};
}

/// Decodes the next `want` rows of one column into a local column.
fn decode(r: &mut ColumnReader, p: &Plan, want: usize, g: usize) -> Result<Column> {
    let corrupt = |e| FrameError::from(ParquetError::corrupt(Some(&p.name), Some(g), e));
    let mut def: Vec<i16> = Vec::new();
    let scale = |xs: Vec<i64>| match p.source {
        Source::Int(Scale::Div(d)) => xs.into_iter().map(|x| x.div_euclid(d)).collect(),
        Source::Int(Scale::Mul(m)) => xs.into_iter().map(|x| x.saturating_mul(m)).collect(),
        _ => xs,
    };
    let read = |r: &mut ColumnReader, def: &mut Vec<i16>| -> ::parquet::errors::Result<_> {
        Ok(match r {
            ColumnReader::BoolColumnReader(r) => {
                let mut v: Vec<bool> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::I64(v.into_iter().map(i64::from).collect()))
            }
            ColumnReader::Int32ColumnReader(r) => {
                let mut v: Vec<i32> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (
                    n,
                    Values::I64(scale(v.into_iter().map(i64::from).collect())),
                )
            }
            ColumnReader::Int64ColumnReader(r) => {
                let mut v: Vec<i64> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::I64(scale(v)))
            }
            ColumnReader::FloatColumnReader(r) => {
                let mut v: Vec<f32> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::F64(v.into_iter().map(f64::from).collect()))
            }
            ColumnReader::DoubleColumnReader(r) => {
                let mut v: Vec<f64> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::F64(v))
            }
            ColumnReader::ByteArrayColumnReader(r) => {
                let mut v: Vec<ByteArray> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::Str(v))
            }
            // Rejected when planning (no natural type).
            ColumnReader::Int96ColumnReader(_) | ColumnReader::FixedLenByteArrayColumnReader(_) => {
                (0, Values::I64(Vec::new()))
            }
        })
    };
    let (n, values) = read(r, &mut def).map_err(corrupt)?;
    if n != want {
        return Err(ParquetError::RowCount {
            column: p.name.clone(),
            row_group: g,
            expected: want as u64,
            actual: n as u64,
        }
        .into());
    }
    let def = (p.max_def > 0).then_some(&def[..]);
    let stored = match &values {
        Values::I64(v) => v.len(),
        Values::F64(v) => v.len(),
        Values::Str(v) => v.len(),
    };
    let defined = def.map_or(n, |d| d.iter().filter(|&&l| l >= p.max_def).count());
    if stored != defined {
        let why = format!("{stored} values for {defined} defined rows");
        return Err(corrupt(::parquet::errors::ParquetError::General(why)));
    }
    let mut b = ColumnBuilder::new(&p.name, p.dtype, &LocalPlacement);
    let out_of_range = |value: String| {
        FrameError::from(ParquetError::ValueOutOfRange {
            column: p.name.clone(),
            row_group: g,
            value,
            wanted: p.dtype,
        })
    };
    match values {
        Values::Str(v) => {
            let mut v = v.iter();
            for k in 0..n {
                if def.is_some_and(|d| d[k] < p.max_def) {
                    b.push_null()?;
                    continue;
                }
                let s = v.next().map_or(Ok(""), |s| std::str::from_utf8(s.data()));
                let s = s.map_err(|_| out_of_range("(invalid UTF-8)".into()))?;
                b.push_str_value(s)?;
            }
        }
        values => match convert(values, p.dtype).map_err(out_of_range)? {
            Typed::I64(v) => b.push_defined(&v, def, p.max_def)?,
            Typed::I32(v) => b.push_defined(&v, def, p.max_def)?,
            Typed::U8(v) => b.push_defined(&v, def, p.max_def)?,
            Typed::F64(v) => b.push_defined(&v, def, p.max_def)?,
        },
    }
    b.finish()
}

/// Converts decoded numbers to the storage type of `dtype`; the first value that does not fit,
/// as text, on failure.
fn convert(v: Values, dtype: DType) -> Result<Typed, String> {
    fn ints<T: Elem>(v: Values, ok: impl Fn(i64) -> bool) -> Result<Vec<T>, String> {
        let one = |x: i64| {
            T::from_i64(x)
                .filter(|_| ok(x))
                .ok_or_else(|| x.to_string())
        };
        match v {
            Values::I64(v) => v.into_iter().map(one).collect(),
            Values::F64(v) => v
                .into_iter()
                .map(|x| {
                    T::from_f64(x)
                        .filter(|t| ok(t.to_i64()))
                        .ok_or_else(|| x.to_string())
                })
                .collect(),
            Values::Str(_) => Err("a string".into()),
        }
    }
    Ok(match dtype {
        DType::F64 => Typed::F64(match v {
            Values::I64(v) => v.into_iter().map(|x| x as f64).collect(),
            Values::F64(v) => v,
            Values::Str(_) => return Err("a string".into()),
        }),
        DType::I64 | DType::Timestamp => match v {
            Values::I64(v) => Typed::I64(v),
            v => Typed::I64(ints(v, |_| true)?),
        },
        DType::I32 => Typed::I32(ints(v, |_| true)?),
        DType::U8 => Typed::U8(ints(v, |_| true)?),
        DType::Bool => Typed::U8(ints(v, |x| x == 0 || x == 1)?),
        DType::Str => return Err("a number".into()),
    })
}

impl ColumnBuilder {
    /// Appends rows given as definition levels (`None`: all rows hold a value): a row whose
    /// level is below `max` is null, the others take the next of `vals` in order.
    pub(crate) fn push_defined<T: Elem>(
        &mut self,
        vals: &[T],
        def: Option<&[i16]>,
        max: i16,
    ) -> Result<()> {
        let Some(def) = def else {
            return self.push_slice(vals);
        };
        let mut next = 0;
        let mut k = 0;
        while k < def.len() {
            if def[k] < max {
                self.push_null()?;
                k += 1;
                continue;
            }
            let run = def[k..].iter().take_while(|&&d| d >= max).count();
            let end = (next + run).min(vals.len());
            self.push_slice(&vals[next..end])?;
            next = end;
            k += run;
        }
        Ok(())
    }
}

impl ColumnBuilder {
    /// Appends a local column of the same type (strings re-coded into this column's
    /// dictionary, nulls kept).
    pub(crate) fn append_local(&mut self, c: &Column) -> Result<()> {
        if let (ColumnData::U32(s), Some(d)) = (c.data(), c.dictionary()) {
            // Re-code once per distinct string, then append the codes.
            let map: Vec<u32> = (0..d.len() as u32)
                .map(|code| self.intern(d.value(code).unwrap_or_default()))
                .collect();
            let codes = s.to_vec(0..s.len())?;
            let mapped: Vec<u32> = codes
                .iter()
                .map(|&code| map.get(code as usize).copied().unwrap_or(0))
                .collect();
            match c.validity() {
                None => self.push_slice(&mapped)?,
                Some(v) => {
                    for (i, x) in mapped.iter().enumerate() {
                        if v.is_valid(i) {
                            self.push_slice(std::slice::from_ref(x))?;
                        } else {
                            self.push_null()?;
                        }
                    }
                }
            }
            return Ok(());
        }
        with_store!(c.data(), s => {
            let owned;
            let xs = match local_slice(s.as_ref()) {
                Some(x) => x,
                None => {
                    owned = s.to_vec(0..s.len())?;
                    &owned[..]
                }
            };
            match c.validity() {
                None => self.push_slice(xs)?,
                Some(v) => {
                    for (i, x) in xs.iter().enumerate() {
                        if v.is_valid(i) {
                            self.push_slice(std::slice::from_ref(x))?;
                        } else {
                            self.push_null()?;
                        }
                    }
                }
            }
        });
        Ok(())
    }
}
