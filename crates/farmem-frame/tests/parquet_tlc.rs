//! Parquet files in the forms the public TLC trip files use load with the right values:
//! zstd and snappy compression, `INT64` timestamps in milliseconds, microseconds and
//! nanoseconds, legacy `INT96` timestamps, dictionary-encoded strings, `DOUBLE` counts with
//! nulls. Files written by the `parquet` crate; also by pyarrow or polars when python3 has
//! them (skipped with a message otherwise, failed in CI: see `support::skip_or_fail`).
#![cfg(feature = "parquet")]

#[path = "../../farmem/tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use farmem::containers::Offload;
use farmem::{Runtime, RuntimeConfig};
use farmem_frame::parquet::{ParquetOptions, read_parquet, read_parquet_bytes};
use farmem_frame::{DType, DataFrame, FarPlacement, LocalPlacement, PlacementRef, Value};
use parquet::basic::{Compression, Encoding, LogicalType, Repetition, TimeUnit, ZstdLevel};
use parquet::basic::{TimestampType, Type as Physical};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type, Int96, Int96Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

fn far() -> PlacementRef {
    let rt = Runtime::new(RuntimeConfig::new(1 << 20).region_size(64 << 10)).unwrap();
    Arc::new(FarPlacement::new(rt, Offload::Remote))
}

/// 2016-01-01 00:00:00 UTC.
const T0: i64 = 1_451_606_400;

/// Seconds of row `i`'s pickup, and its sub-second part in nanoseconds.
fn pickup(i: i64) -> (i64, i64) {
    (T0 + i * 37, (i * 123_456_789) % 1_000_000_000)
}

fn ts_field(name: &str, unit: Option<TimeUnit>) -> Arc<Type> {
    let b = match unit {
        Some(unit) => Type::primitive_type_builder(name, Physical::INT64).with_logical_type(Some(
            LogicalType::Timestamp(TimestampType {
                is_adjusted_to_u_t_c: false,
                unit,
            }),
        )),
        None => Type::primitive_type_builder(name, Physical::INT96),
    };
    Arc::new(b.with_repetition(Repetition::REQUIRED).build().unwrap())
}

/// A file of `n` rows in row groups of `group` rows: pickup times in ms, µs, ns and `INT96`,
/// a dictionary-encoded string flag, a nullable `DOUBLE` passenger count.
fn tlc_file(n: i64, group: i64, compression: Compression) -> Vec<u8> {
    let fields = vec![
        ts_field("ms", Some(TimeUnit::MILLIS)),
        ts_field("us", Some(TimeUnit::MICROS)),
        ts_field("ns", Some(TimeUnit::NANOS)),
        ts_field("int96", None),
        Arc::new(
            Type::primitive_type_builder("store_and_fwd_flag", Physical::BYTE_ARRAY)
                .with_logical_type(Some(LogicalType::String))
                .with_repetition(Repetition::OPTIONAL)
                .build()
                .unwrap(),
        ),
        Arc::new(
            Type::primitive_type_builder("passenger_count", Physical::DOUBLE)
                .with_repetition(Repetition::OPTIONAL)
                .build()
                .unwrap(),
        ),
    ];
    let schema = Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
        .unwrap();
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(true)
        .build();
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, Arc::new(schema), Arc::new(props)).unwrap();
    let mut start = 0;
    while start < n {
        let rows: Vec<i64> = (start..(start + group).min(n)).collect();
        let mut rg = w.next_row_group().unwrap();
        let scaled = |per: i64| -> Vec<i64> {
            rows.iter()
                .map(|&i| {
                    let (s, ns) = pickup(i);
                    s * per + ns / (1_000_000_000 / per)
                })
                .collect()
        };
        for per in [1_000, 1_000_000, 1_000_000_000] {
            let mut c = rg.next_column().unwrap().unwrap();
            c.typed::<Int64Type>()
                .write_batch(&scaled(per), None, None)
                .unwrap();
            c.close().unwrap();
        }
        let int96: Vec<Int96> = rows
            .iter()
            .map(|&i| {
                let (s, ns) = pickup(i);
                let nanos = s.rem_euclid(86_400) * 1_000_000_000 + ns;
                let day = s.div_euclid(86_400) + 2_440_588;
                let mut v = Int96::new();
                v.set_data(nanos as u32, (nanos >> 32) as u32, day as u32);
                v
            })
            .collect();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<Int96Type>()
            .write_batch(&int96, None, None)
            .unwrap();
        c.close().unwrap();
        // Flags: null every 10th row.
        let def: Vec<i16> = rows.iter().map(|&i| i16::from(i % 10 != 9)).collect();
        let flags: Vec<ByteArray> = rows
            .iter()
            .filter(|&&i| i % 10 != 9)
            .map(|&i| ByteArray::from(if i % 3 == 0 { "Y" } else { "N" }))
            .collect();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&flags, Some(&def), None)
            .unwrap();
        c.close().unwrap();
        let def: Vec<i16> = rows.iter().map(|&i| i16::from(i % 7 != 2)).collect();
        let counts: Vec<f64> = rows
            .iter()
            .filter(|&&i| i % 7 != 2)
            .map(|&i| (i % 6) as f64)
            .collect();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<DoubleType>()
            .write_batch(&counts, Some(&def), None)
            .unwrap();
        c.close().unwrap();
        rg.close().unwrap();
        start += group;
    }
    w.close().unwrap();
    out
}

