use super::*;
use std::cell::RefCell;

/// Objects in a map.
#[derive(Default)]
pub(crate) struct Mem(pub RefCell<HashMap<u64, Vec<u8>>>);

impl ChunkIo for Mem {
    fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), KernelError> {
        f(self.0.borrow().get(&id).ok_or(KernelError::NotFound(id))?);
        Ok(())
    }
    fn write(&self, id: u64, data: &[u8]) -> Result<(), KernelError> {
        self.0.borrow_mut().insert(id, data.to_vec());
        Ok(())
    }
}

impl Mem {
    /// Stores `bytes` as chunks of `per` elements starting at object `base`.
    pub(crate) fn vec(&self, ty: ElemType, bytes: &[u8], per: usize, base: u64) -> VecRef {
        let size = ty.size();
        let chunks = bytes
            .chunks(per * size)
            .enumerate()
            .map(|(i, c)| {
                self.write(base + i as u64, c).unwrap();
                (base + i as u64, (c.len() / size) as u32)
            })
            .collect();
        VecRef { ty, chunks }
    }

    pub(crate) fn read_vec(&self, out: &OutSpec, len: u64, size: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for &id in out
            .ids
            .iter()
            .take((len as usize).div_ceil(out.chunk_elems as usize))
        {
            v.extend_from_slice(&self.0.borrow()[&id]);
        }
        assert_eq!(v.len(), len as usize * size);
        v
    }
}

fn le<T: Copy, const N: usize>(xs: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    xs.iter().flat_map(|&x| f(x)).collect()
}

fn out(base: u64, n: usize, per: u32) -> OutSpec {
    OutSpec {
        chunk_elems: per,
        ids: (base..base + n as u64).collect(),
    }
}

#[test]
fn aggregate_matches_std_for_every_type() {
    let m = Mem::default();
    let xs: Vec<i16> = (0..1000)
        .map(|i| ((i * 7919) % 2001 - 1000) as i16)
        .collect();
    let v = m.vec(ElemType::I16, &le(&xs, i16::to_le_bytes), 64, 100);
    let a = aggregate(&m, &v).unwrap();
    assert_eq!(a.count, 1000);
    assert_eq!(a.sum, Sum::I(xs.iter().map(|&x| i128::from(x)).sum()));
    assert_eq!(a.min, Some(Scalar::I(i64::from(*xs.iter().min().unwrap()))));
    assert_eq!(a.max, Some(Scalar::I(i64::from(*xs.iter().max().unwrap()))));

    let us: Vec<u64> = vec![u64::MAX; 10];
    let v = m.vec(ElemType::U64, &le(&us, u64::to_le_bytes), 3, 200);
    assert_eq!(
        aggregate(&m, &v).unwrap().sum,
        Sum::U(u128::from(u64::MAX) * 10)
    );

    let fs: Vec<f32> = vec![1.5, f32::NAN, -2.0, 0.25];
    let v = m.vec(ElemType::F32, &le(&fs, f32::to_le_bytes), 3, 300);
    let a = aggregate(&m, &v).unwrap();
    assert_eq!(a.count, 4);
    assert!(a.sum.as_f64().is_nan());
    assert_eq!(a.min, Some(Scalar::F(-2.0)));
    assert_eq!(a.max, Some(Scalar::F(1.5)));

    let bytes: Vec<u8> = vec![5, 1, 255];
    let v = m.vec(ElemType::U8, &bytes, 2, 400);
    let a = aggregate(&m, &v).unwrap();
    assert_eq!((a.sum, a.mean()), (Sum::U(261), Some(87.0)));

    let empty = VecRef {
        ty: ElemType::F64,
        chunks: vec![],
    };
    let a = aggregate(&m, &empty).unwrap();
    assert_eq!((a.count, a.min, a.mean()), (0, None, None));
}

