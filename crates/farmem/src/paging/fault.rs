//! The pager threads: each reads one fault at a time from the region's userfaultfd and serves
//! it, so faults on different pages are served concurrently and none waits behind another's
//! round trip. After a demand fetch the thread also fetches what the prefetcher asks for,
//! asynchronously to the faulting thread (already woken), and maps it in runs.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::PagingError;
use super::clock::{SAMPLE_TAG, Slot, Twin};
use super::core::{Core, InFlight, State};
use super::internal::InternalGuard;
use super::prefetch::Plan;
use super::sys::{Fault, Msg, PAGE, PageBuf};
use super::writeback::{get_pages, retry};

/// Most never-stored pages mapped with zeros by one first-touch fault.
pub const ZERO_RUN: usize = 64;
/// How often an idle pager thread checks for shutdown.
const POLL_MS: i32 = 50;

/// Buffers of one pager thread.
pub struct Worker {
    page: PageBuf,
    run: PageBuf,
}

impl Worker {
    /// Buffers for one page and for runs of up to `run_pages` prefetched pages.
    pub fn new(run_pages: usize) -> Result<Self, PagingError> {
        Ok(Self {
            page: PageBuf::new(1)?,
            run: PageBuf::new(run_pages.max(1))?,
        })
    }
}

/// A pager thread: serves faults until the region stops.
///
/// Only one idle pager thread waits on the userfaultfd at a time (the holder of
/// [`Core::poll_token`]); when it gets a fault it hands the token to the next idle thread and
/// serves the fault. So a fault wakes one thread, not all of them, and a fault arriving while
/// others are being served finds a thread ready. After serving a fault, a thread that gets the
/// token polls for `spin` before it sleeps (a program that faults again at once is then served
/// without a wake-up on the pager side).
pub fn serve(core: &Core, mut w: Worker, spin: Duration) {
    let _internal = InternalGuard::new();
    let mut last_served: Option<Instant> = None;
    while !core.stop.load(Ordering::Acquire) {
        let fault = {
            // The token guards no data: a thread that panicked holding it left nothing torn.
            let _token = core
                .poll_token
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if core.stop.load(Ordering::Acquire) {
                    break None;
                }
                match core.uffd.read_msg() {
                    Ok(Some(Msg::Fault(f))) => break Some(f),
                    // The fork waits until this message is read; the child is served from then.
                    Ok(Some(Msg::Fork(child))) => core.forks.attach(core, child),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(
                            "paging: reading userfaultfd failed: {e}; pager thread stops"
                        );
                        core.stop.store(true, Ordering::Release);
                        break None;
                    }
                }
                if last_served.is_some_and(|t| t.elapsed() < spin) {
                    std::hint::spin_loop();
                } else {
                    last_served = None;
                    core.uffd.poll(POLL_MS);
                }
            }
        };
        let Some(f) = fault else {
            continue;
        };
        if let Err(e) = handle(core, &mut w, f) {
            // A thread is blocked in this fault and cannot be given an error; going on would
            // lose its data. Fail loudly, like a dead swap device.
            tracing::error!("paging: cannot serve fault at {:#x}: {e}", f.address);
            eprintln!("farmem paging: cannot serve a page fault: {e}; aborting");
            std::process::abort();
        }
        if !spin.is_zero() {
            last_served = Some(Instant::now());
        }
    }
}

fn sys_err(e: std::io::Error) -> PagingError {
    PagingError::Sys(e)
}

/// How many pages from `page` on (at least 1, at most [`ZERO_RUN`]) a first-touch fault maps
/// with zeros: the following pages qualify while they were never stored, are neither resident
/// nor in flight, and a free slot stays for the next fault (the reclaimer is woken below its
/// low watermark as usual). `page` itself holds a reserved slot.
fn zero_run(core: &Core, st: &State, page: usize) -> usize {
    let mut n = 1;
    while n < ZERO_RUN
        && page + n < core.pages
        && st.available() > n
        && !st.is_stored(page + n)
        && !st.clock.contains(page + n)
        && !st.inflight.contains_key(&(page + n))
    {
        n += 1;
    }
    n
}

/// Wakes the reclaimer when the free slots ran below the low watermark.
fn kick(core: &Core, st: &State) {
    if st.available() < st.limits.low {
        core.reclaim.notify_one();
    }
}

