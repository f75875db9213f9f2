//! The lazy API: [`LazyFrame`] records a query and runs it, rewritten, at `collect`.

mod exec;
mod names;
mod optimize;

use std::path::{Path, PathBuf};

use crate::csv::CsvOptions;
use crate::dsl::{Expr, JoinType};
use crate::{DataFrame, PlacementRef, Result};

/// The lazy API, in the style of polars: a [`LazyFrame`] records a query (a scan of a CSV or
/// Parquet file, or an eager frame, then filters, projections, new columns, group-bys and sorts)
/// and runs it at [`LazyFrame::collect`], after two rewrites:
///
/// - **predicate pushdown**: filters move down (through sorts, through `with_columns` that do not
///   compute the columns they read, through `select`s that pass those columns through) into the
///   scan. A Parquet scan skips the row groups whose statistics (minimum and maximum of each
///   column chunk) show that no row can pass; the remaining rows are filtered as they load.
/// - **projection pushdown**: a scan loads only the columns the query reads; a CSV scan steps
///   over the fields of the others without parsing them, a Parquet scan does not decode them.
///
/// The result equals running the same steps eagerly on the whole file ([`crate::DataFrame`]'s
/// methods of the same names), only cheaper. [`LazyFrame::explain`] shows the rewritten query.
///
/// ```
/// use farmem_frame::prelude::*;
/// use farmem_frame::LazyFrame;
/// let path = std::env::temp_dir().join(format!("lazy-doc-{}.csv", std::process::id()));
/// std::fs::write(&path, "city,year,temp,note\nOslo,2020,3,a\nRome,2020,18,b\nOslo,2021,5,c\n").unwrap();
/// let q = LazyFrame::scan_csv(&path, Default::default(), LocalPlacement::shared())
///     .filter(col("temp").gt(4))
///     .group_by(["city"])
///     .agg([col("temp").mean().alias("mean"), len()])
///     .sort(&["city"], &[false]);
/// let plan = q.explain();
/// assert!(plan.contains("columns [city, temp]"), "{plan}"); // `year` and `note` are not parsed
/// let df = q.collect().unwrap();
/// assert_eq!(df["city"].get(0).unwrap(), Value::Str("Oslo".into()));
/// assert_eq!(df["mean"].get(1).unwrap(), Value::Float(18.0));
/// std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct LazyFrame {
    plan: Plan,
}

/// Where a scan reads.
#[derive(Clone)]
enum Source {
    Csv {
        path: PathBuf,
        opts: CsvOptions,
    },
    #[cfg(feature = "parquet")]
    Parquet {
        file: crate::parquet::ParquetFile,
        opts: crate::parquet::ParquetOptions,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Csv { path, .. } => write!(f, "CSV {}", path.display()),
            #[cfg(feature = "parquet")]
            Source::Parquet { .. } => write!(f, "Parquet"),
        }
    }
}

/// A file scan with what the rewrites pushed into it.
#[derive(Clone)]
struct Scan {
    source: Source,
    placement: PlacementRef,
    /// Columns to load (`None`: all).
    columns: Option<Vec<String>>,
    /// Filters applied while loading, in order.
    predicates: Vec<Expr>,
    /// Load at most this many rows (only pushed into scans without filters).
    limit: Option<u64>,
}

impl std::fmt::Debug for Scan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("source", &self.source)
            .field("placement", &self.placement.name())
            .field("columns", &self.columns)
            .field("predicates", &self.predicates)
            .field("limit", &self.limit)
            .finish()
    }
}

/// A query step.
#[derive(Debug, Clone)]
enum Plan {
    Scan(Scan),
    Frame(DataFrame),
    Filter(Box<Plan>, Expr),
    Select(Box<Plan>, Vec<Expr>),
    WithColumns(Box<Plan>, Vec<Expr>),
    GroupBy {
        input: Box<Plan>,
        keys: Vec<Expr>,
        aggs: Vec<Expr>,
    },
    Sort {
        input: Box<Plan>,
        by: Vec<String>,
        descending: Vec<bool>,
    },
    Join {
        left: Box<Plan>,
        right: Box<Plan>,
        left_on: Vec<String>,
        right_on: Vec<String>,
        how: JoinType,
    },
    Head(Box<Plan>, usize),
    Unique(Box<Plan>, Vec<String>),
}

/// A [`LazyFrame`] being grouped: [`LazyGroupBy::agg`] finishes the step.
#[derive(Debug, Clone)]
pub struct LazyGroupBy {
    input: LazyFrame,
    keys: Vec<Expr>,
}

impl LazyFrame {
    fn scan(source: Source, placement: PlacementRef) -> Self {
        Self {
            plan: Plan::Scan(Scan {
                source,
                placement,
                columns: None,
                predicates: Vec::new(),
                limit: None,
            }),
        }
    }

