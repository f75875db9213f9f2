//! Per-object choice of redundancy on a pool, carried in the object's id.

use super::ObjectId;

/// How a pool keeps one object, chosen per container: a program erasure-codes its large
/// containers and replicates its small or hot objects, or overrides the size rule for one
/// container.
///
/// The choice travels in two bits of the object's id (bits 42-43: see
/// [`Runtime::with_protection`](crate::Runtime::with_protection) and
/// [`PagingConfig::protection`](crate::paging::PagingConfig::protection)), so every layer
/// between a container and the pool (write-back, prefetch, frees, the remote agent's sites)
/// carries it for free. Only a [`PoolBackend`](super::PoolBackend) with a
/// [`Redundancy::Coded`](super::Redundancy::Coded) scheme reads it; everywhere else every
/// object gets the backend's one scheme.
///
/// ```
/// use farmem::backend::Protection;
/// let id = Protection::Replicated.tag(12);
/// assert_eq!(Protection::of(id), Protection::Replicated);
/// assert_eq!(Protection::of(12), Protection::BySize);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protection {
    /// The pool's size rule: on a coded pool, objects of at least
    /// [`PoolConfig::code_from`](super::PoolConfig::code_from) bytes are coded and smaller ones
    /// replicated (every object coded when the rule is 0).
    #[default]
    BySize,
    /// Replicated on [`Redundancy::copies`](super::Redundancy::copies) members whatever its size
    /// (`m + 1` on a `k + m` pool: it survives as many failures as the coded data, at `m + 1`
    /// times its bytes, and a read never needs a decode).
    Replicated,
    /// Erasure-coded whatever its size (about `(k + m) / k` times its bytes).
    Coded,
}

/// Lowest bit of the choice in an id.
const SHIFT: u32 = 42;
const MASK: ObjectId = 0b11 << SHIFT;

impl Protection {
    /// The choice carried by `id`.
    #[must_use]
    pub fn of(id: ObjectId) -> Self {
        match (id & MASK) >> SHIFT {
            1 => Self::Replicated,
            2 => Self::Coded,
            _ => Self::BySize,
        }
    }

    /// `id` carrying this choice (its bits 42-43 replaced).
    #[must_use]
    pub fn tag(self, id: ObjectId) -> ObjectId {
        let bits: ObjectId = match self {
            Self::BySize => 0,
            Self::Replicated => 1,
            Self::Coded => 2,
        };
        (id & !MASK) | (bits << SHIFT)
    }

    /// Ids with one choice per runtime block: 2^42.
    pub(crate) const SPAN: ObjectId = 1 << SHIFT;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_round_trips_and_leaves_the_rest_of_the_id() {
        for p in [
            Protection::BySize,
            Protection::Replicated,
            Protection::Coded,
        ] {
            for id in [1, 77, (5 << 44) | 9, (1 << 42) - 1] {
                let t = p.tag(id);
                assert_eq!(Protection::of(t), p);
                assert_eq!(t & !MASK, id & !MASK);
            }
        }
        assert_eq!(Protection::of(MASK), Protection::BySize);
    }
}