/// Serves one fault and wakes the faulting thread (or leaves that to the fetch in flight).
fn handle(core: &Core, w: &mut Worker, f: Fault) -> Result<(), PagingError> {
    let t0 = Instant::now();
    let addr = f.address & !(PAGE - 1);
    if addr < core.base || addr >= core.base + core.pages * PAGE {
        return core.uffd.wake(addr, PAGE).map_err(sys_err);
    }
    let page = (addr - core.base) / PAGE;
    let mut st = core.state.lock();
    let mut waited: Option<Instant> = None;
    loop {
        if let Some(slot) = st.clock.get_mut(page) {
            if slot.evicting && f.is_wp() {
                // Being written back: the write must land after the page is dropped.
                core.changed.wait(&mut st);
                continue;
            }
            return on_resident(core, w, st, page, f);
        }
        if f.is_wp() {
            // Stale: the page was evicted after this write-protect fault was raised. The thread
            // retries its access and takes a missing fault.
            drop(st);
            return core.uffd.wake(addr, PAGE).map_err(sys_err);
        }
        if let Some(inf) = st.inflight.get_mut(&page) {
            // Its fetch wakes every thread waiting on the page once it is mapped.
            let late = inf.prefetch && !inf.demanded;
            inf.demanded = true;
            if late {
                st.stats.prefetch_late += 1;
            }
            return Ok(());
        }
        if st.available() > 0 {
            break;
        }
        if waited.is_none() {
            st.stats.reclaim_waits += 1;
            waited = Some(Instant::now());
        }
        core.reclaim.notify_one();
        core.changed.wait(&mut st);
    }
    if let Some(w) = waited {
        st.stats.reclaim_wait_ns += w.elapsed().as_nanos() as u64;
    }
    let write = f.is_write();
    st.reserved += 1;
    // A refault proves the page hot: it gets credits (more if it proved hot before).
    let refault = st.ghosts.take(page).map(|(grant, behind)| {
        if behind {
            st.clock.behind_refault();
        }
        grant
    });
    if refault.is_some() {
        st.stats.refaults += 1;
    }
    // The credits count from the page's insertion (`Clock::insert` stamps the time).
    let mark = |slot: &mut Slot| {
        if let Some(previous) = refault {
            slot.proved_hot(previous, 0);
        }
    };
    if !st.is_stored(page) {
        // First touch: zeros, mapped under the lock (no I/O), together with the untouched pages
        // right after it while slots are plentiful: first touches come in sequences (a new
        // array being filled), and one UFFDIO_COPY per run saves a fault per page. Pages mapped
        // ahead that stay untouched cost nothing to evict (all-zero pages are dropped unsent).
        let mut n = zero_run(core, &st, page);
        if let Err(e) = core.uffd.copy(addr, &core.zeros[..n * PAGE], !write, false) {
            // A run must lie in one mapping; the program may have split the region's (mprotect,
            // madvise): fall back to the faulting page alone.
            if n == 1 || e.raw_os_error() != Some(libc::ENOENT) {
                return Err(sys_err(e));
            }
            n = 1;
            core.uffd
                .copy(addr, &core.zeros[..PAGE], !write, false)
                .map_err(sys_err)?;
        }
        st.reserved -= 1;
        let twin = if write { Twin::Zero } else { Twin::None };
        for k in 0..n {
            let mut slot = Slot::new(page + k, true, write, twin);
            if k == 0 {
                mark(&mut slot);
            }
            st.clock.insert(slot);
        }
        st.stats.zero_faults += 1;
        kick(core, &st);
        drop(st);
        return core.uffd.wake(addr, PAGE).map_err(sys_err);
    }
    // A write keeps a clean twin of the fetched page; take its buffer now.
    let twin = if write {
        Some(
            st.twins
                .take()
                .ok_or_else(|| PagingError::Config("internal: out of twin buffers".into()))?,
        )
    } else {
        None
    };
    st.inflight.insert(page, InFlight::default());
    // The next page comes along when the two were faulted on together before (a form of
    // prefetching: off when prefetching is).
    let next = page + 1;
    let pair = st.limits.prefetch_max > 0
        && st.learn_pair(page)
        && next < core.pages
        && st.available() > 1
        && st.is_stored(next)
        && !st.clock.contains(next)
        && !st.inflight.contains_key(&next);
    if pair {
        st.inflight.insert(
            next,
            InFlight {
                demanded: false,
                prefetch: true,
            },
        );
        st.reserved += 1;
    }
    drop(st);

    let tb = Instant::now();
    let id = core.id(page);
    if pair {
        fetch_pair(core, w, page)?;
    } else {
        retry("fetch", || core.backend.get_into(id, &mut w.page[..PAGE]))?;
    }
    let backend_ns = tb.elapsed().as_nanos() as u64;
    let data = if pair {
        &w.run[..PAGE]
    } else {
        &w.page[..PAGE]
    };
    // Map before taking the lock: the in-flight entries make the pages ours alone.
    if pair && !write {
        core.uffd.copy(addr, &w.run[..2 * PAGE], true, false)
    } else {
        core.uffd.copy(addr, data, !write, false)
    }
    .map_err(sys_err)?;
    if pair && write {
        core.uffd
            .copy(core.addr(next), &w.run[PAGE..2 * PAGE], true, false)
            .map_err(sys_err)?;
    }

    let mut st = core.state.lock();
    st.inflight.remove(&page);
    st.reserved -= 1;
    let twin = match twin {
        Some(t) => {
            st.twins.page_mut(t).copy_from_slice(data);
            Twin::Buf(t)
        }
        None => Twin::None,
    };
    let mut slot = Slot::new(page, true, write, twin);
    mark(&mut slot);
    st.clock.insert(slot);
    if pair {
        let inf = st.inflight.remove(&next).unwrap_or_default();
        st.reserved -= 1;
        let mut slot = Slot::new(next, inf.demanded, false, Twin::None);
        slot.prefetched = true;
        st.clock.insert(slot);
        st.stats.prefetched += 1;
        if inf.demanded {
            st.stats.prefetch_late += 1;
            core.uffd.wake(core.addr(next), PAGE).map_err(sys_err)?;
        }
    }
    st.stats.fetch_faults += 1;
    st.stats.fetch_backend_ns += backend_ns;
    st.stats.fetch_fault_ns += t0.elapsed().as_nanos() as u64;
    let plans = st.streams.on_fault(page);
    let work = reserve_all(core, &mut st, plans);
    kick(core, &st);
    drop(st);
    core.changed.notify_all();
    core.uffd.wake(addr, PAGE).map_err(sys_err)?;
    prefetch_all(core, w, work);
    Ok(())
}

