//! Parsing one part of a CSV block (whole records) into typed column chunks, on one thread.
//!
//! Each column's values go straight into a vector of its storage type (reused from block to
//! block, so no allocation or page fault after the first block), which the loader then appends
//! to the column's store in one copy. Fields are found with a word-at-a-time scan for the next
//! comma or newline; lines with a quote (when the part has any) go through the general record
//! parser. Line numbers are counted from the start of the part; the loader adds the lines of
//! the parts before it.

use crate::column::Dictionary;
use crate::csv::{CsvRecords, Record};
use crate::parse::{parse_f64, parse_i64};
use crate::{ColumnBuilder, DType, FrameError, Result};

/// A column's values from one part, in its storage type. Null rows hold the placeholders of
/// [`ColumnBuilder::push_null`] (0, NaN, the code of the empty string).
#[derive(Debug)]
pub(crate) enum Values {
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    U32(Vec<u32>),
    F64(Vec<f64>),
}

/// One column's chunk of a part.
#[derive(Debug)]
pub(crate) struct Chunk {
    dtype: DType,
    values: Values,
    /// Null rows of the chunk, ascending.
    nulls: Vec<u32>,
    /// The strings of `Values::U32` codes (local to this chunk).
    dict: Dictionary,
    /// The last string interned and its code (most string columns repeat a few values).
    last: Option<(Vec<u8>, u32)>,
}

impl Chunk {
    fn new(dtype: DType) -> Self {
        let values = match dtype {
            DType::I64 | DType::Timestamp => Values::I64(Vec::new()),
            DType::I32 => Values::I32(Vec::new()),
            DType::U8 | DType::Bool => Values::U8(Vec::new()),
            DType::Str => Values::U32(Vec::new()),
            DType::F64 => Values::F64(Vec::new()),
        };
        Self {
            dtype,
            values,
            nulls: Vec::new(),
            dict: Dictionary::default(),
            last: None,
        }
    }

    fn clear(&mut self) {
        match &mut self.values {
            Values::I64(v) => v.clear(),
            Values::I32(v) => v.clear(),
            Values::U8(v) => v.clear(),
            Values::U32(v) => v.clear(),
            Values::F64(v) => v.clear(),
        }
        self.nulls.clear();
        if !self.dict.is_empty() {
            self.dict = Dictionary::default();
        }
        self.last = None;
    }

