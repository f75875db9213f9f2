//! Decodes arbitrary bytes as a row expression; when it decodes and type-checks over a few small
//! columns of every element type, evaluates it: nothing may panic, and the result has one
//! element per row.
//!
//! Run with `cargo fuzz run expr` from the repository root (needs cargo-fuzz and nightly).
#![no_main]

use farmem_kernels::expr::{Slice, eval_slices};
use farmem_proto::expr::{Expr, Type};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = Expr::decode(data) else {
        return;
    };
    let u8s = [0u8, 1, 255, 7, 128];
    let u16s = [0u16, 1, u16::MAX, 300, 9];
    let u32s = [0u32, 1, u32::MAX, 70_000, 3];
    let u64s = [0u64, 1, u64::MAX, 1 << 40, 5];
    let i8s = [0i8, -1, i8::MIN, i8::MAX, 3];
    let i16s = [0i16, -1, i16::MIN, i16::MAX, 3];
    let i32s = [0i32, -1, i32::MIN, i32::MAX, 3];
    let i64s = [0i64, -1, i64::MIN, i64::MAX, 1_451_606_400];
    let f32s = [0.0f32, -0.0, f32::NAN, f32::INFINITY, 1.5];
    let f64s = [0.0f64, -1e300, f64::NAN, f64::NEG_INFINITY, 2.5];
    let all = [
        Slice::U8(&u8s),
        Slice::U16(&u16s),
        Slice::U32(&u32s),
        Slice::U64(&u64s),
        Slice::I8(&i8s),
        Slice::I16(&i16s),
        Slice::I32(&i32s),
        Slice::I64(&i64s),
        Slice::F32(&f32s),
        Slice::F64(&f64s),
    ];
    // Inputs: all ten types, then the same rotated, so most column references type-check.
    for rot in 0..2 {
        let cols: Vec<Slice<'_>> = (0..10).map(|i| all[(i + rot * 3) % 10]).collect();
        let types: Vec<Type> = cols.iter().map(|c| Type::from(c.elem_type())).collect();
        match expr.type_of(&types) {
            Ok(t) => {
                let (ty, bytes) = eval_slices(&expr, &cols, 1).expect("well-typed evaluates");
                assert_eq!(ty, t);
                assert_eq!(bytes.len(), 5 * t.elem().size());
            }
            Err(_) => assert!(eval_slices(&expr, &cols, 1).is_err()),
        }
    }
});
