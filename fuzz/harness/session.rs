//! A stateful harness over the storage engine's request execution, shared by the `session`
//! fuzz target and the corpus replay test of farmem-store.
//!
//! The input drives two sessions that share one small budget:
//! - session A gets well-formed puts, gets, patches, get_manys and frees of a few ids, and every
//!   answer is checked against a model of what was acknowledged;
//! - session B gets raw frames: any op code and any body, agent operations included.
//!
//! After every request: the answer is one frame that decodes for its op, the budget never holds
//! more than its capacity, and session A still holds exactly what the model says (B's hostile
//! requests cannot reach A's objects). At the end, dropping both sessions returns every byte and
//! object to the budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use farmem_proto::{Op, Request, Response, body, decode_frame};
use farmem_store::{Budget, Session, SessionQuota, execute_request};

#[path = "input.rs"]
mod input;
use input::Input;

/// Capacity shared by both sessions.
pub const CAPACITY: u64 = 256 << 10;
/// Largest object either session may store.
const MAX_OBJECT: u64 = 64 << 10;
/// Largest answer body (keeps hostile batched gets small).
const MAX_RESPONSE: usize = 128 << 10;

/// The single answer frame in `wbuf`, decoded for `op`.
fn answer(wbuf: &[u8], op: u16) -> Response<'_> {
    let (frame, used) = match decode_frame(wbuf, u32::MAX) {
        Ok(Some(f)) => f,
        other => panic!("the answer is not one whole frame: {other:?}"),
    };
    assert_eq!(used, wbuf.len(), "one request, one answer frame");
    assert_eq!(frame.header.op, op, "the answer names the request's op");
    match Response::decode(op, frame.header.flags, frame.body) {
        Ok(r) => r,
        Err(e) => panic!("the answer to op {op} does not decode: {e}"),
    }
}

/// Object bytes for a put: length and fill picked by the input.
fn object(len: usize, fill: u8) -> Vec<u8> {
    (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
}

/// Runs one input. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let budget = Arc::new(Budget::new(CAPACITY));
    let quota = SessionQuota {
        objects: Some(64),
        ..Default::default()
    };
    let a = Session::new(1, budget.clone(), MAX_OBJECT, 1).with_max_response(MAX_RESPONSE);
    let b = Session::new(2, budget.clone(), MAX_OBJECT, 1)
        .with_quota(&quota)
        .with_max_response(MAX_RESPONSE)
        .with_agent_time_limit(Some(Duration::from_millis(50)));
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut input = Input::new(data);
    let mut wbuf = Vec::new();
    let mut req = Vec::new();
    let mut rid = 0u64;
    while let Some(kind) = input.byte() {
        rid += 1;
        wbuf.clear();
        req.clear();
        let id = u64::from(kind >> 5); // eight ids
        match kind % 8 {
            0 | 1 => {
                let len = usize::from(input.u16().unwrap_or(0)) % 20_000;
                let fill = input.byte().unwrap_or(0);
                let bytes = object(len, fill);
                execute_request(&a, &Request::Put { id, data: &bytes }, rid, &mut wbuf);
                match answer(&wbuf, Op::Put as u16) {
                    Response::Done => {
                        model.insert(id, bytes);
                    }
                    // Out of capacity (B may hold most of it): the old object stays.
                    Response::Error(_) => {}
                    other => panic!("put answered {other:?}"),
                }
            }
            2 => {
                execute_request(&a, &Request::Get { id }, rid, &mut wbuf);
                match (answer(&wbuf, Op::Get as u16), model.get(&id)) {
                    (Response::Data(got), Some(want)) => assert_eq!(got, &want[..], "get {id}"),
                    (Response::Error(_), None) => {}
                    (other, want) => panic!("get {id} answered {other:?}, model {want:?}"),
                }
            }
            3 => {
                let off = u32::from(input.u16().unwrap_or(0));
                let len = usize::from(input.byte().unwrap_or(0));
                let fill = input.byte().unwrap_or(0);
                let bytes = object(len, fill);
                let edits = [(off, &bytes[..])];
                body::patch(&mut req, &[(id, &edits[..])]);
                let Ok(patch) = Request::decode(Op::Patch as u16, &req) else {
                    panic!("a well-formed patch does not decode");
                };
                execute_request(&a, &patch, rid, &mut wbuf);
                let fits = model
                    .get(&id)
                    .is_some_and(|o| off as usize + len <= o.len());
                match answer(&wbuf, Op::Patch as u16) {
                    Response::Done => {
                        assert!(fits, "a patch out of bounds was acknowledged");
                        if let Some(o) = model.get_mut(&id) {
                            o[off as usize..off as usize + len].copy_from_slice(&bytes);
                        }
                    }
                    Response::Error(_) => assert!(!fits, "a patch in bounds was refused"),
                    other => panic!("patch answered {other:?}"),
                }
            }
            4 => {
                let ids: Vec<u64> = (0..8).filter(|i| kind & (1 << (i % 5)) != 0).collect();
                body::ids(&mut req, &ids);
                let Ok(get) = Request::decode(Op::GetMany as u16, &req) else {
                    panic!("a well-formed get_many does not decode");
                };
                execute_request(&a, &get, rid, &mut wbuf);
                match answer(&wbuf, Op::GetMany as u16) {
                    Response::Many(list) => {
                        let got: Vec<Option<&[u8]>> = list.iter().collect();
                        assert_eq!(got.len(), ids.len());
                        for (i, g) in ids.iter().zip(got) {
                            assert_eq!(g, model.get(i).map(|v| &v[..]), "get_many {i}");
                        }
                    }
                    // Too large an answer for the session's limit.
                    Response::Error(_) => {}
                    other => panic!("get_many answered {other:?}"),
                }
            }
            5 => {
                body::ids(&mut req, &[id]);
                let Ok(free) = Request::decode(Op::Free as u16, &req) else {
                    panic!("a well-formed free does not decode");
                };
                execute_request(&a, &free, rid, &mut wbuf);
                match answer(&wbuf, Op::Free as u16) {
                    Response::Done => {
                        model.remove(&id);
                    }
                    other => panic!("free answered {other:?}"),
                }
            }
            _ => {
                // A raw frame for session B: any op, any body.
                let op = input.u16().unwrap_or(0) % 64;
                let len = usize::from(input.u16().unwrap_or(0));
                let body = input.bytes(len);
                if let Ok(raw) = Request::decode(op, body) {
                    if matches!(raw, Request::Hello { .. } | Request::Admin { .. }) {
                        // Answered by the server shell, not a session.
                        continue;
                    }
                    execute_request(&b, &raw, rid, &mut wbuf);
                    let _ = answer(&wbuf, op);
                }
            }
        }
        assert!(
            budget.used() <= budget.capacity(),
            "the budget holds {} bytes over a capacity of {}",
            budget.used(),
            budget.capacity()
        );
    }
    // A still holds exactly the model.
    for (id, want) in &model {
        let got = a.ns.get_with(*id, |b| b.to_vec());
        assert_eq!(
            got.ok().as_deref(),
            Some(&want[..]),
            "object {id} at the end"
        );
    }
    assert_eq!(
        a.ns.len(),
        model.len() as u64,
        "A holds objects the model does not"
    );
    drop(a);
    drop(b);
    assert_eq!(
        budget.used(),
        0,
        "bytes left charged after both sessions ended"
    );
    assert_eq!(
        budget.objects(),
        0,
        "objects left charged after both sessions ended"
    );
}
