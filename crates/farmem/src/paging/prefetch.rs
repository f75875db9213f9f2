//! Prefetching that follows the program: stream detection with a majority trend (as in Leap,
//! ATC'20) and an adaptive window.
//!
//! Faults are grouped into streams by proximity (a fault near a stream's last position continues
//! it), so several threads, or one thread walking several arrays in lockstep, each get their own
//! stream. A stream's trend is the majority delta among its last faults (Boyer-Moore vote over
//! the last 8 deltas, then the last 4): +1 sequential, -1 reverse, +-k strided. Random faults have
//! no majority and prefetch nothing.
//!
//! With a trend the next [`DEPTH`] windows of `window` pages along it are fetched asynchronously,
//! each with its own request, so that one is on the wire while the previous one is mapped. The
//! first page of each window is a *marker*: it is kept unmapped (staged locally), so the
//! program's first touch of the window is seen (a minor fault, no network) and starts the fetch
//! of one more window, keeping [`DEPTH`] windows ahead of the program like the kernel's
//! asynchronous readahead. A window
//! the program enters doubles the next one (up to the maximum); a stream that leaves its trend
//! halves it, and one without a trend stops.
//!
//! Accuracy and coverage are counted per window: a window counts as *used* once the program
//! entered it (its marker was touched, or the stream continued past it), as *wasted* when the
//! stream broke off before reaching it.
//!
//! **Consumed pages.** Reads of mapped pages are invisible, so a stream's pages are known to be
//! consumed only by the stream's progress: when the program enters a window (touches its marker,
//! or takes a demand fault that continues the stream), the stream's pages more than one window
//! behind that position are listed in [`Streams::consumed`] for the caller (which makes them the
//! first victims of eviction, see [`Clock`](super::clock::Clock)). The lag of one window leaves
//! the program the window it just left (a loop that looks back a little, or an object
//! straddling two windows). A stream that breaks off or turns declares nothing more.

/// Streams followed at once per region.
const STREAMS: usize = 16;
/// Deltas remembered per stream.
const HISTORY: usize = 8;
/// First window of a newly detected trend, in pages.
const FIRST_WINDOW: usize = 4;
/// A fault within this many pages of a stream's last position (plus its window) continues it.
const NEAR: usize = 64;
/// Windows of at least this many pages get a marker page.
const MARKER_MIN: usize = 4;
/// Windows a stream keeps in flight ahead of the program.
pub const DEPTH: usize = 2;
/// Most pages one advance of a stream declares consumed (a longer jump is not a stream's step).
const BEHIND_MAX: usize = 4096;

/// Pages to fetch for one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Pages in stream order (the caller drops those out of range, absent or already resident).
    pub pages: Vec<usize>,
    /// The page to keep staged as the marker of this window, if any.
    pub marker: Option<usize>,
    /// Tag of the stream (index and generation), handed back to [`Streams::on_marker`].
    pub tag: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Stream {
    live: bool,
    generation: u32,
    last: usize,
    deltas: [i64; HISTORY],
    n: usize,
    trend: Option<i64>,
    window: usize,
    /// Next page along the trend not yet prefetched.
    frontier: Option<usize>,
    /// Pages of the latest window not yet known to be used.
    pending: u64,
    /// Pages of the latest window (the one furthest ahead, not entered yet).
    latest: u64,
    used_at: u64,
    /// First page along the trend not yet declared consumed.
    behind: Option<usize>,
}

/// Prefetch counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Pages of windows the program entered.
    pub used: u64,
    /// Pages of windows the program never reached.
    pub wasted: u64,
}

/// The streams of one region.
#[derive(Debug)]
pub struct Streams {
    s: [Stream; STREAMS],
    max_window: usize,
    tick: u64,
    /// Counters since creation.
    pub counters: Counters,
    /// Pages the streams have left behind since the caller last took them (see the module
    /// docs), in stream order; the caller clears it.
    pub consumed: Vec<usize>,
}

/// The majority value of `d` if one holds more than half of it.
fn majority(d: &[i64]) -> Option<i64> {
    let (mut cand, mut votes) = (0i64, 0usize);
    for &x in d {
        if votes == 0 {
            cand = x;
            votes = 1;
        } else if x == cand {
            votes += 1;
        } else {
            votes -= 1;
        }
    }
    let count = d.iter().filter(|&&x| x == cand).count();
    (votes > 0 && 2 * count > d.len() && cand != 0).then_some(cand)
}

