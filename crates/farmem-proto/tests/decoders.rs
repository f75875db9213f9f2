//! Random bytes fed to every decoder of the crate: none panics, and whatever decodes encodes
//! back to bytes that decode to the same encoding.

use farmem_proto::agent::*;
use farmem_proto::expr::{Expr, Type};
use farmem_proto::{Request, Response, decode_frame};
use proptest::prelude::*;

/// Encodings are compared, not values: a NaN inside a message is unequal to itself.
fn check<M: AgentMessage>(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = M::decode(body) {
        let again = M::decode(&m.encode()).map(|m| m.encode());
        prop_assert_eq!(again, Ok(m.encode()));
    }
    Ok(())
}

fn all_agent_messages(b: &[u8]) -> Result<(), TestCaseError> {
    check::<VecRef>(b)?;
    check::<OutSpec>(b)?;
    check::<FilterArgs>(b)?;
    check::<CountArgs>(b)?;
    check::<GatherArgs>(b)?;
    check::<ArgsortArgs>(b)?;
    check::<UniqueArgs>(b)?;
    check::<UniqueResult>(b)?;
    check::<Aggregates>(b)?;
    check::<GroupByArgs>(b)?;
    check::<GroupByResult>(b)?;
    check::<GroupWhereArgs>(b)?;
    check::<GroupMedianResult>(b)?;
    check::<DeriveArgs>(b)?;
    check::<HtKeysArgs>(b)?;
    check::<HtPutArgs>(b)?;
    check::<HtValues>(b)?;
    check::<HtScanArgs>(b)?;
    check::<HtScanResult>(b)?;
    check::<u64>(b)
}

proptest! {
    #[test]
    fn every_decoder_survives_random_bytes(b in proptest::collection::vec(any::<u8>(), 0..96)) {
        all_agent_messages(&b)?;
        if let Ok(e) = Expr::decode(&b) {
            prop_assert_eq!(Expr::decode(&e.encode()).map(|x| x.encode()), Ok(e.encode()));
            let _ = e.type_of(&[Type::I64, Type::F64, Type::U8]);
        }
        let _ = decode_frame(&b, 1 << 20);
        if b.len() >= 4 {
            let op = u16::from_le_bytes([b[0], b[1]]);
            let flags = u16::from_le_bytes([b[2], b[3]]);
            let _ = Request::decode(op, &b[4..]);
            let _ = Response::decode(op, flags, &b[4..]);
        }
    }

    /// Mostly-valid expression bytes (node tags 0..=4 and small operands) reach the deeper
    /// decoder paths that uniform bytes rarely do.
    #[test]
    fn expression_decoder_survives_structured_bytes(
        b in proptest::collection::vec(prop_oneof![0u8..5, 0u8..24, any::<u8>()], 0..128),
    ) {
        if let Ok(e) = Expr::decode(&b) {
            prop_assert_eq!(Expr::decode(&e.encode()).map(|x| x.encode()), Ok(e.encode()));
            let _ = e.type_of(&[Type::I64, Type::F64, Type::U8, Type::Bool]);
            let mut derive = e.encode();
            derive.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
            all_agent_messages(&derive)?;
        }
    }
}
