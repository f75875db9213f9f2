//! Reading Parquet into a frame: the columns are shared among threads, and each thread decodes
//! its columns' chunks, row group by row group, in slices of rows straight into the frame's
//! (far) columns.

use ::parquet::basic::{ConvertedType, LogicalType, TimeUnit, Type as Physical};
use ::parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use ::parquet::schema::types::ColumnDescriptor;

use super::decode::decode_into;
use super::{ParquetError, ParquetFile, ParquetOptions};
use crate::{Column, ColumnBuilder, DType, DataFrame, FrameError, PlacementRef, Result};

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
    /// Legacy `INT96` timestamps (Julian day and nanoseconds of the day), as seconds.
    Int96,
}

/// One column to load.
#[derive(Debug)]
pub(super) struct Plan {
    /// Leaf index in the file.
    pub(super) leaf: usize,
    pub(super) name: String,
    pub(super) dtype: DType,
    pub(super) source: Source,
    /// Nullable when above 0.
    pub(super) max_def: i16,
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
        Physical::INT96 => (DType::Timestamp, Source::Int96),
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
    let columns = meta.file_metadata().schema_descr().columns();
    let plans = plan(columns, opts)?;
    let groups: Vec<usize> = (0..meta.num_row_groups())
        .filter(|&g| super::prune::may_match(&opts.row_group_filter, meta.row_group(g), columns))
        .collect();
    let threads = match opts.threads {
        0 => farmem_kernels::default_threads(),
        n => n,
    }
    .clamp(1, plans.len().max(1));
    // Each thread owns some columns: it decodes their chunks row group by row group, in order,
    // straight into their (far) columns. Columns go to the thread with the fewest compressed
    // bytes so far, largest first (strings count double: each value is interned).
    let weight = |p: &Plan| -> i64 {
        let bytes: i64 = groups
            .iter()
            .map(|&g| meta.row_group(g).column(p.leaf).compressed_size())
            .sum();
        if p.source == Source::Str {
            2 * bytes
        } else {
            bytes
        }
    };
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weight(&plans[i])));
    let mut shares: Vec<(i64, Vec<usize>)> = (0..threads).map(|_| (0, Vec::new())).collect();
    for i in order {
        if let Some(s) = shares.iter_mut().min_by_key(|s| s.0) {
            s.0 += weight(&plans[i]);
            s.1.push(i);
        }
    }
    let (file, plans, groups) = (&file, &plans, &groups);
    let load = |own: Vec<usize>| -> Result<Vec<(usize, Column)>> {
        let mut builders: Vec<ColumnBuilder> = own
            .iter()
            .map(|&i| ColumnBuilder::new(&plans[i].name, plans[i].dtype, placement.as_ref()))
            .collect();
        for &g in groups {
            let rg = file
                .get_row_group(g)
                .map_err(|e| ParquetError::corrupt(None, Some(g), e))?;
            let rows = u64::try_from(rg.metadata().num_rows()).unwrap_or(0);
            for (&i, b) in own.iter().zip(&mut builders) {
                let p = &plans[i];
                let mut reader = rg
                    .get_column_reader(p.leaf)
                    .map_err(|e| ParquetError::corrupt(Some(&p.name), Some(g), e))?;
                let mut left = rows;
                while left > 0 {
                    let step = left.min(STEP);
                    decode_into(&mut reader, p, step as usize, g, b)?;
                    left -= step;
                }
            }
        }
        own.into_iter()
            .zip(builders)
            .map(|(i, b)| Ok((i, b.finish()?)))
            .collect()
    };
    let mut shares = shares.into_iter().map(|s| s.1).filter(|s| !s.is_empty());
    let first = shares.next().unwrap_or_default();
    let results: Vec<Result<Vec<(usize, Column)>>> = std::thread::scope(|s| {
        let hs: Vec<_> = shares.map(|own| s.spawn(move || load(own))).collect();
        let mut out = vec![load(first)];
        out.extend(hs.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(FrameError::ThreadPanicked("Parquet decoder")))
        }));
        out
    });
    let mut cols: Vec<(usize, Column)> = Vec::with_capacity(plans.len());
    for r in results {
        cols.extend(r?);
    }
    cols.sort_by_key(|c| c.0);
    DataFrame::from_columns(placement, cols.into_iter().map(|c| c.1).collect())
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
