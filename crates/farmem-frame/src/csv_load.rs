//! Loading CSV in parallel: the input is read in blocks of whole records; each block is split at
//! record boundaries into one part per thread; each thread parses its part straight into typed
//! column chunks (vectors of the columns' storage types, reused from block to block; see
//! `csv_part`), then each thread appends whole columns (every part's chunk, in order) to the
//! frame's stores in one copy (far columns: straight into far memory). Only a few blocks are
//! ever held locally, so a file larger than local memory loads. With `CsvOptions::columns`, the
//! fields of the other columns are stepped over without parsing. Errors name the line; on an
//! error nothing is kept (the partial columns are freed).

use std::io::BufRead;

use crate::csv::{CsvOptions, CsvRecords, Record, infer};
use crate::csv_part::{Chunk, Layout, parse_part};
use crate::{Column, ColumnBuilder, DType, DataFrame, FrameError, PlacementRef, Result};

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
    let skipped = |name: &String| opts.columns.as_ref().is_some_and(|c| !c.contains(name));
    let types: Vec<DType> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            opts.schema
                .iter()
                .find(|(n, _)| n == name)
                .map(|&(_, t)| t)
                .unwrap_or_else(|| match skipped(name) {
                    true => DType::Str,
                    false => infer(&mut sample.iter().filter_map(|r| r.get(i))),
                })
        })
        .collect();
    drop(sample);
    let keep: Vec<bool> = match &opts.columns {
        None => vec![true; names.len()],
        Some(wanted) => {
            if let Some(missing) = wanted.iter().find(|w| !names.contains(w)) {
                return Err(FrameError::MissingColumn(missing.clone()));
            }
            names.iter().map(|n| wanted.contains(n)).collect()
        }
    };
    let mut builders: Vec<ColumnBuilder> = names
        .iter()
        .zip(&types)
        .zip(&keep)
        .filter(|(_, keep)| **keep)
        .map(|((n, &t), _)| ColumnBuilder::new(n, t, placement.as_ref()))
        .collect();
    let layout = Layout { names, types, keep };
    let header_lines = buf[..header_bytes].iter().filter(|&&b| b == b'\n').count() as u64;
    buf.drain(..header_bytes);
    let (mut line, mut consumed, mut rows) = (header_lines, header_bytes as u64, 0u64);
    let limit = opts.max_rows.unwrap_or(u64::MAX);
    let threads = if opts.max_rows.is_some() { 1 } else { threads };
    // One set of column chunks per thread, reused from block to block.
    let mut chunks: Vec<Vec<Chunk>> = (0..threads).map(|_| Vec::new()).collect();
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
        let parts = split(&buf[..cut], threads);
        let left = limit - rows;
        let infos = on_threads(
            parts.iter().zip(chunks.iter_mut()),
            "CSV parser",
            |(p, out)| parse_part(p, &layout, left, out),
        );
        let mut used = 0;
        for info in infos {
            let info = info.map_err(|e| match e {
                FrameError::BadRow { line: l, reason } => FrameError::BadRow {
                    line: line + l,
                    reason,
                },
                e => e,
            })?;
            line += info.lines;
            rows += info.rows;
            used += 1;
        }
        // Each thread appends whole columns (every part's chunk, in order) to their stores.
        let parsed = &chunks[..used];
        let mut per: Vec<Vec<(usize, &mut ColumnBuilder)>> =
            (0..threads).map(|_| Vec::new()).collect();
        for (j, b) in builders.iter_mut().enumerate() {
            per[j % threads].push((j, b));
        }
        let appended = on_threads(per, "CSV column writer", |cols| {
            for (j, b) in cols {
                for part in parsed {
                    part[j].append_to(b)?;
                }
            }
            Ok(())
        });
        appended.into_iter().collect::<Result<()>>()?;
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

/// Runs `f` on each item, the first on this thread and the others on their own threads; the
/// results in order.
fn on_threads<I, T, F>(items: I, what: &'static str, f: F) -> Vec<Result<T>>
where
    I: IntoIterator,
    I::Item: Send,
    T: Send,
    F: Fn(I::Item) -> Result<T> + Sync,
{
    let mut items = items.into_iter();
    let Some(first) = items.next() else {
        return Vec::new();
    };
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = items.map(|it| s.spawn(move || f(it))).collect();
        let mut out = vec![f(first)];
        out.extend(
            hs.into_iter()
                .map(|h| h.join().unwrap_or(Err(FrameError::ThreadPanicked(what)))),
        );
        out
    })
}

/// Reads until `buf` holds `want` bytes or the input ends; `true` at the end. Reads go
/// straight into `buf` (a buffered reader passes reads larger than its buffer through).
fn fill<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, want: usize) -> Result<bool> {
    let mut n = buf.len();
    if n >= want {
        return Ok(false);
    }
    buf.resize(want, 0);
    while n < want {
        match r.read(&mut buf[n..]) {
            Ok(0) => {
                buf.truncate(n);
                return Ok(true);
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(n);
                return Err(e.into());
            }
        }
    }
    Ok(false)
}

/// Number of quote bytes in `b`.
fn quotes(b: &[u8]) -> usize {
    memchr::memchr_iter(b'"', b).count()
}

/// The end (just past a newline outside quotes) of the last whole record in `b`, which starts
/// at a record boundary.
fn last_boundary(b: &[u8]) -> Option<usize> {
    if memchr::memchr(b'"', b).is_none() {
        return memchr::memrchr(b'\n', b).map(|i| i + 1);
    }
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
    let plain = memchr::memchr(b'"', block).is_none();
    let mut parts = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..n {
        let target = (block.len() * k / n).max(start);
        // The quote parity at `target`, then forward to the next newline outside quotes.
        let mut quoted = !plain && quotes(&block[start..target]) % 2 == 1;
        let mut end = plain
            .then(|| memchr::memchr(b'\n', &block[target..]).map(|i| target + i + 1))
            .flatten();
        if !plain {
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
