//! Tests of the agent entry point against an in-memory context.

use std::collections::HashMap;
use std::sync::Mutex;

use farmem_proto::agent::{
    AgentDecodeError, AgentMessage, Aggregates, ArgsortArgs, Cmp, ElemType, FilterArgs, GatherArgs,
    GroupByArgs, GroupByResult, HtKeysArgs, HtPutArgs, HtScanArgs, HtScanResult, HtValue, HtValues,
    OutSpec, Predicate, Scalar, Sum, UniqueArgs, UniqueResult, VecRef, op,
};

use farmem_kernels::KernelError;

use super::{AgentContext, AgentError, AgentState, execute, tables::ENTRY_OVERHEAD};

/// A session with a capacity.
pub(super) struct Ctx {
    pub(super) objects: Mutex<HashMap<u64, Vec<u8>>>,
    used: Mutex<i64>,
    capacity: i64,
    state: AgentState,
}

impl Ctx {
    pub(super) fn new(capacity: i64) -> Self {
        Self {
            objects: Mutex::default(),
            used: Mutex::new(0),
            capacity,
            state: AgentState::default(),
        }
    }

    fn vec_u64(&self, xs: &[u64], per: usize, base: u64) -> VecRef {
        let chunks = xs
            .chunks(per)
            .enumerate()
            .map(|(i, c)| {
                let id = base + i as u64;
                let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
                self.put_object(id, &bytes).unwrap();
                (id, c.len() as u32)
            })
            .collect();
        VecRef {
            ty: ElemType::U64,
            chunks,
        }
    }

    fn read_u64s(&self, ids: &[u64], len: u64) -> Vec<u64> {
        let objs = self.objects.lock().unwrap();
        let mut v: Vec<u64> = Vec::new();
        for id in ids {
            if let Some(o) = objs.get(id) {
                v.extend(
                    o.chunks(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap())),
                );
            }
        }
        assert_eq!(v.len() as u64, len);
        v
    }
}

impl AgentContext for Ctx {
    fn with_object(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), AgentError> {
        f(self
            .objects
            .lock()
            .unwrap()
            .get(&id)
            .ok_or(AgentError::not_found(id))?);
        Ok(())
    }
    fn put_object(&self, id: u64, data: &[u8]) -> Result<(), AgentError> {
        self.charge(data.len() as i64)?;
        self.objects.lock().unwrap().insert(id, data.to_vec());
        Ok(())
    }
    fn charge(&self, delta: i64) -> Result<(), AgentError> {
        let mut used = self.used.lock().unwrap();
        let after = *used + delta;
        if delta > 0 && after > self.capacity {
            return Err(AgentError::out_of_capacity(
                delta as u64,
                (self.capacity - *used) as u64,
            ));
        }
        *used = after;
        Ok(())
    }
    fn state(&self) -> &AgentState {
        &self.state
    }
}

fn call<R: AgentMessage>(ctx: &Ctx, op: u16, args: &impl AgentMessage) -> Result<R, AgentError> {
    let out = execute(ctx, op, &args.encode())?;
    Ok(R::decode(&out).expect("server answers decode"))
}