#[test]
fn float_sum_is_sequential_in_vector_order() {
    let m = Mem::default();
    let fs: Vec<f64> = (0..1000)
        .map(|i| 1.0 / f64::from(i + 1) * 1e10_f64.powi(i % 3))
        .collect();
    let v = m.vec(ElemType::F64, &le(&fs, f64::to_le_bytes), 7, 1);
    let mut seq = 0.0;
    for x in &fs {
        seq += x;
    }
    assert_eq!(aggregate(&m, &v).unwrap().sum, Sum::F(seq));
}

#[test]
fn filter_every_comparison() {
    let m = Mem::default();
    let xs: Vec<i32> = (0..500).map(|i| (i * 37) % 101 - 50).collect();
    let v = m.vec(ElemType::I32, &le(&xs, i32::to_le_bytes), 33, 1);
    for cmp in Cmp::ALL {
        let pred = Predicate {
            cmp,
            a: Scalar::I(-3),
            b: Scalar::I(20),
        };
        let o = out(1000, 100, 16);
        let n = filter(
            &m,
            &FilterArgs {
                vec: v.clone(),
                pred,
                out: o.clone(),
            },
        )
        .unwrap();
        let got = m.read_vec(&o, n, 8);
        let want: Vec<u8> = xs
            .iter()
            .enumerate()
            .filter(|&(_, &x)| matches(&pred, Scalar::I(i64::from(x))).unwrap())
            .flat_map(|(i, _)| (i as u64).to_le_bytes())
            .collect();
        assert_eq!(got, want, "{cmp:?}");
        let naive = |x: i32| match cmp {
            Cmp::Eq => x == -3,
            Cmp::Ne => x != -3,
            Cmp::Lt => x < -3,
            Cmp::Le => x <= -3,
            Cmp::Gt => x > -3,
            Cmp::Ge => x >= -3,
            Cmp::Between => (-3..=20).contains(&x),
        };
        assert_eq!(n as usize, xs.iter().filter(|&&x| naive(x)).count());
    }
}

#[test]
fn filter_rejects_bad_input() {
    let m = Mem::default();
    let v = m.vec(ElemType::U32, &le(&[1u32, 2, 3], u32::to_le_bytes), 2, 1);
    let args = |pred, o| FilterArgs {
        vec: v.clone(),
        pred,
        out: o,
    };
    // Operand in the wrong domain.
    let e = filter(
        &m,
        &args(Predicate::new(Cmp::Eq, Scalar::F(1.0)), out(10, 3, 2)),
    );
    assert!(matches!(e, Err(KernelError::TypeMismatch(_))));
    // Too few output ids.
    let e = filter(
        &m,
        &args(Predicate::new(Cmp::Ge, Scalar::U(0)), out(10, 1, 2)),
    );
    assert!(matches!(e, Err(KernelError::Invalid(_))));
    // Zero chunk size.
    let e = filter(
        &m,
        &args(Predicate::new(Cmp::Ge, Scalar::U(0)), out(10, 3, 0)),
    );
    assert!(matches!(e, Err(KernelError::Invalid(_))));
    // Missing chunk.
    let mut bad = v.clone();
    bad.chunks.push((999, 1));
    let e = aggregate(&m, &bad);
    assert!(matches!(e, Err(KernelError::NotFound(999))));
    // Chunk shorter than its count.
    let mut bad = v.clone();
    bad.chunks[0].1 = 3;
    assert!(matches!(
        aggregate(&m, &bad),
        Err(KernelError::ShortChunk { .. })
    ));
}

