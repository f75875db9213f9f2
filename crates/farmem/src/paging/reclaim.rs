//! The background reclaimer of a paged region (the region's kswapd): when fewer than `low` slots
//! are free it evicts until `high` are, in batches, off the fault path.
//!
//! A batch is chosen by the CLOCK hand under the state lock. Clean victims (and staged pages) are
//! dropped at once, consecutive pages with one `madvise`. Dirty victims are write-protected,
//! copied and diffed against their twins under the lock, marked *evicting*, and written back
//! with one batched request per kind *without* the lock; then they are dropped. Writers of an
//! evicting page wait until it is gone and fetch the written-back version.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::PagingError;
use super::clock::{SAMPLE_TAG, Twin};
use super::core::{Core, State};
use super::internal::InternalGuard;
use super::sys::{self, PAGE, PageBuf};
use super::writeback::{self, Item};

/// How long the reclaimer sleeps between checks when nobody wakes it.
const IDLE: Duration = Duration::from_millis(100);

/// The reclaimer thread: runs until the region stops. With `clean_every`, it also cleans
/// (see [`clean_batch`]) once that long has passed since its last complete cleaning pass,
/// between eviction batches when it is busy.
pub fn run(core: &Core, mut buf: PageBuf, clean_every: Option<Duration>) {
    let _internal = InternalGuard::new();
    let mut last_clean = Instant::now();
    loop {
        let clean_due = |last: Instant| clean_every.is_some_and(|e| last.elapsed() >= e);
        {
            let mut st = core.state.lock();
            while !core.stop.load(Ordering::Acquire)
                && st.available() >= st.limits.low
                && !clean_due(last_clean)
            {
                let wait = clean_every.map_or(IDLE, |e| e.saturating_sub(last_clean.elapsed()));
                core.reclaim.wait_for(&mut st, wait.min(IDLE));
            }
        }
        if core.stop.load(Ordering::Acquire) {
            return;
        }
        let _wb = core.wb_lock.lock();
        let result = (|| {
            let short = {
                let st = core.state.lock();
                st.available() < st.limits.low
            };
            if short {
                while evict_batch(core, &mut buf, clean_every.is_some())? {}
            }
            if clean_due(last_clean) {
                loop {
                    if !clean_batch(core, &mut buf)? {
                        // A whole revolution found nothing to clean: the pass is complete.
                        last_clean = Instant::now();
                        break;
                    }
                    let st = core.state.lock();
                    if st.available() < st.limits.low || core.stop.load(Ordering::Acquire) {
                        // Eviction first; the pass resumes after it.
                        break;
                    }
                }
            }
            Ok::<(), PagingError>(())
        })();
        if let Err(e) = result {
            // Dirty pages that cannot be written back would be lost: fail loudly, like a dead
            // swap device.
            tracing::error!("paging: eviction failed: {e}");
            eprintln!("farmem paging: eviction failed: {e}; aborting");
            std::process::abort();
        }
    }
}

/// Writes back up to a batch of dirty pages the program has not written since the cleaner last
/// passed them ([`Clock::select_clean`](super::clock::Clock::select_clean)); they stay resident,
/// clean and write-protected, so evicting them later is a drop. Returns whether it found any
/// (`false`: none in a whole revolution).
///
/// # Errors
/// A persistent backend error or a failed system call.
pub fn clean_batch(core: &Core, buf: &mut PageBuf) -> Result<bool, PagingError> {
    let t0 = Instant::now();
    let mut st = core.state.lock();
    let (uffd, base) = (&core.uffd, core.base);
    let batch = st.limits.batch;
    let mut pages = st.clock.select_clean(batch, |slot| {
        match uffd.write_protect(base + slot.page * PAGE, PAGE, true) {
            Ok(()) => slot.protected = true,
            Err(e) => tracing::warn!("paging: re-protect failed: {e}"),
        }
    });
    if pages.is_empty() {
        return Ok(false);
    }
    pages.sort_unstable();
    let (items, unchanged) = plan_dirty(core, &mut st, &pages, buf)?;
    // Clean from now on: the copy in `buf` is what the backend will hold. Pages being written
    // stay `evicting` until then, which keeps writers waiting and discards out.
    for &p in &unchanged {
        if let Some(slot) = st.clock.get_mut(p) {
            slot.dirty = false;
            slot.evicting = false;
        }
    }
    for it in &items {
        if let Some(slot) = st.clock.get_mut(it.page) {
            slot.dirty = false;
        }
    }
    if items.is_empty() {
        st.stats.evict_ns += t0.elapsed().as_nanos() as u64;
        drop(st);
        core.changed.notify_all();
        return Ok(true);
    }
    st.evicting += items.len();
    drop(st);

    let sent = core.send(&items, buf)?;

    let mut st = core.state.lock();
    for it in &items {
        if it.whole {
            st.set_stored(it.page, true);
        }
        if let Some(slot) = st.clock.get_mut(it.page) {
            slot.evicting = false;
        }
    }
    st.evicting -= items.len();
    st.stats.bytes_sent += sent;
    st.stats.written_back += items.len() as u64;
    st.stats.cleaned += items.len() as u64;
    st.stats.whole_page_bytes += (items.len() * PAGE) as u64;
    st.stats.evict_ns += t0.elapsed().as_nanos() as u64;
    drop(st);
    core.changed.notify_all();
    Ok(true)
}

