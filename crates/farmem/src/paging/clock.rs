//! The resident set of a paged region and its CLOCK replacement policy.
//!
//! A slot's reference bit is set by every fault on the page. Read hits on a mapped page are not
//! visible from user space on this kind of kernel (no page-table access bits; see the module
//! docs), so pages that come back soon after their eviction (a *refault* within the ghost
//! history, [`super::ghost::Ghosts`]) earn `hot` credits, which keeps read-mostly hot pages
//! resident. A credit is a span of time, not a pass of the hand: one sampling window (an eighth of
//! a budget) of evictions. Counted in passes, credits would run out faster the more pages hold
//! them (the hand turns fast over a resident set of hot pages), and the hot set would be sampled
//! and refaulted the more often the better it was protected.
//!
//! **Drop-behind.** Pages a prefetch stream brought in and has since left behind (see
//! [`Streams::consumed`](super::prefetch::Streams::consumed)) are used once: they are queued as
//! *consumed* and become the first victims, before anything the hand would pick (and before
//! dirty pages, which cost a write-back), as the kernel does with used-once pages on its
//! inactive list and Leap with prefetched pages once used. A scan of an array larger than the
//! budget then recycles its own few frames instead of evicting the rest of the resident set.
//! A consumed page touched again (any fault on it) is no longer consumed and keeps the
//! ordinary protection; one evicted and needed again soon (within the ghost history) is a
//! *drop-behind mistake* ([`Clock::behind_refault`]). While more than one in
//! [`BEHIND_TOLERANCE`] recent drop-behind victims came back that soon (a loop over an array
//! that almost fits), consumed pages get no precedence (the hand takes them in its turn); after
//! a budget's worth of evictions the mistakes count half.

use std::collections::{HashMap, VecDeque};

/// Credits of a page that refaulted soon after its eviction (sampling windows of evictions it
/// stays resident unobserved).
pub const HOT_CREDITS: u8 = 3;
/// Most credits a page can earn: a page found in use each time it is sampled doubles its grant
/// up to this, so pages that stay hot are sampled (and pay a local fault) only once per this
/// many sampling windows of evictions.
pub const MAX_CREDITS: u8 = 96;
/// Most credits while most sampled pages prove still in use (see [`Clock::sample_hit`]).
pub const MAX_CREDITS_HOT: u8 = 240;
/// Sample outcomes remembered for the hit ratio (halved when reached, so recent ones count).
const SAMPLE_MEMORY: u32 = 512;
/// Outcomes needed before the ratio is trusted.
const SAMPLE_MIN: u32 = 32;
/// Drop-behind stays on while at most one in this many recent drop-behind victims came back
/// within the ghost history.
pub const BEHIND_TOLERANCE: u32 = 8;
/// Drop-behind victims remembered for the mistake ratio (halved when reached).
const BEHIND_MEMORY: u32 = 4096;
/// Drop-behind victims needed before the ratio is trusted.
const BEHIND_MIN: u32 = 64;
/// Stream tag of a staged page that is being *sampled* (unmapped to see whether the program
/// still reads it) rather than a prefetch marker.
pub const SAMPLE_TAG: u32 = u32::MAX;

/// What a dirty page is compared against at write-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Twin {
    /// No twin (clean page, or whole-page write-back).
    None,
    /// The backend has no copy yet: the page was zeros when it was first touched.
    Zero,
    /// Index of a 4 KiB twin buffer holding the page as the backend has it.
    Buf(u32),
}

/// One resident page.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// Page index in the region.
    pub page: usize,
    /// Touched (faulted on) since the hand last passed.
    pub referenced: bool,
    /// Sampling windows of evictions this page survives unobserved (earned by refaulting soon
    /// after eviction, or by a sample hit).
    pub hot: u8,
    /// Credits granted the last time the page proved hot (refault or sample hit); the next
    /// grant doubles it.
    pub grant: u8,
    /// Written since it was fetched or last written back.
    pub dirty: bool,
    /// Currently write-protected (every clean page is; a dirty one after a CLOCK pass).
    pub protected: bool,
    /// Clean twin of a dirty page.
    pub twin: Twin,
    /// Being written back by the reclaimer: not a candidate, writers wait until it is dropped.
    pub evicting: bool,
    /// Prefetched, not yet mapped: `(staging buffer, stream tag)`. The data is in the staging
    /// buffer; the first access faults (a cheap minor fault, no network) and moves the stream's
    /// prefetch window forward.
    pub staged: Option<(u32, u32)>,
    /// Brought in by prefetching rather than by a fault on it.
    pub prefetched: bool,
    /// Left behind by its prefetch stream and not touched since: a first victim (drop-behind).
    pub consumed: bool,
    /// When a sampled page was unmapped, on the clock of [`Clock::now`].
    pub sampled_at: u64,
    /// When the page's credits were last granted or charged, on the clock of [`Clock::now`]:
    /// credits are spent by the passing of time (evictions), not by passes of the hand.
    pub aged_at: u64,
}