    /// A query over the CSV file at `path`, loaded with `opts` (its `columns` narrowed further
    /// to what the query reads) into columns of `placement`. The file is opened at
    /// [`LazyFrame::collect`].
    pub fn scan_csv(path: impl AsRef<Path>, opts: CsvOptions, placement: PlacementRef) -> Self {
        let path = path.as_ref().to_owned();
        Self::scan(Source::Csv { path, opts }, placement)
    }

    /// A query over a Parquet file, loaded with `opts` into columns of `placement`.
    #[cfg(feature = "parquet")]
    pub fn scan_parquet(
        file: crate::parquet::ParquetFile,
        opts: crate::parquet::ParquetOptions,
        placement: PlacementRef,
    ) -> Self {
        Self::scan(Source::Parquet { file, opts }, placement)
    }

    fn then(self, f: impl FnOnce(Box<Plan>) -> Plan) -> Self {
        Self {
            plan: f(Box::new(self.plan)),
        }
    }

    /// Keeps the rows where `predicate` is true (see [`DataFrame::filter`]).
    #[must_use]
    pub fn filter(self, predicate: impl Into<Expr>) -> Self {
        let p = predicate.into();
        self.then(|i| Plan::Filter(i, p))
    }

    /// The columns computed by `exprs` (see [`DataFrame::select`]).
    #[must_use]
    pub fn select<E: Into<Expr>>(self, exprs: impl IntoIterator<Item = E>) -> Self {
        let e = exprs.into_iter().map(Into::into).collect();
        self.then(|i| Plan::Select(i, e))
    }

    /// Adds or replaces the columns computed by `exprs` (see [`DataFrame::with_columns`]).
    #[must_use]
    pub fn with_columns<E: Into<Expr>>(self, exprs: impl IntoIterator<Item = E>) -> Self {
        let e = exprs.into_iter().map(Into::into).collect();
        self.then(|i| Plan::WithColumns(i, e))
    }

