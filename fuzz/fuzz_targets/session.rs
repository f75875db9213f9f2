//! Drives two sessions of the storage engine with sequences of requests: well-formed ones
//! checked against a model of what was acknowledged, and raw frames of any op and body (agent
//! operations included) from a second session sharing the budget. See `fuzz/harness/session.rs`
//! for the invariants. The corpus in `fuzz/corpus/session/` is replayed by farmem-store's tests.
//!
//! Run with `cargo fuzz run session` from the repository root (needs cargo-fuzz and nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/session.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data));