fn step(page: usize, delta: i64, k: usize) -> Option<usize> {
    let p = page as i64 + delta * k as i64;
    usize::try_from(p).ok()
}

impl Streams {
    /// Streams with windows of at most `max_window` pages (0 disables prefetching).
    pub fn new(max_window: usize) -> Self {
        Self {
            s: [Stream::default(); STREAMS],
            max_window,
            tick: 0,
            counters: Counters::default(),
            consumed: Vec::new(),
        }
    }

    /// Stream `i` is at `page` (a marker touch or a demand fault along its trend): the pages
    /// from its last declared position up to one window behind `page` (exclusive) are consumed.
    fn advance(&mut self, i: usize, page: usize) {
        let s = &mut self.s[i];
        let Some(d) = s.trend else {
            return;
        };
        let Some(from) = s.behind else {
            s.behind = Some(page);
            return;
        };
        let lag = s.window.max(FIRST_WINDOW) as i64;
        let span = page as i64 - d * lag - from as i64;
        if span % d == 0 && span / d > 0 {
            let n = (span / d) as usize;
            if n <= BEHIND_MAX {
                self.consumed
                    .extend((0..n).filter_map(|k| step(from, d, k)));
            }
            self.s[i].behind = step(from, d, n);
        }
    }

    /// Windows of at most `max_window` pages from now on (0 stops prefetching).
    pub fn set_max_window(&mut self, max_window: usize) {
        self.max_window = max_window;
        for s in &mut self.s {
            s.window = s.window.min(max_window);
        }
    }

    fn tag(i: usize, generation: u32) -> u32 {
        (generation << 8) | i as u32
    }

    /// A demand fault (one that had to go to the backend) at `page`: returns what to prefetch
    /// (up to [`DEPTH`] windows, in stream order; empty without a trend).
    pub fn on_fault(&mut self, page: usize) -> Vec<Plan> {
        self.on_fault_one(page).map_or_else(Vec::new, |first| {
            let mut plans = vec![first];
            let i = (plans[0].tag & 0xFF) as usize;
            let s = self.s[i];
            if let (Some(d), Some(start)) = (s.trend, s.frontier) {
                for _ in 1..DEPTH {
                    let p = self.issue(i, start, d, s.window, s.generation);
                    plans.push(p);
                }
            }
            plans
        })
    }