fn check(df: &DataFrame, n: i64) {
    assert_eq!(df.len(), n as usize);
    for name in ["ms", "us", "ns", "int96"] {
        assert_eq!(df[name].dtype(), DType::Timestamp, "{name}");
    }
    assert_eq!(df["passenger_count"].dtype(), DType::U8);
    for i in 0..n {
        let r = i as usize;
        let (s, _) = pickup(i);
        for name in ["ms", "us", "ns", "int96"] {
            assert_eq!(
                df[name].get(r).unwrap(),
                Value::Timestamp(s),
                "{name} row {i}"
            );
        }
        let flag = match i {
            i if i % 10 == 9 => Value::Null,
            i if i % 3 == 0 => Value::Str("Y".into()),
            _ => Value::Str("N".into()),
        };
        assert_eq!(df["store_and_fwd_flag"].get(r).unwrap(), flag, "row {i}");
        let count = if i % 7 == 2 {
            Value::Null
        } else {
            Value::Int(i % 6)
        };
        assert_eq!(df["passenger_count"].get(r).unwrap(), count, "row {i}");
    }
}

fn opts() -> ParquetOptions {
    ParquetOptions {
        schema: vec![("passenger_count".into(), DType::U8)],
        ..Default::default()
    }
}

#[test]
fn tlc_forms_load_with_zstd_and_snappy_into_local_and_far_columns() {
    let n = 5_000;
    for compression in [
        Compression::ZSTD(ZstdLevel::try_new(3).unwrap()),
        Compression::SNAPPY,
    ] {
        let bytes = bytes::Bytes::from(tlc_file(n, 1_500, compression));
        // The writer did compress and dictionary-encode the strings.
        let meta = SerializedFileReader::new(bytes.clone()).unwrap();
        let chunk = meta.metadata().row_group(0).column(4).clone();
        // (The level is not stored.)
        assert_eq!(
            std::mem::discriminant(&chunk.compression()),
            std::mem::discriminant(&compression)
        );
        assert!(
            chunk.encodings().any(|e| e == Encoding::RLE_DICTIONARY),
            "{:?}",
            chunk.encodings().collect::<Vec<_>>()
        );
        for p in [LocalPlacement::shared(), far()] {
            for threads in [1, 2, 3] {
                let o = ParquetOptions { threads, ..opts() };
                check(
                    &read_parquet_bytes(bytes.clone(), &o, p.clone()).unwrap(),
                    n,
                );
            }
        }
    }
}

/// Writes the same rows with pyarrow (or polars) into `path`; `false` when neither is there.
fn write_with_python(path: &std::path::Path, n: i64) -> bool {
    let script = format!(
        r#"
import sys, datetime
n = {n}
t0 = datetime.datetime(2016, 1, 1)
ts = [t0 + datetime.timedelta(seconds=i * 37, microseconds=((i * 123456789) % 1000000000) // 1000) for i in range(n)]
flag = [None if i % 10 == 9 else ("Y" if i % 3 == 0 else "N") for i in range(n)]
count = [None if i % 7 == 2 else float(i % 6) for i in range(n)]
path = sys.argv[1]
try:
    import pyarrow as pa, pyarrow.parquet as pq
    t = pa.table({{
        "ms": pa.array(ts, pa.timestamp("ms")), "us": pa.array(ts, pa.timestamp("us")),
        "ns": pa.array(ts, pa.timestamp("ns")), "int96": pa.array(ts, pa.timestamp("ns")),
        "store_and_fwd_flag": pa.array(flag, pa.string()), "passenger_count": pa.array(count, pa.float64()),
    }})
    pq.write_table(t, path, compression="zstd", row_group_size=1500, use_dictionary=True,
                   use_deprecated_int96_timestamps=True)
    print("pyarrow")
except ImportError:
    import polars as pl
    df = pl.DataFrame({{
        "ms": pl.Series(ts).cast(pl.Datetime("ms")), "us": pl.Series(ts).cast(pl.Datetime("us")),
        "ns": pl.Series(ts).cast(pl.Datetime("ns")), "int96": pl.Series(ts).cast(pl.Datetime("us")),
        "store_and_fwd_flag": pl.Series(flag, dtype=pl.Utf8), "passenger_count": pl.Series(count, dtype=pl.Float64),
    }})
    df.write_parquet(path, compression="zstd", row_group_size=1500)
    print("polars")
"#
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            eprintln!("written by {}", String::from_utf8_lossy(&o.stdout).trim());
            true
        }
        Ok(o) => {
            support::skip_or_fail(&format!(
                "neither pyarrow nor polars wrote the file: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
            false
        }
        Err(e) => {
            support::skip_or_fail(&format!("no python3 ({e})"));
            false
        }
    }
}

#[test]
fn files_written_by_pyarrow_or_polars_load() {
    let n = 4_000;
    let path = std::env::temp_dir().join(format!("farmem-tlc-{}.parquet", std::process::id()));
    if !write_with_python(&path, n) {
        return;
    }
    let file = farmem_frame::parquet::ParquetFile::open(&path).unwrap();
    let df = read_parquet(&file, &opts(), far());
    let _ = std::fs::remove_file(&path);
    check(&df.unwrap(), n);
}