/// Fetches pages `page` and `page + 1` with one request into the first two pages of the run
/// buffer.
fn fetch_pair(core: &Core, w: &mut Worker, page: usize) -> Result<(), PagingError> {
    let ids = [core.id(page), core.id(page + 1)];
    let data = retry("fetch", || get_pages(&*core.backend, &ids))?;
    for (k, d) in data.iter().enumerate() {
        w.run[k * PAGE..][..PAGE].copy_from_slice(d);
    }
    Ok(())
}

/// A fault on a resident page: a staged marker page, a write to a protected page, or a
/// duplicate report.
fn on_resident(
    core: &Core,
    w: &mut Worker,
    mut st: MutexGuard<'_, State>,
    page: usize,
    f: Fault,
) -> Result<(), PagingError> {
    let addr = core.addr(page);
    let stored = st.is_stored(page);
    let Some(slot) = st.clock.get_mut(page) else {
        return Ok(());
    };
    // Touched again: in use, not (or no longer) a consumed stream page.
    slot.touch();
    if let Some(staged) = slot.staged {
        return on_marker(core, w, st, page, staged, f.is_write());
    }
    if !(f.is_wp() && slot.protected) {
        drop(st);
        return core.uffd.wake(addr, PAGE).map_err(sys_err);
    }
    if !slot.dirty {
        let twin = if stored {
            let t = st
                .twins
                .take()
                .ok_or_else(|| PagingError::Config("internal: out of twin buffers".into()))?;
            // SAFETY: the page is resident (in the clock, not staged) and write-protected, so
            // it is mapped and its contents cannot change during the copy.
            unsafe { super::sys::read_page(addr, st.twins.page_mut(t)) };
            Twin::Buf(t)
        } else {
            Twin::Zero
        };
        if let Some(slot) = st.clock.get_mut(page) {
            slot.twin = twin;
            slot.dirty = true;
        }
    }
    if let Some(slot) = st.clock.get_mut(page) {
        slot.protected = false;
    }
    st.stats.wp_faults += 1;
    // Un-protecting wakes the writer; do it under the lock so that the reclaimer cannot
    // re-protect in between and miss the dirty state.
    core.uffd.write_protect(addr, PAGE, false).map_err(sys_err)
}

