//! Memory before authentication: a connection announcing a huge hello costs the server a small
//! fixed amount (it is refused at the header, its body never buffered), and a batched get
//! naming a large object many times is refused with a typed error instead of being built.

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
