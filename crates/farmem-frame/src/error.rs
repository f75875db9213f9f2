//! Typed errors of DataFrame operations.

use farmem::ErrorKind;
use farmem::containers::ContainerError;
use farmem_kernels::KernelError;

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
    /// The far-memory storage under a column failed (see [`ContainerError::kind`]: local heap
    /// exhausted, servers full or unreachable, ...).
    #[error("column storage failed")]
    Storage(#[from] ContainerError),
    /// A derive expression is ill-typed over its input columns.
    #[error("invalid derive expression")]
    Expr(#[from] farmem_proto::expr::ExprError),
    /// An expression cannot be evaluated over the frame's columns (operand types, an
    /// aggregation where a row value is needed, ...).
    #[error("invalid expression on column {column:?}: {reason}")]
    InvalidExpr {
        /// The output column of the expression.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// Two join keys have different types.
    #[error("cannot join {left:?} ({left_type}) with {right:?} ({right_type})")]
    JoinTypeMismatch {
        /// The left key column.
        left: String,
        /// Its type.
        left_type: DType,
        /// The right key column.
        right: String,
        /// Its type.
        right_type: DType,
    },
    /// A kernel over local column data failed.
    #[error("column kernel failed")]
    Kernel(#[from] KernelError),
    /// A Parquet file could not be loaded or written.
    #[cfg(feature = "parquet")]
    #[error("Parquet")]
    Parquet(#[from] crate::parquet::ParquetError),
    /// Arrow rejected an array built from a column.
    #[cfg(feature = "parquet")]
    #[error("Arrow")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// An Arrow array of a type no column holds.
    #[cfg(feature = "parquet")]
    #[error("column {column:?} is Arrow {found}, which farmem-frame does not load")]
    ArrowType {
        /// The column.
        column: String,
        /// Its Arrow type.
        found: String,
    },
    /// A worker thread (a column reader) panicked.
    #[error("a {0} thread panicked")]
    ThreadPanicked(&'static str),
}

impl FrameError {
    /// The kind of failure, shared with the containers and the runtime underneath.
    ///
    /// ```
    /// use farmem::ErrorKind;
    /// use farmem_frame::FrameError;
    /// let e = FrameError::MissingColumn("fare".into());
    /// assert_eq!(e.kind(), ErrorKind::NotFound);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::MissingColumn(_) => ErrorKind::NotFound,
            Self::DuplicateColumn(_) | Self::BadRow { .. } => ErrorKind::InvalidArgument,
            Self::TypeMismatch { .. }
            | Self::Expr(_)
            | Self::InvalidExpr { .. }
            | Self::JoinTypeMismatch { .. } => ErrorKind::TypeMismatch,
            Self::LengthMismatch { .. } => ErrorKind::LengthMismatch,
            Self::OutOfRange { .. } => ErrorKind::OutOfBounds,
            Self::Io(_) => ErrorKind::Io,
            Self::Storage(e) => e.kind(),
            Self::Kernel(e) => ErrorKind::of_kernel(e),
            Self::ThreadPanicked(_) => ErrorKind::Internal,
            #[cfg(feature = "parquet")]
            Self::ArrowType { .. } => ErrorKind::TypeMismatch,
            #[cfg(feature = "parquet")]
            Self::Arrow(_) => ErrorKind::InvalidArgument,
            #[cfg(feature = "parquet")]
            Self::Parquet(e) => match e {
                crate::parquet::ParquetError::TypeMismatch { .. } => ErrorKind::TypeMismatch,
                _ => ErrorKind::InvalidArgument,
            },
        }
    }
}

/// Result of DataFrame operations.
pub type Result<T, E = FrameError> = std::result::Result<T, E>;
