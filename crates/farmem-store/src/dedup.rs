//! Retry de-duplication: a session remembers the answers of its most recent non-idempotent
//! requests (patches, agent operations), so a request resent after a broken connection is
//! executed once and answered with the first answer.
//!
//! The window is bounded in entries and in answer bytes (oldest finished entries are forgotten
//! first). A request id that is running on another connection (the original and its retry race)
//! waits for the original to finish and then gets its answer.
//!
//! Kept answers larger than the inline size are **charged to the session's namespace** (so they
//! count in its and the server's used bytes and against the capacity) and given back when
//! forgotten. When the charge does not fit, older answers are forgotten to make room; if it
//! still does not fit, the answer is not kept (a retry then gets `ReplayUnavailable`). The
//! bookkeeping of ids (at most [`WINDOW_ENTRIES`] of a few dozen bytes each) is not charged.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::{Condvar, Mutex};

use crate::Namespace;

/// Most request ids remembered per session.
pub const WINDOW_ENTRIES: usize = 4096;
/// Most answer bytes remembered per session.
pub const WINDOW_BYTES: usize = 4 << 20;
/// Answers above this size are not kept (a retry of such a request gets `ReplayUnavailable`).
pub const MAX_KEPT_ANSWER: usize = 1 << 20;

/// Answers up to this size (every bodiless answer) are kept without an allocation.
const INLINE: usize = 32;

#[derive(Debug)]
enum Entry {
    Running,
    Inline(u8, [u8; INLINE]),
    Done(Box<[u8]>),
    /// Ran, but the answer was too large to keep (or the execution was abandoned).
    Unkept,
}

/// Request ids are client counters: one multiply-xorshift round spreads them well enough.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, x: u64) {
        let x = (x ^ (x >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

#[derive(Debug, Default)]
struct Window {
    map: HashMap<u64, Entry, BuildHasherDefault<IdHasher>>,
    order: VecDeque<u64>,
    bytes: usize,
}

/// The answers of a session's most recent non-idempotent requests.
#[derive(Debug)]
pub struct Dedup {
    window: Mutex<Window>,
    finished: Condvar,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for Dedup {
    fn default() -> Self {
        Self::new(WINDOW_ENTRIES, WINDOW_BYTES)
    }
}

/// What to do with a request id.
#[derive(Debug)]
pub enum Claim<'a> {
    /// Not seen: execute it, then [`Running::finish`] with its answer.
    Fresh(Running<'a>),
    /// Already executed: send this answer (a complete frame) again.
    Replay(Box<[u8]>),
    /// Already executed, but its answer was not kept.
    Unkept,
}

/// A request id claimed for execution. Dropping it without [`Running::finish`] records the id as
/// executed without a kept answer (so a retry is not run twice).
#[derive(Debug)]
pub struct Running<'a> {
    dedup: &'a Dedup,
    account: &'a Namespace,
    id: u64,
    done: bool,
}

impl Running<'_> {
    /// Records `answer` (the encoded answer frame) for request id of this claim.
    pub fn finish(mut self, answer: &[u8]) {
        self.done = true;
        let entry = self.dedup.entry_for(answer);
        self.dedup.settle(self.id, entry, self.account);
    }

    /// Forgets the claim: the id counts as never run, so a retry executes it again. For an
    /// operation stopped because its client went away: its answer reached nobody, and what it
    /// would have changed is changed again (agent outputs are overwritten whole) by the retry.
    pub fn forget(mut self) {
        self.done = true;
        let mut w = self.dedup.window.lock();
        if matches!(w.map.get(&self.id), Some(Entry::Running)) {
            w.map.remove(&self.id);
            w.order.retain(|&x| x != self.id);
        }
        drop(w);
        self.dedup.finished.notify_all();
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.dedup.settle(self.id, Entry::Unkept, self.account);
        }
    }
}

impl Entry {
    /// Answer bytes this entry counts against the window.
    fn bytes(&self) -> usize {
        match self {
            Entry::Inline(n, _) => usize::from(*n),
            Entry::Done(a) => a.len(),
            Entry::Running | Entry::Unkept => 0,
        }
    }

    /// Bytes this entry charges to the session (answers kept on the heap).
    fn charged(&self) -> u64 {
        match self {
            Entry::Done(a) => a.len() as u64,
            _ => 0,
        }
    }
}

