//! Redundancy schemes of a pool.

/// How a [`PoolBackend`](super::PoolBackend) protects objects against the loss of a member.
///
/// Every scheme answers two questions the pool asks: how many members hold (a piece of) each
/// object ([`Redundancy::copies`]), and how many of them may fail before an object is lost
/// ([`Redundancy::tolerates`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Redundancy {
    /// One copy per object: a dead member makes exactly its own objects unavailable.
    None,
    /// `n` whole copies of every object on `n` distinct members (1 ..= [`MAX_REPLICAS`]).
    Replicas(u8),
    /// Erasure coding, Carbink-style: each object stays whole on one member, objects are packed
    /// into spans, and every stripe of `k` data spans on `k` distinct members gets `m` parity
    /// spans on `m` further members, so any `m` members may fail with nothing lost, at about
    /// `(k + m) / k` times the memory (see [`coded`](super::coded)). `1 <= k`, `1 <= m`,
    /// `k + m <=` [`MAX_CODED_SHARDS`].
    Coded {
        /// Data spans per stripe.
        k: u8,
        /// Parity spans per stripe (members that may fail at once).
        m: u8,
    },
}

/// The most spans (data plus parity) a [`Redundancy::Coded`] stripe may have.
pub const MAX_CODED_SHARDS: u8 = 32;

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

    /// `k` data + `m` parity spans per stripe ([`Redundancy::Coded`]).
    pub fn coded(k: u8, m: u8) -> Self {
        Self::Coded { k, m }
    }

    /// Whole copies the pool keeps of what it replicates: every object under `None` and
    /// `Replicas`; under `Coded`, the remote agent's server-side hash tables (not byte objects
    /// that could be coded), `m + 1` copies (at most [`MAX_REPLICAS`]) so that they survive as
    /// many failures as the coded data. A coded object itself is whole on one member.
    pub fn copies(self) -> usize {
        match self {
            Self::None => 1,
            Self::Replicas(n) => usize::from(n.clamp(1, MAX_REPLICAS)),
            Self::Coded { m, .. } => usize::from(m.saturating_add(1).clamp(1, MAX_REPLICAS)),
        }
    }

    /// Members that may fail at once without losing an object.
    pub fn tolerates(self) -> usize {
        match self {
            Self::Coded { m, .. } => usize::from(m),
            _ => self.copies() - 1,
        }
    }

    /// Memory the scheme uses per byte of objects, ignoring dead space and per-object overhead.
    pub fn memory_factor(self) -> f64 {
        match self {
            Self::Coded { k, m } => (f64::from(k) + f64::from(m)) / f64::from(k.max(1)),
            _ => self.copies() as f64,
        }
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
        let c = Redundancy::coded(4, 2);
        assert_eq!((c.copies(), c.tolerates()), (3, 2));
        assert!((c.memory_factor() - 1.5).abs() < 1e-9);
    }
}
