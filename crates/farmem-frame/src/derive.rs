//! Derived columns: a new column computed from existing ones by a row expression
//! ([`farmem_proto::expr::Expr`]).

use farmem_kernels::expr::{Slice, eval_slices};
use farmem_proto::agent::ElemType;
use farmem_proto::expr::{Expr, Type};

use crate::column::ColumnData;
use crate::storage::{Placement, Storable, local_slice};
use crate::{Column, DType, DataFrame, FrameError, Result};

/// The frame type a result of type `t` is stored as, and the type to cast it to first (when it
/// has no frame type of its own).
fn stored_as(t: Type) -> (DType, Option<Type>) {
    match t {
        Type::Bool => (DType::Bool, None),
        Type::U8 => (DType::U8, None),
        Type::I32 => (DType::I32, None),
        Type::I64 => (DType::I64, None),
        Type::F64 => (DType::F64, None),
        Type::I8 | Type::I16 => (DType::I32, Some(Type::I32)),
        Type::U16 | Type::U32 | Type::U64 => (DType::I64, Some(Type::I64)),
        Type::F32 => (DType::F64, Some(Type::F64)),
    }
}

/// A column's values as an input of a local evaluation: borrowed when the column is local,
/// else read.
enum Input<'a> {
    Borrowed(Slice<'a>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Input<'_> {
    fn slice(&self) -> Slice<'_> {
        match self {
            Input::Borrowed(s) => *s,
            Input::U8(v) => Slice::U8(v),
            Input::I32(v) => Slice::I32(v),
            Input::U32(v) => Slice::U32(v),
            Input::I64(v) => Slice::I64(v),
            Input::F64(v) => Slice::F64(v),
        }
    }
}

fn input(d: &ColumnData) -> Result<Input<'_>> {
    macro_rules! get {
        ($s:expr, $v:ident) => {
            match local_slice($s.as_ref()) {
                Some(x) => Input::Borrowed(Slice::$v(x)),
                None => Input::$v($s.to_vec(0..$s.len())?),
            }
        };
    }
    Ok(match d {
        ColumnData::U8(s) => get!(s, U8),
        ColumnData::I32(s) => get!(s, I32),
        ColumnData::U32(s) => get!(s, U32),
        ColumnData::I64(s) => get!(s, I64),
        ColumnData::F64(s) => get!(s, F64),
    })
}

/// Element type of a column's storage.
pub(crate) fn elem_type(d: &ColumnData) -> ElemType {
    match d {
        ColumnData::U8(_) => ElemType::U8,
        ColumnData::I32(_) => ElemType::I32,
        ColumnData::I64(_) => ElemType::I64,
        ColumnData::F64(_) => ElemType::F64,
        ColumnData::U32(_) => ElemType::U32,
    }
}

/// Element type of a column as an expression input.
pub(crate) fn input_type(c: &Column) -> Result<ElemType> {
    Ok(match c.data() {
        ColumnData::U8(_) => ElemType::U8,
        ColumnData::I32(_) => ElemType::I32,
        ColumnData::I64(_) => ElemType::I64,
        ColumnData::F64(_) => ElemType::F64,
        ColumnData::U32(_) => {
            return Err(FrameError::TypeMismatch {
                column: c.name().into(),
                expected: "a numeric expression input".into(),
                actual: c.dtype(),
            });
        }
    })
}