#[test]
fn gather_and_bounds() {
    let m = Mem::default();
    let xs: Vec<u16> = (0..100).map(|i| i * 3).collect();
    let src = m.vec(ElemType::U16, &le(&xs, u16::to_le_bytes), 9, 1);
    let idx: Vec<u64> = vec![99, 0, 5, 5, 42];
    let iv = m.vec(ElemType::U64, &le(&idx, u64::to_le_bytes), 2, 100);
    let o = out(1000, 3, 2);
    let n = gather(
        &m,
        &GatherArgs {
            src: src.clone(),
            idx: iv,
            out: o.clone(),
        },
    )
    .unwrap();
    let want: Vec<u8> = idx
        .iter()
        .flat_map(|&i| xs[i as usize].to_le_bytes())
        .collect();
    assert_eq!(m.read_vec(&o, n, 2), want);

    let bad_idx = m.vec(ElemType::U64, &le(&[100u64], u64::to_le_bytes), 2, 200);
    let e = gather(
        &m,
        &GatherArgs {
            src: src.clone(),
            idx: bad_idx,
            out: o.clone(),
        },
    );
    assert!(matches!(e, Err(KernelError::IndexOutOfBounds { .. })));
    let wrong_ty = m.vec(ElemType::U32, &le(&[1u32], u32::to_le_bytes), 2, 300);
    let e = gather(
        &m,
        &GatherArgs {
            src,
            idx: wrong_ty,
            out: o,
        },
    );
    assert!(matches!(e, Err(KernelError::TypeMismatch(_))));
}

#[test]
fn unique_sorted_and_limited() {
    let m = Mem::default();
    let fs = [2.0f64, -0.0, 0.0, 2.0, f64::NAN, -1.0];
    let v = m.vec(ElemType::F64, &le(&fs, f64::to_le_bytes), 4, 1);
    let u = unique(
        &m,
        &UniqueArgs {
            vec: v.clone(),
            limit: 10,
        },
    )
    .unwrap();
    let got: Vec<u64> = u.values.iter().map(|s| s.bits()).collect();
    let want: Vec<u64> = [-1.0, -0.0, 0.0, 2.0, f64::NAN]
        .iter()
        .map(|x: &f64| x.to_bits())
        .collect();
    assert_eq!(got, want);
    let e = unique(&m, &UniqueArgs { vec: v, limit: 4 });
    assert!(matches!(e, Err(KernelError::TooManyGroups { limit: 4 })));
}

#[test]
fn group_by_matches_naive() {
    let m = Mem::default();
    let keys: Vec<i8> = (0..300).map(|i| (i % 7 - 3) as i8).collect();
    let vals: Vec<f64> = (0..300).map(|i| f64::from(i) * 0.1).collect();
    let kv = m.vec(ElemType::I8, &le(&keys, i8::to_le_bytes), 50, 1);
    let vv = m.vec(ElemType::F64, &le(&vals, f64::to_le_bytes), 17, 100);
    let r = group_by(
        &m,
        &GroupByArgs {
            keys: kv.clone(),
            values: vv.clone(),
            limit: 7,
        },
    )
    .unwrap();
    assert_eq!(r.groups.len(), 7);
    for (g, (k, a)) in r.groups.iter().enumerate() {
        assert_eq!(*k, Scalar::I(g as i64 - 3));
        let mut sum = 0.0;
        let mut n = 0;
        for (kk, v) in keys.iter().zip(&vals) {
            if i64::from(*kk) == g as i64 - 3 {
                sum += v;
                n += 1;
            }
        }
        assert_eq!((a.count, a.sum), (n, Sum::F(sum)));
    }
    let e = group_by(
        &m,
        &GroupByArgs {
            keys: kv.clone(),
            values: vv,
            limit: 6,
        },
    );
    assert!(matches!(e, Err(KernelError::TooManyGroups { limit: 6 })));
    let short = m.vec(ElemType::F64, &le(&vals[..299], f64::to_le_bytes), 17, 500);
    let e = group_by(
        &m,
        &GroupByArgs {
            keys: kv,
            values: short,
            limit: 7,
        },
    );
    assert!(matches!(e, Err(KernelError::LengthMismatch { .. })));
}

