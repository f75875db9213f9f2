//! Drives the server's connection protocol (hello, token, version, frame headers, partial and
//! pipelined frames, reserved ids, oversized bodies, agent work) with sequences of deliveries
//! on three connections, through the event loop's own frame-level code without sockets. See
//! `fuzz/harness/connection.rs` for the invariants. The corpus in `fuzz/corpus/connection/` is
//! replayed by farmem-server's tests (`tests/fuzz_connection.rs`).
//!
//! Run with `cargo fuzz run connection` from the repository root (needs cargo-fuzz and nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/connection.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data));
