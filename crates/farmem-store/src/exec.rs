//! Request execution: one decoded request against one session, answered into a write buffer.
//!
//! The TCP server calls this for every request after the hello; it owns connections, the
//! handshake and server-wide requests (`Hello`, `Stats`), and this module owns the rest.

use farmem_proto::{
    DataList, ErrorCode, HEADER_LEN, Op, Request, Response, begin_frame, encode_error, finish_frame,
};

use farmem_kernels::KernelError;

use crate::agent::{self, AgentError, AgentErrorCode};
use crate::dedup::Claim;
use crate::{Session, StoreError};

/// Encodes `e` as the error answer to request `req_id`.
pub(crate) fn encode_store_error(wbuf: &mut Vec<u8>, op: Op, req_id: u64, e: &StoreError) {
    let (code, d) = match *e {
        StoreError::NotFound(id) => (ErrorCode::NotFound, [id, 0, 0]),
        StoreError::OutOfCapacity { needed, available } => {
            (ErrorCode::OutOfCapacity, [needed, available, 0])
        }
        StoreError::SizeMismatch {
            id,
            expected,
            actual,
        } => (ErrorCode::SizeMismatch, [id, expected, actual]),
        StoreError::TooLarge { size, limit } => (ErrorCode::TooLarge, [size, limit, 0]),
        StoreError::Log(l) => {
            let needed = match l {
                crate::LogError::DiskFull { needed } => needed,
                _ => 0,
            };
            (ErrorCode::StorageFailed, [needed, 0, 0])
        }
    };
    encode_error(wbuf, op, req_id, code, d, &e.to_string());
}

/// Answers `rid` with `ResponseTooLarge`: its answer would have `size` bytes (at least), above
/// the session's `limit`.
fn response_too_large(wbuf: &mut Vec<u8>, op: Op, rid: u64, size: usize, limit: usize) {
    let msg = format!("the answer ({size} bytes or more) exceeds the response limit of {limit}");
    let d = [size as u64, limit as u64, 0];
    encode_error(wbuf, op, rid, ErrorCode::ResponseTooLarge, d, &msg);
}

fn encode_agent_error(wbuf: &mut Vec<u8>, req_id: u64, e: &AgentError) {
    let compute = |c: AgentErrorCode| (ErrorCode::Compute, [c as u64, 0, 0]);
    let (code, d) = match e {
        AgentError::Store(s) => return encode_store_error(wbuf, Op::Compute, req_id, s),
        AgentError::Kernel(KernelError::NotFound(id)) => (ErrorCode::NotFound, [*id, 0, 0]),
        AgentError::Kernel(KernelError::OutOfCapacity { needed, available }) => {
            (ErrorCode::OutOfCapacity, [*needed, *available, 0])
        }
        AgentError::Kernel(KernelError::TooLarge { size, limit }) => {
            (ErrorCode::TooLarge, [*size, *limit, 0])
        }
        AgentError::Kernel(k) => compute(AgentErrorCode::of_kernel(k)),
        AgentError::UnknownOp(_) => compute(AgentErrorCode::UnknownOp),
        AgentError::Malformed(_) => compute(AgentErrorCode::Malformed),
    };
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    encode_error(wbuf, Op::Compute, req_id, code, d, &msg);
}

/// Executes `req` (request id `rid`) against `session` and appends its answer, one frame, to
/// `wbuf`. Failures are answered with a typed error frame; nothing here fails otherwise.
///
/// A request that is not idempotent ([`Request::is_idempotent`]: patches, agent operations)
/// runs at most once per request id while the id is in the session's window
/// ([`crate::Dedup`]): a retry gets the first answer.
///
/// `Hello`, `Stats` and `Admin` are the caller's: `Hello` is answered with a protocol error
/// here, `Admin` is refused, and `Stats` is answered with this session's figures only.
pub fn execute_request(session: &Session, req: &Request<'_>, rid: u64, wbuf: &mut Vec<u8>) {
    if req.is_idempotent() {
        return execute_once(session, req, rid, wbuf);
    }
    match session.dedup.claim(rid, &session.ns) {
        Claim::Fresh(running) => {
            let start = wbuf.len();
            execute_once(session, req, rid, wbuf);
            running.finish(&wbuf[start..]);
            if let Some(j) = session.ns.journal() {
                j.answer(rid, &wbuf[start..]);
            }
        }
        Claim::Replay(answer) => wbuf.extend_from_slice(&answer),
        Claim::Unkept => {
            let msg = "this request already ran; its answer was too large to keep";
            encode_error(
                wbuf,
                req.op(),
                rid,
                ErrorCode::ReplayUnavailable,
                [0; 3],
                msg,
            );
        }
    }
}

