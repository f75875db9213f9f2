//! Parquet: reading files row group by row group straight into a frame's columns (far columns:
//! into far memory; only one slice of a row group is ever held locally), and writing frames
//! (for tests and benchmarks; one row group per call of the frame's rows, plain encoding).
//!
//! Flat schemas only (no nested or repeated fields). Pages may be uncompressed or compressed
//! with snappy or zstd, plain or dictionary-encoded. Types load as:
//!
//! | Parquet | [`DType`] |
//! | --- | --- |
//! | `BOOLEAN` | `Bool` |
//! | `INT32` (also `INT(8/16/32)`) | `I32` |
//! | `INT32` `DATE` | `Timestamp` (midnight) |
//! | `INT64`, `INT(32, unsigned)` | `I64` |
//! | `INT64` `TIMESTAMP(MILLIS/MICROS/NANOS)` | `Timestamp` (whole seconds, rounded down) |
//! | `INT96` (legacy timestamps) | `Timestamp` (whole seconds, rounded down) |
//! | `FLOAT`, `DOUBLE` | `F64` |
//! | `BYTE_ARRAY` (`STRING`, `ENUM`, `JSON` or unannotated) | `Str` |
//!
//! [`ParquetOptions::schema`] asks for another type per column: integers load as any integer
//! type they fit, as `Bool` (0 and 1) or as `F64`; floats load as integer types when they are
//! whole numbers that fit (the TLC files since 2022 store `passenger_count` as `DOUBLE`). A
//! value that does not fit is an error naming its column and row group. Optional (nullable)
//! fields map their nulls to the column's validity bitmap.

mod decode;
mod file;
mod prune;
mod read;
mod write;

pub use file::{FileAt, ParquetFile};
pub use read::{column_names, parquet_rows, read_parquet, read_parquet_bytes};
pub use write::write_parquet;

use crate::DType;

/// How to load a Parquet file.
#[derive(Clone, Debug, Default)]
pub struct ParquetOptions {
    /// Types of named columns (each must be in the file); the others keep their natural type.
    pub schema: Vec<(String, DType)>,
    /// Load only these columns, in this order (`None`: every column, in file order).
    pub columns: Option<Vec<String>>,
    /// Decoding threads (0: the kernels' default, [`farmem_kernels::default_threads`]).
    pub threads: usize,
    /// Predicates (boolean expressions): a row group is skipped when the statistics of its
    /// column chunks (minimum and maximum) show that no row satisfies one of them. The rows of
    /// the other row groups all load: apply the predicates with [`crate::DataFrame::filter`]
    /// (as [`crate::LazyFrame`] does). Comparisons of a numeric column with a constant, joined
    /// by `and`/`or`, can skip; any other expression keeps every row group.
    pub row_group_filter: Vec<crate::Expr>,
}

/// Why a Parquet file could not be loaded (inside [`crate::FrameError::Parquet`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParquetError {
    /// The file is not valid Parquet, or a page of a column chunk is corrupt.
    #[error("corrupt Parquet file{}", place(column, row_group))]
    Corrupt {
        /// The column being read, if the error is in one.
        column: Option<String>,
        /// The row group being read, if the error is in one.
        row_group: Option<usize>,
        /// What the Parquet reader found.
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    /// A column's Parquet type does not load as the type asked for.
    #[error("column {column:?} is Parquet {found}, which does not load as {wanted}")]
    TypeMismatch {
        /// The column.
        column: String,
        /// Its physical and logical Parquet type.
        found: String,
        /// The type asked for.
        wanted: DType,
    },
    /// A value does not fit the column's type (a fraction or out of range).
    #[error("column {column:?}, row group {row_group}: value {value} does not fit {wanted}")]
    ValueOutOfRange {
        /// The column.
        column: String,
        /// The row group (0-based).
        row_group: usize,
        /// The value, as text.
        value: String,
        /// The column's type.
        wanted: DType,
    },
    /// A nested, repeated or otherwise unsupported column.
    #[error("column {column:?} is Parquet {found}, which farmem-frame does not load")]
    Unsupported {
        /// The column.
        column: String,
        /// Its Parquet type.
        found: String,
    },
    /// Column chunks of one row group hold different numbers of rows.
    #[error("column {column:?}, row group {row_group}: {actual} rows, expected {expected}")]
    RowCount {
        /// The column.
        column: String,
        /// The row group (0-based).
        row_group: usize,
        /// Rows the row group's metadata announces.
        expected: u64,
        /// Rows the column chunk held.
        actual: u64,
    },
}

fn place(column: &Option<String>, row_group: &Option<usize>) -> String {
    match (column, row_group) {
        (Some(c), Some(g)) => format!(" (column {c:?}, row group {g})"),
        (Some(c), None) => format!(" (column {c:?})"),
        (None, Some(g)) => format!(" (row group {g})"),
        (None, None) => String::new(),
    }
}

impl ParquetError {
    pub(crate) fn corrupt(
        column: Option<&str>,
        row_group: Option<usize>,
        source: ::parquet::errors::ParquetError,
    ) -> Self {
        Self::Corrupt {
            column: column.map(str::to_owned),
            row_group,
            source,
        }
    }
}
