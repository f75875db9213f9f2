//! A stateful harness over the server's connection protocol (hello, token, version, frame
//! headers, partial and pipelined frames, reserved ids, oversized bodies, offloaded agent
//! work), shared by the `connection` fuzz target and the corpus replay test of farmem-server.
//! It drives `farmem_server::fuzzing`, which runs the event loop's own frame-level code with
//! no socket.
//!
//! The input is a sequence of actions on up to three connections of one server (capacity
//! 256 KiB, a token): connect, a hello (right or wrong token, version, a session to resume),
//! well-formed requests (any id, 0 included), raw bytes, a header announcing a huge body,
//! several requests in one delivery, one request delivered in two pieces, hang up.
//!
//! Checked after every delivery: every answer is a whole frame that decodes for its op; the
//! capacity is never exceeded; a connection holds at most one unfinished frame, and before its
//! hello at most a hello-sized one; a connection without a session that sent something other
//! than a hello is closed; a refused hello opens no session. At the end, hanging up every
//! connection ends every session and returns every byte and object.

use farmem_proto::agent::{AgentMessage, ElemType, VecRef, op};
use farmem_proto::{
    HEADER_LEN, Request, Response, VERSION, begin_frame, body, decode_frame, encode_request,
    finish_frame,
};
use farmem_server::fuzzing::{Connection, Harness};

#[path = "input.rs"]
mod input;
use input::Input;

const TOKEN: &[u8] = b"fuzz-token";
/// Connections open at once.
const SLOTS: usize = 3;

fn frame(op: u16, id: u64, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let start = begin_frame(&mut out, op, 0, id);
    out.extend_from_slice(b);
    finish_frame(&mut out, start);
    out
}

fn encoded(id: u64, req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut out, id, req);
    out
}

/// A hello as `flags` says: bit 0 the wrong token, bit 1 another version, bit 2 resume
/// `resume` (a session key another connection holds, with a guessed secret).
fn hello(flags: u8, resume: Option<u64>) -> Vec<u8> {
    let token: &[u8] = if flags & 1 == 0 { TOKEN } else { b"guess" };
    let version = if flags & 2 == 0 {
        VERSION
    } else {
        VERSION.wrapping_add(1)
    };
    let session = if flags & 4 == 0 {
        0
    } else {
        resume.unwrap_or(7)
    };
    encoded(
        0,
        &Request::Hello {
            version,
            session,
            token,
            resume: u64::from(flags),
        },
    )
}

/// A well-formed request chosen by the next input bytes (its id may be 0, which is reserved).
fn request(inp: &mut Input<'_>) -> Vec<u8> {
    let kind = inp.byte().unwrap_or(0);
    let id = u64::from(inp.byte().unwrap_or(1));
    let obj = u64::from(kind >> 4);
    let len = usize::from(inp.byte().unwrap_or(0)) * 97;
    let data = vec![kind; len];
    match kind % 10 {
        0 => encoded(
            id,
            &Request::Put {
                id: obj,
                data: &data,
            },
        ),
        1 => encoded(id, &Request::Get { id: obj }),
        2 => {
            let mut b = Vec::new();
            body::ids(&mut b, &[obj, obj, obj + 1]);
            frame(farmem_proto::Op::GetMany as u16, id, &b)
        }
        3 => {
            let mut b = Vec::new();
            body::ids(&mut b, &[obj]);
            frame(farmem_proto::Op::Free as u16, id, &b)
        }
        4 => encoded(id, &Request::Stats),
        5 => encoded(id, &Request::Ping),
        6 => {
            let mut b = Vec::new();
            let edits: &[(u32, &[u8])] = &[(u32::from(kind & 7), b"patched")];
            body::patch(&mut b, &[(obj, edits)]);
            frame(farmem_proto::Op::Patch as u16, id, &b)
        }
        7 => {
            // An agent aggregate over the object as u64s, named a few times (offloaded).
            let times = usize::from(kind & 3) + 1;
            let args = VecRef {
                ty: ElemType::U64,
                chunks: vec![(obj, (len / 8) as u32); times],
            }
            .encode();
            encoded(
                id,
                &Request::Compute {
                    route: obj,
                    op: op::VEC_AGGREGATE,
                    args: &args,
                },
            )
        }
        8 => {
            let mut b = Vec::new();
            body::put_many(
                &mut b,
                &[(obj, &data[..len / 2]), (obj + 1, &data[len / 2..])],
            );
            frame(farmem_proto::Op::PutMany as u16, id, &b)
        }
        _ => encoded(id, &Request::CloseSession),
    }
}

