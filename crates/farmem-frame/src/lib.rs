//! A columnar DataFrame whose columns can live in far memory.
//!
//! A [`DataFrame`] holds named, typed [`Column`]s (integers, floats, booleans, dictionary-encoded
//! strings, timestamps). Each column keeps its elements in a [`ColumnStore`] made by the frame's
//! [`Placement`]: plain local vectors ([`LocalPlacement`]) or far memory. Operations: streaming CSV
//! loading ([`csv::read_csv`]), filtering, projection, derived columns from row expressions
//! ([`DataFrame::derive`] with an [`Expr`]), group-by with count/sum/mean/min/max/median,
//! sorting, unique values, head/describe, CSV and JSON output. Workloads (such as the NYC-taxi
//! analysis) live in the applications that use the library, not here.
//!
//! ```
//! use farmem_frame::{csv, Agg, LocalPlacement, Value};
//! let data = "city,temp\nOslo,3\nRome,18\nOslo,5\n";
//! let df = csv::read_csv(data.as_bytes(), &Default::default(), LocalPlacement::shared()).unwrap();
//! let g = df.group_by_agg("city", "temp", &[Agg::Mean]).unwrap();
//! assert_eq!(g.column("temp_mean").unwrap().get(0).unwrap(), Value::Float(4.0));
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

mod builder;
pub mod column;
mod column_stats;
pub mod csv;
mod csv_load;
mod derive;
pub mod dsl;
mod dtype;
mod error;
mod far;
mod frame;
mod groupby;
mod local_kernels;
pub mod storage;
pub mod time;
mod validity;

pub use column::{Column, ColumnBuilder, Dictionary};
pub use column_stats::ColumnStats;
pub use dsl::{AggFn, Expr, GroupBy, JoinType, col, len, lit};
pub use dtype::{DType, Elem, Value};
pub use error::{FrameError, Result};
pub use far::FarPlacement;
pub use farmem_proto::expr;
pub use frame::DataFrame;
pub use groupby::Agg;
pub use validity::Validity;

/// The names a DataFrame user needs: `use farmem_frame::prelude::*;`.
pub mod prelude {
    pub use crate::dsl::{Expr, GroupBy, JoinType, col, len, lit};
    pub use crate::{Column, DType, DataFrame, FarPlacement, LocalPlacement, Value};
}
pub use storage::{
    BlockReader, Cmp, ColumnStore, GroupRow, LocalPlacement, LocalStore, Placement, PlacementRef,
    Storable, Summary,
};
