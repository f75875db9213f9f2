//! Time bounds under hostile clients: a hello trickled one byte at a time is cut at its
//! deadline, an authenticated connection that stays silent is closed after the idle timeout, and
//! a client that never reads its answers is disconnected after the write timeout. A well-behaved
//! client is served throughout.

mod support;

use std::io::Write;
use std::time::Duration;

use farmem_proto::{ErrorCode, Op, body};
use support::raw::{Raw, error_code, frame, hello_body};
use support::{ServerProc, wait_until};

#[test]
fn a_trickled_hello_is_cut_at_its_deadline() {
    let server = ServerProc::start(&["--hello-timeout", "1s"]);
    let mut good = Raw::hello(&server.addr);
    let mut slow = Raw::connect(&server.addr);
    let hello = frame(Op::Hello, 0, &hello_body(0));
    // One byte every 150 ms: each read is quick, the whole hello would take 6 s.
    let mut writer = slow.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in hello {
            if writer.write_all(&[b]).is_err() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        true
    });
    // The server refuses it (request id 0: not tied to a request) and closes, long before the
    // last byte (the read timeout of 10 s fails the test otherwise).
    slow.stream
        .set_read_timeout(Some(Duration::from_secs(4)))
        .unwrap();
    let refusal = slow.recv().expect("a refusal before the connection closes");
    assert_eq!(refusal.0.req_id, 0);
    assert_eq!(error_code(&refusal), Some(ErrorCode::Refused as u16));
    assert!(slow.closed_within(Duration::from_secs(4)));
    assert!(!trickle.join().unwrap(), "the whole hello was accepted");
    good.ping(1);
}

#[test]
fn a_silent_authenticated_connection_is_closed_after_the_idle_timeout() {
    let server = ServerProc::start(&["--idle-timeout", "1s"]);
    let mut quiet = Raw::hello(&server.addr);
    quiet.ping(1);
    let mut busy = Raw::hello(&server.addr);
    assert_eq!(busy.stats(1).connections, 2);
    // The busy client pings well within the timeout and stays; the quiet one is closed.
    let mut id = 2;
    wait_until(
        "the idle connection to close",
        Duration::from_secs(10),
        || {
            busy.ping(id);
            id += 1;
            std::thread::sleep(Duration::from_millis(200));
            busy.stats(id).connections == 1
        },
    );
    assert!(quiet.closed_within(Duration::from_secs(2)));
    busy.ping(id + 1);
}

#[test]
fn a_client_that_does_not_read_is_disconnected_without_blocking_others() {
    let server = ServerProc::start(&["--write-timeout", "1s"]);
    let mut greedy = Raw::hello(&server.addr);
    let object = vec![7u8; 1 << 20];
    let mut put = 9u64.to_le_bytes().to_vec();
    put.extend_from_slice(&object);
    assert_eq!(error_code(&greedy.call(&frame(Op::Put, 1, &put))), None);
    // 256 gets of 1 MiB, never read: far more than the socket buffers hold.
    let mut ids = Vec::new();
    body::ids(&mut ids, &[9]);
    let mut burst = Vec::new();
    for i in 0..256u64 {
        burst.extend_from_slice(&frame(Op::GetMany, 2 + i, &ids));
    }
    greedy.send(&burst);
    let mut good = Raw::hello(&server.addr);
    let mut id = 1;
    wait_until(
        "the non-reading client to be cut off",
        Duration::from_secs(10),
        || {
            good.ping(id);
            id += 1;
            good.stats(id).connections == 1
        },
    );
    good.ping(id + 1);
}

#[test]
fn hung_server_to_server_copies_do_not_hold_up_agent_operations() {
    use farmem_proto::agent::{AgentMessage, ElemType, PushArgs, VecRef, op};
    use farmem_proto::{Request, Response, encode_request};

    let server = ServerProc::start(&["--workers", "2", "--copy-workers", "2"]);
    // A target that takes connections (the kernel's backlog) and never answers: every copy to
    // it hangs for the copy's I/O timeout (10 s).
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = black_hole.local_addr().unwrap().to_string();
    let request = |id: u64, req: &Request<'_>| {
        let mut b = Vec::new();
        encode_request(&mut b, id, req);
        b
    };
    // Two sessions (the per-session share cannot stop them) each start a copy.
    let mut copiers: Vec<Raw> = (0..2)
        .map(|_| {
            let mut c = Raw::hello(&server.addr);
            let put = request(1, &Request::Put { id: 5, data: b"x" });
            assert_eq!(error_code(&c.call(&put)), None);
            let args = PushArgs {
                addr: target.clone(),
                session: 1,
                resume: 1,
                token: Vec::new(),
                ids: vec![5],
            }
            .encode();
            let push = Request::Compute {
                route: 5,
                op: op::OBJ_PUSH,
                args: &args,
            };
            c.send(&request(2, &push));
            c
        })
        .collect();
    // A well-behaved client's agent operation is answered while both copies still hang.
    std::thread::sleep(Duration::from_millis(300));
    let mut good = Raw::hello(&server.addr);
    let chunk: Vec<u8> = (1..=100u64).flat_map(u64::to_le_bytes).collect();
    let put = request(
        1,
        &Request::Put {
            id: 9,
            data: &chunk,
        },
    );
    assert_eq!(error_code(&good.call(&put)), None);
    let v = VecRef {
        ty: ElemType::U64,
        chunks: vec![(9, 100)],
    }
    .encode();
    let agg = Request::Compute {
        route: 9,
        op: op::VEC_AGGREGATE,
        args: &v,
    };
    let a = good.call(&request(2, &agg));
    assert!(matches!(
        Response::decode(a.0.op, a.0.flags, &a.1),
        Ok(Response::Data(_))
    ));
    for c in &mut copiers {
        c.stream.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let r = std::io::Read::read(&mut c.stream, &mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a copy was answered before the agent operation: {r:?}"
        );
    }
    drop(black_hole);
}
