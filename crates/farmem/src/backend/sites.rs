//! Agent operations over objects spread across several servers.

use super::{BackendError, ObjectId};

/// The servers ("sites") of a backend over several of them, as agent operations see them: where
/// each object has a current copy, and running an operation on one chosen site. Returned by
/// [`Backend::sites`](super::Backend::sites); a vector operation sends each site the part of the
/// work over the chunks it holds and merges the answers.
pub trait Sites: Send + Sync {
    /// Number of sites ever known (site numbers stay valid for the backend's life).
    fn site_count(&self) -> usize;

    /// Sites that serve now (a single one means an operation can run whole on it).
    fn serving(&self) -> usize;

    /// For each id, the serving sites holding a current copy, preferred (least loaded) first;
    /// empty when no serving site is known to hold it.
    fn holders(&self, ids: &[ObjectId]) -> Vec<Vec<usize>>;

    /// The names `ids` have on `site`, for an operation's arguments there: the ids themselves,
    /// unless the backend stores objects under names of its own (an erasure-coded pool keeps
    /// each version under a fresh key).
    fn names_at(&self, site: usize, ids: &[ObjectId]) -> Vec<ObjectId> {
        let _ = site;
        ids.to_vec()
    }

    /// Runs agent operation `op` on site `site`.
    ///
    /// # Errors
    /// The site's error (a connection-class error when it is gone).
    fn compute_at(&self, site: usize, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError>;

    /// Reports that `err` came from `site`; `true` when the work the site had must go elsewhere:
    /// the site itself failed (it is then no longer used), or an object moved away from it
    /// under the operation.
    fn site_failed(&self, site: usize, err: &BackendError) -> bool;

    /// Objects `(id, bytes)` an agent operation wrote on `site`: records where they live and
    /// brings them to the backend's redundancy (copies on other sites).
    ///
    /// # Errors
    /// The site's error when the objects cannot be read from it (it failed: the objects are
    /// lost and must be computed again), or a write error.
    fn adopt(&self, site: usize, objects: &[(ObjectId, usize)]) -> Result<(), BackendError>;
}
