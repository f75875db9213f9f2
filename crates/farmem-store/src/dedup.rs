//! Retry de-duplication: a session remembers the answers of its most recent non-idempotent
//! requests (patches, agent operations), so a request resent after a broken connection is
//! executed once and answered with the first answer.
//!
//! The window is bounded in entries and in answer bytes (oldest finished entries are forgotten
//! first). A request id that is running on another connection (the original and its retry race)
//! waits for the original to finish and then gets its answer.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::{Condvar, Mutex};

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
    id: u64,
    done: bool,
}

impl Running<'_> {
    /// Records `answer` (the encoded answer frame) for request id of this claim.
    pub fn finish(mut self, answer: &[u8]) {
        self.done = true;
        let entry = if answer.len() > MAX_KEPT_ANSWER.min(self.dedup.max_bytes) {
            Entry::Unkept
        } else if answer.len() <= INLINE {
            let mut a = [0u8; INLINE];
            a[..answer.len()].copy_from_slice(answer);
            Entry::Inline(answer.len() as u8, a)
        } else {
            Entry::Done(answer.into())
        };
        self.dedup.settle(self.id, entry);
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.dedup.settle(self.id, Entry::Unkept);
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

    /// Claims request id `id`: fresh, or answered before (waits while another connection runs it).
    pub fn claim(&self, id: u64) -> Claim<'_> {
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
        self.evict(&mut w);
        Claim::Fresh(Running {
            dedup: self,
            id,
            done: false,
        })
    }

    fn settle(&self, id: u64, entry: Entry) {
        let mut w = self.window.lock();
        w.bytes += entry.bytes();
        w.map.insert(id, entry);
        self.evict(&mut w);
        drop(w);
        self.finished.notify_all();
    }

    /// Forgets the oldest finished entries while the window is over its bounds. Running
    /// entries are never forgotten (at most one per connection of the session).
    fn evict(&self, w: &mut Window) {
        let mut skipped = 0;
        while (w.order.len() > self.max_entries || w.bytes > self.max_bytes)
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
    use proptest::prelude::*;

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
            let mut m = Model::default();
            for (id, answer) in ops {
                let known = m.order.iter().find(|(i, _)| *i == id).map(|(_, a)| a.clone());
                match d.claim(id) {
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
        if let Claim::Fresh(r) = d.claim(1) {
            r.finish(&[1; 6]);
        }
        if let Claim::Fresh(r) = d.claim(2) {
            r.finish(&[2; 6]);
        }
        // 12 bytes > 10: the oldest is forgotten.
        assert_eq!(d.bytes(), 6);
        assert!(matches!(d.claim(1), Claim::Fresh(_)));
        if let Claim::Fresh(r) = d.claim(3) {
            r.finish(&[3; 11]);
        }
        assert!(matches!(d.claim(3), Claim::Unkept));
        // A dropped claim counts as executed without an answer.
        drop(d.claim(4));
        assert!(matches!(d.claim(4), Claim::Unkept));
    }

    #[test]
    fn retry_waits_for_the_running_original() {
        let d = std::sync::Arc::new(Dedup::default());
        let Claim::Fresh(r) = d.claim(9) else {
            panic!("fresh id")
        };
        let d2 = d.clone();
        let t = std::thread::spawn(move || match d2.claim(9) {
            Claim::Replay(a) => a.to_vec(),
            other => panic!("unexpected {other:?}"),
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.finish(b"answer");
        assert_eq!(t.join().unwrap(), b"answer");
    }
}
