//! Pre-order binary encoding of expressions.
//!
//! ```text
//! Expr = 0 index:u16                  column reference
//!      | 1 type:u8 value:u64          literal (type 3 u64, 7 i64, 9 f64, 10 bool)
//!      | 2 op:u8 Expr                 unary operation (UnaryOp tag)
//!      | 3 op:u8 Expr Expr            binary operation (BinaryOp tag)
//!      | 4 type:u8 Expr               cast to type (Type tag)
//! ```

use super::{BinaryOp, Expr, ExprError, Lit, MAX_DEPTH, MAX_NODES, Type, UnaryOp};
use crate::codec::{Reader, Writer};

impl Expr {
    /// Appends the pre-order encoding to `w` (no limits are checked: a server rejects trees
    /// beyond [`MAX_NODES`] or [`MAX_DEPTH`]).
    pub fn write(&self, w: &mut Writer) {
        // Iterative, so any tree the builder made can be encoded.
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::Col(i) => {
                    w.u8(0).u16(*i);
                }
                Expr::Lit(l) => {
                    w.u8(1).u8(l.ty() as u8).u64(l.bits());
                }
                Expr::Unary(op, a) => {
                    w.u8(2).u8(*op as u8);
                    stack.push(a);
                }
                Expr::Binary(op, a, b) => {
                    w.u8(3).u8(*op as u8);
                    stack.push(b);
                    stack.push(a);
                }
                Expr::Cast(t, a) => {
                    w.u8(4).u8(*t as u8);
                    stack.push(a);
                }
            }
        }
    }

    /// The encoding as a fresh buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.buf
    }

    /// Reads one expression from `r`, enforcing [`MAX_NODES`] and [`MAX_DEPTH`] while reading
    /// (recursion never goes deeper than [`MAX_DEPTH`]). Types are not checked here (they
    /// depend on the inputs): see [`Expr::type_of`].
    ///
    /// # Errors
    /// [`ExprError`] for truncated input, unknown tags, or a tree beyond the limits.
    pub fn read(r: &mut Reader<'_>) -> Result<Expr, ExprError> {
        let mut nodes = 0;
        read_node(r, 1, &mut nodes)
    }

    /// Decodes a complete expression (no trailing bytes).
    ///
    /// # Errors
    /// As [`Expr::read`], plus trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Expr, ExprError> {
        let mut r = Reader::new(buf);
        let e = Expr::read(&mut r)?;
        r.finish()?;
        Ok(e)
    }
}

fn read_node(r: &mut Reader<'_>, depth: usize, nodes: &mut usize) -> Result<Expr, ExprError> {
    if depth > MAX_DEPTH {
        return Err(ExprError::TooDeep(depth));
    }
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(ExprError::TooManyNodes(*nodes));
    }
    let mut child = |r: &mut Reader<'_>| read_node(r, depth + 1, nodes).map(Box::new);
    Ok(match r.u8()? {
        0 => Expr::Col(r.u16()?),
        1 => {
            let tag = r.u8()?;
            let bits = r.u64()?;
            Expr::Lit(match Type::from_tag(tag)? {
                Type::Bool if bits <= 1 => Lit::Bool(bits == 1),
                Type::U64 => Lit::U64(bits),
                Type::I64 => Lit::I64(bits as i64),
                Type::F64 => Lit::F64(f64::from_bits(bits)),
                _ => {
                    return Err(ExprError::BadTag {
                        what: "literal",
                        tag,
                    });
                }
            })
        }
        2 => {
            let op = UnaryOp::from_tag(r.u8()?)?;
            Expr::Unary(op, child(r)?)
        }
        3 => {
            let op = BinaryOp::from_tag(r.u8()?)?;
            let a = child(r)?;
            Expr::Binary(op, a, child(r)?)
        }
        4 => {
            let t = Type::from_tag(r.u8()?)?;
            Expr::Cast(t, child(r)?)
        }
        tag => return Err(ExprError::BadTag { what: "node", tag }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecError;

    #[test]
    fn encoding_roundtrips_and_prefixes_fail() {
        let e = Expr::col(0)
            .cast(Type::F64)
            .mul(Expr::lit_f64(0.5))
            .sin()
            .max(Expr::lit_f64(-1.0))
            .lt(Expr::lit_f64(2.0))
            .or(Expr::lit_bool(true).not());
        let b = e.encode();
        assert_eq!(Expr::decode(&b), Ok(e));
        for cut in 0..b.len() {
            assert!(Expr::decode(&b[..cut]).is_err());
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(
            Expr::decode(&longer),
            Err(ExprError::Codec(CodecError::Trailing(1)))
        );
    }

    #[test]
    fn limits_are_enforced_while_decoding() {
        // A chain of MAX_DEPTH + 1 negations.
        let mut deep = Expr::col(0);
        for _ in 0..MAX_DEPTH {
            deep = deep.neg();
        }
        assert!(matches!(
            Expr::decode(&deep.encode()),
            Err(ExprError::TooDeep(_))
        ));
        assert!(matches!(deep.check_limits(), Err(ExprError::TooDeep(_))));
        // A balanced tree of more than MAX_NODES nodes within the depth limit.
        let mut wide = Expr::col(0);
        while wide.size().0 <= MAX_NODES {
            wide = wide.clone().add(wide);
        }
        assert!(matches!(
            Expr::decode(&wide.encode()),
            Err(ExprError::TooManyNodes(_))
        ));
        // A million nested negations in bytes: rejected at depth MAX_DEPTH + 1, no overflow.
        let mut bytes = [2u8, 0].repeat(1_000_000);
        bytes.extend_from_slice(&[0, 0, 0]);
        assert!(matches!(Expr::decode(&bytes), Err(ExprError::TooDeep(_))));
    }

    #[test]
    fn bad_tags_are_typed() {
        assert_eq!(
            Expr::decode(&[9]),
            Err(ExprError::BadTag {
                what: "node",
                tag: 9
            })
        );
        assert_eq!(
            Expr::decode(&[2, 200, 0, 0, 0]),
            Err(ExprError::BadTag {
                what: "unary operator",
                tag: 200
            })
        );
        // A bool literal must be 0 or 1, an u8 literal does not exist.
        let mut b = vec![1, 10];
        b.extend_from_slice(&2u64.to_le_bytes());
        assert!(matches!(
            Expr::decode(&b),
            Err(ExprError::BadTag {
                what: "literal",
                ..
            })
        ));
        b[1] = 0;
        assert!(matches!(
            Expr::decode(&b),
            Err(ExprError::BadTag {
                what: "literal",
                ..
            })
        ));
    }
}