    fn len(&self) -> usize {
        match &self.values {
            Values::I64(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::U8(v) => v.len(),
            Values::U32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    /// The code of `s`; `None` if it is not UTF-8.
    fn intern(&mut self, s: &[u8]) -> Option<u32> {
        if let Some((b, code)) = &self.last
            && b.as_slice() == s
        {
            return Some(*code);
        }
        let code = self.dict.intern(std::str::from_utf8(s).ok()?);
        self.last = Some((s.to_vec(), code));
        Some(code)
    }

    fn push_null(&mut self) {
        self.nulls.push(self.len() as u32);
        match &mut self.values {
            Values::I64(v) => v.push(0),
            Values::I32(v) => v.push(0),
            Values::U8(v) => v.push(0),
            Values::F64(v) => v.push(f64::NAN),
            Values::U32(_) => {
                let code = self.dict.intern("");
                if let Values::U32(v) = &mut self.values {
                    v.push(code);
                }
            }
        }
    }

    /// Parses a field and appends it; `Err(why)` if it does not parse.
    fn push(&mut self, field: &[u8]) -> std::result::Result<(), &'static str> {
        let t = field.trim_ascii();
        if t.is_empty() {
            self.push_null();
            return Ok(());
        }
        let int = |t: &[u8]| parse_i64(t).ok_or("not an integer:");
        match (&mut self.values, self.dtype) {
            (Values::F64(v), _) => v.push(parse_f64(t).ok_or("not a number:")?),
            (Values::I64(v), DType::Timestamp) => {
                v.push(crate::time::parse_timestamp_bytes(t).ok_or("not a timestamp:")?);
            }
            (Values::I64(v), _) => v.push(int(t)?),
            (Values::I32(v), _) => v.push(i32::try_from(int(t)?).map_err(|_| "out of range:")?),
            (Values::U8(v), DType::Bool) => v.push(match t {
                b"1" | b"true" | b"True" | b"TRUE" | b"Y" => 1,
                b"0" | b"false" | b"False" | b"FALSE" | b"N" => 0,
                _ => return Err("not a boolean:"),
            }),
            (Values::U8(v), _) => v.push(u8::try_from(int(t)?).map_err(|_| "out of range:")?),
            (Values::U32(_), _) => {
                let code = self.intern(field).ok_or("invalid UTF-8:")?;
                if let Values::U32(v) = &mut self.values {
                    v.push(code);
                }
            }
        }
        Ok(())
    }

    /// Appends this chunk to `b` (a builder of the same type).
    pub(crate) fn append_to(&self, b: &mut ColumnBuilder) -> Result<()> {
        match &self.values {
            Values::I64(v) => b.append_chunk(v, &self.nulls),
            Values::I32(v) => b.append_chunk(v, &self.nulls),
            Values::U8(v) => b.append_chunk(v, &self.nulls),
            Values::F64(v) => b.append_chunk(v, &self.nulls),
            Values::U32(v) => {
                // Re-code once per distinct string, then append the codes.
                let map: Vec<u32> = (0..self.dict.len() as u32)
                    .map(|c| b.intern(self.dict.value(c).unwrap_or_default()))
                    .collect();
                let codes: Vec<u32> = v
                    .iter()
                    .map(|&c| map.get(c as usize).copied().unwrap_or(0))
                    .collect();
                b.append_chunk(&codes, &self.nulls)
            }
        }
    }
}

/// The columns of a file and which of them load.
#[derive(Debug)]
pub(crate) struct Layout {
    /// Every column of the file, in order.
    pub(crate) names: Vec<String>,
    /// Their types (those of skipped columns unused).
    pub(crate) types: Vec<DType>,
    /// Whether each loads (a skipped column's fields are stepped over, not parsed).
    pub(crate) keep: Vec<bool>,
}

/// What a part parsed to: rows and lines consumed (blank lines and lines inside quoted fields
/// count as lines).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartInfo {
    pub(crate) rows: u64,
    pub(crate) lines: u64,
}

/// Index of the first `,` or `\n` in `b` at or after `i`, or `b.len()`: eight bytes at a time.
fn find_delim(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const COMMA: u64 = LO * b',' as u64;
    const NL: u64 = LO * b'\n' as u64;
    while let Some(w) = b.get(i..i + 8) {
        let Ok(w) = <[u8; 8]>::try_from(w) else {
            break;
        };
        let w = u64::from_le_bytes(w);
        let (c, n) = (w ^ COMMA, w ^ NL);
        // A zero byte of `c` or `n` is a delimiter; the lowest flagged byte is always a real one.
        let m = ((c.wrapping_sub(LO) & !c) | (n.wrapping_sub(LO) & !n)) & HI;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && b[i] != b',' && b[i] != b'\n' {
        i += 1;
    }
    i
}

/// Parses `part` (whole records) into `out` (one chunk per column, reset first), at most
/// `limit` rows. Errors name lines counted from 1 at the part's first line.
pub(crate) fn parse_part(
    part: &[u8],
    layout: &Layout,
    limit: u64,
    out: &mut Vec<Chunk>,
) -> Result<PartInfo> {
    let (names, types, keep) = (&layout.names, &layout.types, &layout.keep);
    let kept = || (0..types.len()).filter(|&k| keep[k]);
    if out.len() != kept().count() {
        *out = kept().map(|k| Chunk::new(types[k])).collect();
    }
    out.iter_mut().for_each(Chunk::clear);
    let width = types.len();
    let wrong_width = |line, fields: usize| FrameError::BadRow {
        line,
        reason: format!("{fields} fields, the header has {width}"),
    };
    let bad = |k: usize, field: &[u8], line, why: &str| {
        crate::builder::bad_field(&names[k], types[k], field, line, why)
    };
    let quoted = memchr::memchr(b'"', part).is_some();
    let (mut pos, mut line, mut rows) = (0, 0u64, 0u64);
    let mut rec = Record::default();
    while pos < part.len() && rows < limit {
        let line_end = || memchr::memchr(b'\n', &part[pos..]).map_or(part.len(), |i| pos + i);
        if quoted && memchr::memchr(b'"', &part[pos..line_end()]).is_some() {
            // Quoted fields, which may span lines.
            let mut recs = CsvRecords::new(&part[pos..]).after_line(line);
            if !recs.next_record(&mut rec)? {
                break;
            }
            if rec.len() != width {
                return Err(wrong_width(rec.line(), rec.len()));
            }
            let mut chunks = out.iter_mut();
            for (k, f) in rec.fields().enumerate().filter(|&(k, _)| keep[k]) {
                if let Some(c) = chunks.next() {
                    c.push(f.as_bytes())
                        .map_err(|why| bad(k, f.as_bytes(), rec.line(), why))?;
                }
            }
            pos += recs.bytes_read() as usize;
            line = recs.line();
            rows += 1;
            continue;
        }
        line += 1;
        if matches!(part[pos], b'\n' | b'\r') {
            // A blank line (or one of carriage returns only) is skipped.
            let end = line_end();
            if part[pos..end].iter().all(|&b| b == b'\r') {
                pos = end + 1;
                continue;
            }
        }
        let mut start = pos;
        let mut chunks = out.iter_mut();
        for (k, &kept) in keep.iter().enumerate() {
            let stop = find_delim(part, start);
            let last = stop == part.len() || part[stop] == b'\n';
            let mut field = &part[start..stop];
            if last {
                if let [head @ .., b'\r'] = field {
                    field = head;
                }
                if k + 1 < width {
                    return Err(wrong_width(line, k + 1));
                }
            } else if k + 1 == width {
                let extra = memchr::memchr_iter(b',', &part[stop..line_end()]).count();
                return Err(wrong_width(line, width + extra));
            }
            if kept && let Some(c) = chunks.next() {
                c.push(field).map_err(|why| bad(k, field, line, why))?;
            }
            start = stop + 1;
        }
        pos = start;
        rows += 1;
    }
    Ok(PartInfo { rows, lines: line })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_are_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..=len {
                for d in [b',', b'\n'] {
                    let mut b = vec![b'x'; len];
                    if at < len {
                        b[at] = d;
                    }
                    for from in 0..=at.min(len) {
                        assert_eq!(find_delim(&b, from), at, "len {len} at {at} from {from}");
                    }
                }
            }
        }
        // Bytes next to the delimiters' values must not match.
        assert_eq!(find_delim(b"+-./\x0b\x09\x2c", 0), 6);
        assert_eq!(find_delim(b"\xac\x8a\x0b\x2b\x2d\x0a", 0), 5);
    }

