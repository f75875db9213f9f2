//! Server-side hash tables: the cold part of a client's `FarHashMap`.
//!
//! Tables are kept per session in [`super::AgentState`]. Each is a `table::Table`: key-range
//! segments, each a hash index of 4-byte offsets over an arena of records, so an entry costs
//! its key and value plus a few bytes, inserts stay flat as a table grows, and scans page in key
//! order without an ordered key set. Every entry is charged `key + value + ENTRY_OVERHEAD` bytes
//! against the session's capacity through [`super::AgentContext::charge`]; a batch that does not
//! fit changes nothing.
//!
//! `HT_GET` and `HT_PUT` are served straight from their encoded arguments ([`Tables::get_encoded`],
//! [`Tables::put_encoded`]): no allocation per key.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use farmem_proto::agent::{
    AgentDecodeError, AgentMessage, HtKeysArgs, HtPutArgs, HtScanArgs, HtScanResult, HtValue,
    HtValues, Reader, Writer,
};

use super::table::Table;
use super::{AgentContext, AgentError};
use crate::durable::Entry;
use crate::durable::record::Record;

/// Reserves room in the session's journal (if it has one) for a record of `len(session)`
/// bytes; returns it with the session's key.
fn reserve(
    ctx: &dyn AgentContext,
    len: impl FnOnce(u64) -> usize,
) -> Result<Option<(Entry<'_>, u64)>, AgentError> {
    let Some(j) = ctx.journal() else {
        return Ok(None);
    };
    let e = j
        .reserve(len(j.session()))
        .map_err(|e| AgentError::Store(e.into()))?;
    Ok(Some((e, j.session())))
}

/// Bytes charged per entry beyond its key and value: the record header (two length bytes),
/// the hash index (4-byte offset and control byte, 7/16 to 7/8 full), the arena's slack (up to
/// a quarter) and dead records awaiting compaction, on average.
pub const ENTRY_OVERHEAD: u64 = 24;

/// Largest page a scan returns, whatever the client asks for.
pub const MAX_SCAN_PAGE: u32 = 65_536;

/// Largest key or value a table stores (records address their segment with 32-bit offsets).
pub const MAX_ENTRY_BYTES: usize = 1 << 30;

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
    /// Seeds the tables' hashes.
    seeds: std::collections::hash_map::RandomState,
}

impl Inner {
    fn table_mut(&mut self, id: u64) -> &mut Table {
        let seed = self.seeds.hash_one(id);
        self.tables.entry(id).or_insert_with(|| Table::new(seed))
    }
}

/// Borrowed `(key, value)` pairs of a put.
type Entries<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Reads `table:u64 return_old:u8 entries:list<key:bytes value:bytes>` without copying.
fn parse_put(args: &[u8]) -> Result<(u64, bool, Entries<'_>), AgentDecodeError> {
    let mut r = Reader::new(args);
    let table = r.u64()?;
    let return_old = match r.u8()? {
        0 => false,
        1 => true,
        tag => {
            return Err(AgentDecodeError::BadTag {
                what: "return_old",
                tag,
            });
        }
    };
    let n = r.count(8)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push((r.byte_string()?, r.byte_string()?));
    }
    r.finish()?;
    Ok((table, return_old, entries))
}

/// Reads `table:u64 keys:list<bytes>` without copying.
fn parse_keys(args: &[u8]) -> Result<(u64, Vec<&[u8]>), AgentDecodeError> {
    let mut r = Reader::new(args);
    let table = r.u64()?;
    let n = r.count(4)?;
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(r.byte_string()?);
    }
    r.finish()?;
    Ok((table, keys))
}

/// Per-key answer of a put: absent before, present (value not kept) or the old value.
enum Old {
    Absent,
    Present,
    Value(std::ops::Range<usize>),
}

impl Tables {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a table half-updated in a way that breaks
        // its invariants (every update is a single table operation), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the session's tables, as a running operation does (for tests).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> std::sync::MutexGuard<'_, impl Sized> {
        self.lock()
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

