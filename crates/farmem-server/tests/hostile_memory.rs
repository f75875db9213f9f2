//! Memory before authentication: a connection announcing a huge hello costs the server a small
//! fixed amount (it is refused at the header, its body never buffered), and a batched get
//! naming a large object many times is refused with a typed error instead of being built.
//! Memory after it: a client that fills the server with objects of one size, frees most of them
//! and refills with another size, again and again, does not make the server hold every size.

mod support;

use std::time::Duration;

use farmem_proto::{ErrorCode, ErrorInfo, Op, Response, body};
use support::raw::{Raw, announce, error_code, frame, rss};
use support::{ServerProc, watchdog};

#[test]
fn huge_hello_announcements_cost_the_server_little() {
    const CONNS: usize = 200;
    let server = ServerProc::start(&["--max-object", "4MiB", "--threads", "512"]);
    let pid = server.pid().unwrap();
    let mut good = Raw::hello(&server.addr);
    good.ping(1);
    let before = rss(pid);
    // Each announces a hello body of 4 MiB (the largest frame the server takes after a hello)
    // and sends a little of it.
    let mut hostile: Vec<Raw> = (0..CONNS)
        .map(|_| {
            let mut r = Raw::connect(&server.addr);
            r.send(&announce(Op::Hello, 0, 4 << 20));
            r.send(&[0u8; 1024]);
            r
        })
        .collect();
    good.ping(2);
    std::thread::sleep(Duration::from_millis(300));
    let grown = rss(pid).saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "{CONNS} unauthenticated connections grew the server by {} MiB",
        grown >> 20
    );
    // Each is refused at its header and closed.
    for r in &mut hostile {
        let a = r.recv().expect("a refusal");
        assert_eq!(error_code(&a), Some(ErrorCode::Malformed as u16));
        assert!(r.closed_within(Duration::from_secs(5)));
    }
    good.ping(3);
}

#[test]
fn an_over_large_batched_get_is_refused_with_a_typed_error() {
    let server = ServerProc::start(&["--max-response", "4MiB"]);
    let mut c = Raw::hello(&server.addr);
    let mut put = 7u64.to_le_bytes().to_vec();
    put.extend_from_slice(&vec![1u8; 1 << 20]);
    assert_eq!(error_code(&c.call(&frame(Op::Put, 1, &put))), None);
    // The same 1 MiB object named 64 times: a 64 MiB answer.
    let mut ids = Vec::new();
    body::ids(&mut ids, &[7; 64]);
    let (a, _) = watchdog("the over-large get", Duration::from_secs(10), move || {
        let a = c.call(&frame(Op::GetMany, 2, &ids));
        (a, c)
    });
    let (a, mut c) = a;
    assert_eq!(a.0.req_id, 2);
    match Response::decode(a.0.op, a.0.flags, &a.1) {
        Ok(Response::Error(ErrorInfo { code, a, b, .. })) => {
            assert_eq!(code, ErrorCode::ResponseTooLarge as u16);
            assert!(a > 4 << 20, "size {a}");
            assert_eq!(b, 4 << 20);
        }
        other => panic!("answered {other:?}"),
    }
    // The connection stays open and a batch within the limit is served.
    let mut ids = Vec::new();
    body::ids(&mut ids, &[7; 3]);
    let a = c.call(&frame(Op::GetMany, 3, &ids));
    match Response::decode(a.0.op, a.0.flags, &a.1) {
        Ok(Response::Many(list)) => {
            assert_eq!(list.len(), 3);
            assert!(list.iter().all(|d| d.is_some_and(|d| d.len() == 1 << 20)));
        }
        other => panic!("answered {other:?}"),
    }
}

#[test]
fn the_client_library_names_an_over_large_answer() {
    use farmem::Backend;
    use farmem::backend::BackendError;
    let server = ServerProc::start(&["--max-response", "4MiB"]);
    let b = support::pool::member(&server.addr, Duration::from_secs(5));
    b.put(7, &vec![1u8; 1 << 20]).unwrap();
    match b.get_many(&[7; 64]) {
        Err(BackendError::ResponseTooLarge { size, limit }) => {
            assert!(size > 4 << 20, "size {size}");
            assert_eq!(limit, 4 << 20);
        }
        other => panic!("answered {:?}", other.map(|v| v.len())),
    }
    // Nothing changed and the connection keeps serving.
    assert_eq!(b.get_many(&[7; 3]).unwrap().len(), 3);
}

#[test]
fn refilling_with_other_object_sizes_does_not_grow_the_server() {
    use farmem::Backend;
    use farmem::backend::ObjectId;
    const CAPACITY: u64 = 64 << 20;
    let server = ServerProc::start(&["--capacity", "64MiB"]);
    let pid = server.pid().unwrap();
    let b = support::pool::member(&server.addr, Duration::from_secs(5));
    let before = rss(pid);
    let mut next_id = 1u64;
    let mut kept: Vec<ObjectId> = Vec::new();
    let mut peak = 0;
    // Five sizes, each in its own slab class; each round fills about half the capacity, then
    // frees nine objects in ten (spread over every page of the class) before the next size.
    for (round, len) in [24usize, 200, 1000, 2500, 4000].into_iter().enumerate() {
        let data = vec![round as u8 + 1; len];
        let n = (CAPACITY / 2 / (len as u64 + 32)) as usize;
        let ids: Vec<ObjectId> = (0..n)
            .map(|_| {
                next_id += 1;
                next_id
            })
            .collect();
        for batch in ids.chunks(256) {
            let items: Vec<(ObjectId, &[u8])> = batch.iter().map(|&id| (id, &data[..])).collect();
            b.put_many(&items).unwrap();
        }
        let mut free = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            if i % 10 == 0 {
                kept.push(id);
            } else {
                free.push(id);
            }
        }
        for batch in free.chunks(1024) {
            b.free(batch).unwrap();
        }
        peak = peak.max(rss(pid).saturating_sub(before));
    }
    // What was kept is intact.
    for chunk in kept.chunks(512) {
        for d in b.get_many(chunk).unwrap() {
            assert!(!d.is_empty() && d.iter().all(|&x| x == d[0]));
        }
    }
    // Five half-capacity fills held at once would be 2.5x the capacity; the server must stay
    // near one fill plus what is kept and the slack of pages and index.
    assert!(
        peak < CAPACITY + (16 << 20),
        "server grew by {} MiB at its peak over {} MiB of capacity",
        peak >> 20,
        CAPACITY >> 20
    );
}