#[test]
fn argsort_is_stable() {
    let m = Mem::default();
    let xs: Vec<u32> = (0..200).map(|i| (i * 13) % 17).collect();
    let v = m.vec(ElemType::U32, &le(&xs, u32::to_le_bytes), 30, 1);
    let o = out(1000, 20, 16);
    let n = argsort(
        &m,
        &ArgsortArgs {
            vec: v,
            out: o.clone(),
        },
    )
    .unwrap();
    let mut want: Vec<u64> = (0..200).collect();
    want.sort_by_key(|&i| xs[i as usize]);
    assert_eq!(m.read_vec(&o, n, 8), le(&want, u64::to_le_bytes));
}

#[test]
fn count_matches_filter_length() {
    let m = Mem::default();
    let xs: Vec<f64> = (0..777).map(|i| f64::from(i % 50) - 0.5).collect();
    let v = m.vec(ElemType::F64, &le(&xs, f64::to_le_bytes), 40, 1);
    for cmp in Cmp::ALL {
        let pred = Predicate {
            cmp,
            a: Scalar::F(10.0),
            b: Scalar::F(20.0),
        };
        let o = out(1000, 100, 16);
        let n = filter(
            &m,
            &FilterArgs {
                vec: v.clone(),
                pred,
                out: o,
            },
        )
        .unwrap();
        let c = count(
            &m,
            &CountArgs {
                vec: v.clone(),
                pred,
            },
        )
        .unwrap();
        assert_eq!(c, n, "{cmp:?}");
    }
    let bad = CountArgs {
        vec: v,
        pred: Predicate::new(Cmp::Eq, Scalar::I(1)),
    };
    assert!(matches!(count(&m, &bad), Err(KernelError::TypeMismatch(_))));
}

#[test]
fn group_where_and_median_match_naive() {
    let m = Mem::default();
    let n = 3000usize;
    let keys: Vec<u8> = (0..n).map(|i| (i * 7 % 5) as u8).collect();
    let vals: Vec<i64> = (0..n).map(|i| ((i * 7919) % 1000) as i64 - 300).collect();
    let mask: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
    let kv = m.vec(ElemType::U8, &keys, 1000, 1);
    let vv = m.vec(ElemType::I64, &le(&vals, i64::to_le_bytes), 128, 100);
    let mv = m.vec(ElemType::U32, &le(&mask, u32::to_le_bytes), 500, 200);
    let group = GroupByArgs {
        keys: kv.clone(),
        values: vv.clone(),
        limit: 5,
    };
    let args = GroupWhereArgs {
        group: group.clone(),
        mask: mv.clone(),
        pred: Predicate::new(Cmp::Eq, Scalar::U(1)),
    };
    let r = group_by_where(&m, &args).unwrap();
    assert_eq!(r.groups.len(), 5);
    for (k, a) in &r.groups {
        let Scalar::U(k) = *k else { panic!() };
        let sel: Vec<i64> = (0..n)
            .filter(|&i| mask[i] == 1 && u64::from(keys[i]) == k)
            .map(|i| vals[i])
            .collect();
        assert_eq!(a.count, sel.len() as u64);
        assert_eq!(a.sum, Sum::I(sel.iter().map(|&x| i128::from(x)).sum()));
    }
    let med = group_median(&m, &group).unwrap();
    for (k, a, md) in &med.groups {
        let Scalar::U(k) = *k else { panic!() };
        let mut sel: Vec<i64> = (0..n)
            .filter(|&i| u64::from(keys[i]) == k)
            .map(|i| vals[i])
            .collect();
        sel.sort();
        assert_eq!(a.count, sel.len() as u64);
        let (lo, hi) = (sel[(sel.len() - 1) / 2], sel[sel.len() / 2]);
        assert_eq!(*md, Some((Scalar::I(lo), Scalar::I(hi))));
    }
    // Bad input: limit, mask length, mask operand domain.
    let mut few = args.clone();
    few.group.limit = 4;
    assert!(matches!(
        group_by_where(&m, &few),
        Err(KernelError::TooManyGroups { limit: 4 })
    ));
    let mut short = args.clone();
    short.mask = m.vec(ElemType::U32, &le(&mask[..10], u32::to_le_bytes), 500, 300);
    assert!(matches!(
        group_by_where(&m, &short),
        Err(KernelError::LengthMismatch { .. })
    ));
    let mut dom = args;
    dom.pred = Predicate::new(Cmp::Eq, Scalar::F(1.0));
    assert!(matches!(
        group_by_where(&m, &dom),
        Err(KernelError::TypeMismatch(_))
    ));
    let mut unequal = group;
    unequal.values = m.vec(ElemType::I64, &le(&vals[..5], i64::to_le_bytes), 128, 400);
    assert!(matches!(
        group_median(&m, &unequal),
        Err(KernelError::LengthMismatch { .. })
    ));
}

