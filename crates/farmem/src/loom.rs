//! The atomics of the mutator/evacuator handshake, swapped for loom's under `cfg(loom)`.
//!
//! Only the handshake state (a thread's scope epoch, an object's handle word) goes through this
//! shim, so `RUSTFLAGS="--cfg loom" cargo test -p farmem --lib --release loom` model-checks exactly
//! the protocol the runtime runs.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;