#[test]
fn vector_ops_through_execute() {
    let ctx = Ctx::new(i64::MAX);
    let xs: Vec<u64> = (0..1000).map(|i| (i * 7) % 100).collect();
    let v = ctx.vec_u64(&xs, 64, 1);
    let a: Aggregates = call(&ctx, op::VEC_AGGREGATE, &v).unwrap();
    assert_eq!(a.sum, Sum::U(xs.iter().map(|&x| u128::from(x)).sum()));
    assert_eq!((a.min, a.max), (Some(Scalar::U(0)), Some(Scalar::U(99))));

    let out = OutSpec {
        chunk_elems: 100,
        ids: (500..520).collect(),
    };
    let n: u64 = call(
        &ctx,
        op::VEC_FILTER,
        &FilterArgs {
            vec: v.clone(),
            pred: Predicate::new(Cmp::Lt, Scalar::U(10)),
            out: out.clone(),
        },
    )
    .unwrap();
    let idx = ctx.read_u64s(&out.ids, n);
    let want: Vec<u64> = (0..1000).filter(|&i| xs[i as usize] < 10).collect();
    assert_eq!(idx, want);

    let idx_vec = VecRef {
        ty: ElemType::U64,
        chunks: out.ids[..(n as usize).div_ceil(100)]
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, (n - i as u64 * 100).min(100) as u32))
            .collect(),
    };
    let gout = OutSpec {
        chunk_elems: 50,
        ids: (600..700).collect(),
    };
    let g: u64 = call(
        &ctx,
        op::VEC_GATHER,
        &GatherArgs {
            src: v.clone(),
            idx: idx_vec,
            out: gout.clone(),
        },
    )
    .unwrap();
    let gathered = ctx.read_u64s(&gout.ids, g);
    assert!(gathered.iter().all(|&x| x < 10));
    assert_eq!(gathered.len(), want.len());

    let u: UniqueResult = call(
        &ctx,
        op::VEC_UNIQUE,
        &UniqueArgs {
            vec: v.clone(),
            limit: 1000,
        },
    )
    .unwrap();
    assert_eq!(u.values, (0..100).map(Scalar::U).collect::<Vec<_>>());

    let g: GroupByResult = call(
        &ctx,
        op::VEC_GROUP_BY,
        &GroupByArgs {
            keys: v.clone(),
            values: v.clone(),
            limit: 100,
        },
    )
    .unwrap();
    assert_eq!(g.groups.len(), 100);
    assert_eq!(g.groups[3].1.sum, Sum::U(3 * 10));

    let sout = OutSpec {
        chunk_elems: 256,
        ids: (800..804).collect(),
    };
    let n: u64 = call(
        &ctx,
        op::VEC_ARGSORT,
        &ArgsortArgs {
            vec: v,
            out: sout.clone(),
        },
    )
    .unwrap();
    let perm = ctx.read_u64s(&sout.ids, n);
    assert!(
        perm.windows(2)
            .all(|w| xs[w[0] as usize] <= xs[w[1] as usize])
    );
}

#[test]
fn bad_requests_are_errors() {
    let ctx = Ctx::new(i64::MAX);
    assert!(matches!(
        execute(&ctx, 999, &[]),
        Err(AgentError::UnknownOp(999))
    ));
    assert!(matches!(
        execute(&ctx, op::VEC_AGGREGATE, &[1, 2]),
        Err(AgentError::Malformed(_))
    ));
    let missing = VecRef {
        ty: ElemType::U64,
        chunks: vec![(42, 1)],
    };
    assert!(matches!(
        execute(&ctx, op::VEC_AGGREGATE, &missing.encode()),
        Err(AgentError::Kernel(KernelError::NotFound(42)))
    ));
    // A chunk that is too short for its count.
    let v = ctx.vec_u64(&[1, 2], 2, 1);
    let mut lie = v.clone();
    lie.chunks[0].1 = 3;
    assert!(matches!(
        execute(&ctx, op::VEC_AGGREGATE, &lie.encode()),
        Err(AgentError::Kernel(KernelError::ShortChunk { .. }))
    ));
    // Arbitrary bytes for every operation never panic.
    for op in 0..64 {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + op) as u8).collect();
            let _ = execute(&ctx, op as u16, &junk);
        }
    }
}

fn put(
    ctx: &Ctx,
    table: u64,
    entries: &[(&[u8], &[u8])],
    return_old: bool,
) -> Result<HtValues, AgentError> {
    call(
        ctx,
        op::HT_PUT,
        &HtPutArgs {
            table,
            return_old,
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        },
    )
}

fn keys(table: u64, ks: &[&[u8]]) -> HtKeysArgs {
    HtKeysArgs {
        table,
        keys: ks.iter().map(|k| k.to_vec()).collect(),
    }
}

