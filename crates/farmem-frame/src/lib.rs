//! A columnar DataFrame whose columns can live in far memory.
//!
//! A [`DataFrame`] holds named, typed [`Column`]s (integers, floats, booleans, dictionary-encoded
//! strings, timestamps), each nullable (a [`Validity`] bitmap). Each column keeps its elements in
//! a [`ColumnStore`] made by the frame's [`Placement`]: plain local vectors ([`LocalPlacement`])
//! or far memory ([`FarPlacement`]).
//!
//! The API is polars' eager one ([`dsl`]): expressions built from [`col`], [`lit`] and [`len`]
//! drive [`DataFrame::filter`], [`DataFrame::with_columns`], [`DataFrame::select`],
//! [`DataFrame::group_by`] (several keys, several aggregations), [`DataFrame::sort`] (several
//! columns), [`DataFrame::join`] (inner and left hash joins), [`DataFrame::unique`], head,
//! describe and indexing by name (`df["fare"]`). Row expressions compile to the wire expression
//! language ([`expr`]): far columns evaluate them on the memory server's agent, local ones with
//! the same kernel here. CSV loads in parallel, streaming ([`csv::read_csv`]); empty fields are
//! nulls, and aggregations skip nulls. Workloads (such as the NYC-taxi analysis) live in the
//! applications that use the library, not here.
//!
//! ```
//! use farmem_frame::prelude::*;
//! use farmem_frame::csv;
//! let data = "city,year,temp\nOslo,2020,3\nRome,2020,18\nOslo,2020,5\nOslo,2021,\n";
//! let df = csv::read_csv(data.as_bytes(), &Default::default(), LocalPlacement::shared()).unwrap();
//! let g = df
//!     .filter(col("temp").gt(0))
//!     .unwrap()
//!     .group_by(["city", "year"])
//!     .agg([col("temp").mean().alias("mean"), len()])
//!     .unwrap();
//! assert_eq!(g["mean"].get(0).unwrap(), Value::Float(4.0));
//! assert_eq!(g.len(), 2); // the null temperature is filtered out
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

#[cfg(feature = "parquet")]
pub mod arrow;
mod builder;
pub mod column;
mod column_stats;
pub mod csv;
mod csv_load;
mod csv_part;
mod derive;
pub mod dsl;
mod dtype;
mod error;
mod far;
mod frame;
mod groupby;
mod lazy;
mod local_kernels;
#[cfg(feature = "parquet")]
pub mod parquet;
mod parse;
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
pub use lazy::{LazyFrame, LazyGroupBy};
pub use validity::Validity;

/// The names a DataFrame user needs: `use farmem_frame::prelude::*;`.
pub mod prelude {
    pub use crate::dsl::{Expr, GroupBy, JoinType, col, len, lit};
    pub use crate::{Column, DType, DataFrame, FarPlacement, LazyFrame, LocalPlacement, Value};
}
pub use storage::{
    BlockReader, Cmp, ColumnStore, GroupRow, LocalPlacement, LocalStore, Placement, PlacementRef,
    Storable, Summary,
};
