//! Every frame type survives an encode/decode round trip; no input makes the decoder panic.

use farmem_proto::{
    AdminAction, AdminStatus, DataList, ErrorInfo, FLAG_ERROR, HelloInfo, Op, Request, Response,
    ServerStats, begin_frame, body, decode_frame, finish_frame,
};
use proptest::prelude::*;

const LIMIT: u32 = 1 << 24;

/// One object's owned edits.
type OwnedPatch = (u64, Vec<(u32, Vec<u8>)>);

#[derive(Clone, Debug, PartialEq)]
enum Req {
    Hello(u16, u64, Vec<u8>),
    Put(u64, Vec<u8>),
    Get(u64),
    GetMany(Vec<u64>),
    PutMany(Vec<(u64, Vec<u8>)>),
    Patch(Vec<OwnedPatch>),
    Free(Vec<u64>),
    Stats,
    Ping,
    CloseSession,
    Compute(u64, u16, Vec<u8>),
    Admin(u16, u64, u64, Vec<u8>),
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        (any::<u16>(), any::<u64>(), bytes(40)).prop_map(|(v, s, t)| Req::Hello(v, s, t)),
        (any::<u64>(), bytes(300)).prop_map(|(i, d)| Req::Put(i, d)),
        any::<u64>().prop_map(Req::Get),
        prop::collection::vec(any::<u64>(), 0..50).prop_map(Req::GetMany),
        prop::collection::vec((any::<u64>(), bytes(50)), 0..20).prop_map(Req::PutMany),
        prop::collection::vec(
            (
                any::<u64>(),
                prop::collection::vec((any::<u32>(), bytes(20)), 0..5)
            ),
            0..10
        )
        .prop_map(Req::Patch),
        prop::collection::vec(any::<u64>(), 0..50).prop_map(Req::Free),
        Just(Req::Stats),
        Just(Req::Ping),
        Just(Req::CloseSession),
        (any::<u64>(), any::<u16>(), bytes(100)).prop_map(|(r, o, a)| Req::Compute(r, o, a)),
        (1u16..=4, any::<u64>(), any::<u64>(), bytes(40))
            .prop_map(|(a, b, d, t)| Req::Admin(a, b, d, t)),
    ]
}

fn encode(r: &Req, rid: u64, out: &mut Vec<u8>) {
    let simple = |req: Request<'_>, out: &mut Vec<u8>| farmem_proto::encode_request(out, rid, &req);
    match r {
        Req::Hello(v, s, t) => simple(
            Request::Hello {
                version: *v,
                session: *s,
                token: t,
                resume: 0,
            },
            out,
        ),
        Req::Put(id, d) => simple(Request::Put { id: *id, data: d }, out),
        Req::Get(id) => simple(Request::Get { id: *id }, out),
        Req::Stats => simple(Request::Stats, out),
        Req::Ping => simple(Request::Ping, out),
        Req::CloseSession => simple(Request::CloseSession, out),
        Req::Admin(a, b, d, t) => simple(
            Request::Admin {
                action: AdminAction::from_code(*a).unwrap(),
                bytes: *b,
                deadline_ms: *d,
                token: t,
            },
            out,
        ),
        Req::Compute(route, op, args) => simple(
            Request::Compute {
                route: *route,
                op: *op,
                args,
            },
            out,
        ),
        Req::GetMany(ids) | Req::Free(ids) => {
            let op = if matches!(r, Req::GetMany(_)) {
                Op::GetMany
            } else {
                Op::Free
            };
            let s = begin_frame(out, op as u16, 0, rid);
            body::ids(out, ids);
            finish_frame(out, s);
        }
        Req::PutMany(items) => {
            let s = begin_frame(out, Op::PutMany as u16, 0, rid);
            let v: Vec<(u64, &[u8])> = items.iter().map(|(i, d)| (*i, d.as_slice())).collect();
            body::put_many(out, &v);
            finish_frame(out, s);
        }
        Req::Patch(items) => {
            let s = begin_frame(out, Op::Patch as u16, 0, rid);
            let edits: Vec<Vec<(u32, &[u8])>> = items
                .iter()
                .map(|(_, e)| e.iter().map(|(o, b)| (*o, b.as_slice())).collect())
                .collect();
            let v: Vec<body::PatchItem<'_>> = items
                .iter()
                .zip(&edits)
                .map(|((id, _), e)| (*id, e.as_slice()))
                .collect();
            body::patch(out, &v);
            finish_frame(out, s);
        }
    }
}