impl DataFrame {
    /// A new column `name` computed row by row by `expr` over the columns `inputs`
    /// (`Expr::col(i)` is `inputs[i]`; `Timestamp` columns are `i64` seconds, `Bool` columns
    /// `u8`). The result keeps its type when the frame has one (`i64`, `i32`, `u8`, `bool`,
    /// `f64`); other integer types are stored widened to `i64`/`i32`, `f32` as `f64`. Far
    /// placements compute it next to the data (the remote agent), others here, through the same
    /// kernel: the values are identical.
    ///
    /// ```
    /// use farmem_frame::{Column, DataFrame, DType, LocalPlacement, Value};
    /// use farmem_frame::expr::{Expr, Type};
    /// let p = LocalPlacement::shared();
    /// let df = DataFrame::from_columns(p.clone(), vec![
    ///     Column::from_vec("start", DType::Timestamp, vec![0i64, 7200], p.as_ref()).unwrap(),
    ///     Column::from_vec("end", DType::Timestamp, vec![60i64, 9000], p.as_ref()).unwrap(),
    /// ]).unwrap();
    /// let d = df.derive("duration", &Expr::col(1).sub(Expr::col(0)), &["start", "end"]).unwrap();
    /// assert_eq!(d.get(1).unwrap(), Value::Int(1800));
    /// let h = df.derive("hour", &Expr::col(0).hour().cast(Type::U8), &["start"]).unwrap();
    /// assert_eq!(h.dtype(), DType::U8);
    /// assert_eq!(h.get(1).unwrap(), Value::Int(2));
    /// ```
    ///
    /// # Errors
    /// [`FrameError::MissingColumn`]; [`FrameError::TypeMismatch`] for a string input;
    /// [`FrameError::Expr`] for an expression ill-typed over the inputs; storage errors.
    pub fn derive(&self, name: &str, expr: &Expr, inputs: &[&str]) -> Result<Column> {
        let cols: Vec<&Column> = inputs
            .iter()
            .map(|n| self.column(n))
            .collect::<Result<_>>()?;
        for c in &cols {
            input_type(c)?;
        }
        self.derive_cols(name, expr, &cols)
    }

    /// [`DataFrame::derive`] over columns (which may be string codes, `u32`), without looking
    /// them up by name; the result has no nulls.
    pub(crate) fn derive_cols(&self, name: &str, expr: &Expr, cols: &[&Column]) -> Result<Column> {
        let types: Vec<Type> = cols
            .iter()
            .map(|c| Type::from(elem_type(c.data())))
            .collect();
        let (dtype, cast) = stored_as(expr.type_of(&types)?);
        let cast_expr;
        let expr = match cast {
            Some(t) => {
                cast_expr = expr.clone().cast(t);
                &cast_expr
            }
            None => expr,
        };
        let data: Vec<&ColumnData> = cols.iter().map(|c| c.data()).collect();
        if let Some(d) = self.placement().derive(expr, &data) {
            return Ok(Column::from_data(name, dtype, d?));
        }
        let owned = data.iter().map(|d| input(d)).collect::<Result<Vec<_>>>()?;
        let slices: Vec<Slice<'_>> = owned.iter().map(Input::slice).collect();
        let (_, bytes) = eval_slices(expr, &slices, farmem_kernels::default_threads())?;
        let p = self.placement().as_ref();
        match dtype {
            DType::U8 | DType::Bool => Column::from_vec(name, dtype, bytes, p),
            DType::I32 => stored::<i32>(name, dtype, &bytes, p),
            DType::F64 => stored::<f64>(name, dtype, &bytes, p),
            _ => stored::<i64>(name, dtype, &bytes, p),
        }
    }

    /// The frame with a column `name` derived by `expr` over `inputs` added (see
    /// [`DataFrame::derive`]).
    ///
    /// # Errors
    /// As [`DataFrame::derive`], plus [`FrameError::DuplicateColumn`].
    pub fn with_derived(self, name: &str, expr: &Expr, inputs: &[&str]) -> Result<Self> {
        let c = self.derive(name, expr, inputs)?;
        self.with_column(c)
    }
}

/// A column of `T`s from their little-endian bytes, read in place when they are aligned for `T`
/// (they come from the allocator, so they are), else through an aligned copy.
fn stored<T: Storable + bytemuck::Pod>(
    name: &str,
    dtype: DType,
    bytes: &[u8],
    p: &dyn Placement,
) -> Result<Column> {
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(v) => Column::from_slice(name, dtype, v, p),
        Err(_) => Column::from_vec::<T>(name, dtype, bytemuck::pod_collect_to_vec(bytes), p),
    }
}
