//! Request execution: one decoded request against one session, answered into a write buffer.
//!
//! The TCP server calls this for every request after the hello; it owns connections, the
//! handshake and server-wide requests (`Hello`, `Stats`), and this module owns the rest.

use farmem_proto::{
    DataList, ErrorCode, HEADER_LEN, Op, Request, Response, begin_frame, encode_error, finish_frame,
};

use farmem_kernels::{Interrupt, KernelError};
use farmem_proto::agent::op as agent_op;

use crate::agent::{self, AgentError, AgentErrorCode};
use crate::dedup::Claim;
use crate::{Session, Stop, StoreError};

/// Encodes `e` as the error answer to request `req_id` (the TCP server uses it for errors it
/// finds before running a request, such as a session over its request rate).
pub fn encode_store_error(wbuf: &mut Vec<u8>, op: Op, req_id: u64, e: &StoreError) {
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
        StoreError::QuotaExceeded {
            kind,
            limit,
            wanted,
        } => (ErrorCode::QuotaExceeded, [kind as u64, limit, wanted]),
        StoreError::RateLimited {
            limit,
            retry_after_ms,
        } => (
            ErrorCode::QuotaExceeded,
            [farmem_proto::QuotaKind::Rate as u64, limit, retry_after_ms],
        ),
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
        AgentError::Kernel(KernelError::Interrupted(Interrupt::TimeLimit { limit_ms })) => (
            ErrorCode::Compute,
            [AgentErrorCode::TimeLimit as u64, *limit_ms, 0],
        ),
        AgentError::Kernel(k) => compute(AgentErrorCode::of_kernel(k)),
        AgentError::UnknownOp(_) => compute(AgentErrorCode::UnknownOp),
        AgentError::Malformed(_) => compute(AgentErrorCode::Malformed),
    };
    encode_error(wbuf, Op::Compute, req_id, code, d, &error_chain(e));
}

/// `e` and its causes, one message (`: `-separated).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
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
///
/// An agent operation running longer than the session's [`Session::agent_time_limit`] is
/// stopped and answered with the `TimeLimit` agent error code.
pub fn execute_request(session: &Session, req: &Request<'_>, rid: u64, wbuf: &mut Vec<u8>) {
    execute(session, req, rid, wbuf, None);
}

/// As [`execute_request`], and `client_gone` is asked every few milliseconds while an agent
/// operation runs: once it answers `true` (the connection's peer hung up), the operation stops,
/// is answered with the `Abandoned` agent error code, and its request id is forgotten, so the
/// client's retry from a resumed session runs it again instead of replaying the failure.
pub fn execute_request_watched(
    session: &Session,
    req: &Request<'_>,
    rid: u64,
    wbuf: &mut Vec<u8>,
    client_gone: &(dyn Fn() -> bool + Sync),
) {
    execute(session, req, rid, wbuf, Some(client_gone));
}

/// Most keys of an `HT_GET` that [`execute_inline`] answers.
pub const INLINE_HT_KEYS: usize = 512;

/// Answers `req` (request id `rid`) into `wbuf` at once if it is a short read of agent state
/// that waits for nothing: an `HT_GET` of at most [`INLINE_HT_KEYS`] keys while no other
/// operation of the session holds its hash tables. Returns `false`, having done nothing, for
/// any other request: run those with [`execute_request_watched`] (a server runs them on its
/// worker threads). `admit` (the session's request-rate quota) is called once the request will
/// run here, before it runs; its error is then the answer.
///
/// Such a lookup changes nothing, so its answer is not kept for replay: a retry runs it again
/// and sees the table as it is then, as a retried `Get` does.
pub fn execute_inline(
    session: &Session,
    req: &Request<'_>,
    rid: u64,
    wbuf: &mut Vec<u8>,
    admit: impl FnOnce() -> Result<(), StoreError>,
) -> bool {
    let Request::Compute { op: aop, args, .. } = req else {
        return false;
    };
    if *aop != agent_op::HT_GET {
        return false;
    }
    let ctx = session.context();
    let tables = &session.agent.tables;
    let admit = || admit().map_err(AgentError::Store);
    let Some(r) = tables.try_get_encoded(&ctx, args, INLINE_HT_KEYS, admit) else {
        return false;
    };
    let op = req.op();
    match r {
        Ok(out) if out.len() > session.max_response => {
            response_too_large(wbuf, op, rid, out.len(), session.max_response);
        }
        Ok(out) => Response::Data(&out).encode(wbuf, op, rid),
        Err(e) => encode_agent_error(wbuf, rid, &e),
    }
    true
}

