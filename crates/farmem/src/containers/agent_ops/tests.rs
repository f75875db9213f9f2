use super::*;
use crate::{ErrorKind, RuntimeConfig};

/// Whether `e` is the kernel's verdict on bad input (the same through the agent and locally).
fn rejected<T>(e: Result<T>) -> bool {
    let k = e.map(|_| ()).map_err(|e| e.kind());
    matches!(
        k,
        Err(ErrorKind::InvalidArgument | ErrorKind::LengthMismatch | ErrorKind::TypeMismatch)
    )
}
use farmem_proto::agent::{Cmp, Scalar};

fn rt() -> Runtime {
    Runtime::new(RuntimeConfig::new(2 << 20).region_size(64 << 10)).unwrap()
}

const MODES: [Offload; 2] = [Offload::Remote, Offload::Local];

/// The multi-vector operations give identical results offloaded and client-side, over
/// vectors of different chunkings with dirty chunks.
#[test]
fn multi_vector_ops_identical_both_ways() {
    let rt = rt();
    let n = 20_000usize;
    let t0: Vec<i64> = (0..n as i64).map(|i| 1_451_606_400 + i * 7_919).collect();
    let mut start = FarVec::with_chunk_bytes(&rt, 4096).unwrap();
    start.extend_from_slice(&t0).unwrap();
    let mut end: FarVec<i64> = FarVec::with_chunk_bytes(&rt, 1000).unwrap();
    end.extend(t0.iter().map(|&t| t + t % 3_001)).unwrap();
    end.set(5, t0[5] + 77).unwrap();
    let keys: FarVec<u8> =
        FarVec::from_slice(&rt, &(0..n).map(|i| (i % 9) as u8).collect::<Vec<_>>()).unwrap();
    let mask: FarVec<u32> =
        FarVec::from_slice(&rt, &(0..n).map(|i| (i % 4) as u32).collect::<Vec<_>>()).unwrap();
    let pts: Vec<f64> = (0..n).map(|i| (i % 360) as f64 - 180.0).collect();
    let lon = FarVec::from_slice(&rt, &pts).unwrap();
    let lat = FarVec::from_slice(&rt, &pts.iter().map(|x| x / 2.0).collect::<Vec<_>>()).unwrap();
    let mut results = Vec::new();
    let month = Expr::col(0).month().cast(farmem_proto::expr::Type::U8);
    for mode in MODES {
        let d = FarVec::<i64>::derive(
            &rt,
            &Expr::col(1).sub(Expr::col(0)),
            &[start.agent_input(), end.agent_input()],
            mode,
        )
        .unwrap()
        .to_vec()
        .unwrap();
        let h = FarVec::<f64>::derive(
            &rt,
            &Expr::col(0)
                .to_radians()
                .sin()
                .mul(Expr::col(1).cos())
                .add(Expr::col(2).sub(Expr::col(3)).abs().sqrt()),
            &[
                lon.agent_input(),
                lat.agent_input(),
                lat.agent_input(),
                lon.agent_input(),
            ],
            mode,
        )
        .unwrap()
        .to_vec()
        .unwrap();
        let m = FarVec::<u8>::derive(&rt, &month, &[start.agent_input()], mode)
            .unwrap()
            .to_vec()
            .unwrap();
        let g = keys
            .group_by_where(
                &end,
                &mask.agent_input(),
                Predicate::new(Cmp::Eq, Scalar::U(2)),
                16,
                mode,
            )
            .unwrap();
        let md = keys.group_median(&end, 16, mode).unwrap();
        let c = end
            .count_where(Predicate::new(Cmp::Gt, Scalar::I(t0[n / 2])), mode)
            .unwrap();
        assert_eq!(d.len(), n);
        assert_eq!(d[5], 77);
        assert_eq!(h.len(), n);
        assert_eq!(m[0], 1);
        assert_eq!(g.len(), 9);
        assert_eq!(md.len(), 9);
        let h_bits: Vec<u64> = h.iter().map(|x| x.to_bits()).collect();
        results.push(format!("{d:?}{h_bits:?}{m:?}{g:?}{md:?}{c}"));
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn multi_vector_ops_reject_bad_input() {
    let rt = rt();
    let a = FarVec::from_slice(&rt, &[1i64, 2, 3]).unwrap();
    let b = FarVec::from_slice(&rt, &[1i64, 2]).unwrap();
    let f = FarVec::from_slice(&rt, &[1.0f64, 2.0, 3.0]).unwrap();
    for mode in MODES {
        // Output type not the expression's.
        let diff = Expr::col(1).sub(Expr::col(0));
        let hour = Expr::col(0).hour().cast(farmem_proto::expr::Type::U8);
        let e = FarVec::<f64>::derive(&rt, &diff, &[a.agent_input(), a.agent_input()], mode);
        assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
        // Different lengths, wrong type, a column past the inputs.
        let e = FarVec::<i64>::derive(&rt, &diff, &[a.agent_input(), b.agent_input()], mode);
        assert!(rejected(e), "{mode:?}");
        let e = FarVec::<u8>::derive(&rt, &hour, &[f.agent_input()], mode);
        assert!(rejected(e), "{mode:?}");
        let e = FarVec::<i64>::derive(
            &rt,
            &Expr::col(2),
            &[a.agent_input(), a.agent_input()],
            mode,
        );
        assert!(rejected(e), "{mode:?}");
        let e = FarVec::<u8>::derive(&rt, &hour, &[], mode);
        assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
        // Mask of another length; operand outside the mask's domain.
        let e = a.group_by_where(
            &a,
            &b.agent_input(),
            Predicate::new(Cmp::Eq, Scalar::I(1)),
            8,
            mode,
        );
        assert!(rejected(e), "{mode:?}");
        let e = a.group_by_where(
            &a,
            &f.agent_input(),
            Predicate::new(Cmp::Eq, Scalar::I(1)),
            8,
            mode,
        );
        assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
        let e = a.group_median(&b, 8, mode);
        assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
        let e = a.count_where(Predicate::new(Cmp::Eq, Scalar::F(1.0)), mode);
        assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
    }
}