impl Slot {
    /// A freshly mapped page: referenced when a fault brought it in, clean unless `dirty`.
    pub fn new(page: usize, referenced: bool, dirty: bool, twin: Twin) -> Self {
        Self {
            page,
            referenced,
            hot: 0,
            grant: 0,
            dirty,
            protected: !dirty,
            twin,
            evicting: false,
            staged: None,
            prefetched: false,
            consumed: false,
            sampled_at: 0,
            aged_at: 0,
        }
    }

    /// A fault on the resident page: it is in use (referenced), and no longer a consumed stream
    /// page.
    pub fn touch(&mut self) {
        self.referenced = true;
        self.consumed = false;
    }

    /// The page proved hot again at time `now` (a sample hit, or a refault of a page last
    /// granted `previous`): doubles its grant (at least [`HOT_CREDITS`], at most
    /// [`MAX_CREDITS`]) and gives it that many credits, counted from `now`.
    pub fn proved_hot(&mut self, previous: u8, now: u64) {
        self.grant_more(previous, 2, MAX_CREDITS, now);
    }

    /// Multiplies the grant (at least `previous`) by `factor`, between [`HOT_CREDITS`] and
    /// `cap`, and gives the page that many credits counted from `now`.
    fn grant_more(&mut self, previous: u8, factor: u8, cap: u8, now: u64) {
        let last = self.grant.max(previous);
        self.grant = last.saturating_mul(factor).clamp(HOT_CREDITS, cap);
        self.hot = self.grant;
        self.aged_at = now;
    }
}

/// Resident pages in a fixed number of slots, with a CLOCK hand.
pub struct Clock {
    /// Slots handed out so far (grown on demand up to `capacity`, so that a large budget costs
    /// nothing until it is used).
    slots: Vec<Option<Slot>>,
    /// Freed slots of `slots`.
    free: Vec<u32>,
    capacity: usize,
    of_page: HashMap<usize, u32>,
    hand: usize,
    /// Victims chosen so far: the time scale of sampling windows.
    now: u64,
    /// Victims chosen while a sampled page stays unmapped before it may become one itself.
    sample_window: u64,
    /// Recent sample outcomes: pages judged (hit or evicted unused), and hits among them.
    judged: u32,
    judged_hits: u32,
    /// Consumed pages in the order their streams left them (entries whose page is no longer
    /// resident or consumed are skipped when reached).
    behind: VecDeque<usize>,
    /// Recent victims that were consumed pages, and drop-behind mistakes among them.
    behind_evicted: u32,
    behind_back: u32,
    /// When the mistakes were last aged, on the clock of [`Clock::now`].
    behind_aged_at: u64,
    /// Since creation: consumed pages chosen as victims, and drop-behind mistakes.
    pub behind_counts: (u64, u64),
}

