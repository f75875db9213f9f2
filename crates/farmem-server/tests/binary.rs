//! The `farmem-server` binary: startup line, options, token file, graceful shutdown.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use farmem_proto::{
    DEFAULT_MAX_FRAME, ErrorCode, Request, Response, VERSION, decode_frame, encode_request,
};

use support::ServerProc;

const BIN: &str = env!("CARGO_BIN_EXE_farmem-server");

/// Sends a hello and returns the decoded answer's error code, if any.
fn hello(addr: &str, token: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let req = Request::Hello {
        version: VERSION,
        session: 0,
        token,
        resume: 0,
    };
    encode_request(&mut buf, 1, &req);
    s.write_all(&buf).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        if let Some((f, _)) = decode_frame(&got, DEFAULT_MAX_FRAME).unwrap() {
            return match Response::decode(f.header.op, f.header.flags, f.body).unwrap() {
                Response::Hello(h) => {
                    assert_eq!(h.version, VERSION);
                    None
                }
                Response::Error(e) => Some(e.code),
                other => panic!("unexpected answer {other:?}"),
            };
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed without an answer");
        got.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn prints_its_address_serves_and_stops_on_sigterm() {
    let mut server = ServerProc::start(&["--capacity", "64MiB"]);
    assert!(
        !server.addr.ends_with(":0"),
        "the real port is printed: {}",
        server.addr
    );
    assert_eq!(hello(&server.addr, b""), None);
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn token_file_is_enforced() {
    let dir = std::env::temp_dir().join(format!("farmem-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, "s3cret\n").unwrap();
    let mut server = ServerProc::start(&["--token-file", path.to_str().unwrap()]);
    let addr = server.addr.clone();
    assert_eq!(hello(&addr, b"wrong"), Some(ErrorCode::AuthRefused as u16));
    assert_eq!(hello(&addr, b""), Some(ErrorCode::AuthRefused as u16));
    assert_eq!(hello(&addr, b"s3cret"), None);
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_options_are_clear_errors() {
    for args in [
        &["--capacity", "lots"][..],
        &["--capacity", "-5GiB"][..],
        &["--listen", "nowhere"][..],
        &["--token-file", "/nonexistent/farmem-token"][..],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
}
