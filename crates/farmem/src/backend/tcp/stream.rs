//! A connection's byte stream: plain TCP, or TLS over it (rustls), shared by the thread that
//! reads and the threads that write (as `&TcpStream` is).
//!
//! With TLS, no lock is held across a blocking socket call that another side needs: the reader
//! reads ciphertext without the session lock and decrypts under it; a writer encrypts under it
//! and sends under a separate send lock, so records leave in sequence order while a writer
//! blocked on a full socket never stops the reader.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use parking_lot::Mutex;

/// Ciphertext read per socket call.
const RAW_READ: usize = 64 << 10;
/// Buffers larger than this are given back when emptied.
const SHRINK_ABOVE: usize = 4 << 20;

/// Plain TCP or TLS over TCP.
pub(crate) struct Stream {
    sock: TcpStream,
    tls: Option<Tls>,
}

struct Tls {
    session: Mutex<rustls::ClientConnection>,
    /// Ciphertext to send; held from encryption to the end of the send.
    send: Mutex<Vec<u8>>,
    recv: Mutex<Recv>,
}

/// The reader's buffers: ciphertext read, and plaintext not yet handed out (`plain[at..]`).
struct Recv {
    raw: Vec<u8>,
    plain: Vec<u8>,
    at: usize,
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Stream {
    /// A clear-text stream.
    pub(crate) fn plain(sock: TcpStream) -> Self {
        Self { sock, tls: None }
    }

    /// Runs the TLS handshake on `sock` (blocking, within its timeouts).
    ///
    /// # Errors
    /// `InvalidData` (wrapping the rustls error) when the server's certificate is refused or
    /// the handshake breaks the protocol; the socket's error otherwise.
    pub(crate) fn tls(
        mut sock: TcpStream,
        mut session: rustls::ClientConnection,
    ) -> io::Result<Self> {
        session.set_buffer_limit(None); // writers drain it at once
        while session.is_handshaking() {
            session.complete_io(&mut sock)?;
        }
        Ok(Self {
            sock,
            tls: Some(Tls {
                session: Mutex::new(session),
                send: Mutex::new(Vec::new()),
                recv: Mutex::new(Recv {
                    raw: vec![0; RAW_READ],
                    plain: Vec::new(),
                    at: 0,
                }),
            }),
        })
    }

    /// Reads clear-text bytes (blocking within the read timeout); `Ok(0)` when the server
    /// closed the stream.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return (&self.sock).read(buf);
        };
        let mut rx = tls.recv.lock();
        let Recv { raw, plain, at } = &mut *rx;
        loop {
            if *at < plain.len() {
                let n = buf.len().min(plain.len() - *at);
                buf[..n].copy_from_slice(&plain[*at..*at + n]);
                *at += n;
                if *at == plain.len() {
                    plain.clear();
                    *at = 0;
                    if plain.capacity() > SHRINK_ABOVE {
                        *plain = Vec::new();
                    }
                }
                return Ok(n);
            }
            let n = (&self.sock).read(raw)?;
            if n == 0 {
                return Ok(0);
            }
            let mut s = tls.session.lock();
            let mut input = &raw[..n];
            while !input.is_empty() {
                s.read_tls(&mut input)?;
                let st = s.process_new_packets().map_err(invalid)?;
                let k = st.plaintext_bytes_to_read();
                if k > 0 {
                    let old = plain.len();
                    plain.resize(old + k, 0);
                    s.reader().read_exact(&mut plain[old..])?;
                }
                if st.peer_has_closed() && plain.is_empty() {
                    return Ok(0);
                }
            }
        }
    }

    /// Writes all of `data` (blocking within the write timeout).
    pub(crate) fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return (&self.sock).write_all(data);
        };
        let mut out = tls.send.lock();
        out.clear();
        {
            let mut s = tls.session.lock();
            s.writer().write_all(data)?;
            while s.wants_write() {
                s.write_tls(&mut *out)?;
            }
        }
        let r = (&self.sock).write_all(&out);
        if out.capacity() > SHRINK_ABOVE {
            *out = Vec::new();
        }
        r
    }

    /// Sets the socket's read timeout.
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }

    /// The socket's read timeout.
    pub(crate) fn read_timeout(&self) -> io::Result<Option<Duration>> {
        self.sock.read_timeout()
    }

    /// Shuts the socket down (wakes a blocked reader or writer).
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.shutdown(how)
    }
}
