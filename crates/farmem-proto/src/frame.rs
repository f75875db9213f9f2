//! Frames: the fixed header, checksums and size limits.
//!
//! Layout (all little-endian), 20 bytes of header then `body_len` bytes of body:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 4 | `body_len` |
//! | 4 | 4 | `crc`: CRC-32 (IEEE) of header bytes 8..20 followed by the body |
//! | 8 | 2 | `op` ([`crate::Op`]) |
//! | 10 | 2 | `flags` (bit 0: [`FLAG_ERROR`], other bits zero) |
//! | 12 | 8 | `req_id`: chosen by the client, echoed in the answer |

use crate::codec::u32_at;

/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 20;
/// Hard upper limit of a frame body, whatever the configuration.
pub const MAX_FRAME_BODY: u32 = 1 << 30;
/// Default per-connection limit on request bodies: a 64 MiB object plus room for its header.
pub const DEFAULT_MAX_FRAME: u32 = (64 << 20) + 4096;
/// Response flag: the body is an error ([`crate::ErrorInfo`]).
pub const FLAG_ERROR: u16 = 1;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Length of the body in bytes.
    pub body_len: u32,
    /// CRC-32 of header bytes 8..20 and the body.
    pub crc: u32,
    /// Operation code.
    pub op: u16,
    /// Flags; [`FLAG_ERROR`] on error answers.
    pub flags: u16,
    /// Request id, echoed in the answer.
    pub req_id: u64,
}

/// A complete frame borrowed from a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// The body, checksum verified.
    pub body: &'a [u8],
}

/// Why bytes are not a valid frame or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The body length exceeds the limit.
    #[error("frame body of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The limit in force.
        limit: u32,
    },
    /// The checksum does not match: the frame is corrupted.
    #[error("frame checksum mismatch (header says {expected:#010x}, body has {actual:#010x})")]
    Checksum {
        /// CRC from the header.
        expected: u32,
        /// CRC computed over the received bytes.
        actual: u32,
    },
    /// Unknown flag bits.
    #[error("unknown frame flags {0:#06x}")]
    Flags(u16),
    /// Unknown operation code.
    #[error("unknown operation {0}")]
    UnknownOp(u16),
    /// The body does not match the layout of its operation.
    #[error("malformed {op} body: {what}")]
    Malformed {
        /// Operation name.
        op: &'static str,
        /// What is wrong.
        what: &'static str,
    },
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes of `b`, checking flags and the length limit.
    ///
    /// # Errors
    /// [`WireError::TooLarge`] if the body is longer than `max_body` (or [`MAX_FRAME_BODY`]),
    /// [`WireError::Flags`] for unknown flags.
    ///
    /// # Panics
    /// If `b` is shorter than [`HEADER_LEN`].
    pub fn parse(b: &[u8], max_body: u32) -> Result<Header, WireError> {
        let h = Header {
            body_len: u32_at(b, 0),
            crc: u32_at(b, 4),
            op: u16::from_le_bytes([b[8], b[9]]),
            flags: u16::from_le_bytes([b[10], b[11]]),
            req_id: crate::codec::u64_at(b, 12),
        };
        let limit = max_body.min(MAX_FRAME_BODY);
        if h.body_len > limit {
            return Err(WireError::TooLarge {
                len: h.body_len,
                limit,
            });
        }
        if h.flags & !FLAG_ERROR != 0 {
            return Err(WireError::Flags(h.flags));
        }
        Ok(h)
    }

    /// Checks `body` against the header checksum.
    ///
    /// # Errors
    /// [`WireError::Checksum`] when the frame was corrupted.
    pub fn verify(&self, body: &[u8]) -> Result<(), WireError> {
        let actual = checksum(self.op, self.flags, self.req_id, body);
        if actual != self.crc {
            return Err(WireError::Checksum {
                expected: self.crc,
                actual,
            });
        }
        Ok(())
    }
}

fn checksum(op: u16, flags: u16, req_id: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut fixed = [0u8; 12];
    fixed[0..2].copy_from_slice(&op.to_le_bytes());
    fixed[2..4].copy_from_slice(&flags.to_le_bytes());
    fixed[4..12].copy_from_slice(&req_id.to_le_bytes());
    h.update(&fixed);
    h.update(body);
    h.finalize()
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a complete frame, else the frame and the
/// number of bytes it occupies.
///
/// # Errors
/// See [`Header::parse`] and [`Header::verify`].
pub fn decode_frame(buf: &[u8], max_body: u32) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let header = Header::parse(buf, max_body)?;
    let end = HEADER_LEN + header.body_len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..end];
    header.verify(body)?;
    Ok(Some((Frame { header, body }, end)))
}

/// Starts a frame at the end of `buf`; append the body, then call [`finish_frame`].
/// Returns the frame's start offset.
pub fn begin_frame(buf: &mut Vec<u8>, op: u16, flags: u16, req_id: u64) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 8]);
    buf.extend_from_slice(&op.to_le_bytes());
    buf.extend_from_slice(&flags.to_le_bytes());
    buf.extend_from_slice(&req_id.to_le_bytes());
    start
}

/// Completes the frame begun at `start` by [`begin_frame`]: fills in length and checksum.
///
/// # Panics
/// If the body exceeds [`MAX_FRAME_BODY`] (callers check object sizes first) or `start` is not
/// a frame start within `buf`.
pub fn finish_frame(buf: &mut [u8], start: usize) {
    let body_len = buf.len() - start - HEADER_LEN;
    assert!(body_len <= MAX_FRAME_BODY as usize, "frame body too large");
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[start + 8..]);
    let crc = h.finalize();
    buf[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_is_detected() {
        let mut buf = Vec::new();
        let s = begin_frame(&mut buf, 3, 0, 9);
        buf.extend_from_slice(b"hello");
        finish_frame(&mut buf, s);
        assert!(decode_frame(&buf, 100).unwrap().is_some());
        assert_eq!(decode_frame(&buf[..buf.len() - 1], 100).unwrap(), None);
        for i in 4..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode_frame(&bad, 100).is_err(), "flip at {i} undetected");
        }
        assert!(matches!(
            decode_frame(&buf, 4),
            Err(WireError::TooLarge { len: 5, limit: 4 })
        ));
    }
}