#[test]
fn hash_table_ops() {
    let ctx = Ctx::new(i64::MAX);
    let r = put(&ctx, 1, &[(b"a", b"1"), (b"b", b"2")], true).unwrap();
    assert_eq!(r.values, vec![HtValue::Absent, HtValue::Absent]);
    let r = put(&ctx, 1, &[(b"a", b"one")], true).unwrap();
    assert_eq!(r.values, vec![HtValue::Value(b"1".to_vec())]);
    let r = put(&ctx, 1, &[(b"b", b"two")], false).unwrap();
    assert_eq!(r.values, vec![HtValue::Present]);
    let g: HtValues = call(&ctx, op::HT_GET, &keys(1, &[b"a", b"zz", b"b"])).unwrap();
    assert_eq!(
        g.values,
        vec![
            HtValue::Value(b"one".to_vec()),
            HtValue::Absent,
            HtValue::Value(b"two".to_vec())
        ]
    );
    // Another table is separate.
    let g: HtValues = call(&ctx, op::HT_GET, &keys(2, &[b"a"])).unwrap();
    assert_eq!(g.values, vec![HtValue::Absent]);
    let n: u64 = call(&ctx, op::HT_LEN, &1u64).unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        *ctx.used.lock().unwrap() as u64,
        ctx.state.charged_bytes(),
        "charges are tracked"
    );
    assert_eq!(
        ctx.state.charged_bytes(),
        2 * ENTRY_OVERHEAD + 1 + 3 + 1 + 3
    );
    let r: HtValues = call(&ctx, op::HT_REMOVE, &keys(1, &[b"a", b"a"])).unwrap();
    assert_eq!(
        r.values,
        vec![HtValue::Value(b"one".to_vec()), HtValue::Absent]
    );
    let n: u64 = call(&ctx, op::HT_DROP, &1u64).unwrap();
    assert_eq!(n, 1);
    assert_eq!(*ctx.used.lock().unwrap(), 0);
    assert_eq!(ctx.state.charged_bytes(), 0);
}

#[test]
fn hash_table_batch_is_all_or_nothing() {
    let ctx = Ctx::new(3 * ENTRY_OVERHEAD as i64 + 10);
    put(&ctx, 1, &[(b"a", b"1")], false).unwrap();
    let before = *ctx.used.lock().unwrap();
    let e = put(
        &ctx,
        1,
        &[(b"a", b"x"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")],
        false,
    );
    assert!(matches!(
        e,
        Err(AgentError::Kernel(KernelError::OutOfCapacity { .. }))
    ));
    assert_eq!(*ctx.used.lock().unwrap(), before);
    let g: HtValues = call(&ctx, op::HT_GET, &keys(1, &[b"a", b"b"])).unwrap();
    assert_eq!(
        g.values,
        vec![HtValue::Value(b"1".to_vec()), HtValue::Absent]
    );
}

#[test]
fn hash_table_scan_pages_through_everything() {
    let ctx = Ctx::new(i64::MAX);
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..100u32)
        .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; 3]))
        .collect();
    let refs: Vec<(&[u8], &[u8])> = entries.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    put(&ctx, 9, &refs, false).unwrap();
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page: HtScanResult = call(
            &ctx,
            op::HT_SCAN,
            &HtScanArgs {
                table: 9,
                max: 7,
                after: after.clone(),
            },
        )
        .unwrap();
        assert!(page.entries.len() <= 7);
        after = page.entries.last().map(|(k, _)| k.clone());
        seen.extend(page.entries);
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, entries);
}

