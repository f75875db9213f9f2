//! The server-side table: calls, admission of fetched entries, scans.

use std::hash::Hash;
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use farmem_proto::agent::{AgentMessage, HtScanArgs, HtScanResult, op};

use super::cache::Shard;
use super::{FarHashMap, decode};
use crate::containers::agent_ops::call;
use crate::containers::error::Result;

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> FarHashMap<K, V> {
    pub(super) fn agent<R: AgentMessage>(&self, opn: u16, args: &impl AgentMessage) -> Result<R> {
        self.agent_raw(opn, &args.encode())
    }

    /// [`Self::agent`] with encoded arguments.
    pub(super) fn agent_raw<R: AgentMessage>(&self, opn: u16, args: &[u8]) -> Result<R> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let out = call(&self.rt, self.table, opn, args)?;
        Ok(R::decode(&out)?)
    }

    /// Caches `k` in a locked shard whose outbox has room.
    pub(super) fn put_local(&self, shard: &mut Shard<K, V>, k: K, v: V, dirty: bool) {
        if shard.put(k, v, dirty) {
            shard.evictions += 1;
        }
    }

    /// Ends an in-flight lookup of `k`, which hashes to `h`; caches `v` (fetched from the
    /// server) unless the key's server copy changed meanwhile or it is cached already.
    pub(super) fn admit_clean(&self, k: K, h: u64, v: Option<V>) -> Result<()> {
        let mut sh = self.shards[self.shard_of(h)].lock();
        let stale = !sh.changed.is_empty() && sh.changed.contains(&k);
        sh.inflight -= 1;
        if sh.inflight == 0 {
            sh.changed.clear();
        }
        let Some(v) = v else { return Ok(()) };
        if stale || sh.peek_at(&k, h).is_some() {
            return Ok(());
        }
        self.make_room(&mut sh)?;
        if sh.put_at(k, h, v, false) {
            sh.evictions += 1;
        }
        Ok(())
    }

    /// Number of entries (writes dirty entries back, then asks the server).
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn len(&self) -> Result<usize> {
        self.flush()?;
        let n: u64 = self.agent(op::HT_LEN, &self.table)?;
        Ok(n as usize)
    }

    /// Whether the map is empty.
    ///
    /// # Errors
    /// As [`FarHashMap::len`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Calls `f` with every entry, in unspecified order, paging through the server's table
    /// (`page` entries per round trip). Entries changed concurrently may or may not be seen.
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn for_each(&self, page: u32, mut f: impl FnMut(K, V)) -> Result<()> {
        self.flush()?;
        let mut after = None;
        loop {
            let r: HtScanResult = self.agent(
                op::HT_SCAN,
                &HtScanArgs {
                    table: self.table,
                    max: page.max(1),
                    after: after.take(),
                },
            )?;
            for (k, v) in &r.entries {
                f(decode(k)?, decode(v)?);
            }
            match r.entries.last() {
                Some((k, _)) if r.more => after = Some(k.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// All entries as a local `Vec` (see [`FarHashMap::for_each`]).
    ///
    /// # Errors
    /// As [`FarHashMap::for_each`].
    pub fn to_vec(&self) -> Result<Vec<(K, V)>> {
        let mut v = Vec::new();
        self.for_each(4096, |k, x| v.push((k, x)))?;
        Ok(v)
    }
}
