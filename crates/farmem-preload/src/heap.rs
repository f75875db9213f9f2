//! The far heap: large blocks carved out of one paged region, whole pages each.
//!
//! A block's size lives in a side table, never in a header inside the block: freeing or sizing
//! a block whose pages are far must not fetch them. Freed blocks are discarded (dropped locally
//! with `madvise`, their objects freed on the servers) before their pages can be handed out
//! again, so a new block reads zeros (which `calloc` relies on).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use farmem::paging::{Extents, PAGE_SIZE, PagedRegion, PagingStats};
use parking_lot::Mutex;

/// Which pages are handed out, and the length of each block.
#[derive(Debug)]
pub struct Table {
    extents: Extents,
    /// First page of a block -> its length in pages.
    blocks: BTreeMap<usize, usize>,
}

/// The paged region and its block table.
#[derive(Debug)]
pub struct Heap {
    region: PagedRegion,
    base: usize,
    len: usize,
    /// Smallest request served here.
    pub threshold: usize,
    table: Mutex<Table>,
    live_bytes: AtomicU64,
}

impl Heap {
    /// A heap over `region` for requests of at least `threshold` bytes.
    pub fn new(region: PagedRegion, threshold: usize) -> Self {
        let pages = region.len() / PAGE_SIZE;
        Self {
            base: region.as_ptr() as usize,
            len: region.len(),
            region,
            threshold,
            table: Mutex::new(Table {
                extents: Extents::new(pages),
                blocks: BTreeMap::new(),
            }),
            live_bytes: AtomicU64::new(0),
        }
    }

    /// The paged region.
    pub fn region(&self) -> &PagedRegion {
        &self.region
    }

    /// Whether `p` points into the region.
    pub fn contains(&self, p: usize) -> bool {
        p.wrapping_sub(self.base) < self.len
    }

    /// Start and length of the region.
    pub fn range(&self) -> (usize, usize) {
        (self.base, self.len)
    }

    /// The block table (the fork handlers hold it across `fork`).
    pub fn table(&self) -> &Mutex<Table> {
        &self.table
    }

    /// A zeroed block of at least `size` bytes, page-aligned; `None` when the region is full.
    pub fn alloc(&self, size: usize) -> Option<usize> {
        let pages = size.max(1).div_ceil(PAGE_SIZE);
        let mut t = self.table.lock();
        let start = t.extents.alloc(pages)?;
        t.blocks.insert(start, pages);
        drop(t);
        // Map the fresh pages now while local memory has room: the program then fills them
        // without a first-touch fault per run (a program that fits in local memory runs at
        // nearly its plain speed). Best effort: an unmapped page is still served by a fault.
        let _ = self.region.populate(start * PAGE_SIZE, pages * PAGE_SIZE);
        self.live_bytes
            .fetch_add((pages * PAGE_SIZE) as u64, Ordering::Relaxed);
        Some(self.base + start * PAGE_SIZE)
    }

    /// Pages of the block starting at `p` (`None` when `p` is not the start of a live block).
    pub fn block_pages(&self, p: usize) -> Option<usize> {
        let page = self.page_of(p)?;
        self.table.lock().blocks.get(&page).copied()
    }

    /// Usable bytes of the block at `p` (0 when `p` is not the start of a live block).
    pub fn usable_size(&self, p: usize) -> usize {
        self.block_pages(p).map_or(0, |n| n * PAGE_SIZE)
    }

    fn page_of(&self, p: usize) -> Option<usize> {
        let off = p.checked_sub(self.base)?;
        (off < self.len && off % PAGE_SIZE == 0).then_some(off / PAGE_SIZE)
    }

    /// Frees the block at `p`: its pages are given back locally and on the servers. Returns
    /// `false` when `p` is not the start of a live block (an invalid free, ignored).
    pub fn free(&self, p: usize) -> bool {
        let Some(page) = self.page_of(p) else {
            return false;
        };
        let Some(pages) = self.table.lock().blocks.remove(&page) else {
            return false;
        };
        self.release(page, pages);
        self.live_bytes
            .fetch_sub((pages * PAGE_SIZE) as u64, Ordering::Relaxed);
        true
    }

    /// Discards `[page, page+n)` and returns it to the free list (in that order: nobody may get
    /// the pages while their old contents are still being dropped).
    fn release(&self, page: usize, n: usize) {
        if let Err(e) = self.region.discard(page * PAGE_SIZE, n * PAGE_SIZE) {
            crate::warn(format_args!("discarding freed far memory failed: {e}"));
        }
        self.table.lock().extents.free(page, n);
    }

    /// Resizes the block at `p` to `size` bytes in place if it can (shrinking always can,
    /// growing when the following pages are free). Returns whether it did; `size` must be
    /// non-zero.
    pub fn resize_in_place(&self, p: usize, size: usize) -> bool {
        let Some(page) = self.page_of(p) else {
            return false;
        };
        let new = size.div_ceil(PAGE_SIZE);
        let mut t = self.table.lock();
        let Some(&old) = t.blocks.get(&page) else {
            return false;
        };
        if new == old {
            return true;
        }
        if new > old {
            if !t.extents.grow(page, old, new) {
                return false;
            }
            t.blocks.insert(page, new);
            drop(t);
            self.live_bytes
                .fetch_add(((new - old) * PAGE_SIZE) as u64, Ordering::Relaxed);
            return true;
        }
        t.blocks.insert(page, new);
        drop(t);
        self.release(page + new, old - new);
        self.live_bytes
            .fetch_sub(((old - new) * PAGE_SIZE) as u64, Ordering::Relaxed);
        true
    }

    /// `munmap` of `[p, p+len)` (page-aligned, inside the region): frees the blocks it covers,
    /// trims the tail of a block it ends; pages of a block it only partly covers from the front
    /// or the middle are discarded (given back) but stay in their block until it is freed.
    pub fn unmap(&self, p: usize, len: usize) {
        let Some(first) = self.page_of(p) else {
            return;
        };
        let end = (first + len.div_ceil(PAGE_SIZE)).min(self.len / PAGE_SIZE);
        let mut c = first;
        while c < end {
            let t = self.table.lock();
            let Some((&s, &m)) = t
                .blocks
                .range(..=c)
                .next_back()
                .filter(|(s, m)| **s + **m > c)
            else {
                // Not in a block: skip to the next block start (nothing to give back here).
                let next = t.blocks.range(c..).next().map_or(end, |(&s, _)| s.min(end));
                drop(t);
                c = next.max(c + 1);
                continue;
            };
            drop(t);
            let block_end = s + m;
            if c == s && end >= block_end {
                self.free(self.base + s * PAGE_SIZE);
            } else if end >= block_end {
                self.resize_in_place(self.base + s * PAGE_SIZE, (c - s) * PAGE_SIZE);
            } else if let Err(e) = self.region.discard(c * PAGE_SIZE, (end - c) * PAGE_SIZE) {
                crate::warn(format_args!("discarding unmapped far memory failed: {e}"));
            }
            c = block_end.min(end).max(c + 1);
        }
    }

    /// Bytes in live blocks (whole pages).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// The paging counters.
    pub fn stats(&self) -> PagingStats {
        self.region.stats()
    }

    /// The live blocks as `(address, bytes)` (for the fork child).
    pub fn blocks(t: &Table, base: usize) -> Vec<(usize, usize)> {
        t.blocks
            .iter()
            .map(|(&p, &n)| (base + p * PAGE_SIZE, n * PAGE_SIZE))
            .collect()
    }
}
