//! A connection's byte stream: plain TCP, or TLS over it (rustls), both non-blocking.
//!
//! `read` and `write` behave like non-blocking socket calls (`WouldBlock` when nothing can be
//! done now); TLS records the peer sends before the handshake is through are answered inside
//! `read`, and encrypted bytes that the socket did not take wait in rustls until `flush`.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// Plain TCP or TLS over TCP.
pub(crate) enum Transport {
    /// Clear text (trusted networks).
    Plain(TcpStream),
    /// TLS (boxed: a rustls connection is large).
    Tls(Box<TlsStream>),
}

/// A TLS session over a non-blocking socket.
pub(crate) struct TlsStream {
    sock: TcpStream,
    tls: rustls::ServerConnection,
}

impl Transport {
    /// Wraps `sock` in TLS when `tls` is given.
    pub(crate) fn new(
        sock: TcpStream,
        tls: Option<&std::sync::Arc<rustls::ServerConfig>>,
    ) -> io::Result<Self> {
        Ok(match tls {
            None => Transport::Plain(sock),
            Some(cfg) => {
                let tls = rustls::ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
                Transport::Tls(Box::new(TlsStream { sock, tls }))
            }
        })
    }

    /// The socket, to (de)register it.
    pub(crate) fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.sock,
        }
    }

    /// Reads clear-text bytes. `Ok(0)`: the peer closed. `WouldBlock`: nothing now.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }

    /// Whether a read of `asked` bytes that returned `got` shows the socket empty (so the next
    /// readiness event, not another read, says when there is more). Only plain TCP can tell;
    /// TLS buffers inside rustls and must be read until `WouldBlock`.
    pub(crate) fn drained(&self, got: usize, asked: usize) -> bool {
        matches!(self, Transport::Plain(_)) && got < asked
    }

    /// Writes some of `data`; returns how much was taken (with TLS: encrypted and queued; call
    /// [`Transport::flush`] until it is out).
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(data),
            Transport::Tls(t) => {
                let n = t.tls.writer().write(data)?;
                t.flush()?;
                Ok(n)
            }
        }
    }

    /// Sends encrypted bytes queued in rustls (plain TCP has none); `WouldBlock` if the socket
    /// is full.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.flush(),
        }
    }

    /// Whether encrypted bytes wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.tls.wants_write(),
        }
    }

    /// Starts a clean TLS close (a `close_notify` alert is queued; plain TCP: nothing).
    pub(crate) fn close_notify(&mut self) {
        if let Transport::Tls(t) = self {
            t.tls.send_close_notify();
        }
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.tls.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            let state = self.tls.process_new_packets();
            // Handshake answers and alerts (also the one telling the peer what went wrong).
            match self.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            state.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}
