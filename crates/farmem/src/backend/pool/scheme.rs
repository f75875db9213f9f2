//! Redundancy schemes of a pool.

/// How a [`PoolBackend`](super::PoolBackend) protects objects against the loss of a member.
///
/// Every scheme answers two questions the pool asks: how many members hold (a piece of) each
/// object ([`Redundancy::copies`]), and how many of them may fail before an object is lost
/// ([`Redundancy::tolerates`]). Erasure coding would be a third variant (see the module docs of
/// [`pool`](super)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Redundancy {
    /// One copy per object: a dead member makes exactly its own objects unavailable.
    None,
    /// `n` whole copies of every object on `n` distinct members (1 ..= [`MAX_REPLICAS`]).
    Replicas(u8),
}

/// The most copies a [`Redundancy::Replicas`] scheme may keep.
pub const MAX_REPLICAS: u8 = 4;

impl Redundancy {
    /// `n` replicas (`n <= 1` means [`Redundancy::None`]), capped at [`MAX_REPLICAS`].
    pub fn replicas(n: usize) -> Self {
        match n {
            0 | 1 => Self::None,
            n => Self::Replicas(n.min(MAX_REPLICAS as usize) as u8),
        }
    }

    /// Members holding each object.
    pub fn copies(self) -> usize {
        match self {
            Self::None => 1,
            Self::Replicas(n) => usize::from(n.clamp(1, MAX_REPLICAS)),
        }
    }

    /// Members that may fail at once without losing an object.
    pub fn tolerates(self) -> usize {
        self.copies() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_tolerance() {
        assert_eq!(Redundancy::replicas(0), Redundancy::None);
        assert_eq!(Redundancy::replicas(1).copies(), 1);
        assert_eq!(Redundancy::replicas(3).copies(), 3);
        assert_eq!(Redundancy::replicas(3).tolerates(), 2);
        assert_eq!(Redundancy::replicas(99).copies(), MAX_REPLICAS as usize);
    }
}