    #[test]
    fn parts_parse_with_lines_relative_to_their_start() {
        let layout = Layout {
            names: ["a", "b"].iter().map(|s| s.to_string()).collect(),
            types: vec![DType::I64, DType::Str],
            keep: vec![true, true],
        };
        let mut out = Vec::new();
        let info = parse_part(b"1,x\n\n2,\"y\nz\"\r\n3,\r\n", &layout, 99, &mut out).unwrap();
        assert_eq!((info.rows, info.lines), (3, 5));
        assert_eq!(out[1].nulls, vec![2]);
        match parse_part(b"1,x\n2,y,z\n", &layout, 99, &mut out) {
            Err(FrameError::BadRow { line: 2, reason }) => assert!(reason.contains("3 fields")),
            other => panic!("{other:?}"),
        }
        match parse_part(b"1,x\nq,y\n", &layout, 99, &mut out) {
            Err(FrameError::BadRow { line: 2, reason }) => {
                assert!(reason.contains("not an integer"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match parse_part(b"1,x\n2\n", &layout, 99, &mut out) {
            Err(FrameError::BadRow { line: 2, reason }) => assert!(reason.contains("1 fields")),
            other => panic!("{other:?}"),
        }
        let info = parse_part(b"1,x\n2,y\n", &layout, 1, &mut out).unwrap();
        assert_eq!(info.rows, 1);
        // A skipped column is not parsed: its bad integers are no error.
        let only_b = Layout {
            keep: vec![false, true],
            ..layout
        };
        let info = parse_part(b"q,x\nr,y\n", &only_b, 99, &mut out).unwrap();
        assert_eq!((info.rows, out.len()), (2, 1));
    }
}
