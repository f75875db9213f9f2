//! The far-vector kernels of the remote agent, shared by the server and the client library.
//!
//! A kernel reads chunk objects through a [`ChunkIo`] and writes large results through it. The
//! server runs them over a session's objects; the client library's *client-side* path runs the very
//! same functions over chunks it fetched itself. Both therefore visit elements in the same order
//! and produce bit-identical results (the float-summation order is part of the contract, see
//! [`farmem_proto::agent`]).
//!
//! ```
//! use std::collections::HashMap;
//! use std::cell::RefCell;
//! use farmem_proto::agent::{ElemType, Scalar, Sum, VecRef};
//! use farmem_kernels::{self as kernels, ChunkIo, KernelError};
//!
//! struct Mem(RefCell<HashMap<u64, Vec<u8>>>);
//! impl ChunkIo for Mem {
//!     fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), KernelError> {
//!         f(self.0.borrow().get(&id).ok_or(KernelError::NotFound(id))?);
//!         Ok(())
//!     }
//!     fn write(&self, id: u64, data: &[u8]) -> Result<(), KernelError> {
//!         self.0.borrow_mut().insert(id, data.to_vec());
//!         Ok(())
//!     }
//! }
//! let io = Mem(RefCell::new(HashMap::new()));
//! io.write(1, &[1, 2, 3]).unwrap();
//! let v = VecRef { ty: ElemType::U8, chunks: vec![(1, 3)] };
//! let agg = kernels::aggregate(&io, &v).unwrap();
//! assert_eq!(agg.sum, Sum::U(6));
//! assert_eq!(agg.max, Some(Scalar::U(3)));
//! ```

#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

use std::cmp::Ordering;
use std::collections::HashMap;

use farmem_proto::agent::{
    Aggregates, ArgsortArgs, Cmp, CountArgs, Domain, ElemType, FilterArgs, GatherArgs, GroupByArgs,
    GroupByResult, GroupMedianResult, GroupWhereArgs, OutSpec, Predicate, Scalar, Sum, UniqueArgs,
    UniqueResult, VecRef,
};

#[macro_use]
mod elem;
#[macro_use]
mod filter;
mod aggregate;
mod argsort;
pub mod derive;
mod error;
pub mod expr;
mod gather;
mod gather_sum;
mod group_by;
mod io;
mod median;
mod parallel;
mod spread;
#[cfg(test)]
pub(crate) mod tests;
mod unique;

pub use aggregate::aggregate;
pub use argsort::argsort;
pub use error::{Interrupt, KernelError};
pub use filter::{count, filter, matches};
pub use gather::gather;
pub use gather_sum::{gather_sum, gather_sum_parallel};
pub use group_by::{group_by, group_by_parallel, group_by_where, group_by_where_parallel};
pub use io::ChunkIo;
pub use median::{group_median, group_median_parallel};
pub use spread::{
    RANK_VALUES_MAX, SlicedIo, filter_rows, group_rank, merge_aggregates, merge_group_results,
};
pub use unique::unique;

#[allow(unused_imports)]
pub(crate) use self::{
    aggregate::*, elem::*, filter::*, gather::*, group_by::*, io::*, median::*, parallel::*,
    unique::*,
};

/// Threads a large kernel uses by default: the machine's cores, at most 4.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