    fn on_fault_one(&mut self, page: usize) -> Option<Plan> {
        if self.max_window == 0 {
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        let near = |s: &Stream| {
            let reach = NEAR as u64 + s.window as u64 * s.trend.map_or(1, |d| d.unsigned_abs());
            s.live && (s.last.abs_diff(page) as u64 <= reach || s.frontier == Some(page))
        };
        let found = (0..STREAMS)
            .filter(|&i| near(&self.s[i]))
            .min_by_key(|&i| self.s[i].last.abs_diff(page));
        let Some(i) = found else {
            // A new stream in the least recently used place.
            let i = (0..STREAMS).min_by_key(|&i| (self.s[i].live, self.s[i].used_at))?;
            let old = self.s[i];
            self.counters.wasted += old.pending;
            self.s[i] = Stream {
                live: true,
                generation: old.generation.wrapping_add(1) & 0x00FF_FFFF,
                last: page,
                used_at: tick,
                ..Stream::default()
            };
            return None;
        };
        let max = self.max_window;
        let s = &mut self.s[i];
        s.used_at = tick;
        let delta = page as i64 - s.last as i64;
        s.last = page;
        if delta == 0 {
            return None;
        }
        s.deltas.rotate_right(1);
        s.deltas[0] = delta;
        s.n = (s.n + 1).min(HISTORY);
        let reached = s.frontier == Some(page);
        let trend = if s.n < 2 {
            None
        } else {
            majority(&s.deltas[..s.n]).or_else(|| majority(&s.deltas[..s.n.min(4)]))
        };
        if reached {
            // The program ran through the whole window faster than the next one arrived.
            self.counters.used += s.pending;
        } else {
            self.counters.wasted += s.pending;
        }
        s.pending = 0;
        let Some(d) = trend else {
            s.trend = None;
            s.window = 0;
            s.frontier = None;
            s.behind = None;
            return None;
        };
        if s.trend != Some(d) {
            // A new direction: nothing is behind it yet.
            s.behind = None;
        }
        s.window = if s.trend != Some(d) || s.window == 0 {
            FIRST_WINDOW
        } else if reached {
            s.window * 2
        } else {
            s.window / 2
        }
        .clamp(1, max);
        s.trend = Some(d);
        self.advance(i, page);
        let start = step(page, d, 1)?;
        let s = &self.s[i];
        let (generation, w) = (s.generation, s.window);
        Some(self.issue(i, start, d, w, generation))
    }

    /// The program touched the marker page of stream `tag`: its window is in use, fetch the next.
    pub fn on_marker(&mut self, tag: u32, page: usize) -> Option<Plan> {
        let i = (tag & 0xFF) as usize;
        let generation = tag >> 8;
        let s = self.s.get_mut(i)?;
        if !s.live || s.generation != generation || self.max_window == 0 {
            return None;
        }
        self.tick += 1;
        s.used_at = self.tick;
        s.last = page;
        let d = s.trend?;
        self.advance(i, page);
        let s = &mut self.s[i];
        let start = s.frontier?;
        // The windows before the latest one have been entered.
        self.counters.used += s.pending.saturating_sub(s.latest);
        s.pending = s.pending.min(s.latest);
        s.window = (s.window * 2).clamp(1, self.max_window);
        let w = s.window;
        Some(self.issue(i, start, d, w, generation))
    }

    fn issue(&mut self, i: usize, start: usize, d: i64, w: usize, generation: u32) -> Plan {
        let pages: Vec<usize> = (0..w).filter_map(|k| step(start, d, k)).collect();
        let s = &mut self.s[i];
        s.frontier = step(start, d, w);
        s.pending += pages.len() as u64;
        s.latest = pages.len() as u64;
        Plan {
            marker: (pages.len() >= MARKER_MIN).then(|| pages[0]),
            pages,
            tag: Self::tag(i, generation),
        }
    }

    /// The pages of stream `tag` from `page` on were not fetched (no room, or too many
    /// prefetches outstanding): its next window starts there again instead of leaving a hole.
    pub fn rewind(&mut self, tag: u32, page: usize) {
        if let Some(s) = self.s.get_mut((tag & 0xFF) as usize)
            && s.generation == tag >> 8
        {
            s.frontier = Some(page);
        }
    }

    /// Some pages of the latest plan of `tag` were not fetched (absent, resident, no room):
    /// they are not counted against the prefetcher.
    pub fn unissued(&mut self, tag: u32, n: u64) {
        if let Some(s) = self.s.get_mut((tag & 0xFF) as usize)
            && s.generation == tag >> 8
        {
            s.pending = s.pending.saturating_sub(n);
            s.latest = s.latest.saturating_sub(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first plan of each fault.
    fn run(s: &mut Streams, faults: &[usize]) -> Vec<Option<Plan>> {
        faults
            .iter()
            .map(|&p| s.on_fault(p).into_iter().next())
            .collect()
    }

    impl Streams {
        /// The plans of the last of `faults`.
        fn on_fault_all(&mut self, faults: &[usize]) -> Vec<Plan> {
            faults
                .iter()
                .map(|&p| self.on_fault(p))
                .last()
                .unwrap_or_default()
        }
    }

    #[test]
    fn majority_vote() {
        assert_eq!(majority(&[1, 1, 5]), Some(1));
        assert_eq!(majority(&[1, 5, 1, 7]), None);
        assert_eq!(majority(&[-3, -3, -3, 2]), Some(-3));
        assert_eq!(majority(&[]), None);
        assert_eq!(majority(&[0, 0]), None);
    }

    #[test]
    fn sequential_stream_keeps_two_windows_ahead_and_grows_them() {
        let mut s = Streams::new(64);
        assert!(s.on_fault(100).is_empty());
        assert!(s.on_fault(101).is_empty(), "one delta is no trend");
        let plans = s.on_fault(102);
        assert_eq!(plans.len(), DEPTH);
        assert_eq!(plans[0].pages, vec![103, 104, 105, 106]);
        assert_eq!(plans[0].marker, Some(103));
        assert_eq!(plans[1].pages, vec![107, 108, 109, 110]);
        assert_eq!(plans[1].marker, Some(107));
        // The program enters the first window: one more window, twice as large, after the
        // second one.
        let q = s.on_marker(plans[0].tag, 103).unwrap();
        assert_eq!(q.pages, (111..119).collect::<Vec<_>>());
        let r = s.on_marker(q.tag, 107).unwrap();
        assert_eq!(r.pages, (119..135).collect::<Vec<_>>());
        // Two windows were entered; the two ahead are not judged yet.
        assert_eq!(s.counters.used, 4 + 4);
        assert_eq!(s.counters.wasted, 0);
        // A stale tag (stream replaced) does nothing.
        assert!(s.on_marker(q.tag.wrapping_add(1 << 8), 115).is_none());
    }

    #[test]
    fn a_cut_window_resumes_where_it_was_cut() {
        let mut s = Streams::new(8);
        let plans = s.on_fault_all(&[0, 1, 2]);
        assert_eq!(plans[1].pages, vec![7, 8, 9, 10]);
        // Only 7 and 8 fitted: the next window starts at 9, not 11.
        s.rewind(plans[1].tag, 9);
        let q = s.on_marker(plans[0].tag, 3).unwrap();
        assert_eq!(q.pages[0], 9);
    }

    #[test]
    fn reverse_and_strided_streams() {
        let mut s = Streams::new(8);
        let p = run(&mut s, &[500, 499, 498]).pop().flatten().unwrap();
        assert_eq!(p.pages, vec![497, 496, 495, 494]);
        let mut t = Streams::new(8);
        let plans = t.on_fault_all(&[10, 13, 16]);
        assert_eq!(plans[0].pages, vec![19, 22, 25, 28]);
        assert_eq!(plans[1].pages, vec![31, 34, 37, 40]);
        // The stream faults right where its windows ended: they were used, the window doubles.
        let q = t.on_fault(43);
        assert_eq!(q[0].pages.len(), 8);
        assert_eq!(t.counters.used, 8);
    }

    #[test]
    fn interleaved_streams_are_told_apart_and_random_faults_prefetch_nothing() {
        let mut s = Streams::new(16);
        let mut plans = 0;
        for k in 0..6 {
            plans += usize::from(!s.on_fault(1000 + k).is_empty());
            plans += usize::from(!s.on_fault(90_000 - k).is_empty());
        }
        assert!(plans >= 6, "both streams detected: {plans}");
        let mut r = Streams::new(16);
        let mut x = 12345usize;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            assert!(r.on_fault((x >> 20) % 1_000_000).is_empty());
        }
    }

    #[test]
    fn a_stream_declares_its_pages_consumed_one_window_behind() {
        let mut s = Streams::new(8);
        let plans = s.on_fault_all(&[0, 1, 2]);
        assert!(s.consumed.is_empty(), "nothing behind a new trend");
        assert_eq!(plans[0].pages, vec![3, 4, 5, 6]);
        // Entering the first window (window 4): nothing is a window behind page 3 since the
        // trend started at 2.
        let q = s.on_marker(plans[0].tag, 3).unwrap();
        assert!(s.consumed.is_empty());
        // Entering the second window at 7 (window 8 now): nothing is 8 pages behind 7 yet.
        s.on_marker(plans[1].tag, 7).unwrap();
        assert!(s.consumed.is_empty());
        // Entering the third window at 11: the pages before 3 are a window behind.
        let t = s.on_marker(q.tag, 11).unwrap();
        assert_eq!(s.consumed, vec![2]);
        s.consumed.clear();
        // At 19: up to page 11 exclusive, the window just left staying out.
        s.on_marker(t.tag, 19);
        assert_eq!(s.consumed, (3..11).collect::<Vec<_>>());
        s.consumed.clear();
        // A reverse stream declares the pages above it.
        let mut b = Streams::new(4);
        let plans = b.on_fault_all(&[100, 99, 98]);
        let q = b.on_marker(plans[0].tag, 97).unwrap();
        b.on_marker(plans[1].tag, 93);
        b.on_marker(q.tag, 89);
        assert_eq!(b.consumed, vec![98, 97, 96, 95, 94]);
        // A random walk declares nothing.
        let mut r = Streams::new(16);
        for p in [5, 900, 17, 4000, 33, 2] {
            r.on_fault(p);
        }
        assert!(r.consumed.is_empty());
    }

    #[test]
    fn disabled_prefetches_nothing() {
        let mut s = Streams::new(0);
        assert!(run(&mut s, &[1, 2, 3, 4, 5]).iter().all(Option::is_none));
    }
}