/// Checks that `out` is whole frames that decode for their op.
fn check_answers(out: &[u8]) {
    let mut at = 0;
    while at < out.len() {
        let (f, used) = match decode_frame(&out[at..], u32::MAX) {
            Ok(Some(f)) => f,
            other => panic!("an answer is not a whole frame: {other:?}"),
        };
        if let Err(e) = Response::decode(f.header.op, f.header.flags, f.body) {
            panic!("an answer does not decode for op {}: {e}", f.header.op);
        }
        at += used;
    }
}

/// Delivers `bytes` to `slot`'s connection and checks what the server did.
fn deliver(h: &Harness, slot: &mut Option<Connection>, bytes: &[u8]) {
    let Some(c) = slot.as_mut() else {
        return;
    };
    let had_session = c.session().is_some();
    let sessions = h.sessions();
    let mut out = Vec::new();
    let open = c.feed(bytes, &mut out);
    check_answers(&out);
    let (used, _) = h.usage();
    assert!(
        used <= h.capacity(),
        "{used} bytes charged over the capacity"
    );
    if open {
        let limit = match c.session() {
            Some(_) => u32::MAX as usize,
            None => h.max_hello_frame() as usize,
        };
        assert!(
            c.buffered() < limit + HEADER_LEN,
            "buffered {} bytes",
            c.buffered()
        );
        if !had_session && c.session().is_none() {
            // Without a session, nothing but an unfinished hello may be pending.
            assert!(
                out.is_empty() || bytes.is_empty(),
                "answered before the hello"
            );
        }
    } else {
        *slot = None;
        if !had_session {
            assert!(h.sessions() <= sessions, "a refused hello opened a session");
        }
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some(h) = Harness::new(Some(TOKEN.to_vec()), 256 << 10, 32 << 10) else {
        panic!("the harness's limits are consistent");
    };
    let mut conns: Vec<Option<Connection>> = (0..SLOTS).map(|_| None).collect();
    let mut inp = Input::new(data);
    let mut steps = 0;
    while let Some(b) = inp.byte() {
        steps += 1;
        if steps > 400 {
            break;
        }
        let i = usize::from(b >> 3) % SLOTS;
        match b & 7 {
            0 => conns[i] = h.connect(),
            1 => {
                let flags = inp.byte().unwrap_or(0);
                let other = conns.iter().flatten().find_map(Connection::session);
                deliver(&h, &mut conns[i], &hello(flags, other));
            }
            2 => {
                let r = request(&mut inp);
                deliver(&h, &mut conns[i], &r);
            }
            3 => {
                let n = usize::from(inp.byte().unwrap_or(0));
                let raw = inp.bytes(n).to_vec();
                deliver(&h, &mut conns[i], &raw);
            }
            4 => {
                // A header announcing a huge body (which never comes).
                let mut head = frame(u16::from(inp.byte().unwrap_or(1)), 9, &[]);
                let len = u32::from_le_bytes([0, 0, inp.byte().unwrap_or(0x10), 0x7f]);
                head[0..4].copy_from_slice(&len.to_le_bytes());
                deliver(&h, &mut conns[i], &head[..HEADER_LEN]);
            }
            5 => {
                let n = usize::from(inp.byte().unwrap_or(0) % 4) + 1;
                let mut many = Vec::new();
                for _ in 0..n {
                    many.extend(request(&mut inp));
                }
                deliver(&h, &mut conns[i], &many);
            }
            6 => {
                let r = request(&mut inp);
                let cut = usize::from(inp.byte().unwrap_or(0)) % (r.len() + 1);
                deliver(&h, &mut conns[i], &r[..cut]);
                deliver(&h, &mut conns[i], &r[cut..]);
            }
            _ => conns[i] = None,
        }
    }
    drop(conns);
    assert_eq!(h.sessions(), 0, "sessions outlived their connections");
    assert_eq!(
        h.usage(),
        (0, 0),
        "hung-up sessions left bytes or objects charged"
    );
}
