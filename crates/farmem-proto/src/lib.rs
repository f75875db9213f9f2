//! Wire format of the farmem protocol (see README.md in this crate for the byte layout).
//!
//! Every message is a [frame]: a fixed 20-byte little-endian header (body length,
//! CRC-32, operation, flags, request id) followed by the body. Requests are [`Request`]s,
//! answers are [`Response`]s carrying the request id of the request they answer, so many
//! requests may be in flight on one connection and be answered in any order.
//!
//! Decoding borrows from the input and validates everything up front, so the server can act
//! on a request without copying it, and no input makes the decoder panic.
//!
//! ```
//! use farmem_proto::{Request, decode_frame, encode_request};
//! let mut buf = Vec::new();
//! encode_request(&mut buf, 42, &Request::Get { id: 7 });
//! let (frame, used) = decode_frame(&buf, 1 << 20).unwrap().unwrap();
//! assert_eq!(used, buf.len());
//! assert_eq!(frame.header.req_id, 42);
//! assert_eq!(Request::decode(frame.header.op, frame.body).unwrap(), Request::Get { id: 7 });
//! ```

#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod agent;
pub mod codec;
pub mod expr;
pub mod frame;
mod request;
mod response;

pub use frame::{
    DEFAULT_MAX_FRAME, FLAG_ERROR, Frame, HEADER_LEN, Header, MAX_FRAME_BODY, WireError,
    begin_frame, decode_frame, finish_frame,
};
pub use request::{
    AdminAction, EditIter, IdList, Op, PatchList, PutList, Request, body, encode_request,
};
pub use response::{
    AdminStatus, DataList, ErrorCode, ErrorInfo, HelloInfo, MISSING, QuotaKind, Response,
    ServerStats, encode_error,
};

/// Protocol version spoken by this crate; both sides must agree.
pub const VERSION: u16 = 2;

/// Magic number at the start of every hello body: `"FMEM"` in little-endian.
pub const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"FMEM");

/// The largest object the protocol carries (payload bytes). Servers may set a lower limit.
pub const MAX_OBJECT: u32 = 256 << 20;

/// Which of `servers` servers owns object `id`: `splitmix64(id) % servers`, where splitmix64 is
/// the finaliser `x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27; x *= 0x94d049bb133111eb;
/// x ^= x >> 31` (wrapping). Clients in any language must use the same function.
///
/// # Panics
/// If `servers` is 0.
pub fn owner_of(id: u64, servers: usize) -> usize {
    let mut x = id;
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % servers as u64) as usize
}