#[test]
fn new_vector_ops_validate_their_input() {
    use farmem_proto::agent::{CountArgs, DeriveArgs, GroupWhereArgs};
    use farmem_proto::expr::Expr;
    let ctx = Ctx::new(i64::MAX);
    let xs: Vec<u64> = (0..100).collect();
    let v = ctx.vec_u64(&xs, 16, 1);
    // Malformed messages, for every new operation.
    for opn in [
        op::VEC_COUNT,
        op::VEC_DERIVE,
        op::VEC_GROUP_BY_WHERE,
        op::VEC_GROUP_MEDIAN,
    ] {
        assert!(matches!(
            execute(&ctx, opn, &[9, 9, 9]),
            Err(AgentError::Malformed(_) | AgentError::Kernel(_))
        ));
    }
    let n: u64 = call(
        &ctx,
        op::VEC_COUNT,
        &CountArgs {
            vec: v.clone(),
            pred: Predicate::new(Cmp::Lt, Scalar::U(10)),
        },
    )
    .unwrap();
    assert_eq!(n, 10);
    // An unsigned input to a float function (rejected when decoded); a missing chunk in a mask.
    let e = call::<u64>(
        &ctx,
        op::VEC_DERIVE,
        &DeriveArgs {
            expr: Expr::col(0).sqrt(),
            inputs: vec![v.clone()],
            out: OutSpec {
                chunk_elems: 64,
                ids: vec![500, 501],
            },
        },
    );
    assert!(matches!(
        e,
        Err(AgentError::Malformed(AgentDecodeError::Expr(_)))
    ));
    let mut missing = v.clone();
    missing.chunks[2].0 = 9_999;
    let e = call::<GroupByResult>(
        &ctx,
        op::VEC_GROUP_BY_WHERE,
        &GroupWhereArgs {
            group: GroupByArgs {
                keys: v.clone(),
                values: v,
                limit: 1000,
            },
            mask: missing,
            pred: Predicate::new(Cmp::Eq, Scalar::U(1)),
        },
    );
    assert!(matches!(
        e,
        Err(AgentError::Kernel(KernelError::NotFound(9_999)))
    ));
}

/// A derived vector computed on several threads equals the one-thread result, for inputs of
/// different chunkings and an output whose chunks do not line up with them.
#[test]
fn parallel_derive_equals_sequential() {
    use farmem_proto::agent::DeriveArgs;
    use farmem_proto::expr::Expr;
    let ctx = Ctx::new(i64::MAX);
    let n = 700_001usize;
    let a: Vec<i64> = (0..n as i64).map(|i| 1_451_606_400 + i * 37).collect();
    let b: Vec<i64> = a.iter().map(|&t| t + t % 4_099).collect();
    let store = |xs: &[i64], per: usize, base: u64| {
        let chunks = xs
            .chunks(per)
            .enumerate()
            .map(|(i, c)| {
                let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
                ctx.put_object(base + i as u64, &bytes).unwrap();
                (base + i as u64, c.len() as u32)
            })
            .collect();
        VecRef {
            ty: ElemType::I64,
            chunks,
        }
    };
    let (va, vb) = (store(&a, 1_000, 1 << 20), store(&b, 777, 2 << 20));
    let want: Vec<u64> = a.iter().zip(&b).map(|(x, y)| (y - x) as u64).collect();
    for threads in [1, 2, 3, 4] {
        let base = (10 + threads as u64) << 20;
        let out = OutSpec {
            chunk_elems: 4_096,
            ids: (base..base + 200).collect(),
        };
        let args = DeriveArgs {
            expr: Expr::col(1).sub(Expr::col(0)),
            inputs: vec![va.clone(), vb.clone()],
            out: out.clone(),
        };
        let len = super::derive::derive_parallel(&super::CtxIo(&ctx), &args, threads).unwrap();
        assert_eq!(len, n as u64);
        assert_eq!(ctx.read_u64s(&out.ids, len), want, "{threads} threads");
    }
    // Through the entry point, and a bad request is still an error.
    let out = OutSpec {
        chunk_elems: 4_096,
        ids: (30 << 20..(30 << 20) + 200).collect(),
    };
    let args = DeriveArgs {
        expr: Expr::col(1).sub(Expr::col(0)),
        inputs: vec![va.clone(), vb],
        out: out.clone(),
    };
    let len: u64 = call(&ctx, op::VEC_DERIVE, &args).unwrap();
    assert_eq!(ctx.read_u64s(&out.ids, len), want);
    let short = DeriveArgs {
        expr: Expr::col(1).sub(Expr::col(0)),
        inputs: vec![va, store(&a[..10], 1_000, 40 << 20)],
        out,
    };
    assert!(call::<u64>(&ctx, op::VEC_DERIVE, &short).is_err());
}

