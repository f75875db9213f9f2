//! Loading CSV in parallel: the input is read in blocks of whole records; each block is split at
//! record boundaries into one part per thread; the parts are parsed at once into local column
//! chunks, which are then appended in order to the frame's columns (far columns: straight into
//! far memory). Only a few blocks are ever held locally, so a file larger than local memory
//! loads. Errors name the line; on an error nothing is kept (the partial columns are freed).

use std::io::BufRead;

use crate::column::{ColumnData, with_store};
use crate::csv::{CsvOptions, CsvRecords, Record, infer};
use crate::storage::local_slice;
use crate::{
    Column, ColumnBuilder, DType, DataFrame, FrameError, LocalPlacement, PlacementRef, Result,
};

/// Bytes of input per thread in a block.
const PART: usize = 4 << 20;

/// Loads a CSV stream into a frame whose columns use `placement` (see the [`crate::csv`] module
/// for the dialect). Column types come from `opts.schema` or are inferred from the first
/// `opts.infer_rows` records; an empty field is a null.
///
/// ```
/// use farmem_frame::{csv, DType, LocalPlacement, Value};
/// let data = "id,name,score\n1,ann,2.5\n2,\"bo, b\",\n";
/// let df = csv::read_csv(data.as_bytes(), &Default::default(), LocalPlacement::shared()).unwrap();
/// assert_eq!(df.len(), 2);
/// assert_eq!(df["name"].get(1).unwrap(), Value::Str("bo, b".into()));
/// assert_eq!(df["score"].dtype(), DType::F64);
/// assert_eq!(df["score"].get(1).unwrap(), Value::Null);
/// ```
///
/// # Errors
/// [`FrameError::BadRow`] with the line of a record that does not parse or has the wrong number
/// of fields; [`FrameError::MissingColumn`] if a schema column is not in the header;
/// [`FrameError::Io`]; storage errors.
pub fn read_csv<R: BufRead>(r: R, opts: &CsvOptions, placement: PlacementRef) -> Result<DataFrame> {
    read_csv_with_progress(r, opts, placement, &mut |_| {})
}

/// [`read_csv`], calling `progress(bytes)` after each block with the bytes consumed so far.
///
/// # Errors
/// As [`read_csv`].
pub fn read_csv_with_progress<R: BufRead>(
    mut r: R,
    opts: &CsvOptions,
    placement: PlacementRef,
    progress: &mut dyn FnMut(u64),
) -> Result<DataFrame> {
    let threads = match opts.threads {
        0 => farmem_kernels::default_threads(),
        n => n,
    }
    .max(1);
    let mut buf = Vec::new();
    let mut eof = fill(&mut r, &mut buf, PART * threads)?;
    // The header and the sample that types the columns.
    let mut recs = CsvRecords::new(&buf[..]);
    let mut header = Record::default();
    if !recs.next_record(&mut header)? {
        return Ok(DataFrame::new(placement));
    }
    let header_bytes = recs.bytes_read() as usize;
    let names: Vec<String> = header.fields().map(|s| s.trim().to_owned()).collect();
    for (name, _) in &opts.schema {
        if !names.contains(name) {
            return Err(FrameError::MissingColumn(name.clone()));
        }
    }
    let mut sample = Vec::new();
    let mut rec = Record::default();
    while sample.len() < opts.infer_rows && recs.next_record(&mut rec)? {
        sample.push(rec.clone());
    }
    let types: Vec<DType> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            opts.schema
                .iter()
                .find(|(n, _)| n == name)
                .map(|&(_, t)| t)
                .unwrap_or_else(|| infer(&mut sample.iter().filter_map(|r| r.get(i))))
        })
        .collect();
    drop(sample);
    let mut builders: Vec<ColumnBuilder> = names
        .iter()
        .zip(&types)
        .map(|(n, &t)| ColumnBuilder::new(n, t, placement.as_ref()))
        .collect();
    let header_lines = buf[..header_bytes].iter().filter(|&&b| b == b'\n').count() as u64;
    buf.drain(..header_bytes);
    let (mut line, mut consumed, mut rows) = (header_lines, header_bytes as u64, 0u64);
    let limit = opts.max_rows.unwrap_or(u64::MAX);
    let threads = if opts.max_rows.is_some() { 1 } else { threads };
    loop {
        let cut = if eof {
            buf.len()
        } else {
            last_boundary(&buf).unwrap_or(0)
        };
        if cut == 0 && !eof {
            // A record longer than the block: read more.
            let want = buf.len() + PART;
            eof = fill(&mut r, &mut buf, want)?;
            continue;
        }
        let block = &buf[..cut];
        let parts = split(block, threads);
        let mut starts = Vec::with_capacity(parts.len());
        let mut l = line;
        for p in &parts {
            starts.push(l);
            l += p.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        let parsed: Vec<Result<Vec<Column>>> = if parts.len() == 1 {
            vec![parse_part(
                parts[0],
                starts[0],
                &names,
                &types,
                limit - rows,
            )]
        } else {
            std::thread::scope(|s| {
                let hs: Vec<_> = parts
                    .iter()
                    .zip(&starts)
                    .map(|(p, &st)| {
                        let (names, types) = (&names, &types);
                        s.spawn(move || parse_part(p, st, names, types, u64::MAX))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(FrameError::ThreadPanicked("CSV parser")))
                    })
                    .collect()
            })
        };
        for cols in parsed {
            let cols = cols?;
            rows += cols.first().map_or(0, |c| c.len() as u64);
            for (b, c) in builders.iter_mut().zip(&cols) {
                b.append_local(c)?;
            }
        }
        line = l;
        consumed += cut as u64;
        progress(consumed);
        buf.drain(..cut);
        if (eof && buf.is_empty()) || rows >= limit {
            break;
        }
        if !eof {
            eof = fill(&mut r, &mut buf, PART * threads)?;
        }
    }
    let cols = builders
        .into_iter()
        .map(ColumnBuilder::finish)
        .collect::<Result<Vec<Column>>>()?;
    DataFrame::from_columns(placement, cols)
}