/// The specialised paths (byte value counts, direct-table keys, counted medians) give the
/// general path's answers: the same data as `u8` and as `u16` (never specialised for value
/// counts), keys mixing small and large values, medians of narrow and wide ranges.
#[test]
fn fast_group_paths_match_general_ones() {
    let m = Mem::default();
    let n = 5000usize;
    let bytes: Vec<u8> = (0..n).map(|i| ((i * 31) % 251) as u8 ^ 0x80).collect();
    let wide: Vec<u16> = bytes.iter().map(|&b| u16::from(b)).collect();
    let mask: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    let b8 = m.vec(ElemType::U8, &bytes, 700, 1);
    let b16 = m.vec(ElemType::U16, &le(&wide, u16::to_le_bytes), 300, 100);
    let mv = m.vec(ElemType::U8, &mask, 999, 200);
    let by_itself = |v: &VecRef, limit| GroupByArgs {
        keys: v.clone(),
        values: v.clone(),
        limit,
    };
    // Groups without the element type (u8 or u16).
    let strip = |r: GroupByResult| -> Vec<_> {
        r.groups
            .into_iter()
            .map(|(k, a)| (k, a.count, a.sum, a.min, a.max))
            .collect()
    };
    let plain8 = strip(group_by(&m, &by_itself(&b8, 300)).unwrap());
    let plain16 = strip(group_by(&m, &by_itself(&b16, 300)).unwrap());
    assert_eq!(plain8, plain16);
    assert_eq!(plain8.len(), 251);
    for pred in [
        Predicate::new(Cmp::Eq, Scalar::U(1)),
        Predicate::new(Cmp::Ne, Scalar::U(1)),
    ] {
        let masked = |v: &VecRef| {
            let group = by_itself(v, 300);
            let mask = mv.clone();
            strip(group_by_where(&m, &GroupWhereArgs { group, mask, pred }).unwrap())
        };
        assert_eq!(masked(&b8), masked(&b16));
    }
    assert!(group_by(&m, &by_itself(&b8, 250)).is_err());
    // Keys below and above the direct table, values of a narrow and of a wide range.
    let keys: Vec<i64> = (0..n as i64)
        .map(|i| {
            if i % 2 == 0 {
                i % 5
            } else {
                -1_000_000 * (i % 3)
            }
        })
        .collect();
    let kv = m.vec(ElemType::I64, &le(&keys, i64::to_le_bytes), 256, 300);
    for spread in [7i64, 1 << 40] {
        let vals: Vec<i64> = (0..n as i64).map(|i| (i * 7919 % 1013) * spread).collect();
        let vv = m.vec(ElemType::I64, &le(&vals, i64::to_le_bytes), 100, 400);
        let r = group_median(
            &m,
            &GroupByArgs {
                keys: kv.clone(),
                values: vv,
                limit: 10,
            },
        )
        .unwrap();
        let mut distinct: Vec<i64> = keys.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(r.groups.len(), distinct.len());
        for ((k, a, md), want_k) in r.groups.iter().zip(&distinct) {
            assert_eq!(*k, Scalar::I(*want_k));
            let mut sel: Vec<i64> = (0..n)
                .filter(|&i| keys[i] == *want_k)
                .map(|i| vals[i])
                .collect();
            sel.sort();
            assert_eq!(a.count, sel.len() as u64);
            assert_eq!(a.min, Some(Scalar::I(sel[0])));
            let (lo, hi) = (sel[(sel.len() - 1) / 2], sel[sel.len() / 2]);
            assert_eq!(*md, Some((Scalar::I(lo), Scalar::I(hi))));
        }
    }
    // Unique with small and large values.
    let u = unique(&m, &UniqueArgs { vec: kv, limit: 8 }).unwrap();
    let got: Vec<Scalar> = u.values;
    assert_eq!(
        got,
        [-2_000_000, -1_000_000, 0, 1, 2, 3, 4]
            .map(Scalar::I)
            .to_vec()
    );
}

