//! Feeds arbitrary bytes to the frame, request and response decoders: none may panic (the
//! agent messages and expressions have their own targets).
//!
//! Run with `cargo fuzz run decode` from the repository root (needs cargo-fuzz and nightly).
#![no_main]

use farmem_proto::{Request, Response, decode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a stream of frames.
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode_frame(rest, 1 << 20) {
        let h = frame.header;
        if let Ok(Request::PutMany { items }) = Request::decode(h.op, frame.body) {
            let _ = items.iter().count();
        }
        if let Ok(Request::Patch { items }) = Request::decode(h.op, frame.body) {
            for (_, edits) in items.iter() {
                let _ = edits.count();
            }
        }
        if let Ok(Response::Many(list)) = Response::decode(h.op, h.flags, frame.body) {
            let _ = list.iter().count();
        }
        rest = &rest[used..];
    }
    // As bare bodies (the checksum would otherwise keep most inputs out).
    if data.len() >= 4 {
        let op = u16::from_le_bytes([data[0], data[1]]);
        let flags = u16::from_le_bytes([data[2], data[3]]);
        let body = &data[4..];
        if let Ok(Request::Patch { items }) = Request::decode(op, body) {
            for (_, edits) in items.iter() {
                let _ = edits.count();
            }
        } else {
            let _ = Request::decode(op, body);
        }
        if let Ok(Response::Many(list)) = Response::decode(op, flags, body) {
            let _ = list.iter().count();
        }
    }
});
