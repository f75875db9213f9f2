//! The server-side table: write-backs of dirty victims, admission of fetched entries, scans.

use std::hash::Hash;
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use farmem_proto::agent::{AgentMessage, HtPutArgs, HtScanArgs, HtScanResult, HtValues, op};

use super::cache::{DIRTY, Shard, VALID};
use super::{FarHashMap, decode};
use crate::containers::agent_ops::call;
use crate::containers::error::Result;

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> FarHashMap<K, V> {
    pub(super) fn agent<R: AgentMessage>(&self, opn: u16, args: &impl AgentMessage) -> Result<R> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let out = call(&self.rt, self.table, opn, &args.encode())?;
        Ok(R::decode(&out)?)
    }

    /// Writes `entries` back to the server (one round trip).
    pub(super) fn put_remote(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.writebacks
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let _: HtValues = self.agent(
            op::HT_PUT,
            &HtPutArgs {
                table: self.table,
                return_old: false,
                entries,
            },
        )?;
        Ok(())
    }

    /// Writes a locked shard's evicted dirty entries back once its buffer is full, while still
    /// holding the lock (so no lookup can see the server's older copy in between). On error the
    /// entries stay buffered, so nothing is lost.
    pub(super) fn make_room(&self, shard: &mut Shard<K, V>) -> Result<()> {
        if !shard.must_write_back(self.write_back_batch) {
            return Ok(());
        }
        self.write_back(shard)
    }

    /// Writes every buffered dirty victim of a locked shard back.
    pub(super) fn write_back(&self, shard: &mut Shard<K, V>) -> Result<()> {
        if shard.evicted.is_empty() {
            return Ok(());
        }
        let keys: Vec<K> = shard.evicted.iter().map(|(k, _)| *k).collect();
        for k in keys {
            shard.changed_remotely(k);
        }
        let entries = shard
            .evicted
            .iter()
            .map(|(k, v)| {
                (
                    bytemuck::bytes_of(k).to_vec(),
                    bytemuck::bytes_of(v).to_vec(),
                )
            })
            .collect();
        self.put_remote(entries)?;
        shard.evicted.clear();
        Ok(())
    }

    /// Caches `k` in a locked shard whose buffer has room.
    pub(super) fn put_local(&self, shard: &mut Shard<K, V>, k: K, v: V, dirty: bool) {
        if shard.put(k, v, dirty) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends an in-flight lookup of `k`; caches `v` (fetched from the server) unless the key's
    /// server copy changed meanwhile or it is cached already.
    pub(super) fn admit_clean(&self, k: K, v: Option<V>) -> Result<()> {
        let mut sh = self.shard(&k).lock();
        let stale = !sh.changed.is_empty() && sh.changed.contains(&k);
        sh.inflight -= 1;
        if sh.inflight == 0 {
            sh.changed.clear();
        }
        let Some(v) = v else { return Ok(()) };
        if stale || sh.contains(&k) {
            return Ok(());
        }
        self.make_room(&mut sh)?;
        self.put_local(&mut sh, k, v, false);
        Ok(())
    }

    /// Writes every dirty cached entry back (one round trip per shard with dirty entries).
    ///
    /// # Errors
    /// The backend's error; entries not written stay dirty.
    pub fn flush(&self) -> Result<()> {
        for sh in self.shards.iter() {
            let mut sh = sh.lock();
            self.write_back(&mut sh)?;
            let dirty: Vec<usize> = (0..sh.meta.len())
                .filter(|&w| sh.meta[w] & (VALID | DIRTY) == VALID | DIRTY)
                .collect();
            if dirty.is_empty() {
                continue;
            }
            let entries = dirty
                .iter()
                .map(|&w| {
                    (
                        bytemuck::bytes_of(&sh.keys[w]).to_vec(),
                        bytemuck::bytes_of(&sh.values[w]).to_vec(),
                    )
                })
                .collect();
            for &w in &dirty {
                let k = sh.keys[w];
                sh.changed_remotely(k);
            }
            self.put_remote(entries)?;
            for &w in &dirty {
                sh.meta[w] &= !DIRTY;
            }
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