    /// [`Tables::get`] from the encoded [`HtKeysArgs`], answering the encoded [`HtValues`]. The
    /// answer is charged to `ctx`'s session while it is built (a request may name one large
    /// value many times).
    ///
    /// # Errors
    /// [`AgentError::Malformed`] when the arguments do not decode; the out-of-capacity error of
    /// [`AgentContext::charge`] when the answer does not fit.
    pub fn get_encoded(&self, ctx: &dyn AgentContext, args: &[u8]) -> Result<Vec<u8>, AgentError> {
        let (table, keys) = parse_keys(args)?;
        let inner = self.lock();
        Self::answer_get(ctx, inner.tables.get(&table), &keys)
    }

    /// [`Tables::get_encoded`] without waiting: `None`, having done nothing, when the arguments
    /// name more than `max_keys` keys (or do not decode) or another operation holds the
    /// session's tables now. Otherwise calls `admit` first, with the tables held (its error is
    /// the answer, and nothing is looked up), then looks the keys up.
    ///
    /// # Errors
    /// `admit`'s error; the out-of-capacity error of [`AgentContext::charge`] when the answer
    /// does not fit.
    pub fn try_get_encoded(
        &self,
        ctx: &dyn AgentContext,
        args: &[u8],
        max_keys: usize,
        admit: impl FnOnce() -> Result<(), AgentError>,
    ) -> Option<Result<Vec<u8>, AgentError>> {
        let (table, keys) = parse_keys(args).ok()?;
        if keys.len() > max_keys {
            return None;
        }
        let inner = match self.inner.try_lock() {
            Ok(g) => g,
            // As in `lock`: a panic cannot leave a table half-updated.
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(admit().and_then(|()| Self::answer_get(ctx, inner.tables.get(&table), &keys)))
    }

    /// The encoded [`HtValues`] of `keys` in `t` (each key looked up once).
    fn answer_get(
        ctx: &dyn AgentContext,
        t: Option<&Table>,
        keys: &[&[u8]],
    ) -> Result<Vec<u8>, AgentError> {
        let found: Vec<Option<&[u8]>> = keys.iter().map(|&k| t.and_then(|t| t.get(k))).collect();
        let size = found.iter().fold(4u64, |n, v| {
            n.saturating_add(1 + v.map_or(0, |v| 4 + v.len() as u64))
        });
        let _answer = super::Scratch::charge(ctx, size)?;
        let mut w = Writer::from_vec(Vec::with_capacity(size.min(1 << 20) as usize));
        w.count(found.len());
        for v in found {
            match v {
                Some(v) => w.u8(1).byte_string(v),
                None => w.u8(0),
            };
        }
        Ok(w.buf)
    }

    /// Inserts or replaces every entry, in order; all or nothing.
    ///
    /// # Errors
    /// [`farmem_kernels::KernelError::OutOfCapacity`] when the batch does not fit (nothing changed then).
    pub fn put(&self, ctx: &dyn AgentContext, args: HtPutArgs) -> Result<HtValues, AgentError> {
        let out = self.put_encoded(ctx, &args.encode())?;
        Ok(HtValues::decode(&out)?)
    }

    /// [`Tables::put`] from the encoded [`HtPutArgs`], answering the encoded [`HtValues`].
    ///
    /// # Errors
    /// [`AgentError::Malformed`] when the arguments do not decode;
    /// [`farmem_kernels::KernelError::OutOfCapacity`] when the batch does not fit;
    /// [`farmem_kernels::KernelError::TooLarge`] for a key or value over [`MAX_ENTRY_BYTES`]
    /// (nothing changed then).
    pub fn put_encoded(&self, ctx: &dyn AgentContext, args: &[u8]) -> Result<Vec<u8>, AgentError> {
        let (table, return_old, entries) = parse_put(args)?;
        if let Some(&(k, v)) = entries
            .iter()
            .find(|(k, v)| k.len().max(v.len()) > MAX_ENTRY_BYTES)
        {
            return Err(AgentError::Kernel(farmem_kernels::KernelError::TooLarge {
                size: k.len().max(v.len()) as u64,
                limit: MAX_ENTRY_BYTES as u64,
            }));
        }
        let mut inner = self.lock();
        let log = reserve(ctx, |session| Record::TablePut { session, args }.len())?;
        // Charge as if every key were new first (one call, nothing to undo), then give back
        // what replaced entries already held; only when that fails is the exact charge worked
        // out with an undo log.
        let upper: i64 = entries.iter().map(|(k, v)| cost(k, v)).sum();
        let mut olds = Vec::with_capacity(entries.len());
        let mut old_bytes = Vec::new();
        let delta = if ctx.charge(upper).is_ok() {
            let t = inner.table_mut(table);
            let mut refund = 0i64;
            for &(k, v) in &entries {
                let start = old_bytes.len();
                let old = t.insert(k, v, return_old.then_some(&mut old_bytes));
                olds.push(match old {
                    None => Old::Absent,
                    Some(n) => {
                        refund += n as i64 + cost(k, &[]);
                        if return_old {
                            Old::Value(start..old_bytes.len())
                        } else {
                            Old::Present
                        }
                    }
                });
            }
            // Releasing never fails for a context that just accepted the larger charge.
            ctx.charge(-refund)?;
            upper - refund
        } else {
            let t = inner.table_mut(table);
            let mut delta = 0i64;
            let mut undo: Vec<(&[u8], Option<std::ops::Range<usize>>)> =
                Vec::with_capacity(entries.len());
            let mut saved = Vec::new();
            for &(k, v) in &entries {
                let start = saved.len();
                let old = t.insert(k, v, Some(&mut saved));
                delta += cost(k, v);
                match old {
                    None => {
                        undo.push((k, None));
                        olds.push(Old::Absent);
                    }
                    Some(n) => {
                        delta -= cost(k, &saved[start..]);
                        undo.push((k, Some(start..saved.len())));
                        olds.push(if return_old {
                            let s = old_bytes.len();
                            old_bytes.extend_from_slice(&saved[start..]);
                            Old::Value(s..s + n)
                        } else {
                            Old::Present
                        });
                    }
                }
            }
            if let Err(e) = ctx.charge(delta) {
                for (k, old) in undo.into_iter().rev() {
                    match old {
                        Some(r) => t.insert(k, &saved[r], None),
                        None => t.remove(k).map(|v| v.len()),
                    };
                }
                if t.is_empty() {
                    inner.tables.remove(&table);
                }
                return Err(e);
            }
            delta
        };
        inner.charged = inner.charged.saturating_add_signed(delta);
        if let Some((e, session)) = log {
            e.write(&Record::TablePut { session, args });
        }
        drop(inner);
        let mut w = Writer::from_vec(Vec::with_capacity(4 + olds.len() + old_bytes.len()));
        w.count(olds.len());
        for o in olds {
            match o {
                Old::Absent => w.u8(0),
                Old::Present => w.u8(2),
                Old::Value(r) => w.u8(1).byte_string(&old_bytes[r]),
            };
        }
        Ok(w.buf)
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
        let logged = ctx.journal().map(|_| args.encode());
        let mut inner = self.lock();
        let log = match &logged {
            Some(a) => reserve(ctx, |session| {
                Record::TableRemove { session, args: a }.len()
            })?,
            None => None,
        };
        let mut freed = 0i64;
        let mut emptied = false;
        let values = match inner.tables.get_mut(&args.table) {
            None => vec![HtValue::Absent; args.keys.len()],
            Some(t) => {
                let values = args
                    .keys
                    .iter()
                    .map(|k| match t.remove(k) {
                        Some(v) => {
                            freed += cost(k, &v);
                            HtValue::Value(v)
                        }
                        None => HtValue::Absent,
                    })
                    .collect();
                emptied = t.is_empty();
                values
            }
        };
        if emptied {
            inner.tables.remove(&args.table);
        }
        if let (Some((e, session)), Some(a)) = (log, &logged)
            && freed > 0
        {
            e.write(&Record::TableRemove { session, args: a });
        }
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
        let mut inner = self.lock();
        let Some(t) = inner.tables.get_mut(&args.table) else {
            return HtScanResult::default();
        };
        let max = args.max.clamp(1, MAX_SCAN_PAGE) as usize;
        let (entries, more) = t.scan(args.after.as_deref(), max);
        HtScanResult {
            more,
            entries: entries
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        }
    }

    /// [`Tables::scan`] from the encoded [`HtScanArgs`], answering the encoded
    /// [`HtScanResult`] straight from the table's records (no copy per entry besides the
    /// answer's own).
    ///
    /// # Errors
    /// [`AgentError::Malformed`] when the arguments do not decode.
    pub fn scan_encoded(&self, args: &[u8]) -> Result<Vec<u8>, AgentError> {
        let args = HtScanArgs::decode(args)?;
        let mut inner = self.lock();
        let Some(t) = inner.tables.get_mut(&args.table) else {
            return Ok(HtScanResult::default().encode());
        };
        let max = args.max.clamp(1, MAX_SCAN_PAGE) as usize;
        let (entries, more) = t.scan(args.after.as_deref(), max);
        let size = entries
            .iter()
            .fold(5, |n, (k, v)| n + 8 + k.len() + v.len());
        let mut w = Writer::from_vec(Vec::with_capacity(size));
        w.u8(u8::from(more)).count(entries.len());
        for (k, v) in entries {
            w.byte_string(k).byte_string(v);
        }
        Ok(w.buf)
    }

    /// Drops `table`, releasing its space; returns how many entries it had.
    ///
    /// # Errors
    /// Whatever releasing the capacity reports (normally nothing).
    pub fn drop_table(&self, ctx: &dyn AgentContext, table: u64) -> Result<u64, AgentError> {
        let mut inner = self.lock();
        let log = reserve(ctx, |session| Record::TableDrop { session, table }.len())?;
        let Some(t) = inner.tables.remove(&table) else {
            return Ok(0);
        };
        if let Some((e, session)) = log {
            e.write(&Record::TableDrop { session, table });
        }
        let freed = (t.payload() + t.len() as u64 * ENTRY_OVERHEAD) as i64;
        inner.charged = inner.charged.saturating_sub(freed as u64);
        drop(inner);
        ctx.charge(-freed)?;
        Ok(t.len() as u64)
    }

    /// Calls `out` with the encoded `HtPutArgs` that rebuild every table (a large table in
    /// several parts of about `part` bytes).
    pub(crate) fn dump(
        &self,
        part: usize,
        out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let inner = self.lock();
        for (&id, t) in &inner.tables {
            let mut entries = t.entries().peekable();
            while entries.peek().is_some() {
                let mut batch = Vec::new();
                let mut bytes = 0;
                for (k, v) in entries.by_ref() {
                    batch.push((k, v));
                    bytes += k.len() + v.len() + 8;
                    if bytes >= part {
                        break;
                    }
                }
                let mut w = Writer::from_vec(Vec::with_capacity(bytes + 16));
                w.u64(id).u8(0);
                w.count(batch.len());
                for (k, v) in batch {
                    w.byte_string(k).byte_string(v);
                }
                out(&w.buf)?;
            }
        }
        Ok(())
    }

    /// Entries of `table` (tests: checks against a model).
    #[cfg(test)]
    fn entries(&self, table: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let inner = self.lock();
        inner.tables.get(&table).map_or(Vec::new(), |t| {
            t.entries().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
        })
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

    /// Short keys from a small alphabet (so operations collide), some longer than 8 bytes.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(0u8..4, 0..4),
            proptest::collection::vec(0u8..2, 20..26),
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
                let mut stored = t.entries(1);
                stored.sort();
                let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(stored, want);
                let charged: i64 = model.iter().map(|(k, v)| cost(k, v)).sum();
                prop_assert_eq!(t.charged_bytes() as i64, charged);
                prop_assert_eq!(*ctx.used.lock().unwrap(), charged);
            }
        }
    }
}