impl Dedup {
    /// A window of at most `max_entries` ids and `max_bytes` answer bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            window: Mutex::new(Window::default()),
            finished: Condvar::new(),
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    /// Claims request id `id`: fresh, or answered before (waits while another connection runs
    /// it). Kept answers are charged to `account` (the session's namespace).
    pub fn claim<'a>(&'a self, id: u64, account: &'a Namespace) -> Claim<'a> {
        let mut w = self.window.lock();
        loop {
            match w.map.get(&id) {
                None => break,
                Some(Entry::Running) => self.finished.wait(&mut w),
                Some(Entry::Done(a)) => return Claim::Replay(a.clone()),
                Some(Entry::Inline(n, a)) => return Claim::Replay(a[..*n as usize].into()),
                Some(Entry::Unkept) => return Claim::Unkept,
            }
        }
        w.map.insert(id, Entry::Running);
        w.order.push_back(id);
        self.evict(&mut w, 0, account);
        Claim::Fresh(Running {
            dedup: self,
            account,
            id,
            done: false,
        })
    }

    /// The entry that keeps `answer` (or records that it was not kept).
    fn entry_for(&self, answer: &[u8]) -> Entry {
        if answer.len() > MAX_KEPT_ANSWER.min(self.max_bytes) {
            Entry::Unkept
        } else if answer.len() <= INLINE {
            let mut a = [0u8; INLINE];
            a[..answer.len()].copy_from_slice(answer);
            Entry::Inline(answer.len() as u8, a)
        } else {
            Entry::Done(answer.into())
        }
    }

    /// Remembers `answer` for request id `id` as if it had just run (recovery of a durable
    /// server); an empty answer records the id as run without a kept answer. An id already
    /// remembered is left as it is.
    pub(crate) fn restore(&self, id: u64, answer: &[u8], account: &Namespace) {
        let mut w = self.window.lock();
        if w.map.contains_key(&id) {
            return;
        }
        w.map.insert(id, Entry::Running);
        w.order.push_back(id);
        drop(w);
        let entry = if answer.is_empty() {
            Entry::Unkept
        } else {
            self.entry_for(answer)
        };
        self.settle(id, entry, account);
    }

    /// Calls `f` with every finished request id and its kept answer (empty when not kept),
    /// oldest first.
    pub(crate) fn for_each(
        &self,
        mut f: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let w = self.window.lock();
        for id in &w.order {
            match w.map.get(id) {
                Some(Entry::Done(a)) => f(*id, a)?,
                Some(Entry::Inline(n, a)) => f(*id, &a[..usize::from(*n)])?,
                Some(Entry::Unkept) => f(*id, &[])?,
                Some(Entry::Running) | None => {}
            }
        }
        Ok(())
    }

    fn settle(&self, id: u64, mut entry: Entry, account: &Namespace) {
        let mut w = self.window.lock();
        let charge = entry.charged();
        if charge > 0 && account.charge(charge as i64).is_err() {
            // Make room by forgetting older answers, then try once more.
            self.evict(&mut w, charge, account);
            if account.charge(charge as i64).is_err() {
                entry = Entry::Unkept;
            }
        }
        w.bytes += entry.bytes();
        w.map.insert(id, entry);
        self.evict(&mut w, 0, account);
        drop(w);
        self.finished.notify_all();
    }

    /// Forgets the oldest finished entries while the window is over its bounds, or until
    /// `room` charged bytes were given back. Running entries are never forgotten (at most one
    /// per connection of the session).
    fn evict(&self, w: &mut Window, room: u64, account: &Namespace) {
        let mut skipped = 0;
        let mut freed = 0u64;
        while (w.order.len() > self.max_entries || w.bytes > self.max_bytes || freed < room)
            && skipped < w.order.len()
        {
            let Some(id) = w.order.pop_front() else { break };
            match w.map.get(&id) {
                Some(Entry::Running) => {
                    w.order.push_back(id);
                    skipped += 1;
                }
                Some(e) => {
                    w.bytes -= e.bytes();
                    let charged = e.charged();
                    if charged > 0 {
                        account.charge(-(charged as i64)).ok();
                        freed += charged;
                    }
                    w.map.remove(&id);
                }
                None => {}
            }
        }
    }

