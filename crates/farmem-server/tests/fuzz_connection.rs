//! The connection-protocol fuzz harness (`fuzz/harness/connection.rs`) run over its kept
//! corpus (`fuzz/corpus/connection`, minimised from millions of executions of `cargo fuzz run
//! connection`) and over a few hand-made inputs.

#[path = "../../../fuzz/harness/connection.rs"]
mod harness;

use std::path::Path;

#[test]
fn kept_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/connection");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the connection corpus is kept in the repository") {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        harness::run(&data);
        n += 1;
    }
    assert!(n > 0, "the connection corpus is empty");
}

#[test]
fn hand_made_sequences() {
    // Connect, hello, put, pipelined gets, a put in two pieces, hang up.
    harness::run(&[0, 1, 0, 2, 0, 5, 3, 5, 3, 1, 2, 4, 6, 0, 5, 2, 9, 7]);
    // A request before the hello; a wrong token; a huge announced body.
    harness::run(&[0, 2, 5, 1, 0, 0, 1, 1, 0, 4, 1, 0x20]);
    // Request id 0 after a hello; raw junk; an agent operation.
    harness::run(&[0, 1, 0, 2, 5, 0, 0, 8, 1, 0, 2, 0x70, 3, 8, 2, 0x77, 4, 8]);
}
