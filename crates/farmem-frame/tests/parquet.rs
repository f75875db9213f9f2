//! Parquet files and Arrow record batches: frames round-trip with their types and nulls, into
//! local and far columns; bad files are typed errors naming the column and row group.
#![cfg(feature = "parquet")]

use std::sync::Arc;

use farmem::containers::Offload;
use farmem::{Runtime, RuntimeConfig};
use farmem_frame::parquet::{ParquetError, ParquetOptions, read_parquet_bytes, write_parquet};
use farmem_frame::{
    Column, ColumnBuilder, DType, DataFrame, FarPlacement, FrameError, LocalPlacement,
    PlacementRef, Value,
};

fn far() -> PlacementRef {
    let rt = Runtime::new(RuntimeConfig::new(1 << 20).region_size(64 << 10)).unwrap();
    Arc::new(FarPlacement::new(rt, Offload::Remote))
}

/// A frame of every type, with nulls in some columns, `n` rows.
fn sample(n: usize, p: &PlacementRef) -> DataFrame {
    let mut cols = Vec::new();
    let mut b = ColumnBuilder::new("id", DType::I64, p.as_ref());
    let mut t = ColumnBuilder::new("ts", DType::Timestamp, p.as_ref());
    let mut f = ColumnBuilder::new("fare", DType::F64, p.as_ref());
    let mut s = ColumnBuilder::new("flag", DType::Str, p.as_ref());
    let mut k = ColumnBuilder::new("kind", DType::U8, p.as_ref());
    let mut y = ColumnBuilder::new("yes", DType::Bool, p.as_ref());
    let mut q = ColumnBuilder::new("small", DType::I32, p.as_ref());
    for i in 0..n as i64 {
        b.push_i64(i * 3 - 7).unwrap();
        t.push_i64(1_451_606_400 + i * 61).unwrap();
        if i % 7 == 3 {
            f.push_null().unwrap();
        } else {
            f.push_f64(i as f64 * 0.25).unwrap();
        }
        if i % 11 == 5 {
            s.push_null().unwrap();
        } else {
            s.push_str_value(["N", "Y", "maybe, \"quoted\""][i as usize % 3])
                .unwrap();
        }
        k.push_i64(i % 5).unwrap();
        y.push_i64(i % 2).unwrap();
        if i % 13 == 0 {
            q.push_null().unwrap();
        } else {
            q.push_i64(-i).unwrap();
        }
    }
    for c in [b, t, f, s, k, y, q] {
        cols.push(c.finish().unwrap());
    }
    DataFrame::from_columns(p.clone(), cols).unwrap()
}

