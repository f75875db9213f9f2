//! Server-side hash tables: the cold part of a client's `FarHashMap`.
//!
//! Tables are kept per session in [`super::AgentState`], ordered by key bytes so that a scan can
//! resume after any key. Every entry is charged `key + value + ENTRY_OVERHEAD` bytes against the
//! session's capacity through [`super::AgentContext::charge`]; a batch that does not fit changes
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use farmem_proto::agent::{HtKeysArgs, HtPutArgs, HtScanArgs, HtScanResult, HtValue, HtValues};

use super::{AgentContext, AgentError};

/// Bytes charged per entry beyond its key and value (tree node share and allocation headers).
pub const ENTRY_OVERHEAD: u64 = 64;

/// Largest page a scan returns, whatever the client asks for.
pub const MAX_SCAN_PAGE: u32 = 65_536;

type Table = BTreeMap<Vec<u8>, Vec<u8>>;

fn cost(k: &[u8], v: &[u8]) -> i64 {
    (k.len() as u64 + v.len() as u64 + ENTRY_OVERHEAD) as i64
}

/// All hash tables of one session.
#[derive(Debug, Default)]
pub struct Tables {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tables: HashMap<u64, Table>,
    /// Bytes currently charged for all tables.
    charged: u64,
}

impl Tables {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a table half-updated in a way that breaks
        // its invariants (every update is a single map operation), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes currently charged for all tables of the session (to release when it ends).
    pub fn charged_bytes(&self) -> u64 {
        self.lock().charged
    }

    /// Looks up every key.
    pub fn get(&self, args: &HtKeysArgs) -> HtValues {
        let inner = self.lock();
        let t = inner.tables.get(&args.table);
        HtValues {
            values: args
                .keys
                .iter()
                .map(|k| match t.and_then(|t| t.get(k)) {
                    Some(v) => HtValue::Value(v.clone()),
                    None => HtValue::Absent,
                })
                .collect(),
        }
    }

    /// Inserts or replaces every entry, in order; all or nothing.
    ///
    /// # Errors
    /// [`AgentError::OutOfCapacity`] when the batch does not fit (nothing changed then).
    pub fn put(&self, ctx: &dyn AgentContext, args: HtPutArgs) -> Result<HtValues, AgentError> {
        let mut inner = self.lock();
        let t = inner.tables.entry(args.table).or_default();
        let mut delta = 0i64;
        let mut undo: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(args.entries.len());
        for (k, v) in args.entries {
            delta += cost(&k, &v);
            let old = t.insert(k.clone(), v);
            if let Some(o) = &old {
                delta -= cost(&k, o);
            }
            undo.push((k, old));
        }
        if let Err(e) = ctx.charge(delta) {
            for (k, old) in undo.into_iter().rev() {
                match old {
                    Some(o) => t.insert(k, o),
                    None => t.remove(&k),
                };
            }
            if t.is_empty() {
                inner.tables.remove(&args.table);
            }
            return Err(e);
        }
        inner.charged = inner.charged.saturating_add_signed(delta);
        Ok(HtValues {
            values: undo
                .into_iter()
                .map(|(_, old)| match old {
                    None => HtValue::Absent,
                    Some(o) if args.return_old => HtValue::Value(o),
                    Some(_) => HtValue::Present,
                })
                .collect(),
        })
    }

    /// Removes every key, returning the removed values.
    ///
    /// # Errors
    /// Whatever releasing the capacity reports (normally nothing).
    pub fn remove(
        &self,
        ctx: &dyn AgentContext,
        args: &HtKeysArgs,
    ) -> Result<HtValues, AgentError> {
        let mut inner = self.lock();
        let mut freed = 0i64;
        let values = match inner.tables.get_mut(&args.table) {
            None => vec![HtValue::Absent; args.keys.len()],
            Some(t) => args
                .keys
                .iter()
                .map(|k| match t.remove(k) {
                    Some(v) => {
                        freed += cost(k, &v);
                        HtValue::Value(v)
                    }
                    None => HtValue::Absent,
                })
                .collect(),
        };
        inner.charged = inner.charged.saturating_sub(freed as u64);
        drop(inner);
        ctx.charge(-freed)?;
        Ok(HtValues { values })
    }

    /// Number of entries of `table` (0 for an unknown table).
    pub fn len(&self, table: u64) -> u64 {
        self.lock().tables.get(&table).map_or(0, |t| t.len() as u64)
    }

    /// One page of entries after `args.after`, ascending by key bytes.
    pub fn scan(&self, args: &HtScanArgs) -> HtScanResult {
        use std::ops::Bound;
        let inner = self.lock();
        let Some(t) = inner.tables.get(&args.table) else {
            return HtScanResult::default();
        };
        let lo = match &args.after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let max = args.max.clamp(1, MAX_SCAN_PAGE) as usize;
        let mut it = t.range((lo, Bound::Unbounded));
        let entries: Vec<_> = it
            .by_ref()
            .take(max)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        HtScanResult {
            more: it.next().is_some(),
            entries,
        }
    }

    /// Drops `table`, releasing its space; returns how many entries it had.
    ///
    /// # Errors
    /// Whatever releasing the capacity reports (normally nothing).
    pub fn drop_table(&self, ctx: &dyn AgentContext, table: u64) -> Result<u64, AgentError> {
        let mut inner = self.lock();
        let Some(t) = inner.tables.remove(&table) else {
            return Ok(0);
        };
        let freed: i64 = t.iter().map(|(k, v)| cost(k, v)).sum();
        inner.charged = inner.charged.saturating_sub(freed as u64);
        drop(inner);
        ctx.charge(-freed)?;
        Ok(t.len() as u64)
    }
}
