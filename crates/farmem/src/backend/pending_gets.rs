//! Batched reads in flight: [`Backend::submit_get_many`](super::Backend::submit_get_many).

use super::{BackendError, tcp};

/// A [`Backend::get_many`](super::Backend::get_many) started with
/// [`Backend::submit_get_many`](super::Backend::submit_get_many); [`PendingGets::wait`]
/// returns its objects. A caller can start reads on several backends (servers) and then wait
/// for each, so that they are answered in one round trip instead of one after another.
#[must_use = "a submitted read must be waited for to learn its result"]
pub struct PendingGets(Inner);

enum Inner {
    /// Already read (backends without pipelining).
    Ready(Result<Vec<Vec<u8>>, BackendError>),
    /// In flight on a TCP connection.
    Tcp(tcp::PendingTcpGets),
}

impl std::fmt::Debug for PendingGets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Inner::Ready(_) => "PendingGets(ready)",
            Inner::Tcp(_) => "PendingGets(in flight)",
        })
    }
}

impl PendingGets {
    /// A read that has already completed with `result`.
    pub fn ready(result: Result<Vec<Vec<u8>>, BackendError>) -> Self {
        Self(Inner::Ready(result))
    }

    pub(super) fn tcp(p: tcp::PendingTcpGets) -> Self {
        Self(Inner::Tcp(p))
    }

    /// Waits for the objects, in the order of the ids submitted.
    ///
    /// # Errors
    /// As [`Backend::get_many`](super::Backend::get_many).
    pub fn wait(self) -> Result<Vec<Vec<u8>>, BackendError> {
        match self.0 {
            Inner::Ready(r) => r,
            Inner::Tcp(p) => p.wait(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, EmbeddedStore};

    #[test]
    fn the_default_reads_at_once() {
        let b = EmbeddedStore::new();
        b.put(1, b"one").unwrap();
        b.put(2, b"two").unwrap();
        let p = b.submit_get_many(&[2, 1]);
        assert_eq!(format!("{p:?}"), "PendingGets(ready)");
        assert_eq!(p.wait().unwrap(), vec![b"two".to_vec(), b"one".to_vec()]);
        assert!(matches!(
            b.submit_get_many(&[3]).wait(),
            Err(BackendError::NotFound(3))
        ));
    }
}
