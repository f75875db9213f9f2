//! The DataFrame: named columns of equal length.

use std::fmt;
use std::sync::Arc;

use crate::column::{BUILD_CHUNK, BlockFn, ColumnBuilder};
use crate::storage::Cmp;
use crate::{Column, DType, FrameError, PlacementRef, Result, Value};

/// A full scan of a column converted to `T` ([`Column::scan_i64`] or [`Column::scan_f64`]).
type ScanFn<T> = fn(&Column, &mut dyn FnMut(usize, &[T]) -> Result<()>) -> Result<()>;

/// A table of named, typed columns of equal length, all stored with one [`crate::Placement`].
///
/// Frames are cheap to clone: columns are shared.
///
/// ```
/// use farmem_frame::{Cmp, Column, DataFrame, DType, LocalPlacement, Value};
/// let p = LocalPlacement::shared();
/// let df = DataFrame::from_columns(p.clone(), vec![
///     Column::from_vec("k", DType::I64, vec![1i64, 2, 1], p.as_ref()).unwrap(),
///     Column::from_vec("v", DType::F64, vec![1.0, 5.0, 3.0], p.as_ref()).unwrap(),
/// ]).unwrap();
/// let big = df.filter_cmp("v", Cmp::Gt, &Value::Float(2.0)).unwrap();
/// assert_eq!(big.len(), 2);
/// ```
#[derive(Clone)]
pub struct DataFrame {
    pub(crate) columns: Vec<Arc<Column>>,
    placement: PlacementRef,
}

impl fmt::Debug for DataFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DataFrame({} rows, {:?}, {})",
            self.len(),
            self.names(),
            self.placement.name()
        )
    }
}

impl DataFrame {
    /// An empty frame.
    pub fn new(placement: PlacementRef) -> Self {
        Self {
            columns: Vec::new(),
            placement,
        }
    }

    /// A frame of the given columns.
    ///
    /// # Errors
    /// [`FrameError::LengthMismatch`], [`FrameError::DuplicateColumn`].
    pub fn from_columns(placement: PlacementRef, columns: Vec<Column>) -> Result<Self> {
        let mut df = Self::new(placement);
        for c in columns {
            df.add_column(c)?;
        }
        Ok(df)
    }

