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
