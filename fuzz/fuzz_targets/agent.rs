//! Feeds arbitrary bytes to every agent message decoder: none may panic. The first byte picks
//! the message type, the rest is its encoding.
//!
//! Run with `cargo fuzz run agent` from the repository root (needs cargo-fuzz and nightly).
#![no_main]

use farmem_proto::agent::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    // A decoded message re-encodes to bytes that decode to the same encoding (encodings are
    // compared: a NaN inside a message is unequal to itself).
    fn check<M: AgentMessage>(body: &[u8]) {
        if let Ok(m) = M::decode(body) {
            let again = M::decode(&m.encode()).map(|m| m.encode());
            assert_eq!(again, Ok(m.encode()));
        }
    }
    match which % 19 {
        0 => check::<VecRef>(body),
        1 => check::<OutSpec>(body),
        2 => check::<FilterArgs>(body),
        3 => check::<CountArgs>(body),
        4 => check::<GatherArgs>(body),
        5 => check::<ArgsortArgs>(body),
        6 => check::<UniqueArgs>(body),
        7 => check::<UniqueResult>(body),
        8 => check::<Aggregates>(body),
        9 => check::<GroupByArgs>(body),
        10 => check::<GroupByResult>(body),
        11 => check::<GroupWhereArgs>(body),
        12 => check::<GroupMedianResult>(body),
        13 => check::<DeriveArgs>(body),
        14 => check::<HtKeysArgs>(body),
        15 => check::<HtPutArgs>(body),
        16 => check::<HtValues>(body),
        17 => check::<HtScanArgs>(body),
        _ => check::<HtScanResult>(body),
    }
});