/// Reads until `buf` holds `want` bytes or the input ends; `true` at the end.
fn fill<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, want: usize) -> Result<bool> {
    while buf.len() < want {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(true);
        }
        let n = chunk.len().min(want - buf.len());
        buf.extend_from_slice(&chunk[..n]);
        r.consume(n);
    }
    Ok(false)
}

/// Number of quote bytes in `b` (a plain count the compiler vectorises).
fn quotes(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'"').count()
}

/// The end (just past a newline outside quotes) of the last whole record in `b`, which starts
/// at a record boundary.
fn last_boundary(b: &[u8]) -> Option<usize> {
    // Walk back from the end with the quote parity of the whole block.
    let mut quoted = quotes(b) % 2 == 1;
    for i in (0..b.len()).rev() {
        match b[i] {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// Splits a block of whole records into up to `n` parts of whole records.
fn split(block: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..n {
        let target = (block.len() * k / n).max(start);
        // The quote parity at `target`, then forward to the next newline outside quotes.
        let mut quoted = quotes(&block[start..target]) % 2 == 1;
        let mut end = None;
        for (i, &c) in block[target..].iter().enumerate() {
            match c {
                b'"' => quoted = !quoted,
                b'\n' if !quoted => {
                    end = Some(target + i + 1);
                    break;
                }
                _ => {}
            }
        }
        match end {
            Some(e) if e > start => {
                parts.push(&block[start..e]);
                start = e;
            }
            _ => break,
        }
    }
    if start < block.len() || parts.is_empty() {
        parts.push(&block[start..]);
    }
    parts
}

/// Parses a part (whole records, its first line being `after + 1`) into local columns, at most
/// `limit` rows. Lines without quotes (most) are split at commas with `memchr` and their fields
/// parsed from the bytes; a line with a quote goes through the general record parser.
fn parse_part(
    part: &[u8],
    after: u64,
    names: &[String],
    types: &[DType],
    limit: u64,
) -> Result<Vec<Column>> {
    let local = LocalPlacement;
    let mut bs: Vec<ColumnBuilder> = names
        .iter()
        .zip(types)
        .map(|(n, &t)| ColumnBuilder::new(n, t, &local))
        .collect();
    let width = bs.len();
    let wrong_width = |line, fields: usize| FrameError::BadRow {
        line,
        reason: format!("{fields} fields, the header has {width}"),
    };
    let (mut pos, mut line, mut rows) = (0, after, 0);
    let mut rec = Record::default();
    while pos < part.len() && rows < limit {
        let end = memchr::memchr(b'\n', &part[pos..]).map_or(part.len(), |i| pos + i);
        let mut r = &part[pos..end];
        if memchr::memchr(b'"', r).is_some() {
            // Quoted fields, which may span lines.
            let mut recs = CsvRecords::new(&part[pos..]).after_line(line);
            if !recs.next_record(&mut rec)? {
                break;
            }
            if rec.len() != width {
                return Err(wrong_width(rec.line(), rec.len()));
            }
            for (b, f) in bs.iter_mut().zip(rec.fields()) {
                b.push_field(f, rec.line())?;
            }
            pos += recs.bytes_read() as usize;
            line = recs.line();
            rows += 1;
            continue;
        }
        line += 1;
        pos = end + 1;
        if let [head @ .., b'\r'] = r {
            r = head;
        }
        if r.iter().all(|&b| b == b'\r') {
            continue;
        }
        let mut start = 0;
        for (k, b) in bs.iter_mut().enumerate() {
            let stop = memchr::memchr(b',', &r[start..]).map_or(r.len(), |i| start + i);
            if stop == r.len() && k + 1 < width {
                return Err(wrong_width(line, k + 1));
            }
            b.push_field_bytes(&r[start..stop], line)?;
            start = stop + 1;
        }
        if start <= r.len() {
            let fields = width + memchr::memchr_iter(b',', &r[start.saturating_sub(1)..]).count();
            return Err(wrong_width(line, fields));
        }
        rows += 1;
    }
    bs.into_iter().map(ColumnBuilder::finish).collect()
}

impl ColumnBuilder {
    /// Appends a local column of the same type (strings re-coded into this column's
    /// dictionary, nulls kept).
    pub(crate) fn append_local(&mut self, c: &Column) -> Result<()> {
        if let (ColumnData::U32(s), Some(d)) = (c.data(), c.dictionary()) {
            // Re-code once per distinct string, then append the codes.
            let map: Vec<u32> = (0..d.len() as u32)
                .map(|code| self.intern(d.value(code).unwrap_or_default()))
                .collect();
            let codes = s.to_vec(0..s.len())?;
            let mapped: Vec<u32> = codes
                .iter()
                .map(|&code| map.get(code as usize).copied().unwrap_or(0))
                .collect();
            match c.validity() {
                None => self.push_slice(&mapped)?,
                Some(v) => {
                    for (i, x) in mapped.iter().enumerate() {
                        if v.is_valid(i) {
                            self.push_slice(std::slice::from_ref(x))?;
                        } else {
                            self.push_null()?;
                        }
                    }
                }
            }
            return Ok(());
        }
        with_store!(c.data(), s => {
            let owned;
            let xs = match local_slice(s.as_ref()) {
                Some(x) => x,
                None => {
                    owned = s.to_vec(0..s.len())?;
                    &owned[..]
                }
            };
            match c.validity() {
                None => self.push_slice(xs)?,
                Some(v) => {
                    for (i, x) in xs.iter().enumerate() {
                        if v.is_valid(i) {
                            self.push_slice(std::slice::from_ref(x))?;
                        } else {
                            self.push_null()?;
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_end_at_record_boundaries_outside_quotes() {
        let block = b"a,1\n\"x\ny\",2\nb,3\nc,4\n";
        for n in 1..6 {
            let parts = split(block, n);
            assert_eq!(parts.concat(), block.to_vec(), "{n}");
            for p in &parts {
                assert!(p.ends_with(b"\n"), "{n}: {:?}", String::from_utf8_lossy(p));
                assert!(!p.starts_with(b"y"), "{n}: split inside quotes");
            }
        }
        assert_eq!(last_boundary(b"a,1\n\"x\ny"), Some(4));
        assert_eq!(last_boundary(b"a,\"1\n"), None);
    }
}