/// The program touched a staged marker page: map it from its staging buffer (no network) and
/// start the next window of its stream.
fn on_marker(
    core: &Core,
    w: &mut Worker,
    mut st: MutexGuard<'_, State>,
    page: usize,
    staged: (u32, u32),
    write: bool,
) -> Result<(), PagingError> {
    let addr = core.addr(page);
    map_staged(core, &mut st, page, staged, write)?;
    if staged.1 == SAMPLE_TAG {
        // A sampled hot page is still in use: keep it.
        st.stats.sample_hits += 1;
        st.clock.sample_hit(page);
        drop(st);
        return core.uffd.wake(addr, PAGE).map_err(sys_err);
    }
    st.stats.prefetch_hits += 1;
    let plans = st.streams.on_marker(staged.1, page).into_iter().collect();
    let work = reserve_all(core, &mut st, plans);
    kick(core, &st);
    drop(st);
    core.uffd.wake(addr, PAGE).map_err(sys_err)?;
    prefetch_all(core, w, work);
    Ok(())
}

/// Maps the staged page `page` from its staging buffer (without waking) and frees the buffer.
fn map_staged(
    core: &Core,
    st: &mut State,
    page: usize,
    (buf, tag): (u32, u32),
    write: bool,
) -> Result<(), PagingError> {
    let sample = tag == SAMPLE_TAG;
    let twin = if write {
        let t = st
            .twins
            .take()
            .ok_or_else(|| PagingError::Config("internal: out of twin buffers".into()))?;
        let State {
            twins,
            staging,
            samples,
            ..
        } = st;
        let src = if sample { &*samples } else { &*staging };
        twins.page_mut(t).copy_from_slice(src.page(buf));
        Twin::Buf(t)
    } else {
        Twin::None
    };
    let src = if sample { &st.samples } else { &st.staging };
    core.uffd
        .copy(core.addr(page), src.page(buf), !write, false)
        .map_err(sys_err)?;
    if sample {
        st.samples.put_released(buf);
    } else {
        st.staging.put(buf);
    }
    if let Some(slot) = st.clock.get_mut(page) {
        slot.staged = None;
        slot.dirty = write;
        slot.protected = !write;
        slot.twin = twin;
    }
    Ok(())
}

/// A prefetch plan and the pages of it reserved for fetching.
type Work = (Plan, Vec<usize>);

/// Reserves the plans of one stream in order (see [`reserve`]); the first one cut short ends
/// the list, and its stream resumes where it was cut.
fn reserve_all(core: &Core, st: &mut State, plans: Vec<Plan>) -> Vec<Work> {
    // The streams' progress that produced these plans also left pages behind.
    st.note_consumed();
    let mut out = Vec::with_capacity(plans.len());
    let mut cut = false;
    for plan in plans {
        if cut {
            st.streams.unissued(plan.tag, plan.pages.len() as u64);
            continue;
        }
        let (pages, at) = reserve(core, st, &plan);
        if let Some(at) = at {
            st.streams.rewind(plan.tag, at);
            cut = true;
        }
        if !pages.is_empty() {
            out.push((plan, pages));
        }
    }
    out
}

/// Reserves slots for the pages of `plan` worth fetching (stored, not resident, not in flight),
/// as many as there is room for, and marks them in flight. Returns them in plan order, and the
/// first page of the plan left out for want of room or of a free pager thread, if any.
fn reserve(core: &Core, st: &mut State, plan: &Plan) -> (Vec<usize>, Option<usize>) {
    if st.prefetching >= core.max_prefetching {
        st.streams.unissued(plan.tag, plan.pages.len() as u64);
        return (Vec::new(), plan.pages.first().copied());
    }
    // Leave a slot for the next demand fault.
    let mut room = st.available().saturating_sub(1);
    let mut out = Vec::with_capacity(plan.pages.len());
    let mut cut = None;
    for &p in &plan.pages {
        if room == 0 {
            cut = Some(p);
            break;
        }
        if p < core.pages
            && st.is_stored(p)
            && !st.clock.contains(p)
            && !st.inflight.contains_key(&p)
        {
            if st.ghosts.take_behind(p) {
                // Dropped behind a stream and wanted again soon: drop-behind was wrong here.
                st.clock.behind_refault();
            }
            st.inflight.insert(
                p,
                InFlight {
                    demanded: false,
                    prefetch: true,
                },
            );
            out.push(p);
            room -= 1;
        }
    }
    st.reserved += out.len();
    st.streams
        .unissued(plan.tag, (plan.pages.len() - out.len()) as u64);
    if !out.is_empty() {
        st.prefetching += 1;
    }
    (out, cut)
}

