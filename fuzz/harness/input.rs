//! The byte reader every stateful fuzz harness draws its actions from: a fuzz input consumed
//! from the front, which simply runs dry (each reader returns `None` or a shorter slice) when
//! the input ends.

// Each harness uses the subset of readers its actions need.
#![allow(dead_code)]

/// The rest of a fuzz input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from its first byte.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte, if any is left.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// The next two bytes as a little-endian `u16`, if both are left.
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    /// The next `n` bytes, or all that is left if fewer.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}
