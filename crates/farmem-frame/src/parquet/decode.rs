//! Decoding a slice of a column chunk straight into a column being built.

use ::parquet::column::reader::ColumnReader;
use ::parquet::data_type::{ByteArray, Int96};

use super::ParquetError;
use super::read::{Plan, Scale, Source};
use crate::{ColumnBuilder, DType, Elem, FrameError, Result};

/// Decoded values (non-null ones only).
enum Values {
    I64(Vec<i64>),
    F64(Vec<f64>),
    Str(Vec<ByteArray>),
}

/// Values in the column's storage type.
enum Typed {
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    F64(Vec<f64>),
}

/// Reads up to `want` records of a column chunk: the non-null values, and the definition
/// levels when the column is nullable.
macro_rules! read_records {
    ($r:expr, $p:expr, $want:expr, $vals:expr, $def:expr) => {{
        let mut got = 0;
        while got < $want {
            let def = ($p.max_def > 0).then_some(&mut $def);
            let (recs, _, _) = $r.read_records($want - got, def, None, &mut $vals)?;
            if recs == 0 {
                break;
            }
            got += recs;
        }
        got
    }};
}

/// Decodes the next `want` rows of one column (row group `g`) and appends them to `b`.
pub(super) fn decode_into(
    r: &mut ColumnReader,
    p: &Plan,
    want: usize,
    g: usize,
    b: &mut ColumnBuilder,
) -> Result<()> {
    let corrupt = |e| FrameError::from(ParquetError::corrupt(Some(&p.name), Some(g), e));
    let mut def: Vec<i16> = Vec::new();
    let scale = |xs: Vec<i64>| match p.source {
        Source::Int(Scale::Div(d)) => xs.into_iter().map(|x| x.div_euclid(d)).collect(),
        Source::Int(Scale::Mul(m)) => xs.into_iter().map(|x| x.saturating_mul(m)).collect(),
        _ => xs,
    };
    let read = |r: &mut ColumnReader, def: &mut Vec<i16>| -> ::parquet::errors::Result<_> {
        Ok(match r {
            ColumnReader::BoolColumnReader(r) => {
                let mut v: Vec<bool> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::I64(v.into_iter().map(i64::from).collect()))
            }
            ColumnReader::Int32ColumnReader(r) => {
                let mut v: Vec<i32> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (
                    n,
                    Values::I64(scale(v.into_iter().map(i64::from).collect())),
                )
            }
            ColumnReader::Int64ColumnReader(r) => {
                let mut v: Vec<i64> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::I64(scale(v)))
            }
            ColumnReader::FloatColumnReader(r) => {
                let mut v: Vec<f32> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::F64(v.into_iter().map(f64::from).collect()))
            }
            ColumnReader::DoubleColumnReader(r) => {
                let mut v: Vec<f64> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::F64(v))
            }
            ColumnReader::ByteArrayColumnReader(r) => {
                let mut v: Vec<ByteArray> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::Str(v))
            }
            ColumnReader::Int96ColumnReader(r) => {
                let mut v: Vec<Int96> = Vec::new();
                let n = read_records!(r, p, want, v, *def);
                (n, Values::I64(v.iter().map(Int96::to_seconds).collect()))
            }
            // Rejected when planning (no natural type).
            ColumnReader::FixedLenByteArrayColumnReader(_) => (0, Values::I64(Vec::new())),
        })
    };
    let (n, values) = read(r, &mut def).map_err(corrupt)?;
    if n != want {
        return Err(ParquetError::RowCount {
            column: p.name.clone(),
            row_group: g,
            expected: want as u64,
            actual: n as u64,
        }
        .into());
    }
    let def = (p.max_def > 0).then_some(&def[..]);
    let stored = match &values {
        Values::I64(v) => v.len(),
        Values::F64(v) => v.len(),
        Values::Str(v) => v.len(),
    };
    let defined = def.map_or(n, |d| d.iter().filter(|&&l| l >= p.max_def).count());
    if stored != defined {
        let why = format!("{stored} values for {defined} defined rows");
        return Err(corrupt(::parquet::errors::ParquetError::General(why)));
    }
    let out_of_range = |value: String| {
        FrameError::from(ParquetError::ValueOutOfRange {
            column: p.name.clone(),
            row_group: g,
            value,
            wanted: p.dtype,
        })
    };
    match values {
        Values::Str(v) => {
            let mut v = v.iter();
            for k in 0..n {
                if def.is_some_and(|d| d[k] < p.max_def) {
                    b.push_null()?;
                    continue;
                }
                let s = v.next().map_or(Ok(""), |s| std::str::from_utf8(s.data()));
                let s = s.map_err(|_| out_of_range("(invalid UTF-8)".into()))?;
                b.push_str_value(s)?;
            }
        }
        values => match convert(values, p.dtype).map_err(out_of_range)? {
            Typed::I64(v) => b.push_defined(&v, def, p.max_def)?,
            Typed::I32(v) => b.push_defined(&v, def, p.max_def)?,
            Typed::U8(v) => b.push_defined(&v, def, p.max_def)?,
            Typed::F64(v) => b.push_defined(&v, def, p.max_def)?,
        },
    }
    Ok(())
}

/// Converts decoded numbers to the storage type of `dtype`; the first value that does not fit,
/// as text, on failure.
fn convert(v: Values, dtype: DType) -> Result<Typed, String> {
    fn ints<T: Elem>(v: Values, ok: impl Fn(i64) -> bool) -> Result<Vec<T>, String> {
        let one = |x: i64| {
            T::from_i64(x)
                .filter(|_| ok(x))
                .ok_or_else(|| x.to_string())
        };
        match v {
            Values::I64(v) => v.into_iter().map(one).collect(),
            Values::F64(v) => v
                .into_iter()
                .map(|x| {
                    T::from_f64(x)
                        .filter(|t| ok(t.to_i64()))
                        .ok_or_else(|| x.to_string())
                })
                .collect(),
            Values::Str(_) => Err("a string".into()),
        }
    }
    Ok(match dtype {
        DType::F64 => Typed::F64(match v {
            Values::I64(v) => v.into_iter().map(|x| x as f64).collect(),
            Values::F64(v) => v,
            Values::Str(_) => return Err("a string".into()),
        }),
        DType::I64 | DType::Timestamp => match v {
            Values::I64(v) => Typed::I64(v),
            v => Typed::I64(ints(v, |_| true)?),
        },
        DType::I32 => Typed::I32(ints(v, |_| true)?),
        DType::U8 => Typed::U8(ints(v, |_| true)?),
        DType::Bool => Typed::U8(ints(v, |x| x == 0 || x == 1)?),
        DType::Str => return Err("a number".into()),
    })
}

impl ColumnBuilder {
    /// Appends rows given as definition levels (`None`: all rows hold a value): a row whose
    /// level is below `max` is null, the others take the next of `vals` in order.
    pub(crate) fn push_defined<T: Elem>(
        &mut self,
        vals: &[T],
        def: Option<&[i16]>,
        max: i16,
    ) -> Result<()> {
        let Some(def) = def else {
            return self.push_slice(vals);
        };
        let mut next = 0;
        let mut k = 0;
        while k < def.len() {
            if def[k] < max {
                self.push_null()?;
                k += 1;
                continue;
            }
            let run = def[k..].iter().take_while(|&&d| d >= max).count();
            let end = (next + run).min(vals.len());
            self.push_slice(&vals[next..end])?;
            next = end;
            k += run;
        }
        Ok(())
    }
}
