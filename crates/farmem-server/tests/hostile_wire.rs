//! Wire rules under hostile clients: request id 0 (reserved for the handshake) and non-zero
//! reserved fields are refused with `Malformed`, and a server stopped with SIGTERM tells its
//! connected clients `ShuttingDown` instead of dropping them silently.

mod support;

use std::time::Duration;

use farmem_proto::{ErrorCode, Op};
use support::ServerProc;
use support::raw::{Raw, error_code, frame, hello_body};

#[test]
fn request_id_zero_is_refused_after_the_hello() {
    let server = ServerProc::start(&[]);
    let mut c = Raw::hello(&server.addr);
    c.ping(5);
    let a = c.call(&frame(Op::Ping, 0, &[]));
    assert_eq!(error_code(&a), Some(ErrorCode::Malformed as u16));
    assert!(c.closed_within(Duration::from_secs(5)));
    Raw::hello(&server.addr).ping(1);
}

#[test]
fn a_non_zero_reserved_field_is_refused() {
    let server = ServerProc::start(&[]);
    let mut c = Raw::connect(&server.addr);
    let a = c.call(&frame(Op::Hello, 0, &hello_body(1)));
    assert_eq!(error_code(&a), Some(ErrorCode::Malformed as u16));
    assert!(c.closed_within(Duration::from_secs(5)));
    // Compute with a non-zero reserved field, after a good hello.
    let mut c = Raw::hello(&server.addr);
    let mut args = 0u64.to_le_bytes().to_vec(); // route
    args.extend_from_slice(&1u16.to_le_bytes()); // agent op
    args.extend_from_slice(&7u16.to_le_bytes()); // reserved
    let a = c.call(&frame(Op::Compute, 3, &args));
    assert_eq!(error_code(&a), Some(ErrorCode::Malformed as u16));
    Raw::hello(&server.addr).ping(1);
}

#[test]
fn sigterm_tells_connected_clients_shutting_down() {
    let mut server = ServerProc::start(&[]);
    let mut a = Raw::hello(&server.addr);
    let mut b = Raw::hello(&server.addr);
    a.ping(1);
    assert!(server.terminate().success());
    for c in [&mut a, &mut b] {
        let notice = c.recv().expect("a notice before the connection closes");
        assert_eq!(notice.0.req_id, 0);
        assert_eq!(error_code(&notice), Some(ErrorCode::ShuttingDown as u16));
        assert!(c.recv().is_none());
    }
}