    /// Groups by `keys`; [`LazyGroupBy::agg`] says what to compute (see
    /// [`DataFrame::group_by`]).
    pub fn group_by<E: Into<Expr>>(self, keys: impl IntoIterator<Item = E>) -> LazyGroupBy {
        LazyGroupBy {
            input: self,
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }

    /// Sorts by the columns `by` (see [`DataFrame::sort`]).
    #[must_use]
    pub fn sort<S: AsRef<str>>(self, by: &[S], descending: &[bool]) -> Self {
        let by = by.iter().map(|s| s.as_ref().to_owned()).collect();
        let descending = descending.to_vec();
        self.then(|input| Plan::Sort {
            input,
            by,
            descending,
        })
    }

    /// Joins `other` (lazy, or an eager frame) on `left_on[i] == right_on[i]` (see
    /// [`DataFrame::join`]). Filters on the left side's columns move into the left input (and,
    /// for an inner join, filters on the right side's columns into the right input), and each
    /// input loads only the columns the query reads, when the inputs' column names are known
    /// before loading (frames, Parquet files, CSV files with a plain header).
    ///
    /// ```
    /// use farmem_frame::prelude::*;
    /// let p = LocalPlacement::shared();
    /// let trips = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_vec("vendor", DType::I64, vec![1i64, 2, 1], p.as_ref()).unwrap(),
    ///     Column::from_vec("fare", DType::F64, vec![5.0, 7.5, 9.0], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// let names = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_vec("id", DType::I64, vec![1i64, 2], p.as_ref()).unwrap(),
    ///     Column::from_strings("name", &["CMT", "Verifone"], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// let j = trips.lazy()
    ///     .join(&names, &["vendor"], &["id"], JoinType::Inner)
    ///     .filter(col("fare").gt(6))
    ///     .select([col("name"), col("fare")])
    ///     .collect()
    ///     .unwrap();
    /// assert_eq!(j.len(), 2);
    /// assert_eq!(j["name"].get(0).unwrap(), Value::Str("Verifone".into()));
    /// ```
    #[must_use]
    pub fn join<S: AsRef<str>>(
        self,
        other: impl Into<LazyFrame>,
        left_on: &[S],
        right_on: &[S],
        how: JoinType,
    ) -> Self {
        let names = |v: &[S]| v.iter().map(|s| s.as_ref().to_owned()).collect();
        let (left_on, right_on) = (names(left_on), names(right_on));
        let right = Box::new(other.into().plan);
        self.then(|left| Plan::Join {
            left,
            right,
            left_on,
            right_on,
            how,
        })
    }

    /// The first `n` rows (see [`DataFrame::head`]). A CSV scan right below stops reading
    /// after them.
    #[must_use]
    pub fn head(self, n: usize) -> Self {
        self.then(|i| Plan::Head(i, n))
    }

    /// The distinct rows over the columns `subset` (all columns if empty), each at its first
    /// occurrence (see [`DataFrame::unique`]).
    #[must_use]
    pub fn unique<S: AsRef<str>>(self, subset: &[S]) -> Self {
        let subset = subset.iter().map(|s| s.as_ref().to_owned()).collect();
        self.then(|i| Plan::Unique(i, subset))
    }

    /// The query after predicate and projection pushdown, one step per line (the scan last).
    pub fn explain(&self) -> String {
        let mut out = String::new();
        optimize::optimize(self.plan.clone()).describe(0, &mut out);
        out
    }

    /// Runs the query.
    ///
    /// # Errors
    /// Those of the steps: [`crate::FrameError::Io`] and the readers' errors for a scan,
    /// [`crate::FrameError::MissingColumn`], [`crate::FrameError::InvalidExpr`],
    /// [`crate::FrameError::TypeMismatch`], storage errors.
    pub fn collect(self) -> Result<DataFrame> {
        exec::execute(optimize::optimize(self.plan))
    }
}

impl LazyGroupBy {
    /// One row per distinct key tuple with the aggregations `aggs` (see [`crate::GroupBy::agg`]).
    #[must_use]
    pub fn agg<E: Into<Expr>>(self, aggs: impl IntoIterator<Item = E>) -> LazyFrame {
        let (keys, aggs) = (self.keys, aggs.into_iter().map(Into::into).collect());
        self.input.then(|input| Plan::GroupBy { input, keys, aggs })
    }
}

impl From<DataFrame> for LazyFrame {
    fn from(df: DataFrame) -> Self {
        Self {
            plan: Plan::Frame(df),
        }
    }
}

impl From<&DataFrame> for LazyFrame {
    fn from(df: &DataFrame) -> Self {
        df.lazy()
    }
}

impl DataFrame {
    /// A lazy query over this frame (see [`LazyFrame`]).
    pub fn lazy(&self) -> LazyFrame {
        LazyFrame {
            plan: Plan::Frame(self.clone()),
        }
    }
}

/// The names of the columns `e` reads, added to `out` (each once).
fn columns_of(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Column(n) => {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        Expr::Literal(_) | Expr::Len => {}
        Expr::Unary(_, a)
        | Expr::Cast(a, _)
        | Expr::IsNull(a)
        | Expr::Alias(a, _)
        | Expr::Agg(_, a) => columns_of(a, out),
        Expr::Binary(_, a, b) => {
            columns_of(a, out);
            columns_of(b, out);
        }
    }
}

impl Plan {
    fn describe(&self, depth: usize, out: &mut String) {
        use std::fmt::Write;
        let pad = "  ".repeat(depth);
        let list = |es: &[Expr]| es.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>();
        let next = match self {
            Plan::Scan(s) => {
                let cols = s
                    .columns
                    .as_ref()
                    .map_or("all".into(), |c| format!("[{}]", c.join(", ")));
                let _ = writeln!(
                    out,
                    "{pad}SCAN {:?}; columns {cols}; filters {:?}{}",
                    s.source,
                    list(&s.predicates),
                    s.limit
                        .map_or(String::new(), |n| format!("; first {n} rows"))
                );
                None
            }
            Plan::Frame(df) => {
                let _ = writeln!(out, "{pad}FRAME [{}]", df.names().join(", "));
                None
            }
            Plan::Filter(i, p) => {
                let _ = writeln!(out, "{pad}FILTER {p:?}");
                Some(i)
            }
            Plan::Select(i, e) => {
                let _ = writeln!(out, "{pad}SELECT {:?}", list(e));
                Some(i)
            }
            Plan::WithColumns(i, e) => {
                let _ = writeln!(out, "{pad}WITH COLUMNS {:?}", list(e));
                Some(i)
            }
            Plan::GroupBy { input, keys, aggs } => {
                let _ = writeln!(out, "{pad}GROUP BY {:?} AGG {:?}", list(keys), list(aggs));
                Some(input)
            }
            Plan::Sort {
                input,
                by,
                descending,
            } => {
                let _ = writeln!(out, "{pad}SORT BY {by:?} descending {descending:?}");
                Some(input)
            }
            Plan::Join {
                left,
                right,
                left_on,
                right_on,
                how,
            } => {
                let _ = writeln!(out, "{pad}{how:?} JOIN ON {left_on:?} = {right_on:?}");
                left.describe(depth + 1, out);
                Some(right)
            }
            Plan::Head(i, n) => {
                let _ = writeln!(out, "{pad}HEAD {n}");
                Some(i)
            }
            Plan::Unique(i, subset) => {
                let _ = writeln!(out, "{pad}UNIQUE {subset:?}");
                Some(i)
            }
        };
        if let Some(i) = next {
            i.describe(depth + 1, out);
        }
    }
}