fn execute(
    session: &Session,
    req: &Request<'_>,
    rid: u64,
    wbuf: &mut Vec<u8>,
    gone: Option<&(dyn Fn() -> bool + Sync)>,
) {
    if req.is_idempotent() {
        execute_once(session, req, rid, wbuf, gone);
        return;
    }
    match session.dedup.claim(rid, &session.ns) {
        Claim::Fresh(running) => {
            let start = wbuf.len();
            if execute_once(session, req, rid, wbuf, gone) {
                running.finish(&wbuf[start..]);
                if let Some(j) = session.ns.journal() {
                    j.answer(rid, &wbuf[start..]);
                }
            } else {
                running.forget();
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

/// Executes `req` once; returns whether its answer may be replayed to a retry (`false` for an
/// agent operation stopped because its client went away).
fn execute_once(
    session: &Session,
    req: &Request<'_>,
    rid: u64,
    wbuf: &mut Vec<u8>,
    gone: Option<&(dyn Fn() -> bool + Sync)>,
) -> bool {
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
        Request::Compute { op: aop, args, .. } if *aop == agent_op::OBJ_PUSH => {
            match crate::push::push(ns, &session.pushes, args) {
                Ok(out) => Response::Data(&out).encode(wbuf, op, rid),
                Err(e) => {
                    tracing::debug!(error = %e, "a server-to-server push failed");
                    let code = match &e {
                        crate::PushError::Args(_) => AgentErrorCode::Malformed,
                        _ => AgentErrorCode::Invalid,
                    };
                    let msg = error_chain(&e);
                    encode_error(wbuf, op, rid, ErrorCode::Compute, [code as u64, 0, 0], &msg);
                }
            }
        }
        Request::Compute { op: aop, args, .. } => {
            let mut stop = Stop::after(session.agent_time_limit);
            if let Some(gone) = gone {
                stop = stop.or_when(gone);
            }
            match agent::execute(&session.context().stopping(stop), *aop, args) {
                Ok(out) if out.len() > session.max_response => {
                    response_too_large(wbuf, op, rid, out.len(), session.max_response);
                }
                Ok(out) => Response::Data(&out).encode(wbuf, op, rid),
                Err(e) => {
                    encode_agent_error(wbuf, rid, &e);
                    let abandoned = KernelError::Interrupted(Interrupt::Abandoned);
                    return !matches!(e, AgentError::Kernel(ref k) if *k == abandoned);
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use farmem_proto::agent::{AgentMessage, ElemType, VecRef, op};
    use farmem_proto::{DEFAULT_MAX_FRAME, ErrorInfo, Request, Response, decode_frame};

    use super::*;
    use crate::Budget;

    /// The answer in `wbuf`, decoded.
    fn answer(wbuf: &[u8]) -> Response<'_> {
        let (frame, used) = decode_frame(wbuf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(used, wbuf.len());
        Response::decode(frame.header.op, frame.header.flags, frame.body).unwrap()
    }

    #[test]
    fn short_table_lookups_are_answered_inline_as_on_a_worker() {
        use farmem_proto::agent::{HtKeysArgs, HtPutArgs};
        let s = Session::new(1, Arc::new(Budget::new(64 << 20)), 1 << 20, 1);
        let put = HtPutArgs {
            table: 3,
            return_old: false,
            entries: (0..100u64)
                .map(|k| (k.to_le_bytes().to_vec(), (k * 7).to_le_bytes().to_vec()))
                .collect(),
        }
        .encode();
        let req = Request::Compute {
            route: 3,
            op: op::HT_PUT,
            args: &put,
        };
        let mut wbuf = Vec::new();
        // Writes are never answered inline.
        assert!(!execute_inline(&s, &req, 1, &mut wbuf, || Ok(())));
        assert!(wbuf.is_empty());
        execute_request(&s, &req, 1, &mut wbuf);
        assert!(matches!(answer(&wbuf), Response::Data(_)));
        let get = |n: u64| {
            HtKeysArgs {
                table: 3,
                keys: (0..n).map(|k| (k * 3).to_le_bytes().to_vec()).collect(),
            }
            .encode()
        };
        let short = get(50);
        let req = Request::Compute {
            route: 3,
            op: op::HT_GET,
            args: &short,
        };
        let mut inline = Vec::new();
        let mut admitted = 0;
        assert!(execute_inline(&s, &req, 2, &mut inline, || {
            admitted += 1;
            Ok(())
        }));
        assert_eq!(admitted, 1);
        let mut offloaded = Vec::new();
        execute_request(&s, &req, 2, &mut offloaded);
        assert_eq!(inline, offloaded, "the same answer either way");
        // Too many keys: left to a worker, nothing admitted.
        let long = get(INLINE_HT_KEYS as u64 + 1);
        let req_long = Request::Compute {
            route: 3,
            op: op::HT_GET,
            args: &long,
        };
        let mut wbuf = Vec::new();
        assert!(!execute_inline(&s, &req_long, 3, &mut wbuf, || {
            panic!("admitted a request it does not run")
        }));
        assert!(wbuf.is_empty());
        // A refusal by the rate quota is the answer.
        let limited = StoreError::RateLimited {
            limit: 1,
            retry_after_ms: 5,
        };
        assert!(execute_inline(&s, &req, 4, &mut wbuf, || Err(limited)));
        match answer(&wbuf) {
            Response::Error(ErrorInfo { code, .. }) => {
                assert_eq!(code, ErrorCode::QuotaExceeded as u16);
            }
            other => panic!("answered {other:?}"),
        }
        // While another operation holds the tables, the lookup waits for a worker.
        let held = s.agent.tables.hold();
        let mut wbuf = Vec::new();
        assert!(!execute_inline(&s, &req, 5, &mut wbuf, || {
            panic!("admitted a request it does not run")
        }));
        assert!(wbuf.is_empty());
        drop(held);
        assert!(execute_inline(&s, &req, 5, &mut wbuf, || Ok(())));
    }

    #[test]
    fn an_abandoned_operation_is_forgotten_so_its_retry_runs() {
        let s = Session::new(1, Arc::new(Budget::new(64 << 20)), 1 << 20, 1);
        let chunk: Vec<u8> = (0..1000u64).flat_map(|x| x.to_le_bytes()).collect();
        s.ns.put(10, &chunk).unwrap();
        let v = VecRef {
            ty: ElemType::U64,
            chunks: vec![(10, 1000)],
        }
        .encode();
        let req = Request::Compute {
            route: 10,
            op: op::VEC_AGGREGATE,
            args: &v,
        };
        let mut wbuf = Vec::new();
        execute_request_watched(&s, &req, 7, &mut wbuf, &|| true);
        match answer(&wbuf) {
            Response::Error(ErrorInfo { code, a, .. }) => {
                assert_eq!(code, ErrorCode::Compute as u16);
                assert_eq!(a, AgentErrorCode::Abandoned as u64);
            }
            other => panic!("answered {other:?}"),
        }
        // The client resumes and resends request 7: it runs, instead of replaying the failure.
        wbuf.clear();
        execute_request(&s, &req, 7, &mut wbuf);
        assert!(matches!(answer(&wbuf), Response::Data(_)));
        // A retry of a finished request replays its answer.
        let first = wbuf.clone();
        wbuf.clear();
        execute_request_watched(&s, &req, 7, &mut wbuf, &|| true);
        assert_eq!(wbuf, first);
    }
}