/// Group-bys, masked group-bys and group medians split over threads equal the one-thread
/// results (integer values merge exactly; float values stay on one thread).
#[test]
fn parallel_group_ops_equal_sequential() {
    use super::kernels;
    use farmem_proto::agent::GroupWhereArgs;
    let ctx = Ctx::new(i64::MAX);
    let io = super::CtxIo(&ctx);
    let n = 600_003usize;
    let store = |bytes: Vec<u8>, ty: ElemType, per: usize, base: u64| {
        let size = ty.size();
        let chunks = bytes
            .chunks(per * size)
            .enumerate()
            .map(|(i, c)| {
                ctx.put_object(base + i as u64, c).unwrap();
                (base + i as u64, (c.len() / size) as u32)
            })
            .collect();
        VecRef { ty, chunks }
    };
    let bytes: Vec<u8> = (0..n).map(|i| ((i * 7) % 13) as u8).collect();
    let b8 = store(bytes, ElemType::U8, 65_536, 1 << 20);
    let wide: Vec<u8> = (0..n as i64)
        .flat_map(|i| (if i % 5 == 0 { -(i % 3) << 40 } else { i % 9 }).to_le_bytes())
        .collect();
    let k64 = store(wide, ElemType::I64, 5_000, 2 << 20);
    let vals: Vec<u8> = (0..n as i64)
        .flat_map(|i| ((i * 7_919) % 100_003 - 50_000).to_le_bytes())
        .collect();
    let v64 = store(vals, ElemType::I64, 8_192, 3 << 20);
    let floats: Vec<u8> = (0..n)
        .flat_map(|i| (i as f64 * 0.37).to_le_bytes())
        .collect();
    let f64s = store(floats, ElemType::F64, 8_192, 4 << 20);
    let mask: Vec<u8> = (0..n as u32).flat_map(|i| (i % 3).to_le_bytes()).collect();
    let m32 = store(mask, ElemType::U32, 16_384, 5 << 20);
    for (keys, values) in [(&b8, &b8), (&b8, &v64), (&k64, &v64), (&k64, &f64s)] {
        let g = GroupByArgs {
            keys: keys.clone(),
            values: values.clone(),
            limit: 100,
        };
        let w = GroupWhereArgs {
            group: g.clone(),
            mask: m32.clone(),
            pred: Predicate::new(Cmp::Ne, Scalar::U(1)),
        };
        let one = kernels::group_by(&io, &g).unwrap();
        let one_w = kernels::group_by_where(&io, &w).unwrap();
        let one_m = kernels::group_median(&io, &g).unwrap();
        assert!(one.groups.len() > 5);
        for threads in [2, 3] {
            assert_eq!(kernels::group_by_parallel(&io, &g, threads).unwrap(), one);
            assert_eq!(
                kernels::group_by_where_parallel(&io, &w, threads).unwrap(),
                one_w
            );
            assert_eq!(
                kernels::group_median_parallel(&io, &g, threads).unwrap(),
                one_m
            );
        }
        // Too many groups is an error on any number of threads.
        let few = GroupByArgs { limit: 3, ..g };
        assert!(kernels::group_median_parallel(&io, &few, 2).is_err());
        assert!(kernels::group_by_parallel(&io, &few, 2).is_err());
    }
}