    /// Where the columns live.
    pub fn placement(&self) -> &PlacementRef {
        &self.placement
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.columns.first().map_or(0, |c| c.len())
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Column names in order.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name()).collect()
    }

    /// The columns in order.
    pub fn columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().map(|c| c.as_ref())
    }

    /// The column called `name`.
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`].
    pub fn column(&self, name: &str) -> Result<&Column> {
        self.columns
            .iter()
            .find(|c| c.name() == name)
            .map(|c| c.as_ref())
            .ok_or_else(|| FrameError::MissingColumn(name.into()))
    }

    /// Adds a column at the end.
    ///
    /// # Errors
    /// [`FrameError::DuplicateColumn`], [`FrameError::LengthMismatch`].
    pub fn add_column(&mut self, c: Column) -> Result<()> {
        if self.columns.iter().any(|x| x.name() == c.name()) {
            return Err(FrameError::DuplicateColumn(c.name().into()));
        }
        if !self.columns.is_empty() && c.len() != self.len() {
            return Err(FrameError::LengthMismatch {
                column: c.name().into(),
                expected: self.len(),
                actual: c.len(),
            });
        }
        self.columns.push(Arc::new(c));
        Ok(())
    }

    /// The frame with `c` added (see [`DataFrame::add_column`]).
    ///
    /// # Errors
    /// As [`DataFrame::add_column`].
    pub fn with_column(mut self, c: Column) -> Result<Self> {
        self.add_column(c)?;
        Ok(self)
    }

    /// Rows where `column <cmp> operand`, as row indices (ascending).
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`], [`FrameError::TypeMismatch`]; storage errors.
    pub fn select_rows(&self, column: &str, cmp: Cmp, operand: &Value) -> Result<Vec<u32>> {
        self.column(column)?.select(cmp, operand)
    }

    /// The rows where `column <cmp> operand`.
    ///
    /// # Errors
    /// As [`DataFrame::select_rows`].
    pub fn filter_cmp(&self, column: &str, cmp: Cmp, operand: &Value) -> Result<Self> {
        let rows = self.select_rows(column, cmp, operand)?;
        self.take(&rows)
    }

    /// The rows for which `pred` holds on `column`'s values (converted to `f64`).
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; storage errors.
    pub fn filter_by(&self, column: &str, pred: impl Fn(f64) -> bool) -> Result<Self> {
        let mut rows = Vec::new();
        self.column(column)?.scan_f64(&mut |start, xs| {
            rows.extend(
                xs.iter()
                    .enumerate()
                    .filter(|(_, x)| pred(**x))
                    .map(|(i, _)| (start + i) as u32),
            );
            Ok(())
        })?;
        self.take(&rows)
    }

    /// The rows at `idx`, in that order.
    ///
    /// # Errors
    /// [`FrameError::OutOfRange`]; storage errors.
    pub fn take(&self, idx: &[u32]) -> Result<Self> {
        let columns = self
            .columns
            .iter()
            .map(|c| c.take(idx).map(Arc::new))
            .collect::<Result<_>>()?;
        Ok(Self {
            columns,
            placement: self.placement.clone(),
        })
    }

    /// The first `n` rows.
    ///
    /// # Errors
    /// Storage errors.
    pub fn head(&self, n: usize) -> Result<Self> {
        let n = n.min(self.len());
        let columns = self
            .columns
            .iter()
            .map(|c| c.slice(0..n).map(Arc::new))
            .collect::<Result<_>>()?;
        Ok(Self {
            columns,
            placement: self.placement.clone(),
        })
    }

    /// Calls `each(row_inputs)` for every row with the values of the `inputs` columns, read in
    /// blocks by `read`.
    fn for_each_input<T: Copy + Default + Send>(
        &self,
        inputs: &[&str],
        reader: for<'c> fn(&'c Column) -> BlockFn<'c, T>,
        scan: ScanFn<T>,
        mut each: impl FnMut(&[T]) -> Result<()>,
    ) -> Result<()> {
        let cols: Vec<&Column> = inputs
            .iter()
            .map(|n| self.column(n))
            .collect::<Result<_>>()?;
        if let [c] = cols[..] {
            // One input: a plain scan, which far placements read ahead on a helper thread.
            return scan(c, &mut |_, xs| {
                for x in xs {
                    each(std::slice::from_ref(x))?;
                }
                Ok(())
            });
        }
        let mut readers: Vec<BlockFn<'_, T>> = cols.iter().map(|c| reader(c)).collect();
        let mut args = vec![T::default(); cols.len()];
        let mut left = self.len();
        while left > 0 {
            // Fetch the next block of every input at once, so that far placements overlap their
            // round trips.
            let blocks = std::thread::scope(|s| {
                let handles: Vec<_> = readers
                    .iter_mut()
                    .map(|r| s.spawn(move || r(BUILD_CHUNK)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(FrameError::ThreadPanicked("column reader")))
                    })
                    .collect::<Result<Vec<_>>>()
            })?;
            let n = blocks.iter().map(Vec::len).min().unwrap_or(0);
            if n == 0 {
                break;
            }
            for i in 0..n {
                for (a, blk) in args.iter_mut().zip(&blocks) {
                    *a = blk[i];
                }
                each(&args)?;
            }
            left -= n;
        }
        Ok(())
    }

    /// A derived integer column of type `dtype` (`I64`, `I32`, `U8`, `Bool` or `Timestamp`):
    /// row `i` is `f(&[input_0[i], input_1[i], ...])` with inputs converted to `i64`.
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; [`FrameError::TypeMismatch`] if `f` returns a value that does
    /// not fit `dtype`; storage errors.
    pub fn derive_i64(
        &self,
        name: &str,
        dtype: DType,
        inputs: &[&str],
        f: impl Fn(&[i64]) -> i64,
    ) -> Result<Column> {
        let mut b = ColumnBuilder::new(name, dtype, self.placement.as_ref());
        self.for_each_input(inputs, Column::reader_i64, Column::scan_i64, |args| {
            b.push_i64(f(args))
        })?;
        b.finish()
    }

    /// A derived `F64` column: row `i` is `f(&[input_0[i], ...])` with inputs as `f64`.
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; storage errors.
    pub fn derive_f64(
        &self,
        name: &str,
        inputs: &[&str],
        f: impl Fn(&[f64]) -> f64,
    ) -> Result<Column> {
        let mut b = ColumnBuilder::new(name, DType::F64, self.placement.as_ref());
        self.for_each_input(inputs, Column::reader_f64, Column::scan_f64, |args| {
            b.push_f64(f(args))
        })?;
        b.finish()
    }

    /// The frame sorted by `column` (stable; NaN last; strings alphabetically).
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; storage errors.
    pub fn sort_by(&self, column: &str, descending: bool) -> Result<Self> {
        let c = self.column(column)?;
        let mut idx: Vec<u32> = (0..self.len() as u32).collect();
        // Stable sorts with the comparison reversed for descending order keep equal keys in
        // their original order either way.
        let dir = |o: std::cmp::Ordering| if descending { o.reverse() } else { o };
        if c.dtype() == DType::Str {
            let v = c.read_i64(0..c.len())?;
            let dict = c.dictionary();
            let s = |code: i64| dict.and_then(|d| d.value(code as u32)).unwrap_or_default();
            idx.sort_by(|&a, &b| dir(s(v[a as usize]).cmp(s(v[b as usize]))));
        } else if c.dtype() == DType::F64 {
            let v = c.read_f64(0..c.len())?;
            idx.sort_by(|&a, &b| dir(crate::Elem::total_cmp(&v[a as usize], &v[b as usize])));
        } else {
            let v = c.read_i64(0..c.len())?;
            idx.sort_by(|&a, &b| dir(v[a as usize].cmp(&v[b as usize])));
        }
        self.take(&idx)
    }

    /// Calls `f` with each row's values, in order.
    ///
    /// # Errors
    /// Errors of `f`; storage errors.
    pub fn for_each_row(&self, f: &mut dyn FnMut(&[Value]) -> std::io::Result<()>) -> Result<()> {
        let mut row = Vec::with_capacity(self.columns.len());
        let mut readers: Vec<BlockFn<'_, Value>> =
            self.columns.iter().map(|c| c.reader_values()).collect();
        loop {
            let blocks = readers
                .iter_mut()
                .map(|r| r(4096))
                .collect::<Result<Vec<_>>>()?;
            let n = blocks.iter().map(Vec::len).min().unwrap_or(0);
            if n == 0 {
                return Ok(());
            }
            for i in 0..n {
                row.clear();
                row.extend(blocks.iter().map(|b| b[i].clone()));
                f(&row)?;
            }
        }
    }

    /// Summary statistics of the numeric columns: a frame with a `stat` column (`count`, `mean`,
    /// `min`, `max`, `median`) and one `F64` column per numeric column.
    ///
    /// # Errors
    /// Storage errors.
    pub fn describe(&self) -> Result<Self> {
        let p = self.placement.clone();
        let stats = ["count", "mean", "min", "max", "median"];
        let mut out = vec![Column::from_strings("stat", &stats, p.as_ref())?];
        for c in self.columns.iter().filter(|c| c.dtype() != DType::Str) {
            let num = |v: Option<Value>| match v {
                Some(Value::Int(x) | Value::Timestamp(x)) => x as f64,
                Some(Value::Float(x)) => x,
                Some(Value::Bool(b)) => f64::from(u8::from(b)),
                _ => f64::NAN,
            };
            let v = vec![
                c.count()? as f64,
                c.mean()?.unwrap_or(f64::NAN),
                num(c.min()?),
                num(c.max()?),
                num(c.median()?),
            ];
            out.push(Column::from_vec(c.name(), DType::F64, v, p.as_ref())?);
        }
        Self::from_columns(p, out)
    }

    /// Writes the frame as a JSON array of row objects (missing floats are `null`).
    ///
    /// # Errors
    /// [`FrameError::Io`]; storage errors.
    pub fn write_json(&self, w: &mut dyn std::io::Write) -> Result<()> {
        let names: Vec<String> = self.names().iter().map(|n| json_string(n)).collect();
        w.write_all(b"[")?;
        let mut first = true;
        self.for_each_row(&mut |row| {
            w.write_all(if first { b"\n  {" } else { b",\n  {" })?;
            first = false;
            for (i, (n, v)) in names.iter().zip(row).enumerate() {
                if i > 0 {
                    w.write_all(b", ")?;
                }
                let v = match v {
                    Value::Float(f) if !f.is_finite() => "null".to_owned(),
                    Value::Str(s) => json_string(s),
                    Value::Timestamp(_) => json_string(&v.to_string()),
                    v => v.to_string(),
                };
                write!(w, "{n}: {v}")?;
            }
            w.write_all(b"}")
        })?;
        w.write_all(b"\n]\n")?;
        Ok(())
    }

    /// Writes the frame as CSV (see [`crate::csv::write_csv`]).
    ///
    /// # Errors
    /// [`FrameError::Io`]; storage errors.
    pub fn write_csv(&self, w: &mut dyn std::io::Write) -> Result<()> {
        crate::csv::write_csv(self, w)
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for DataFrame {
    /// A plain-text table of all rows (use [`DataFrame::head`] first for big frames).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cells: Vec<Vec<String>> =
            vec![self.names().iter().map(|s| s.to_string()).collect()];
        let mut err = None;
        let r = self.for_each_row(&mut |row| {
            cells.push(
                row.iter()
                    .map(|v| match v {
                        Value::Float(x) => format!("{x:.4}"),
                        v => v.to_string(),
                    })
                    .collect(),
            );
            Ok(())
        });
        if let Err(e) = r {
            err = Some(e);
        }
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &cells {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect();
            writeln!(f, "{}", line.join("  "))?;
        }
        if let Some(e) = err {
            writeln!(f, "<error: {e}>")?;
        }
        Ok(())
    }
}
