//! Validity bitmaps: which rows of a nullable column hold a value.

/// One bit per row, set where the row holds a value (clear where it is null).
///
/// Columns without nulls carry no bitmap at all, so the common case costs nothing. A bitmap is
/// kept locally even for far columns: one bit per row is 1/64 of an `i64` column.
///
/// ```
/// use farmem_frame::Validity;
/// let v = Validity::from_bools([true, false, true]);
/// assert_eq!(v.null_count(), 1);
/// assert!(!v.is_valid(1));
/// assert_eq!(v.valid_rows(), vec![0, 2]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Validity {
    bits: Vec<u64>,
    len: usize,
    nulls: usize,
}

impl Validity {
    /// A bitmap from one flag per row (`true`: the row holds a value).
    pub fn from_bools(flags: impl IntoIterator<Item = bool>) -> Self {
        let mut v = Self::default();
        for f in flags {
            v.push(f);
        }
        v
    }

    /// Appends a row.
    pub fn push(&mut self, valid: bool) {
        if self.len.is_multiple_of(64) {
            self.bits.push(0);
        }
        if valid {
            self.bits[self.len / 64] |= 1 << (self.len % 64);
        } else {
            self.nulls += 1;
        }
        self.len += 1;
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of null rows.
    pub fn null_count(&self) -> usize {
        self.nulls
    }

    /// Whether row `i` holds a value (rows past the end are null).
    pub fn is_valid(&self, i: usize) -> bool {
        i < self.len && self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    /// The rows that hold a value, ascending.
    pub fn valid_rows(&self) -> Vec<u32> {
        (0..self.len)
            .filter(|&i| self.is_valid(i))
            .map(|i| i as u32)
            .collect()
    }

    /// The bitmap of rows `idx` (in that order).
    pub fn take(&self, idx: &[u32]) -> Self {
        Self::from_bools(idx.iter().map(|&i| self.is_valid(i as usize)))
    }

    /// The bitmap of rows `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        Self::from_bools(range.map(|i| self.is_valid(i)))
    }

    /// Rows valid in both bitmaps (the shorter length).
    pub fn and(&self, other: &Self) -> Self {
        let len = self.len.min(other.len);
        Self::from_bools((0..len).map(|i| self.is_valid(i) && other.is_valid(i)))
    }

    /// `None` if every row is valid (the bitmap is then not worth keeping).
    pub fn into_option(self) -> Option<Self> {
        (self.nulls > 0).then_some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_across_words() {
        let flags: Vec<bool> = (0..200).map(|i| i % 3 != 0).collect();
        let v = Validity::from_bools(flags.iter().copied());
        assert_eq!(v.len(), 200);
        assert_eq!(v.null_count(), flags.iter().filter(|f| !**f).count());
        for (i, f) in flags.iter().enumerate() {
            assert_eq!(v.is_valid(i), *f, "row {i}");
        }
        assert!(!v.is_valid(200));
        let t = v.take(&[3, 4, 199, 0]);
        assert_eq!(t, Validity::from_bools([false, true, true, false]));
        assert_eq!(v.slice(64..67), Validity::from_bools([true, true, false]));
        let all = Validity::from_bools([true; 5]);
        assert!(all.clone().into_option().is_none());
        assert_eq!(
            all.and(&t),
            Validity::from_bools([false, true, true, false])
        );
    }
}
