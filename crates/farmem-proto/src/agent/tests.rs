use super::*;
use proptest::prelude::*;

fn roundtrip<M: AgentMessage + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = m.encode();
    assert_eq!(&M::decode(&bytes).unwrap(), m);
    // Every strict prefix is rejected, never a panic.
    for cut in 0..bytes.len() {
        assert!(M::decode(&bytes[..cut]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(M::decode(&longer), Err(AgentDecodeError::Trailing(1)));
}

fn vecref(ty: ElemType) -> VecRef {
    VecRef {
        ty,
        chunks: vec![(7, 100), (9, 3)],
    }
}

#[test]
fn messages_roundtrip() {
    roundtrip(&vecref(ElemType::I16));
    roundtrip(&FilterArgs {
        vec: vecref(ElemType::F64),
        pred: Predicate::between(Scalar::F(-1.5), Scalar::F(2.0)),
        out: OutSpec {
            chunk_elems: 16,
            ids: vec![1, 2, 3],
        },
    });
    roundtrip(&GatherArgs {
        src: vecref(ElemType::U8),
        idx: vecref(ElemType::U64),
        out: OutSpec {
            chunk_elems: 4,
            ids: vec![],
        },
    });
    roundtrip(&GatherSumArgs {
        values: vecref(ElemType::F64),
        idx: vecref(ElemType::U32),
        offsets: vecref(ElemType::U64),
        scale: 0.85,
        shift: -1.5e-7,
        out: OutSpec {
            chunk_elems: 8,
            ids: vec![3, 4],
        },
    });
    roundtrip(&ArgsortArgs {
        vec: vecref(ElemType::I64),
        out: OutSpec {
            chunk_elems: 4,
            ids: vec![5],
        },
    });
    roundtrip(&UniqueArgs {
        vec: vecref(ElemType::U32),
        limit: 10,
    });
    roundtrip(&UniqueResult {
        ty: ElemType::I8,
        values: vec![Scalar::I(-3), Scalar::I(4)],
    });
    let agg = Aggregates {
        ty: ElemType::I32,
        count: 3,
        sum: Sum::I(-(1 << 100)),
        min: Some(Scalar::I(-5)),
        max: Some(Scalar::I(9)),
    };
    roundtrip(&agg);
    roundtrip(&Aggregates {
        ty: ElemType::F32,
        count: 0,
        sum: Sum::F(0.0),
        min: None,
        max: None,
    });
    roundtrip(&GroupByArgs {
        keys: vecref(ElemType::U16),
        values: vecref(ElemType::F64),
        limit: 3,
    });
    roundtrip(&GroupByResult {
        key_ty: ElemType::I32,
        groups: vec![(Scalar::I(-1), agg), (Scalar::I(3), agg)],
    });
    roundtrip(&CountArgs {
        vec: vecref(ElemType::I32),
        pred: Predicate::new(Cmp::Ge, Scalar::I(-4)),
    });
    use crate::expr::{Expr, Type};
    for expr in [
        Expr::col(1).sub(Expr::col(0).cast(Type::F64)),
        Expr::col(0).hour().cast(Type::U8),
        Expr::col(1).gt(Expr::lit_f64(1.5)),
    ] {
        roundtrip(&DeriveArgs {
            expr,
            inputs: vec![vecref(ElemType::I64), vecref(ElemType::F64)],
            out: OutSpec {
                chunk_elems: 8,
                ids: vec![3, 4],
            },
        });
    }
    roundtrip(&GroupWhereArgs {
        group: GroupByArgs {
            keys: vecref(ElemType::U8),
            values: vecref(ElemType::I64),
            limit: 9,
        },
        mask: vecref(ElemType::U32),
        pred: Predicate::between(Scalar::U(1), Scalar::U(3)),
    });
    roundtrip(&GroupMedianResult {
        key_ty: ElemType::U8,
        groups: vec![
            (Scalar::U(1), agg, Some((Scalar::I(4), Scalar::I(6)))),
            (Scalar::U(2), agg, None),
        ],
    });
    roundtrip(&HtKeysArgs {
        table: 4,
        keys: vec![b"a".to_vec(), vec![]],
    });
    roundtrip(&HtPutArgs {
        table: 4,
        return_old: true,
        entries: vec![(b"k".to_vec(), b"v".to_vec())],
    });
    roundtrip(&HtValues {
        values: vec![
            HtValue::Absent,
            HtValue::Value(b"x".to_vec()),
            HtValue::Present,
        ],
    });
    roundtrip(&HtScanArgs {
        table: 1,
        max: 5,
        after: Some(b"zz".to_vec()),
    });
    roundtrip(&HtScanResult {
        more: true,
        entries: vec![(b"k".to_vec(), vec![1, 2])],
    });
}

#[test]
fn bad_tags_are_rejected() {
    let mut b = vecref(ElemType::U8).encode();
    b[0] = 10;
    assert_eq!(
        VecRef::decode(&b),
        Err(AgentDecodeError::BadTag {
            what: "element type",
            tag: 10
        })
    );
}

#[test]
fn ill_typed_derives_are_rejected_at_decode() {
    use crate::expr::{Expr, ExprError};
    let out = OutSpec {
        chunk_elems: 8,
        ids: vec![1],
    };
    // i64 - f64 without a cast, and a reference past the inputs.
    for expr in [Expr::col(0).sub(Expr::col(1)), Expr::col(2)] {
        let b = DeriveArgs {
            expr,
            inputs: vec![vecref(ElemType::I64), vecref(ElemType::F64)],
            out: out.clone(),
        }
        .encode();
        assert!(matches!(
            DeriveArgs::decode(&b),
            Err(AgentDecodeError::Expr(
                ExprError::Mismatch { .. } | ExprError::NoColumn { .. }
            ))
        ));
    }
}

#[test]
fn forged_counts_do_not_allocate() {
    // A list claiming 4 G chunks in a 9-byte message.
    let mut w = Writer::default();
    w.u8(3).u32(u32::MAX).u32(0);
    assert!(matches!(
        VecRef::decode(&w.buf),
        Err(AgentDecodeError::Truncated { .. })
    ));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = FilterArgs::decode(&bytes);
        let _ = GroupByResult::decode(&bytes);
        let _ = HtPutArgs::decode(&bytes);
        let _ = HtValues::decode(&bytes);
        let _ = HtScanArgs::decode(&bytes);
        let _ = Aggregates::decode(&bytes);
        let _ = CountArgs::decode(&bytes);
        let _ = DeriveArgs::decode(&bytes);
        let _ = GroupWhereArgs::decode(&bytes);
        let _ = GroupMedianResult::decode(&bytes);
    }
}

#[test]
fn spread_messages_roundtrip() {
    let vec = VecRef {
        ty: ElemType::F64,
        chunks: vec![(7, 100), (9, 3)],
    };
    roundtrip(&SlicedArgs {
        slices: vec![(u64::MAX, 7, 24)],
        op: op::VEC_AGGREGATE,
        args: vec.encode(),
    });
    roundtrip(&FilterRowsArgs {
        vec: vec.clone(),
        pred: Predicate::between(Scalar::F(-1.5), Scalar::F(2.0)),
        starts: vec![0, 4096],
    });
    roundtrip(&U64List(vec![1, 5, u64::MAX]));
    roundtrip(&GroupRankArgs {
        group: GroupByArgs {
            keys: VecRef {
                ty: ElemType::I32,
                chunks: vec![(1, 2)],
            },
            values: vec,
            limit: 9,
        },
        queries: vec![RankQuery {
            key: Scalar::I(-3),
            lo: 5,
            hi: 1 << 40,
            values: true,
            shift: 30,
        }],
    });
    roundtrip(&GroupRankResult(vec![RankAnswer {
        below: 3,
        above: 4,
        counts: vec![0, 2, 9],
    }]));
    // Order keys order values as their domain's total order does, and invert.
    let fs = [
        f64::NEG_INFINITY,
        -2.5,
        -0.0,
        0.0,
        1e-300,
        7.0,
        f64::INFINITY,
    ];
    let ks: Vec<u64> = fs.iter().map(|&x| order_key(Scalar::F(x))).collect();
    assert!(ks.windows(2).all(|w| w[0] < w[1]));
    for (&x, &k) in fs.iter().zip(&ks) {
        assert_eq!(from_order_key(Domain::Float, k), Scalar::F(x));
    }
    for x in [i64::MIN, -1, 0, 1, i64::MAX] {
        assert_eq!(
            from_order_key(Domain::Signed, order_key(Scalar::I(x))),
            Scalar::I(x)
        );
    }
    assert!(order_key(Scalar::I(-1)) < order_key(Scalar::I(0)));
}
