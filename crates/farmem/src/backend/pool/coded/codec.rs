//! Reed-Solomon coding of stripes.
//!
//! # Which crate
//!
//! Measured on this machine (release build, one core, shards as large as a span) for the two
//! maintained SIMD Reed-Solomon crates, encode and reconstruct of two lost data shards, in GB/s
//! of data:
//!
//! | scheme, shard | reed-solomon-simd 3.1 enc / dec | reed-solomon-erasure 6 (simd-accel) enc / dec |
//! |---------------|---------------------------------|-----------------------------------------------|
//! | 4+2, 4 KiB    | 2.1 / 0.03                      | 5.7 / 10.3                                    |
//! | 4+2, 16 KiB   | 3.6 / 0.12                      | 5.5 / 6.3                                     |
//! | 4+2, 64 KiB   | 3.5 / 0.32                      | 7.7 / 2.9                                     |
//! | 8+2, 16 KiB   | 4.5 / 0.19                      | 5.6 / 5.0                                     |
//!
//! reed-solomon-simd (Leopard-style FFT over GF(2^16)) pays a fixed cost of a few hundred
//! microseconds per decode, which it amortises only over megabytes of shards and hundreds of
//! shards; our stripes are a few spans of tens of KiB, and a degraded read decodes only the
//! few bytes of one object. reed-solomon-erasure (GF(2^8) matrices, SIMD multiply tables) is
//! faster at both for these sizes, and, being byte-wise, decodes any byte range of a stripe
//! from the same range of `k` other shards, which is what keeps a degraded read small. So this
//! module uses reed-solomon-erasure.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::backend::BackendError;

/// Why coding failed (a bug or a corrupted shard length, never a member failure).
#[derive(Debug, thiserror::Error)]
#[error("erasure coding of a {k}+{m} stripe failed")]
pub struct CodingError {
    k: usize,
    m: usize,
    #[source]
    source: reed_solomon_erasure::Error,
}

impl From<CodingError> for BackendError {
    fn from(e: CodingError) -> Self {
        BackendError::Custom(Box::new(e))
    }
}

/// Encoders by `(k, m)` (building one computes its matrix; stripes reuse them).
#[derive(Default)]
pub(crate) struct Codec {
    cache: Mutex<HashMap<(usize, usize), Arc<ReedSolomon>>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Codec {
    fn rs(&self, k: usize, m: usize) -> Result<Arc<ReedSolomon>, CodingError> {
        let mut c = self.cache.lock();
        if let Some(r) = c.get(&(k, m)) {
            return Ok(r.clone());
        }
        let r = Arc::new(ReedSolomon::new(k, m).map_err(|source| CodingError { k, m, source })?);
        c.insert((k, m), r.clone());
        Ok(r)
    }

    /// The `m` parity shards of `data` (all shards of one length).
    pub(crate) fn encode(&self, data: &[Vec<u8>], m: usize) -> Result<Vec<Vec<u8>>, CodingError> {
        let k = data.len();
        if m == 0 {
            return Ok(Vec::new());
        }
        let len = data.first().map_or(0, Vec::len);
        let rs = self.rs(k, m)?;
        let mut parity = vec![vec![0u8; len]; m];
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        rs.encode_sep(&refs, &mut parity)
            .map_err(|source| CodingError { k, m, source })?;
        Ok(parity)
    }

    /// Fills in the missing shards of a `k + m` stripe (data first, then parity; every present
    /// shard of one length, at least `k` present). Works on any byte range of the shards alike.
    /// (Rebuilds and reads need only the data shards: [`Codec::reconstruct_data`].)
    #[cfg(test)]
    pub(crate) fn reconstruct(
        &self,
        k: usize,
        shards: &mut [Option<Vec<u8>>],
    ) -> Result<(), CodingError> {
        let m = shards.len().saturating_sub(k);
        if shards.iter().all(Option::is_some) {
            return Ok(());
        }
        let rs = self.rs(k, m)?;
        rs.reconstruct(shards)
            .map_err(|source| CodingError { k, m, source })
    }
}

impl Codec {
    /// As [`Codec::reconstruct`], but fills in only the missing data shards (a degraded read
    /// needs no parity).
    pub(crate) fn reconstruct_data(
        &self,
        k: usize,
        shards: &mut [Option<Vec<u8>>],
    ) -> Result<(), CodingError> {
        let m = shards.len().saturating_sub(k);
        if shards.iter().take(k).all(Option::is_some) {
            return Ok(());
        }
        let rs = self.rs(k, m)?;
        rs.reconstruct_data(shards)
            .map_err(|source| CodingError { k, m, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(k: usize, len: usize) -> Vec<Vec<u8>> {
        (0..k)
            .map(|i| {
                (0..len)
                    .map(|j| (i * 31 + j * 7 + (j >> 5)) as u8)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn any_k_of_k_plus_m_rebuild_everything() {
        let c = Codec::default();
        let data = shards(4, 1000);
        let parity = c.encode(&data, 2).unwrap();
        let all: Vec<Vec<u8>> = data.iter().chain(&parity).cloned().collect();
        for a in 0..6 {
            for b in a + 1..6 {
                let mut s: Vec<Option<Vec<u8>>> = all.iter().cloned().map(Some).collect();
                s[a] = None;
                s[b] = None;
                c.reconstruct(4, &mut s).unwrap();
                let got: Vec<Vec<u8>> = s.into_iter().map(Option::unwrap).collect();
                assert_eq!(got, all, "lost {a} and {b}");
            }
        }
        let mut s: Vec<Option<Vec<u8>>> = all.iter().cloned().map(Some).collect();
        s[0] = None;
        s[1] = None;
        s[4] = None;
        assert!(c.reconstruct(4, &mut s).is_err(), "three lost of 4+2");
    }

    #[test]
    fn a_byte_range_decodes_from_the_same_range() {
        let c = Codec::default();
        let data = shards(4, 4096);
        let parity = c.encode(&data, 2).unwrap();
        let (a, b) = (1001, 1337);
        let mut s: Vec<Option<Vec<u8>>> = data
            .iter()
            .chain(&parity)
            .map(|x| Some(x[a..b].to_vec()))
            .collect();
        let full = s.clone();
        s[2] = None;
        s[0] = None;
        c.reconstruct(4, &mut s).unwrap();
        assert_eq!(s[2].as_deref(), Some(&data[2][a..b]));
        assert_eq!(s[0].as_deref(), Some(&data[0][a..b]));
        let mut s = full;
        s[1] = None;
        s[5] = None;
        c.reconstruct_data(4, &mut s).unwrap();
        assert_eq!(s[1].as_deref(), Some(&data[1][a..b]));
        assert!(s[5].is_none(), "parity is left out");
        assert!(c.encode(&data, 0).unwrap().is_empty());
    }
}