fn owned(r: Request<'_>) -> Req {
    match r {
        Request::Hello {
            version,
            session,
            token,
            ..
        } => Req::Hello(version, session, token.to_vec()),
        Request::Put { id, data } => Req::Put(id, data.to_vec()),
        Request::Get { id } => Req::Get(id),
        Request::GetMany { ids } => Req::GetMany(ids.iter().collect()),
        Request::Free { ids } => Req::Free(ids.iter().collect()),
        Request::PutMany { items } => {
            Req::PutMany(items.iter().map(|(i, d)| (i, d.to_vec())).collect())
        }
        Request::Patch { items } => Req::Patch(
            items
                .iter()
                .map(|(id, e)| (id, e.map(|(o, b)| (o, b.to_vec())).collect()))
                .collect(),
        ),
        Request::Stats => Req::Stats,
        Request::Ping => Req::Ping,
        Request::CloseSession => Req::CloseSession,
        Request::Compute { route, op, args } => Req::Compute(route, op, args.to_vec()),
        Request::Admin {
            action,
            bytes,
            deadline_ms,
            token,
        } => Req::Admin(action as u16, bytes, deadline_ms, token.to_vec()),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Resp {
    Hello(HelloInfo),
    Done(Op),
    Data(Op, Vec<u8>),
    Many(Vec<Option<Vec<u8>>>),
    Stats(ServerStats),
    Admin(AdminStatus),
    Error(Op, u16, [u64; 3], String),
}

fn resp() -> impl Strategy<Value = Resp> {
    let done_op = prop_oneof![
        Just(Op::Put),
        Just(Op::PutMany),
        Just(Op::Patch),
        Just(Op::Free)
    ];
    let data_op = prop_oneof![Just(Op::Get), Just(Op::Compute)];
    let any_op = (1u16..=12).prop_map(|c| Op::from_code(c).unwrap());
    prop_oneof![
        (any::<u16>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(v, s, f, i)| {
            Resp::Hello(HelloInfo {
                version: v,
                session: s,
                max_frame: f,
                max_inflight: i,
                resume: 0,
            })
        }),
        done_op.prop_map(Resp::Done),
        (data_op, bytes(300)).prop_map(|(o, d)| Resp::Data(o, d)),
        prop::collection::vec(prop::option::of(bytes(40)), 0..20).prop_map(Resp::Many),
        prop::array::uniform5(any::<u64>()).prop_map(|f| Resp::Admin(AdminStatus {
            used_bytes: f[0],
            capacity_bytes: f[1],
            max_capacity_bytes: f[2],
            excess_bytes: f[3],
            reclaim_deadline_ms: f[4],
        })),
        prop::array::uniform11(any::<u64>()).prop_map(|f| Resp::Stats(ServerStats {
            used_bytes: f[0],
            capacity_bytes: f[1],
            objects: f[2],
            per_object_overhead: f[3],
            bytes_written: f[4],
            session_used_bytes: f[5],
            session_objects: f[6],
            sessions: f[7],
            connections: f[8],
            reclaim_bytes: f[9],
            reclaim_deadline_ms: f[10],
        })),
        (
            any_op,
            any::<u16>(),
            prop::array::uniform3(any::<u64>()),
            ".{0,30}"
        )
            .prop_map(|(o, c, d, m)| Resp::Error(o, c, d, m)),
    ]
}

fn encode_resp(r: &Resp, rid: u64, out: &mut Vec<u8>) {
    match r {
        Resp::Hello(h) => Response::Hello(*h).encode(out, Op::Hello, rid),
        Resp::Done(op) => Response::Done.encode(out, *op, rid),
        Resp::Data(op, d) => Response::Data(d).encode(out, *op, rid),
        Resp::Stats(s) => Response::Stats(*s).encode(out, Op::Stats, rid),
        Resp::Admin(s) => Response::Admin(*s).encode(out, Op::Admin, rid),
        Resp::Error(op, code, d, m) => Response::Error(ErrorInfo {
            code: *code,
            a: d[0],
            b: d[1],
            c: d[2],
            message: m,
        })
        .encode(out, *op, rid),
        Resp::Many(items) => {
            let s = begin_frame(out, Op::GetMany as u16, 0, rid);
            DataList::begin(out, items.len());
            for it in items {
                DataList::push(out, it.as_deref());
            }
            finish_frame(out, s);
        }
    }
}

fn owned_resp(op: Op, r: Response<'_>) -> Resp {
    match r {
        Response::Hello(h) => Resp::Hello(h),
        Response::Done => Resp::Done(op),
        Response::Data(d) => Resp::Data(op, d.to_vec()),
        Response::Many(l) => Resp::Many(l.iter().map(|o| o.map(<[u8]>::to_vec)).collect()),
        Response::Stats(s) => Resp::Stats(s),
        Response::Admin(s) => Resp::Admin(s),
        Response::Error(e) => Resp::Error(op, e.code, [e.a, e.b, e.c], e.message.to_string()),
    }
}

proptest! {
    #[test]
    fn requests_round_trip(reqs in prop::collection::vec((req(), any::<u64>()), 1..8)) {
        let mut buf = Vec::new();
        for (r, rid) in &reqs {
            encode(r, *rid, &mut buf);
        }
        let mut at = 0;
        for (r, rid) in &reqs {
            let (frame, used) = decode_frame(&buf[at..], LIMIT).unwrap().unwrap();
            prop_assert_eq!(frame.header.req_id, *rid);
            prop_assert_eq!(frame.header.flags, 0);
            let got = Request::decode(frame.header.op, frame.body).unwrap();
            prop_assert_eq!(&owned(got), r);
            at += used;
        }
        prop_assert_eq!(at, buf.len());
    }

    #[test]
    fn responses_round_trip(r in resp(), rid in any::<u64>()) {
        let mut buf = Vec::new();
        encode_resp(&r, rid, &mut buf);
        let (frame, used) = decode_frame(&buf, LIMIT).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(frame.header.req_id, rid);
        prop_assert_eq!(frame.header.flags & FLAG_ERROR != 0, matches!(r, Resp::Error(..)));
        let op = Op::from_code(frame.header.op).unwrap();
        let got = Response::decode(frame.header.op, frame.header.flags, frame.body).unwrap();
        prop_assert_eq!(owned_resp(op, got), r);
    }

    #[test]
    fn truncation_and_corruption_are_detected(r in req(), cut in any::<prop::sample::Index>(),
                                              flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut buf = Vec::new();
        encode(&r, 1, &mut buf);
        let n = cut.index(buf.len());
        prop_assert_eq!(decode_frame(&buf[..n], LIMIT).unwrap(), None);
        // Flip one bit anywhere but the length field: a checksum, flag or op error.
        let i = 4 + flip.index(buf.len() - 4);
        buf[i] ^= 1 << bit;
        prop_assert!(decode_frame(&buf, LIMIT).is_err());
    }

    #[test]
    fn decoders_never_panic(data in bytes(600), op in any::<u16>(), flags in any::<u16>(),
                            limit in any::<u32>()) {
        let _ = decode_frame(&data, limit);
        let _ = Request::decode(op, &data);
        let _ = Response::decode(op, flags, &data);
        if let Ok(Request::PutMany { items }) = Request::decode(op, &data) {
            let _ = items.iter().count();
        }
        if let Ok(Request::Patch { items }) = Request::decode(op, &data) {
            for (_, e) in items.iter() {
                let _ = e.count();
            }
        }
        if let Ok(Response::Many(l)) = Response::decode(op, flags, &data) {
            let _ = l.iter().count();
        }
    }

    #[test]
    fn structured_garbage_never_panics(op in 1u16..=12, body in bytes(200)) {
        // A valid frame around arbitrary bodies exercises every body parser.
        let mut buf = Vec::new();
        let s = begin_frame(&mut buf, op, 0, 7);
        buf.extend_from_slice(&body);
        finish_frame(&mut buf, s);
        let (frame, _) = decode_frame(&buf, LIMIT).unwrap().unwrap();
        if let Ok(r) = Request::decode(frame.header.op, frame.body) {
            let _ = owned(r);
        }
        if let Ok(r) = Response::decode(frame.header.op, 0, frame.body) {
            let _ = owned_resp(Op::from_code(op).unwrap(), r);
        }
    }
}

#[test]
fn stats_from_older_servers_and_bad_admin_bodies() {
    // A nine-number stats answer (servers before the reclaim notice) decodes with zeros.
    let body: Vec<u8> = (1u64..=9).flat_map(u64::to_le_bytes).collect();
    let Response::Stats(s) = Response::decode(Op::Stats as u16, 0, &body).unwrap() else {
        panic!("not stats")
    };
    assert_eq!(
        (s.connections, s.reclaim_bytes, s.reclaim_deadline_ms),
        (9, 0, 0)
    );
    // Ten numbers, or a partial one, are refused.
    assert!(Response::decode(Op::Stats as u16, 0, &body[..80 - 12]).is_err());
    let mut ten = body.clone();
    ten.extend_from_slice(&10u64.to_le_bytes());
    assert!(Response::decode(Op::Stats as u16, 0, &ten).is_err());
    // Unknown admin actions and short tokens are malformed.
    let mut admin = Vec::new();
    Request::Admin {
        action: AdminAction::Shrink,
        bytes: 1 << 20,
        deadline_ms: 1000,
        token: b"op",
    }
    .encode_body(&mut admin);
    assert!(Request::decode(Op::Admin as u16, &admin).is_ok());
    let mut bad = admin.clone();
    bad[0] = 9;
    assert!(Request::decode(Op::Admin as u16, &bad).is_err());
    assert!(Request::decode(Op::Admin as u16, &admin[..admin.len() - 1]).is_err());
}
