//! The one little-endian byte reader and writer behind every encoder and decoder of this crate.
//!
//! Every read is bounds-checked and fails with a typed [`CodecError`]; nothing here panics on
//! any input.

/// Why a [`Reader`] could not deliver a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended early.
    #[error("message truncated: needed {needed} more bytes at offset {at}")]
    Truncated {
        /// Offset of the field.
        at: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes left over after a complete message.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
}

/// Reads little-endian fields from the front of a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Offset of the next byte.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Number of bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The bytes not read yet, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Consumes and returns every byte not read yet.
    pub fn take_rest(&mut self) -> &'a [u8] {
        let r = self.rest();
        self.pos = self.buf.len();
        r
    }

    /// Takes `n` raw bytes.
    ///
    /// # Errors
    /// [`CodecError::Truncated`] if fewer remain.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let rest = self.remaining();
        if n > rest {
            return Err(CodecError::Truncated {
                at: self.pos,
                needed: n - rest,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// Reads a `u8`.
    ///
    /// # Errors
    /// [`CodecError::Truncated`].
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a `u16`.
    ///
    /// # Errors
    /// [`CodecError::Truncated`].
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a `u32`.
    ///
    /// # Errors
    /// [`CodecError::Truncated`].
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a `u64`.
    ///
    /// # Errors
    /// [`CodecError::Truncated`].
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads 16 bytes (an `i128`/`u128`).
    ///
    /// # Errors
    /// [`CodecError::Truncated`].
    pub fn u128(&mut self) -> Result<u128, CodecError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    /// Reads a byte string (`u32` length + bytes).
    ///
    /// # Errors
    /// [`CodecError::Truncated`].
    pub fn byte_string(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }

    /// Reads a list count and checks that at least `count * min_item` bytes follow, so a forged
    /// count cannot make the decoder allocate much.
    ///
    /// # Errors
    /// [`CodecError::Truncated`].
    pub fn count(&mut self, min_item: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        let rest = self.remaining();
        let need = n.saturating_mul(min_item);
        if need > rest {
            return Err(CodecError::Truncated {
                at: self.pos,
                needed: need - rest,
            });
        }
        Ok(n)
    }

    /// Checks that the whole input was consumed.
    ///
    /// # Errors
    /// [`CodecError::Trailing`].
    pub fn finish(self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

/// Appends little-endian fields to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// Continues writing at the end of `buf` (take it back with `.buf`).
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Self { buf }
    }

    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends 16 bytes.
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// Appends a list count.
    ///
    /// # Panics
    /// If `n` exceeds `u32::MAX` (callers bound their lists far below that).
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).expect("list longer than u32::MAX"))
    }
    /// Appends a byte string.
    ///
    /// # Panics
    /// If `b` is longer than `u32::MAX` bytes.
    pub fn byte_string(&mut self, b: &[u8]) -> &mut Self {
        self.count(b.len());
        self.buf.extend_from_slice(b);
        self
    }
}

/// Reads a little-endian u64 at `at` of a slice whose bounds a [`Reader`] already validated.
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads a little-endian u32 at `at` of a slice whose bounds a [`Reader`] already validated.
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written() {
        let mut w = Writer::default();
        w.u8(1).u16(2).u32(3).u64(4).u128(5).byte_string(b"xy");
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.u64(), Ok(4));
        assert_eq!(r.u128(), Ok(5));
        assert_eq!(r.byte_string(), Ok(&b"xy"[..]));
        assert!(r.is_empty());
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_input_is_typed() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), Err(CodecError::Truncated { at: 0, needed: 1 }));
        assert_eq!(r.u16(), Ok(0x0201));
        assert_eq!(r.clone().finish(), Err(CodecError::Trailing(1)));
        assert_eq!(r.take_rest(), &[3]);
        // A forged count is rejected before anything is allocated.
        let mut w = Writer::default();
        w.u32(u32::MAX);
        assert!(Reader::new(&w.buf).count(8).is_err());
    }
}
