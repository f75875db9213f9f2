//! The operator's HTTP endpoint (`--metrics ADDR`): Prometheus metrics and health probes.
//!
//! - `GET /metrics`: the Prometheus text format (see `crate::metrics`).
//! - `GET /healthz`: liveness, 200 while the server runs.
//! - `GET /readyz`: readiness, 200 while the server accepts clients and has capacity to give
//!   (503 while shutting down, or when its capacity was taken down to zero to drain it).
//!
//! One plain thread serves it, one request per connection: scrapes and probes are rare, and a
//! slow or hostile peer is cut off after a short timeout, holding at most a small fixed buffer.
//! The thread ends by itself once the server is shut down.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::ServerError;
use crate::server::Shared;

/// How long a peer gets to send its request and read the answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// The most request bytes read (the request line and headers).
const MAX_REQUEST: usize = 4096;
/// How often the idle listener checks whether the server is gone.
const POLL: Duration = Duration::from_millis(100);

/// Binds `addr` and serves the endpoint on a thread of its own until `shared` shuts down;
/// returns the bound address.
///
/// # Errors
/// [`ServerError::Bind`] when the address cannot be bound, [`ServerError::Io`] when the thread
/// cannot be started.
pub(crate) fn spawn(shared: &Arc<Shared>, addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    let listener = TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let _ = shared.metrics.addr.set(bound);
    let weak = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name("farmem-metrics".into())
        .spawn(move || serve(&listener, &weak))?;
    tracing::info!(addr = %bound, "metrics and health endpoint listening");
    Ok(bound)
}

fn serve(listener: &TcpListener, shared: &Weak<Shared>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let Some(sh) = shared.upgrade() else { return };
                if let Err(e) = answer(stream, &sh) {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match shared.upgrade() {
                    Some(sh) if !sh.is_shutting_down() => {}
                    _ => return,
                }
                std::thread::sleep(POLL);
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Reads the request head (up to the blank line, at most [`MAX_REQUEST`] bytes).
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    Ok(buf)
}

fn answer(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(PEER_TIMEOUT))?;
    stream.set_write_timeout(Some(PEER_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next());
    let path = path.map(|p| p.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, ctype, body) = match (method, path) {
        (b"GET", Some(b"/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render(shared),
        ),
        (b"GET", Some(b"/healthz")) if !shared.is_shutting_down() => {
            ("200 OK", "text/plain", "ok\n".to_string())
        }
        (b"GET", Some(b"/readyz")) => match readiness(shared) {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
        },
        (b"GET", Some(b"/healthz")) => (
            "503 Service Unavailable",
            "text/plain",
            "shutting down\n".to_string(),
        ),
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// Whether new clients should be sent here.
fn readiness(shared: &Shared) -> Result<(), &'static str> {
    if shared.is_shutting_down() {
        return Err("shutting down");
    }
    if shared.capacity.status().capacity_bytes == 0 {
        return Err("capacity taken down to zero (draining)");
    }
    Ok(())
}