/// Fetches and maps the reserved plans one after the other, and the windows their late
/// markers ask for.
fn prefetch_all(core: &Core, w: &mut Worker, work: Vec<Work>) {
    let mut queue: std::collections::VecDeque<Work> = work.into();
    while let Some((plan, pages)) = queue.pop_front() {
        queue.extend(prefetch(core, w, &plan, pages));
    }
}

/// Fetches `pages` (reserved and in flight) with one batched request and maps them in runs of
/// consecutive pages, one `UFFDIO_COPY` per run. The marker page of the plan is staged instead,
/// unless a thread already waits for it: then the program is already in this window, and the
/// next window is reserved at once and returned (to be fetched next). A failed prefetch is
/// dropped (waiting threads retry with an ordinary fetch).
fn prefetch(core: &Core, w: &mut Worker, plan: &Plan, pages: Vec<usize>) -> Vec<Work> {
    if pages.is_empty() {
        return Vec::new();
    }
    let ids: Vec<_> = pages.iter().map(|&p| core.id(p)).collect();
    let got = get_pages(&*core.backend, &ids);
    let data = match got {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("paging: prefetch of {} pages failed: {e}", pages.len());
            let mut st = core.state.lock();
            for &p in &pages {
                st.inflight.remove(&p);
            }
            st.reserved -= pages.len();
            st.prefetching -= 1;
            drop(st);
            core.changed.notify_all();
            for &p in &pages {
                let _ = core.uffd.wake(core.addr(p), PAGE);
            }
            return Vec::new();
        }
    };
    // Stage the marker (its first touch drives the stream), if a staging buffer is free.
    let mut staged: Option<(usize, u32)> = None;
    let mut follow = Vec::new();
    if let Some(m) = plan.marker
        && let Some(k) = pages.iter().position(|&p| p == m)
    {
        let mut st = core.state.lock();
        let demanded = st.inflight.get(&m).is_some_and(|i| i.demanded);
        if demanded {
            // The program waits at the start of this window: ask for the next one now, so it
            // is on the wire while this one is mapped.
            let plans = st.streams.on_marker(plan.tag, m).into_iter().collect();
            follow = reserve_all(core, &mut st, plans);
        } else if let Some(b) = st.staging.take() {
            st.staging.page_mut(b).copy_from_slice(&data[k]);
            staged = Some((m, b));
        }
    }
    // Map in ascending runs of consecutive pages.
    let mut order: Vec<usize> = (0..pages.len())
        .filter(|&k| staged.is_none_or(|(m, _)| pages[k] != m))
        .collect();
    order.sort_unstable_by_key(|&k| pages[k]);
    let cap = w.run.len() / PAGE;
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && j - i < cap && pages[order[j]] == pages[order[j - 1]] + 1 {
            j += 1;
        }
        for (n, &k) in order[i..j].iter().enumerate() {
            w.run[n * PAGE..][..PAGE].copy_from_slice(&data[k]);
        }
        let first = pages[order[i]];
        if let Err(e) = core
            .uffd
            .copy(core.addr(first), &w.run[..(j - i) * PAGE], true, true)
        {
            tracing::error!("paging: mapping prefetched pages failed: {e}");
            eprintln!("farmem paging: mapping prefetched pages failed: {e}; aborting");
            std::process::abort();
        }
        i = j;
    }
    let mut st = core.state.lock();
    let mut late_marker = None;
    for &p in &pages {
        let inf = st.inflight.remove(&p).unwrap_or_default();
        let mut slot = Slot::new(p, inf.demanded, false, Twin::None);
        slot.prefetched = true;
        if let Some((m, b)) = staged
            && m == p
        {
            slot.staged = Some((b, plan.tag));
            if inf.demanded {
                late_marker = Some((p, b));
            }
        }
        st.clock.insert(slot);
    }
    if let Some((p, b)) = late_marker {
        // A thread faulted on the marker while it was in flight: map it now.
        if let Err(e) = map_staged(core, &mut st, p, (b, plan.tag), false) {
            tracing::error!("paging: mapping a prefetched page failed: {e}");
            eprintln!("farmem paging: mapping a prefetched page failed: {e}; aborting");
            std::process::abort();
        }
        let _ = core.uffd.wake(core.addr(p), PAGE);
        let plans = st.streams.on_marker(plan.tag, p).into_iter().collect();
        follow.extend(reserve_all(core, &mut st, plans));
    }
    st.reserved -= pages.len();
    st.prefetching -= 1;
    st.stats.prefetched += pages.len() as u64;
    kick(core, &st);
    drop(st);
    core.changed.notify_all();
    follow
}