/// Timings of the taxi-sized kernels (run by hand: `cargo test --release -p farmem-server
/// kernel_timings -- --ignored --nocapture`).
#[test]
#[ignore = "timing, run by hand"]
fn kernel_timings() {
    use farmem_proto::agent::DeriveArgs;
    use farmem_proto::expr::{Expr, Type};
    let m = Mem::default();
    let n = 4_000_000usize;
    let keys: Vec<u8> = (0..n).map(|i| (i % 7) as u8 + 1).collect();
    let vals: Vec<i64> = (0..n).map(|i| ((i * 7919) % 3000) as i64).collect();
    let kv = m.vec(ElemType::U8, &keys, 65536, 1);
    let vv = m.vec(ElemType::I64, &le(&vals, i64::to_le_bytes), 8192, 1000);
    let fl: Vec<f64> = (0..n).map(|i| (i % 1000) as f64 * 0.01 - 74.0).collect();
    let fv = m.vec(ElemType::F64, &le(&fl, f64::to_le_bytes), 8192, 1 << 30);
    // The taxi application's haversine distance in km of columns (lon1, lat1, lon2, lat2).
    let haversine = || {
        let (p1, p2) = (Expr::col(1).to_radians(), Expr::col(3).to_radians());
        let dp = p2.clone().sub(p1.clone());
        let dl = Expr::col(2).sub(Expr::col(0)).to_radians();
        let half = Expr::lit_f64(2.0);
        let s1 = dp.div(half.clone()).sin();
        let s2 = dl.div(half).sin();
        let a = s1
            .clone()
            .mul(s1)
            .add(p1.cos().mul(p2.cos()).mul(s2.clone().mul(s2)));
        Expr::lit_f64(2.0 * 6371.0).mul(a.sqrt().asin())
    };
    let args = GroupByArgs {
        keys: kv.clone(),
        values: vv.clone(),
        limit: 100,
    };
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let r = group_median(&m, &args).unwrap();
        eprintln!("group_median {:?} {}", t.elapsed(), r.groups.len());
        let t = std::time::Instant::now();
        let r = group_by(&m, &args).unwrap();
        eprintln!("group_by {:?} {}", t.elapsed(), r.groups.len());
        let t = std::time::Instant::now();
        let r = aggregate(&m, &vv).unwrap();
        eprintln!("aggregate {:?} {}", t.elapsed(), r.count);
        for (name, expr, inputs, base) in [
            (
                "month",
                Expr::col(0).month().cast(Type::U8),
                vec![vv.clone()],
                1u64 << 40,
            ),
            (
                "diff",
                Expr::col(1).sub(Expr::col(0)),
                vec![vv.clone(), vv.clone()],
                1 << 41,
            ),
            (
                "hour",
                Expr::col(0).hour().cast(Type::U8),
                vec![vv.clone()],
                1 << 42,
            ),
            (
                "haversine",
                haversine(),
                vec![fv.clone(), fv.clone(), fv.clone(), fv.clone()],
                1 << 43,
            ),
        ] {
            let out = out(base, n / 8192 + 1, 8192);
            let t = std::time::Instant::now();
            let args = DeriveArgs { expr, inputs, out };
            let d = crate::derive::derive(&m, &args).unwrap();
            eprintln!("derive {name} {:?} {d}", t.elapsed());
        }
    }
}