fn rows(df: &DataFrame) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    df.for_each_row(&mut |r| {
        out.push(r.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

fn to_parquet(df: &DataFrame, row_group: usize) -> bytes::Bytes {
    let mut buf = Vec::new();
    write_parquet(df, &mut buf, row_group).unwrap();
    bytes::Bytes::from(buf)
}

/// The types a file written from [`sample`] reads back as without a schema (`U8` is `INT32`).
fn sample_schema() -> Vec<(String, DType)> {
    vec![("kind".into(), DType::U8)]
}

#[test]
fn frames_round_trip_through_parquet_into_local_and_far_columns() {
    let local = LocalPlacement::shared();
    let df = sample(70_000, &local);
    // Several row groups, and slices within them.
    let file = to_parquet(&df, 30_000);
    let opts = ParquetOptions {
        schema: sample_schema(),
        threads: 3,
        ..Default::default()
    };
    for p in [local.clone(), far()] {
        let back = read_parquet_bytes(file.clone(), &opts, p).unwrap();
        assert_eq!(back.names(), df.names());
        for (a, b) in back.columns().zip(df.columns()) {
            assert_eq!(a.dtype(), b.dtype(), "{}", a.name());
            assert_eq!(a.null_count(), b.null_count(), "{}", a.name());
        }
        assert_eq!(rows(&back), rows(&df));
    }
    // From a file on disk (positional reads: column readers do not share a position).
    let path = std::env::temp_dir().join(format!("farmem-frame-{}.parquet", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let on_disk = farmem_frame::parquet::ParquetFile::open(&path).unwrap();
    assert_eq!(
        farmem_frame::parquet::parquet_rows(&on_disk).unwrap(),
        70_000
    );
    let back = farmem_frame::parquet::read_parquet(&on_disk, &opts, far()).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(rows(&back), rows(&df));
    // Without a schema the small unsigned column loads as INT32's natural type.
    let plain = read_parquet_bytes(file, &ParquetOptions::default(), local).unwrap();
    assert_eq!(plain["kind"].dtype(), DType::I32);
    assert_eq!(plain["kind"].get(4).unwrap(), Value::Int(4));
}

#[test]
fn projection_and_conversions_follow_the_options() {
    let p = LocalPlacement::shared();
    let df = sample(1000, &p);
    let file = to_parquet(&df, 0);
    let opts = ParquetOptions {
        columns: Some(vec!["fare".into(), "id".into()]),
        schema: vec![("id".into(), DType::F64)],
        threads: 1,
        ..Default::default()
    };
    let back = read_parquet_bytes(file.clone(), &opts, p.clone()).unwrap();
    assert_eq!(back.names(), ["fare", "id"]);
    assert_eq!(back["id"].get(2).unwrap(), Value::Float(-1.0));
    assert_eq!(back["fare"].get(3).unwrap(), Value::Null);
    // Whole floats load as integers (as TLC's DOUBLE passenger counts)...
    let counts = DataFrame::from_columns(
        p.clone(),
        vec![Column::from_vec("n", DType::F64, vec![1.0, 2.0, 6.0], p.as_ref()).unwrap()],
    )
    .unwrap();
    let as_u8 = ParquetOptions {
        schema: vec![("n".into(), DType::U8)],
        ..Default::default()
    };
    let back = read_parquet_bytes(to_parquet(&counts, 0), &as_u8, p.clone()).unwrap();
    assert_eq!(back["n"].get(2).unwrap(), Value::Int(6));
    // ... but a fraction is an error naming the column and the row group.
    let fractions = DataFrame::from_columns(
        p.clone(),
        vec![Column::from_vec("n", DType::F64, vec![1.0, 2.0, 2.5], p.as_ref()).unwrap()],
    )
    .unwrap();
    match read_parquet_bytes(to_parquet(&fractions, 2), &as_u8, p) {
        Err(FrameError::Parquet(ParquetError::ValueOutOfRange {
            column, row_group, ..
        })) => assert_eq!((column.as_str(), row_group), ("n", 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_files_and_options_are_typed_errors() {
    let p = LocalPlacement::shared();
    let df = sample(5000, &p);
    let file = to_parquet(&df, 0);
    let missing = ParquetOptions {
        schema: vec![("tip".into(), DType::F64)],
        ..Default::default()
    };
    assert!(matches!(
        read_parquet_bytes(file.clone(), &missing, p.clone()),
        Err(FrameError::MissingColumn(c)) if c == "tip"
    ));
    let wrong = ParquetOptions {
        schema: vec![("flag".into(), DType::I64)],
        ..Default::default()
    };
    match read_parquet_bytes(file.clone(), &wrong, p.clone()) {
        Err(FrameError::Parquet(ParquetError::TypeMismatch { column, wanted, .. })) => {
            assert_eq!((column.as_str(), wanted), ("flag", DType::I64))
        }
        other => panic!("{other:?}"),
    }
    // Not Parquet at all, and a file cut short: the footer is unreadable.
    for bad in [
        bytes::Bytes::from_static(b"id,fare\n1,2\n"),
        file.slice(..file.len() / 2),
    ] {
        assert!(matches!(
            read_parquet_bytes(bad, &ParquetOptions::default(), p.clone()),
            Err(FrameError::Parquet(ParquetError::Corrupt { .. }))
        ));
    }
    // Garbage in the pages (the footer intact): an error naming a column and row group 0, or
    // (when the damage hits only values) a frame of the right shape; never a panic.
    let mut damaged = file.to_vec();
    for b in &mut damaged[8..file.len() / 3] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    match read_parquet_bytes(bytes::Bytes::from(damaged), &ParquetOptions::default(), p) {
        Err(FrameError::Parquet(ParquetError::Corrupt {
            column: Some(_),
            row_group: Some(0),
            ..
        })) => {}
        Ok(df) => assert_eq!(df.len(), 5000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn frames_round_trip_through_arrow_record_batches() {
    use farmem_frame::arrow::{from_record_batch, to_record_batch};
    for p in [LocalPlacement::shared(), far()] {
        let df = sample(3000, &p);
        let batch = to_record_batch(&df).unwrap();
        assert_eq!(batch.num_rows(), 3000);
        assert_eq!(batch.column(2).null_count(), df["fare"].null_count());
        let back = from_record_batch(&batch, p.clone()).unwrap();
        assert_eq!(back.names(), df.names());
        for (a, b) in back.columns().zip(df.columns()) {
            assert_eq!(a.dtype(), b.dtype(), "{}", a.name());
        }
        assert_eq!(rows(&back), rows(&df));
    }
}