/// `count` and a masked group-by (which choose their comparison once per call) agree with
/// [`super::kernels::matches`] (the per-element test) for every comparison.
#[test]
fn counts_and_masks_agree_with_matches_for_every_comparison() {
    use farmem_proto::agent::{CountArgs, GroupWhereArgs};
    let ctx = Ctx::new(i64::MAX);
    let xs: Vec<u64> = (0..1_000u64).map(|i| (i * 37) % 23).collect();
    let v = ctx.vec_u64(&xs, 128, 1);
    for cmp in [
        Cmp::Eq,
        Cmp::Ne,
        Cmp::Lt,
        Cmp::Le,
        Cmp::Gt,
        Cmp::Ge,
        Cmp::Between,
    ] {
        let pred = Predicate {
            cmp,
            a: Scalar::U(7),
            b: Scalar::U(15),
        };
        let want = xs
            .iter()
            .filter(|&&x| super::kernels::matches(&pred, Scalar::U(x)).unwrap())
            .count() as u64;
        let n: u64 = call(
            &ctx,
            op::VEC_COUNT,
            &CountArgs {
                vec: v.clone(),
                pred,
            },
        )
        .unwrap();
        assert_eq!(n, want, "{cmp:?}");
        let g: GroupByResult = call(
            &ctx,
            op::VEC_GROUP_BY_WHERE,
            &GroupWhereArgs {
                group: GroupByArgs {
                    keys: v.clone(),
                    values: v.clone(),
                    limit: 100,
                },
                mask: v.clone(),
                pred,
            },
        )
        .unwrap();
        assert_eq!(g.groups.iter().map(|(_, a)| a.count).sum::<u64>(), want);
    }
}

/// CPU time of a table copy as repair runs it: `HT_SCAN` pages of 1,024 entries from a
/// 1 M-entry table of 8-byte keys and values, each page written to a fresh table with
/// `HT_PUT` (`cargo test --release -p farmem-store --lib measure_table_copy -- --ignored
/// --nocapture`).
#[test]
#[ignore = "a measurement"]
fn measure_table_copy() {
    let (src, dst) = (Ctx::new(i64::MAX), Ctx::new(i64::MAX));
    let n = 1u64 << 20;
    for chunk in (0..n).collect::<Vec<_>>().chunks(4096) {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = chunk
            .iter()
            .map(|&i| {
                let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (k.to_le_bytes().to_vec(), i.to_le_bytes().to_vec())
            })
            .collect();
        let refs: Vec<(&[u8], &[u8])> = entries.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        put(&src, 1, &refs, false).unwrap();
    }
    // The thread's CPU time in seconds (the machine may be shared: wall time would count others).
    let cpu = || {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // utime and stime are fields 14 and 15 of the whole line (11 and 12 after the name).
        (f.get(10).copied().unwrap_or(0.0) + f.get(11).copied().unwrap_or(0.0)) / 100.0
    };
    let mut pages = Vec::new();
    let mut after = None;
    let t = cpu();
    loop {
        let args = HtScanArgs {
            table: 1,
            max: 1024,
            after: after.take(),
        };
        let raw = execute(&src, op::HT_SCAN, &args.encode()).unwrap();
        let page = HtScanResult::decode(&raw).unwrap();
        after = page.entries.last().map(|(k, _)| k.clone());
        let more = page.more;
        pages.push(page.entries);
        if !more {
            break;
        }
    }
    let scan = cpu() - t;
    let puts: Vec<Vec<u8>> = pages
        .into_iter()
        .map(|entries| {
            HtPutArgs {
                table: 1,
                return_old: false,
                entries,
            }
            .encode()
        })
        .collect();
    let t = cpu();
    for p in &puts {
        execute(&dst, op::HT_PUT, p).unwrap();
    }
    let write = cpu() - t;
    let copied = super::tables::Tables::len(&dst.state().tables, 1);
    assert_eq!(copied, n);
    let per = |s: f64| s * 1e9 / n as f64;
    eprintln!(
        "table copy of {n} entries: source {:.0} ns/entry, target {:.0} ns/entry",
        per(scan),
        per(write)
    );
}