/// Drops `pages` (sorted), one range per run of consecutive pages, with as few calls as the
/// kernel allows ([`sys::Dropper`]).
fn drop_runs(core: &Core, pages: &[usize]) -> Result<(), PagingError> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < pages.len() {
        let mut j = i + 1;
        while j < pages.len() && pages[j] == pages[j - 1] + 1 {
            j += 1;
        }
        runs.push((core.addr(pages[i]), (j - i) * PAGE));
        i = j;
    }
    core.dropper.drop_ranges(&runs).map_err(PagingError::Sys)
}

/// Evicts one batch if fewer than `high` slots are available; with `clean_first`, clean
/// victims are preferred (see [`Clock::select_clean_victims`](super::clock::Clock::select_clean_victims)). Returns whether it evicted
/// anything (`false`: enough room, or nothing evictable right now).
///
/// # Errors
/// A persistent backend error or a failed system call.
pub fn evict_batch(core: &Core, buf: &mut PageBuf, clean_first: bool) -> Result<bool, PagingError> {
    let t0 = Instant::now();
    let mut st = core.state.lock();
    let avail = st.available();
    let limits = st.limits;
    if avail >= limits.high {
        return Ok(false);
    }
    let want = (limits.high - avail).min(limits.batch);
    let uffd = &core.uffd;
    let base = core.base;
    let mut sample = Vec::new();
    let max_sample = st.samples.free_count();
    let reprotect = |slot: &mut super::clock::Slot| {
        // Re-protect referenced dirty pages so that a later write re-sets the bit.
        if slot.dirty && !slot.protected {
            match uffd.write_protect(base + slot.page * PAGE, PAGE, true) {
                Ok(()) => slot.protected = true,
                Err(e) => tracing::warn!("paging: re-protect failed: {e}"),
            }
        }
    };
    // With a cleaner, clean victims go first (a drop, no write-back on the way of a fault);
    // dirty ones only when one revolution finds too few clean ones.
    let mut victims = if clean_first {
        st.clock
            .select_clean_victims(want, &mut sample, max_sample, reprotect)
    } else {
        Vec::new()
    };
    if victims.len() < want {
        let more =
            st.clock
                .select_victims(want - victims.len(), &mut sample, max_sample, reprotect);
        for p in more {
            if !victims.contains(&p) {
                victims.push(p);
            }
        }
    }
    if victims.is_empty() {
        // Everything is in flight or being written back: wait for it to land.
        core.changed.wait_for(&mut st, Duration::from_millis(1));
        return Ok(false);
    }
    let mut clean = Vec::with_capacity(victims.len());
    let mut dirty = Vec::new();
    for &p in &victims {
        if st.clock.get_mut(p).is_some_and(|s| s.dirty) {
            dirty.push(p);
        } else {
            clean.push(p);
        }
    }
    clean.sort_unstable();
    drop_clean(core, &mut st, &clean)?;
    start_samples(core, &mut st, &mut sample)?;
    let items = prepare_dirty(core, &mut st, &dirty, buf)?;
    if items.is_empty() {
        st.stats.evict_ns += t0.elapsed().as_nanos() as u64;
        drop(st);
        core.changed.notify_all();
        return Ok(true);
    }
    st.evicting += items.len();
    drop(st);
    core.changed.notify_all();

    let sent = core.send(&items, buf)?;

    // A fork under way needs them mapped until the kernel has copied the memory: checked under
    // the state lock, under which the fork's snapshot copies the stored bits.
    let mut st = loop {
        core.forks.wait_thaw();
        let st = core.state.lock();
        if !core.forks.frozen() {
            break st;
        }
    };
    let mut pages: Vec<usize> = items.iter().map(|it| it.page).collect();
    pages.sort_unstable();
    for it in &items {
        if it.whole {
            st.set_stored(it.page, true);
        }
    }
    // Stored bits first, then drop: a fault after the drop fetches the written-back copy.
    drop_runs(core, &pages)?;
    for &p in &pages {
        let (grant, behind) = st.clock.remove(p).map_or((0, false), |slot| {
            st.release(slot.twin, slot.staged);
            (slot.grant, slot.consumed)
        });
        st.ghosts.record(p, grant, behind);
    }
    st.evicting -= items.len();
    st.stats.bytes_sent += sent;
    st.stats.written_back += items.len() as u64;
    st.stats.whole_page_bytes += (items.len() * PAGE) as u64;
    st.stats.evict_ns += t0.elapsed().as_nanos() as u64;
    drop(st);
    core.changed.notify_all();
    Ok(true)
}

