//! The stateful fuzz harness (`fuzz/harness/session.rs`) run over its kept corpus and over
//! inputs from a seeded generator, so every test run checks what the fuzzer checks: two sessions
//! sharing a budget, one driven by well-formed requests checked against a model, the other by
//! raw frames of any op and body; answers always decode, the budget never exceeds its capacity,
//! and nothing stays charged once both sessions end.

#[path = "../../../fuzz/harness/session.rs"]
mod harness;

use std::path::Path;

#[test]
fn kept_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/session");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the session corpus is kept in the repository") {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        harness::run(&data);
        n += 1;
    }
    assert!(n > 0, "the session corpus is empty");
}

/// A xorshift generator: inputs that are the same on every run.
fn inputs(seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..count).map(move |_| {
        let len = (next() % 4096) as usize;
        (0..len).map(|_| next() as u8).collect()
    })
}

#[test]
fn generated_histories_keep_the_invariants() {
    for data in inputs(0x9e37_79b9_7f4a_7c15, 300) {
        harness::run(&data);
    }
}