    /// Ids remembered (finished or running).
    pub fn len(&self) -> usize {
        self.window.lock().order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answer bytes remembered.
    pub fn bytes(&self) -> usize {
        self.window.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Budget;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn unlimited() -> Namespace {
        Namespace::new(Arc::new(Budget::new(u64::MAX)), 1 << 20)
    }

    /// The model: the last `n` distinct ids claimed, with their answers (none are too large).
    #[derive(Default)]
    struct Model {
        order: VecDeque<(u64, Vec<u8>)>,
    }

    proptest! {
        #[test]
        fn window_matches_model(
            n in 1usize..12,
            ops in prop::collection::vec((0u64..24, prop::collection::vec(any::<u8>(), 0..8)), 0..200),
        ) {
            let d = Dedup::new(n, usize::MAX);
            let ns = unlimited();
            let mut m = Model::default();
            for (id, answer) in ops {
                let known = m.order.iter().find(|(i, _)| *i == id).map(|(_, a)| a.clone());
                match d.claim(id, &ns) {
                    Claim::Fresh(r) => {
                        prop_assert!(known.is_none(), "id {} forgotten too early", id);
                        r.finish(&answer);
                        m.order.push_back((id, answer));
                        if m.order.len() > n {
                            m.order.pop_front();
                        }
                    }
                    Claim::Replay(a) => {
                        prop_assert_eq!(Some(a.to_vec()), known);
                    }
                    Claim::Unkept => prop_assert!(false, "no answer was too large"),
                }
                prop_assert_eq!(d.len(), m.order.len());
                let bytes: usize = m.order.iter().map(|(_, a)| a.len()).sum();
                prop_assert_eq!(d.bytes(), bytes);
            }
        }
    }

    #[test]
    fn byte_bound_and_large_answers() {
        let d = Dedup::new(100, 10);
        let ns = unlimited();
        if let Claim::Fresh(r) = d.claim(1, &ns) {
            r.finish(&[1; 6]);
        }
        if let Claim::Fresh(r) = d.claim(2, &ns) {
            r.finish(&[2; 6]);
        }
        // 12 bytes > 10: the oldest is forgotten.
        assert_eq!(d.bytes(), 6);
        assert!(matches!(d.claim(1, &ns), Claim::Fresh(_)));
        if let Claim::Fresh(r) = d.claim(3, &ns) {
            r.finish(&[3; 11]);
        }
        assert!(matches!(d.claim(3, &ns), Claim::Unkept));
        // A dropped claim counts as executed without an answer.
        drop(d.claim(4, &ns));
        assert!(matches!(d.claim(4, &ns), Claim::Unkept));
    }

    #[test]
    fn retry_waits_for_the_running_original() {
        let d = Arc::new(Dedup::default());
        let ns = Arc::new(unlimited());
        let Claim::Fresh(r) = d.claim(9, &ns) else {
            panic!("fresh id")
        };
        let (d2, ns2) = (d.clone(), ns.clone());
        let t = std::thread::spawn(move || match d2.claim(9, &ns2) {
            Claim::Replay(a) => a.to_vec(),
            other => panic!("unexpected {other:?}"),
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.finish(b"answer");
        assert_eq!(t.join().unwrap(), b"answer");
    }

    #[test]
    fn kept_answers_are_charged_to_the_session() {
        // Room for 200 bytes of answers (plus nothing else).
        let budget = Arc::new(Budget::new(200));
        let ns = Namespace::new(budget.clone(), 1 << 20);
        let d = Dedup::new(100, 1 << 20);
        let answer = |id: u64, len: usize| match d.claim(id, &ns) {
            Claim::Fresh(r) => r.finish(&vec![id as u8; len]),
            other => panic!("id {id}: {other:?}"),
        };
        // Inline answers cost nothing; larger ones are charged.
        answer(1, 16);
        assert_eq!(ns.used_bytes(), 0);
        answer(2, 120);
        assert_eq!((ns.used_bytes(), budget.used()), (120, 120));
        // No room for another 120: the oldest charged answer is forgotten to make room.
        answer(3, 120);
        assert_eq!(ns.used_bytes(), 120);
        assert!(matches!(d.claim(2, &ns), Claim::Fresh(_)));
        assert!(matches!(d.claim(3, &ns), Claim::Replay(a) if a.len() == 120));
        // An answer larger than the whole capacity is not kept, and nothing is exceeded.
        answer(4, 300);
        assert!(matches!(d.claim(4, &ns), Claim::Unkept));
        assert!(budget.used() <= 200);
        drop(d);
        drop(ns);
        assert_eq!(budget.used(), 0);
    }
}