/// Unmaps the clean hot pages `pages`, keeping a local copy of each: if the program still reads
/// one, it takes a local fault (no network) and the page stays; if not, the hand evicts it on its
/// next pass. This makes reads of hot pages visible without page-table access bits.
fn start_samples(core: &Core, st: &mut State, pages: &mut [usize]) -> Result<(), PagingError> {
    pages.sort_unstable();
    let mut unmapped = Vec::with_capacity(pages.len());
    for &p in pages.iter() {
        let addr = core.addr(p);
        // The same pass may have chosen it as a victim after all (dropped above): only pages
        // still resident, mapped and clean qualify.
        if !st
            .clock
            .get_mut(p)
            .is_some_and(|s| s.staged.is_none() && !s.dirty && !s.evicting)
        {
            continue;
        }
        let now = st.clock.now();
        let Some(b) = st.samples.take() else {
            break;
        };
        // SAFETY: the page is resident, mapped (not staged) and clean, hence write-protected:
        // its contents cannot change during the copy.
        unsafe { sys::read_page(addr, st.samples.page_mut(b)) };
        if let Some(slot) = st.clock.get_mut(p) {
            slot.staged = Some((b, SAMPLE_TAG));
            slot.sampled_at = now;
        }
        unmapped.push(p);
    }
    drop_runs(core, &unmapped)?;
    st.stats.sampled += unmapped.len() as u64;
    Ok(())
}

/// Drops the clean victims `pages` (sorted) under the lock.
fn drop_clean(core: &Core, st: &mut State, pages: &[usize]) -> Result<(), PagingError> {
    let mut mapped = Vec::with_capacity(pages.len());
    for &p in pages {
        if let Some(slot) = st.clock.remove(p) {
            match slot.staged {
                None => mapped.push(p),
                Some((_, SAMPLE_TAG)) => {}
                Some(_) => st.stats.prefetch_unused += 1,
            }
            st.release(slot.twin, slot.staged);
            st.ghosts.record(p, slot.grant, slot.consumed);
        }
    }
    drop_runs(core, &mapped)?;
    st.stats.evicted_clean += pages.len() as u64;
    Ok(())
}

/// Write-protects and copies the dirty victims `pages` (sorted) into `buf`, plans their
/// write-back and marks them evicting. Their twins are freed (the plan holds what is needed).
/// Victims with nothing to send are dropped at once.
fn prepare_dirty(
    core: &Core,
    st: &mut State,
    pages: &[usize],
    buf: &mut PageBuf,
) -> Result<Vec<Item>, PagingError> {
    let (items, unchanged) = plan_dirty(core, st, pages, buf)?;
    for &p in &unchanged {
        if let Some(slot) = st.clock.get_mut(p) {
            slot.evicting = false;
            slot.dirty = false;
        }
    }
    drop_clean(core, st, &unchanged)?;
    Ok(items)
}

/// Write-protects and copies the dirty pages `pages` (sorted) into `buf`, plans their
/// write-back, marks them evicting and frees their twins. Returns the items to send and the
/// pages with nothing to send (written to, but back to what the backend holds, or still all
/// zeros), which stay marked evicting and dirty for the caller to settle.
fn plan_dirty(
    core: &Core,
    st: &mut State,
    pages: &[usize],
    buf: &mut PageBuf,
) -> Result<(Vec<Item>, Vec<usize>), PagingError> {
    let mut items = Vec::with_capacity(pages.len());
    let mut unchanged = Vec::new();
    for (k, &page) in pages.iter().enumerate() {
        let addr = core.addr(page);
        let stored = st.is_stored(page);
        let Some(slot) = st.clock.get_mut(page) else {
            continue;
        };
        if !slot.protected {
            // Writers block in a fault from here on: the copy below is the final content.
            core.uffd
                .write_protect(addr, PAGE, true)
                .map_err(PagingError::Sys)?;
            slot.protected = true;
        }
        slot.evicting = true;
        let twin = std::mem::replace(&mut slot.twin, Twin::None);
        let out = &mut buf[k * PAGE..][..PAGE];
        // SAFETY: the page is resident (in the clock; dirty pages are never staged) and
        // write-protected, so it is mapped and cannot change during the copy.
        unsafe { sys::read_page(addr, out) };
        let twin_bytes = match twin {
            Twin::Buf(t) => Some(st.twins.page(t)),
            _ => None,
        };
        let (it, changed) = writeback::plan(
            page,
            core.id(page),
            k,
            &buf[k * PAGE..][..PAGE],
            twin_bytes,
            stored,
            core.mode,
        );
        st.stats.bytes_changed += changed;
        st.release(twin, None);
        if !it.whole && it.runs.is_empty() {
            unchanged.push(page);
        } else {
            items.push(it);
        }
    }
    Ok((items, unchanged))
}
