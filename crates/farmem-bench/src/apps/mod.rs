//! The applications the benchmarks run on the libraries: workloads live here, not in the
//! libraries.

pub mod graph;
pub mod taxi;
