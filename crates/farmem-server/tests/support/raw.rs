//! A raw wire client for hostile tests: frames built by hand with `farmem-proto`, so a test can
//! send what no well-behaved client would (trickled bytes, huge announced lengths, reserved ids).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use farmem_proto::{
    HEADER_LEN, HELLO_MAGIC, Header, MAX_FRAME_BODY, Op, Response, ServerStats, VERSION,
    begin_frame, decode_frame, finish_frame,
};

/// One frame as received: its header and body.
pub type Answer = (Header, Vec<u8>);

/// A whole frame: `op`, request id `id`, `body`.
pub fn frame(op: Op, id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let start = begin_frame(&mut out, op as u16, 0, id);
    out.extend_from_slice(body);
    finish_frame(&mut out, start);
    out
}

/// A hello body (new session, no token) with `reserved` in its reserved field.
pub fn hello_body(reserved: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&HELLO_MAGIC.to_le_bytes());
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&reserved.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // session: new
    b.extend_from_slice(&0u32.to_le_bytes()); // no token
    b.extend_from_slice(&0u64.to_le_bytes()); // resume secret
    b
}

/// The error code of an answer, if it is an error.
pub fn error_code(a: &Answer) -> Option<u16> {
    match Response::decode(a.0.op, a.0.flags, &a.1) {
        Ok(Response::Error(e)) => Some(e.code),
        _ => None,
    }
}

/// A raw connection.
#[derive(Debug)]
pub struct Raw {
    /// The socket (10 s read timeout).
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects without saying anything.
    pub fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and opens a session.
    pub fn hello(addr: &str) -> Self {
        let mut r = Self::connect(addr);
        let a = r.call(&frame(Op::Hello, 0, &hello_body(0)));
        assert!(
            matches!(
                Response::decode(a.0.op, a.0.flags, &a.1),
                Ok(Response::Hello(_))
            ),
            "hello refused: {:?}",
            error_code(&a)
        );
        r
    }

    /// Writes bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one frame; `None` when the server closed the connection (EOF or reset).
    pub fn recv(&mut self) -> Option<Answer> {
        loop {
            if let Some((f, used)) = decode_frame(&self.buf, MAX_FRAME_BODY).expect("bad frame") {
                let a = (f.header, f.body.to_vec());
                self.buf.drain(..used);
                return Some(a);
            }
            let mut chunk = vec![0u8; 256 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("no answer within the read timeout")
                }
                Err(_) => return None,
            }
        }
    }

    /// Sends a frame and reads one answer.
    pub fn call(&mut self, bytes: &[u8]) -> Answer {
        self.send(bytes);
        self.recv().expect("the server closed the connection")
    }

    /// Whether the server closes the connection within `limit` (answers before it are read
    /// and dropped).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let t0 = Instant::now();
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut chunk = vec![0u8; 256 << 10];
        while t0.elapsed() < limit {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// A ping round trip; panics if it is not answered with success.
    pub fn ping(&mut self, id: u64) {
        let a = self.call(&frame(Op::Ping, id, &[]));
        assert_eq!(a.0.req_id, id);
        assert_eq!(error_code(&a), None, "ping refused");
    }

    /// The server-wide figures (connections, sessions, ...).
    pub fn stats(&mut self, id: u64) -> ServerStats {
        let a = self.call(&frame(Op::Stats, id, &[]));
        match Response::decode(a.0.op, a.0.flags, &a.1) {
            Ok(Response::Stats(s)) => s,
            other => panic!("stats answered {other:?}"),
        }
    }
}

/// The resident set of process `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// The peak resident set of process `pid` so far (`VmHWM`), in bytes.
#[allow(dead_code)] // not every test binary uses it
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// A frame header announcing a body of `len` bytes (the body never follows).
pub fn announce(op: Op, id: u64, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[8..10].copy_from_slice(&(op as u16).to_le_bytes());
    h[12..20].copy_from_slice(&id.to_le_bytes());
    h
}