impl Clock {
    /// An empty set of `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
            of_page: HashMap::with_capacity(capacity.min(1 << 12)),
            hand: 0,
            now: 0,
            sample_window: (capacity / 8) as u64,
            judged: 0,
            judged_hits: 0,
            behind: VecDeque::new(),
            behind_evicted: 0,
            behind_back: 0,
            behind_aged_at: 0,
            behind_counts: (0, 0),
        }
    }

    /// Page `page` was left behind by its prefetch stream: if it is resident, mapped, was
    /// prefetched and never proved hot, it becomes a consumed page, queued as a first victim.
    /// Its reference bit is cleared (the touches it had were the stream's).
    pub fn consumed(&mut self, page: usize) {
        let Some(slot) = self.get_mut(page) else {
            return;
        };
        if !slot.prefetched || slot.staged.is_some() || slot.evicting || slot.hot > 0 {
            return;
        }
        slot.referenced = false;
        slot.consumed = true;
        if self.behind.len() >= self.capacity.max(1) {
            self.behind.pop_front();
        }
        self.behind.push_back(page);
    }

    /// A page evicted as consumed was needed again soon after (a refault or a prefetch within
    /// the ghost history): a drop-behind mistake.
    pub fn behind_refault(&mut self) {
        self.behind_back += 1;
        self.behind_counts.1 += 1;
    }

    /// Whether consumed pages go first: while few recent drop-behind victims came back.
    pub fn drop_behind_on(&mut self) -> bool {
        let budget = 8 * self.sample_window.max(1);
        if self.now.saturating_sub(self.behind_aged_at) >= budget {
            // A budget's worth of evictions later, old mistakes count half.
            self.behind_aged_at = self.now;
            self.behind_back /= 2;
        }
        self.behind_evicted < BEHIND_MIN
            || self.behind_back * BEHIND_TOLERANCE <= self.behind_evicted
    }

    fn count_behind(&mut self) {
        if self.behind_evicted >= BEHIND_MEMORY {
            self.behind_evicted /= 2;
            self.behind_back /= 2;
        }
        self.behind_evicted += 1;
        self.behind_counts.0 += 1;
    }

    /// Takes consumed pages from the front of the queue as victims, up to `n` in `victims`
    /// (with `clean_only`, stops at a dirty one).
    fn select_behind(&mut self, n: usize, victims: &mut Vec<usize>, clean_only: bool) {
        while victims.len() < n {
            let Some(&page) = self.behind.front() else {
                break;
            };
            let usable = match self.of_page.get(&page) {
                Some(&i) => self.slots[i as usize].as_ref().map(|s| {
                    (
                        s.consumed && !s.referenced && !s.evicting && s.staged.is_none(),
                        s.dirty,
                    )
                }),
                None => None,
            };
            match usable {
                Some((true, true)) if clean_only => break,
                Some((true, _)) => {
                    self.behind.pop_front();
                    if !victims.contains(&page) {
                        victims.push(page);
                        self.now += 1;
                        self.count_behind();
                    }
                }
                _ => {
                    self.behind.pop_front();
                }
            }
        }
    }

    fn judge(&mut self, hit: bool) {
        if self.judged >= SAMPLE_MEMORY {
            self.judged /= 2;
            self.judged_hits /= 2;
        }
        self.judged += 1;
        self.judged_hits += u32::from(hit);
    }

    /// Whether most recently sampled pages proved still in use.
    pub fn samples_mostly_hot(&self) -> bool {
        self.judged >= SAMPLE_MIN && self.judged_hits * 2 >= self.judged
    }

    /// The sampled page `page` was touched: it is still in use and gets a doubled grant. While
    /// most sampled pages prove in use, sampling mostly costs local faults and finds few cold
    /// pages, so grants then grow fourfold, up to [`MAX_CREDITS_HOT`]: hot pages are sampled
    /// less often.
    pub fn sample_hit(&mut self, page: usize) {
        self.judge(true);
        let (factor, cap) = if self.samples_mostly_hot() {
            (4, MAX_CREDITS_HOT)
        } else {
            (2, MAX_CREDITS)
        };
        let now = self.now;
        if let Some(slot) = self.get_mut(page) {
            slot.grant_more(0, factor, cap, now);
        }
    }

    /// Victims chosen so far (the clock of sampling windows).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Resident pages.
    pub fn len(&self) -> usize {
        self.of_page.len()
    }

    /// Sets the sampling window for a budget of `pages` (an eighth of it, in evictions).
    pub fn set_sample_window(&mut self, pages: usize) {
        self.sample_window = (pages / 8) as u64;
    }

    /// The slot of a resident page.
    pub fn get_mut(&mut self, page: usize) -> Option<&mut Slot> {
        let i = *self.of_page.get(&page)?;
        self.slots[i as usize].as_mut()
    }

    /// Whether `page` is resident.
    pub fn contains(&self, page: usize) -> bool {
        self.of_page.contains_key(&page)
    }

    /// Adds a page; its credits, if any, count from now. Returns `false` (and changes nothing)
    /// if no slot is free or it is resident.
    pub fn insert(&mut self, slot: Slot) -> bool {
        if self.of_page.contains_key(&slot.page) {
            return false;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < self.capacity => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
            None => return false,
        };
        self.of_page.insert(slot.page, i);
        let mut slot = slot;
        slot.aged_at = self.now;
        self.slots[i as usize] = Some(slot);
        true
    }

    /// Removes a page, returning its slot.
    pub fn remove(&mut self, page: usize) -> Option<Slot> {
        let i = self.of_page.remove(&page)?;
        self.free.push(i);
        self.slots[i as usize].take()
    }

    /// All resident slots.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.slots.iter_mut().flatten()
    }

    /// Picks up to `n` dirty pages for the background cleaner among the slots the CLOCK hand
    /// reaches next (half a revolution ahead of it): the pages about to be evicted, not the ones
    /// just written (often temporaries, freed before the hand comes round). A dirty page there
    /// still write-protected (not written since the cleaner, or the hand, last protected it) is
    /// picked; one written since gets `reprotect` (which should write-protect it again, so that
    /// the next pass sees whether it is still being written) and is passed over. Pages being
    /// evicted and staged pages are passed over.
    pub fn select_clean(&mut self, n: usize, mut reprotect: impl FnMut(&mut Slot)) -> Vec<usize> {
        let cap = self.slots.len();
        let mut out = Vec::new();
        for k in 0..cap.div_ceil(2) {
            if out.len() >= n {
                break;
            }
            let Some(slot) = self.slots[(self.hand + k) % cap].as_mut() else {
                continue;
            };
            if !slot.dirty || slot.evicting || slot.staged.is_some() {
                continue;
            }
            if slot.protected {
                out.push(slot.page);
            } else {
                reprotect(slot);
            }
        }
        out
    }

    /// Picks up to `n` victims with the CLOCK hand, without removing them.
    ///
    /// A referenced page loses its bit and is skipped (`second_chance` is called on it, e.g. to
    /// write-protect it again); a page with `hot` credits is charged one for each sampling
    /// window of evictions since it was last charged and skipped; any other is a victim. Pages
    /// being evicted are passed over. A whole revolution without a victim advances the clock by
    /// one window (every credited page is then charged), so the hand always finds victims; it
    /// stops once every credit could have been spent.
    ///
    /// Clean mapped hot pages that lose their last credit are also listed in `sample` (up to
    /// `max_sample`): the caller may unmap them, keeping a local copy, to see whether the program
    /// still reads them. A staged page (prefetch marker or sample) that is passed again untouched
    /// is a victim.
    ///
    /// While drop-behind is on ([`Clock::drop_behind_on`]), queued consumed pages are taken
    /// first, oldest first, and the hand only makes up the rest.
    pub fn select_victims(
        &mut self,
        n: usize,
        sample: &mut Vec<usize>,
        max_sample: usize,
        second_chance: impl FnMut(&mut Slot),
    ) -> Vec<usize> {
        let rounds = 2 + MAX_CREDITS_HOT as usize;
        self.select(n, sample, max_sample, second_chance, false, rounds)
    }

    /// Like [`Clock::select_victims`], but passes over dirty pages (they are left for the
    /// background cleaner, and dropped once clean) and stops after one revolution of the hand:
    /// fewer than `n` victims when clean ones are short.
    pub fn select_clean_victims(
        &mut self,
        n: usize,
        sample: &mut Vec<usize>,
        max_sample: usize,
        second_chance: impl FnMut(&mut Slot),
    ) -> Vec<usize> {
        self.select(n, sample, max_sample, second_chance, true, 1)
    }

    fn select(
        &mut self,
        n: usize,
        sample: &mut Vec<usize>,
        max_sample: usize,
        mut second_chance: impl FnMut(&mut Slot),
        clean_only: bool,
        rounds: usize,
    ) -> Vec<usize> {
        let mut victims = Vec::with_capacity(n);
        if self.drop_behind_on() {
            self.select_behind(n, &mut victims, clean_only);
        }
        let cap = self.slots.len();
        let unit = self.sample_window.max(1);
        let mut idle = 0;
        let mut sampled_out = 0;
        for _ in 0..rounds * cap {
            if victims.len() >= n {
                break;
            }
            if idle >= cap {
                // A whole revolution without a victim: every page is hot or in flight. Time
                // passes anyway (one credit's worth), or the hand would never find one.
                self.now += unit;
                idle = 0;
            }
            idle += 1;
            let i = self.hand;
            self.hand = (self.hand + 1) % cap.max(1);
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            if slot.evicting {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                second_chance(slot);
            } else if slot.hot > 0 && slot.staged.is_none() {
                // One credit is one sampling window of evictions since the page last proved hot
                // or was last charged.
                let spent = self.now.saturating_sub(slot.aged_at) / unit;
                if spent > 0 {
                    slot.hot = slot.hot.saturating_sub(spent.min(u8::MAX as u64) as u8);
                    slot.aged_at += spent * unit;
                    if slot.hot == 0 && !slot.dirty && sample.len() < max_sample {
                        sample.push(slot.page);
                    }
                }
            } else if matches!(slot.staged, Some((_, SAMPLE_TAG)))
                && self.now.saturating_sub(slot.sampled_at) < self.sample_window
            {
                // Sampled, still within its window: a read of it would still count. The
                // window is measured in evictions, not passes: when most slots hold hot pages
                // the hand turns fast over the few cold ones, and a pass is too short.
            } else if clean_only && slot.dirty {
                // Left for the cleaner.
            } else if !victims.contains(&slot.page) {
                if matches!(slot.staged, Some((_, SAMPLE_TAG))) {
                    // Sampled and not touched within its window: no longer in use.
                    sampled_out += 1;
                }
                let consumed = slot.consumed;
                victims.push(slot.page);
                self.now += 1;
                idle = 0;
                if consumed {
                    self.count_behind();
                }
            }
        }
        for _ in 0..sampled_out {
            self.judge(false);
        }
        victims
    }
}

#[cfg(test)]
#[path = "clock_tests.rs"]
mod tests;
