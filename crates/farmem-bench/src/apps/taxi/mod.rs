//! The NYC-taxi workload of the AIFM paper (figure 7): the 2016 yellow-taxi trip layout, a
//! deterministic synthetic generator for it, and the nine analysis steps.

mod analysis;
pub mod peers;
mod synth;
#[cfg(test)]
mod tests;

pub use analysis::{STEP_NAMES, TaxiAnswers, analyze};
pub use synth::{TaxiGen, generate_frame, write_csv};

use farmem_frame::DType;

/// Column names and types of the 2016 yellow-taxi CSV files, in file order.
pub const COLUMNS: [(&str, DType); 19] = [
    ("VendorID", DType::U8),
    ("tpep_pickup_datetime", DType::Timestamp),
    ("tpep_dropoff_datetime", DType::Timestamp),
    ("passenger_count", DType::U8),
    ("trip_distance", DType::F64),
    ("pickup_longitude", DType::F64),
    ("pickup_latitude", DType::F64),
    ("RatecodeID", DType::U8),
    ("store_and_fwd_flag", DType::Str),
    ("dropoff_longitude", DType::F64),
    ("dropoff_latitude", DType::F64),
    ("payment_type", DType::U8),
    ("fare_amount", DType::F64),
    ("extra", DType::F64),
    ("mta_tax", DType::F64),
    ("tip_amount", DType::F64),
    ("tolls_amount", DType::F64),
    ("improvement_surcharge", DType::F64),
    ("total_amount", DType::F64),
];

/// CSV options that load a TLC file with the types of [`COLUMNS`].
pub fn csv_options() -> farmem_frame::csv::CsvOptions {
    farmem_frame::csv::CsvOptions {
        schema: COLUMNS.iter().map(|&(n, t)| (n.to_owned(), t)).collect(),
        ..Default::default()
    }
}
