//! A connection's protocol over bytes, with no socket: what the next frame of its input makes
//! (an answer, a job for the worker pool, or the end of the connection). The event loop
//! ([`crate::evloop`]) calls [`next`] for every frame it reads; [`crate::fuzzing`] drives the
//! same function with arbitrary byte sequences.

use std::sync::Arc;

use farmem_proto::{ErrorCode, Op, decode_frame, encode_error};
use farmem_store::Session;

use crate::conn::{Close, Handled, frame_id, handle};
use crate::server::Shared;

/// What the start of a connection's unanswered input makes.
pub(crate) enum Next {
    /// No whole frame yet: read more.
    More,
    /// A frame of this many bytes was answered into the write buffer.
    Answered(usize),
    /// A frame of `len` bytes must run on the worker pool (`copy`: on the copy pool).
    Offload {
        /// The frame's length.
        len: usize,
        /// A server-to-server copy.
        copy: bool,
    },
    /// The connection must end after its write buffer is out; `used` bytes were consumed.
    End {
        /// Bytes of input consumed.
        used: usize,
        /// Why.
        close: Close,
    },
}

/// Answers (or hands on) the first frame of `data` for a connection holding `session` (none
/// before its hello), writing any answer to `wbuf`. Before the hello a frame may be at most
/// `max_hello_frame` long, after it `max_frame`; a frame that breaks the wire format is
/// answered with `Malformed` and ends the connection.
pub(crate) fn next(
    shared: &Shared,
    session: &mut Option<Arc<Session>>,
    data: &[u8],
    wbuf: &mut Vec<u8>,
) -> Next {
    let limits = &shared.config.limits;
    let max_frame = if session.is_some() {
        limits.max_frame
    } else {
        limits.max_hello_frame
    };
    let (frame, n) = match decode_frame(data, max_frame) {
        Ok(Some(f)) => f,
        Ok(None) => return Next::More,
        Err(e) => {
            let id = frame_id(data);
            let msg = format!("malformed frame: {e}");
            encode_error(wbuf, Op::Hello, id, ErrorCode::Malformed, [0; 3], &msg);
            return Next::End {
                used: 0,
                close: Close::Refused(msg),
            };
        }
    };
    match handle(shared, session, frame.header, frame.body, wbuf) {
        Ok(Handled::Answered) => Next::Answered(n),
        Ok(Handled::Offload) => Next::Offload {
            len: n,
            copy: false,
        },
        Ok(Handled::Copy) => Next::Offload { len: n, copy: true },
        Err(close) => Next::End { used: n, close },
    }
}
