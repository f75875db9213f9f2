//! Typed errors of DataFrame operations.

use crate::DType;

/// Why a DataFrame operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// No column of that name.
    #[error("no column named {0:?}")]
    MissingColumn(String),
    /// Two columns with the same name.
    #[error("column {0:?} already exists")]
    DuplicateColumn(String),
    /// A column has a type the operation does not accept.
    #[error("column {column:?} is {actual}, expected {expected}")]
    TypeMismatch {
        /// The column.
        column: String,
        /// What the operation needs.
        expected: String,
        /// What the column holds.
        actual: DType,
    },
    /// Columns of different lengths were combined.
    #[error("column {column:?} has {actual} rows, expected {expected}")]
    LengthMismatch {
        /// The column.
        column: String,
        /// Rows the frame has.
        expected: usize,
        /// Rows the column has.
        actual: usize,
    },
    /// A CSV record could not be parsed.
    #[error("bad CSV row at line {line}: {reason}")]
    BadRow {
        /// 1-based line number where the record starts.
        line: u64,
        /// What was wrong.
        reason: String,
    },
    /// A row index past the end.
    #[error("row {index} out of range (frame has {len} rows)")]
    OutOfRange {
        /// The index.
        index: usize,
        /// Rows in the frame.
        len: usize,
    },
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A derive expression is ill-typed over its input columns.
    #[error("invalid derive expression")]
    Expr(#[from] farmem_proto::expr::ExprError),
    /// The far-memory storage under a column failed.
    #[error("column storage failed: {0}")]
    Storage(String),
}

/// Result of DataFrame operations.
pub type Result<T, E = FrameError> = std::result::Result<T, E>;
