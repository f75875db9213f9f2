//! Unit tests of the runtime as a whole.
use super::*;

/// Small enough for miri: `cargo +nightly miri test -p farmem --lib runtime::tests`.
#[test]
fn objects_round_trip_through_eviction() {
    let rt = Runtime::new(
        RuntimeConfig::new(8 * (64 << 10))
            .region_size(64 << 10)
            .lanes(1)
            .evacuator_threads(1),
    )
    .unwrap();
    let mut small = FarBox::new(&rt, [3u64; 4]).unwrap();
    let big = FarSlice::from_slice(&rt, &[9u8; 20_000]).unwrap();
    let node = FarBox::new(&rt, [5u64, FarPtr::<u64>::NULL.to_bits()]).unwrap();
    let ptr = node.into_ptr();
    {
        let s = rt.scope();
        small.write(&s).unwrap()[1] = 4;
    }
    rt.evacuate_now();
    assert!(!small.is_local());
    assert_eq!(small.get().unwrap(), [3, 4, 3, 3]);
    assert!(big.to_vec().unwrap().iter().all(|&b| b == 9));
    let node = FarBox::from_ptr(&rt, ptr).unwrap();
    assert_eq!(node.get().unwrap()[0], 5);
    small.flush().unwrap();
    small.invalidate_local().unwrap();
    assert_eq!(small.get().unwrap()[1], 4);
    assert!(rt.stats().objects_evicted >= 3);
}