fn execute_once(session: &Session, req: &Request<'_>, rid: u64, wbuf: &mut Vec<u8>) {
    let op = req.op();
    let ns = &session.ns;
    match req {
        Request::Hello { .. } => {
            encode_error(wbuf, op, rid, ErrorCode::Malformed, [0; 3], "second hello");
        }
        Request::Put { id, data } => match ns.put(*id, data) {
            Ok(()) => Response::Done.encode(wbuf, op, rid),
            Err(e) => encode_store_error(wbuf, op, rid, &e),
        },
        Request::Get { id } => {
            let start = begin_frame(wbuf, op as u16, 0, rid);
            match ns.get_with(*id, |d| wbuf.extend_from_slice(d)) {
                Ok(()) => finish_frame(wbuf, start),
                Err(e) => {
                    wbuf.truncate(start);
                    encode_store_error(wbuf, op, rid, &e);
                }
            }
        }
        Request::GetMany { ids } => {
            let start = begin_frame(wbuf, op as u16, 0, rid);
            DataList::begin(wbuf, ids.len());
            let limit = start + HEADER_LEN + session.max_response;
            let mut too_big = None;
            for id in ids.iter() {
                let r = ns.get_with(id, |d| {
                    if wbuf.len() + 4 + d.len() > limit {
                        return Err(wbuf.len() + 4 + d.len() - start - HEADER_LEN);
                    }
                    DataList::push(wbuf, Some(d));
                    Ok(())
                });
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(size)) => {
                        too_big = Some(size);
                        break;
                    }
                    Err(_) => DataList::push(wbuf, None),
                }
            }
            if let Some(size) = too_big {
                wbuf.truncate(start);
                response_too_large(wbuf, op, rid, size, session.max_response);
            } else {
                finish_frame(wbuf, start);
            }
        }
        Request::PutMany { items } => {
            match items.iter().try_for_each(|(id, data)| ns.put(id, data)) {
                Ok(()) => Response::Done.encode(wbuf, op, rid),
                Err(e) => encode_store_error(wbuf, op, rid, &e),
            }
        }
        Request::Patch { items } => {
            match items.iter().try_for_each(|(id, edits)| ns.patch(id, edits)) {
                Ok(()) => Response::Done.encode(wbuf, op, rid),
                Err(e) => encode_store_error(wbuf, op, rid, &e),
            }
        }
        Request::Free { ids } => match ids.iter().try_for_each(|id| ns.try_free(id).map(drop)) {
            Ok(()) => Response::Done.encode(wbuf, op, rid),
            Err(e) => encode_store_error(wbuf, op, rid, &e),
        },
        Request::Ping | Request::CloseSession => Response::Done.encode(wbuf, op, rid),
        Request::Admin { .. } => {
            let msg = "admin requests are answered by the server, not a session";
            encode_error(wbuf, op, rid, ErrorCode::AdminRefused, [0; 3], msg);
        }
        Request::Stats => {
            let st = farmem_proto::ServerStats {
                session_used_bytes: ns.used_bytes(),
                session_objects: ns.len(),
                ..Default::default()
            };
            Response::Stats(st).encode(wbuf, op, rid);
        }
        Request::Compute { op: aop, args, .. } => {
            match agent::execute(&session.context(), *aop, args) {
                Ok(out) if out.len() > session.max_response => {
                    response_too_large(wbuf, op, rid, out.len(), session.max_response);
                }
                Ok(out) => Response::Data(&out).encode(wbuf, op, rid),
                Err(e) => encode_agent_error(wbuf, rid, &e),
            }
        }
    }
}
