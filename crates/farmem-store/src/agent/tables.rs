//! Server-side hash tables: the cold part of a client's `FarHashMap`.
//!
//! Tables are kept per session in [`super::AgentState`]. Each is a hash map for lookups plus an
//! ordered set of its keys, so that a scan can resume after any key. Keys and values of up to
//! [`INLINE`] bytes are stored inline (no allocation, and a lookup touches no memory beyond the
//! hash table's). Every entry is charged `key + value + ENTRY_OVERHEAD` bytes against the
//! session's capacity through [`super::AgentContext::charge`]; a batch that does not fit changes
//! nothing.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use farmem_proto::agent::{HtKeysArgs, HtPutArgs, HtScanArgs, HtScanResult, HtValue, HtValues};

use super::{AgentContext, AgentError};

/// Bytes charged per entry beyond its key and value: the hash-map slot (key and value cells),
/// the ordered set's share, and allocation headers of long keys or values.
pub const ENTRY_OVERHEAD: u64 = 96;

/// Longest key or value stored inline.
pub const INLINE: usize = 22;

/// Key or value bytes: inline when short.
#[derive(Clone)]
enum Bytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Bytes {
    fn new(b: &[u8]) -> Self {
        if b.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Self::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            Self::Heap(b.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, buf } => &buf[..*len as usize],
            Self::Heap(b) => b,
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x?}", self.as_slice())
    }
}

// Equality, order and hash are those of the byte slice, so tables can be searched by `&[u8]`.
impl PartialEq for Bytes {
    fn eq(&self, o: &Self) -> bool {
        self.as_slice() == o.as_slice()
    }
}
impl Eq for Bytes {}
impl PartialOrd for Bytes {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bytes {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(o.as_slice())
    }
}
impl Hash for Bytes {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h);
    }
}
impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// One table: entries by key, and the keys in order for scans.
#[derive(Debug, Default)]
struct Table {
    map: HashMap<Bytes, Bytes>,
    order: BTreeSet<Bytes>,
}

impl Table {
    fn get(&self, k: &[u8]) -> Option<&[u8]> {
        self.map.get(k).map(Bytes::as_slice)
    }

    /// Inserts or replaces; returns the old value.
    fn insert(&mut self, k: &[u8], v: &[u8]) -> Option<Vec<u8>> {
        if let Some(slot) = self.map.get_mut(k) {
            return Some(std::mem::replace(slot, Bytes::new(v)).as_slice().to_vec());
        }
        let key = Bytes::new(k);
        self.order.insert(key.clone());
        self.map.insert(key, Bytes::new(v));
        None
    }

    fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let v = self.map.remove(k)?;
        self.order.remove(k);
        Some(v.as_slice().to_vec())
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Largest page a scan returns, whatever the client asks for.
pub const MAX_SCAN_PAGE: u32 = 65_536;

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
                    Some(v) => HtValue::Value(v.to_vec()),
                    None => HtValue::Absent,
                })
                .collect(),
        }
    }

    /// Inserts or replaces every entry, in order; all or nothing.
    ///
    /// # Errors
    /// [`farmem_kernels::KernelError::OutOfCapacity`] when the batch does not fit (nothing changed then).
    pub fn put(&self, ctx: &dyn AgentContext, args: HtPutArgs) -> Result<HtValues, AgentError> {
        let mut inner = self.lock();
        let t = inner.tables.entry(args.table).or_default();
        let mut delta = 0i64;
        let mut undo: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(args.entries.len());
        for (k, v) in args.entries {
            delta += cost(&k, &v);
            let old = t.insert(&k, &v);
            if let Some(o) = &old {
                delta -= cost(&k, o);
            }
            undo.push((k, old));
        }
        if let Err(e) = ctx.charge(delta) {
            for (k, old) in undo.into_iter().rev() {
                match old {
                    Some(o) => t.insert(&k, &o),
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
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        let max = args.max.clamp(1, MAX_SCAN_PAGE) as usize;
        let mut it = t.order.range::<[u8], _>((lo, Bound::Unbounded));
        let entries: Vec<_> = it
            .by_ref()
            .take(max)
            .map(|k| {
                let v = t.get(k.as_slice()).unwrap_or_default();
                (k.as_slice().to_vec(), v.to_vec())
            })
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
        let freed: i64 = t
            .map
            .iter()
            .map(|(k, v)| cost(k.as_slice(), v.as_slice()))
            .sum();
        inner.charged = inner.charged.saturating_sub(freed as u64);
        drop(inner);
        ctx.charge(-freed)?;
        Ok(t.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::agent::AgentState;

    /// A context that only keeps the charge.
    #[derive(Default)]
    struct Charge {
        used: Mutex<i64>,
        state: AgentState,
    }

    impl AgentContext for Charge {
        fn with_object(&self, _: u64, _: &mut dyn FnMut(&[u8])) -> Result<(), AgentError> {
            Err(AgentError::not_found(0))
        }
        fn put_object(&self, _: u64, _: &[u8]) -> Result<(), AgentError> {
            Err(AgentError::not_found(0))
        }
        fn charge(&self, delta: i64) -> Result<(), AgentError> {
            *self.used.lock().unwrap_or_else(|e| e.into_inner()) += delta;
            Ok(())
        }
        fn state(&self) -> &AgentState {
            &self.state
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(Vec<(Vec<u8>, Vec<u8>)>),
        Remove(Vec<Vec<u8>>),
        Get(Vec<Vec<u8>>),
        Scan(u32),
    }

    /// Short keys from a small alphabet (so operations collide), some longer than `INLINE`.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(0u8..4, 0..4),
            proptest::collection::vec(0u8..2, INLINE - 1..INLINE + 3),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec((bytes(), bytes()), 1..6).prop_map(Op::Put),
            proptest::collection::vec(bytes(), 1..4).prop_map(Op::Remove),
            proptest::collection::vec(bytes(), 1..4).prop_map(Op::Get),
            (1u32..5).prop_map(Op::Scan),
        ]
    }

    fn values(m: &BTreeMap<Vec<u8>, Vec<u8>>, keys: &[Vec<u8>]) -> Vec<HtValue> {
        keys.iter()
            .map(|k| {
                m.get(k)
                    .map_or(HtValue::Absent, |v| HtValue::Value(v.clone()))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn tables_behave_like_an_ordered_map(ops in proptest::collection::vec(op(), 1..40)) {
            let ctx = Charge::default();
            let t = Tables::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(entries) => {
                        let mut want = Vec::new();
                        for (k, v) in &entries {
                            want.push(model.insert(k.clone(), v.clone()).map_or(HtValue::Absent, HtValue::Value));
                        }
                        let got = t.put(&ctx, HtPutArgs { table: 1, return_old: true, entries }).unwrap();
                        prop_assert_eq!(got.values, want);
                    }
                    Op::Remove(keys) => {
                        let mut want = Vec::new();
                        for k in &keys {
                            want.push(model.remove(k).map_or(HtValue::Absent, HtValue::Value));
                        }
                        let got = t.remove(&ctx, &HtKeysArgs { table: 1, keys }).unwrap();
                        prop_assert_eq!(got.values, want);
                    }
                    Op::Get(keys) => {
                        let want = values(&model, &keys);
                        prop_assert_eq!(t.get(&HtKeysArgs { table: 1, keys }).values, want);
                    }
                    Op::Scan(max) => {
                        let mut after = None;
                        let mut all = Vec::new();
                        loop {
                            let page = t.scan(&HtScanArgs { table: 1, max, after: after.clone() });
                            prop_assert!(page.entries.len() <= max as usize);
                            after = page.entries.last().map(|(k, _)| k.clone());
                            all.extend(page.entries);
                            if !page.more {
                                break;
                            }
                        }
                        let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        prop_assert_eq!(all, want);
                    }
                }
                prop_assert_eq!(t.len(1), model.len() as u64);
                let charged: i64 = model.iter().map(|(k, v)| cost(k, v)).sum();
                prop_assert_eq!(t.charged_bytes() as i64, charged);
                prop_assert_eq!(*ctx.used.lock().unwrap(), charged);
            }
        }
    }
}
