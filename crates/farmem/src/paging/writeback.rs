//! Write-back of dirty pages: cache-line diffs against the clean twin (Kona) or whole pages,
//! sent in one batched request per kind.

use std::time::Duration;

use crate::backend::{Backend, BackendError, Edit, ObjectId};

use super::sys::PAGE;
use super::{LINE_SIZE, WriteBack};

/// Retries a backend call on transient errors (unreachable, disconnected, timeout) with doubling
/// back-off, about ten seconds in all.
pub fn retry<T>(
    what: &str,
    mut f: impl FnMut() -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    let mut delay = Duration::from_millis(1);
    let mut attempt = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(
                e @ (BackendError::Unreachable { .. }
                | BackendError::Disconnected { .. }
                | BackendError::Timeout { .. }),
            ) if attempt < 14 => {
                tracing::warn!("paging: {what} failed ({e}); retrying in {delay:?}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fetches whole pages `ids` in one request; a page of the wrong size is
/// [`BackendError::SizeMismatch`].
pub fn get_pages(backend: &dyn Backend, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
    let data = backend.get_many(ids)?;
    match data.iter().zip(ids).find(|(d, _)| d.len() != PAGE) {
        Some((d, &id)) => Err(BackendError::SizeMismatch {
            id,
            expected: PAGE as u64,
            actual: d.len() as u64,
        }),
        None => Ok(data),
    }
}

/// Compares `page` with its clean `twin` line by line. Appends the dirty runs (adjacent dirty
/// lines merged) as `(offset, len)` to `runs` and returns how many bytes differ.
pub fn diff_lines(page: &[u8], twin: Option<&[u8]>, runs: &mut Vec<(u32, u32)>) -> u64 {
    let mut changed = 0u64;
    let zeros = [0u8; LINE_SIZE];
    for (i, line) in page.chunks(LINE_SIZE).enumerate() {
        let old = twin.map_or(&zeros[..line.len()], |t| &t[i * LINE_SIZE..][..line.len()]);
        if line == old {
            continue;
        }
        changed += line.iter().zip(old).filter(|(a, b)| a != b).count() as u64;
        let off = (i * LINE_SIZE) as u32;
        match runs.last_mut() {
            Some((o, l)) if *o + *l == off => *l += line.len() as u32,
            _ => runs.push((off, line.len() as u32)),
        }
    }
    changed
}

/// One dirty page to write back: its object, what to send, and where its contents sit in the
/// write-back buffer.
#[derive(Debug)]
pub struct Item {
    /// Page index in the region.
    pub page: usize,
    /// Its backend object.
    pub id: ObjectId,
    /// Index of its 4 KiB copy in the write-back buffer.
    pub slot: usize,
    /// Send the whole page (first copy, or whole-page mode); otherwise `runs`.
    pub whole: bool,
    /// Changed line runs `(offset, len)`.
    pub runs: Vec<(u32, u32)>,
}

/// Plans the write-back of a page whose current contents are `content` and whose backend copy
/// is `twin` (`None`: zeros) or absent (`stored == false`). Returns the item and the bytes that
/// changed.
pub fn plan(
    page: usize,
    id: ObjectId,
    slot: usize,
    content: &[u8],
    twin: Option<&[u8]>,
    stored: bool,
    mode: WriteBack,
) -> (Item, u64) {
    let mut runs = Vec::new();
    let changed = diff_lines(content, twin, &mut runs);
    // A never-stored page needs a full first copy, unless it is still all zeros.
    let whole = (!stored && changed > 0) || (stored && mode == WriteBack::WholePage);
    if whole {
        runs.clear();
    }
    (
        Item {
            page,
            id,
            slot,
            whole,
            runs,
        },
        changed,
    )
}

/// Sends `items` whose contents are in `buf` (page `item.slot`): whole pages with one
/// `put_many`, line runs with one `patch_many`.
///
/// # Errors
/// A backend error that persisted through the retries.
pub fn send(backend: &dyn Backend, items: &[Item], buf: &[u8]) -> Result<u64, BackendError> {
    let content = |it: &Item| &buf[it.slot * PAGE..][..PAGE];
    let puts: Vec<(ObjectId, &[u8])> = items
        .iter()
        .filter(|it| it.whole)
        .map(|it| (it.id, content(it)))
        .collect();
    let edit_lists: Vec<(ObjectId, Vec<Edit<'_>>)> = items
        .iter()
        .filter(|it| !it.whole && !it.runs.is_empty())
        .map(|it| {
            let c = content(it);
            let edits = it
                .runs
                .iter()
                .map(|&(o, l)| (o, &c[o as usize..(o + l) as usize]))
                .collect();
            (it.id, edits)
        })
        .collect();
    // Off the connection demand fetches use, when the backend has several.
    let _bulk = crate::backend::BulkLane::enter();
    let mut sent = puts.len() as u64 * PAGE as u64;
    sent += items
        .iter()
        .filter(|it| !it.whole)
        .flat_map(|it| it.runs.iter().map(|&(_, l)| l as u64))
        .sum::<u64>();
    if !puts.is_empty() {
        retry("write-back", || backend.put_many(&puts))?;
    }
    if !edit_lists.is_empty() {
        let patches: Vec<(ObjectId, &[Edit<'_>])> =
            edit_lists.iter().map(|(id, e)| (*id, &e[..])).collect();
        retry("write-back", || backend.patch_many(&patches))?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_merges_adjacent_dirty_lines_and_counts_bytes() {
        let twin = vec![0u8; PAGE];
        let mut page = twin.clone();
        page[3] = 1; // line 0
        page[64] = 1; // line 1 (adjacent: merged)
        page[65] = 2;
        page[4095] = 9; // last line
        let mut runs = vec![];
        assert_eq!(diff_lines(&page, Some(&twin), &mut runs), 4);
        assert_eq!(runs, vec![(0, 128), (4032, 64)]);
        runs.clear();
        assert_eq!(diff_lines(&page, None, &mut runs), 4, "zero twin");
        runs.clear();
        assert_eq!(diff_lines(&twin, Some(&twin), &mut runs), 0);
        assert!(runs.is_empty());
    }

    #[test]
    fn plan_sends_whole_first_copies_and_lines_after() {
        let mut page = vec![0u8; PAGE];
        page[100] = 1;
        let (it, ch) = plan(3, 9, 0, &page, None, false, WriteBack::CacheLine);
        assert!(it.whole && it.runs.is_empty() && ch == 1);
        let (it, _) = plan(3, 9, 0, &page, None, true, WriteBack::CacheLine);
        assert!(!it.whole);
        assert_eq!(it.runs, vec![(64, 64)]);
        let (it, _) = plan(3, 9, 0, &page, None, true, WriteBack::WholePage);
        assert!(it.whole);
        let zero = vec![0u8; PAGE];
        let (it, ch) = plan(3, 9, 0, &zero, None, false, WriteBack::CacheLine);
        assert!(
            !it.whole && it.runs.is_empty() && ch == 0,
            "untouched zeros send nothing"
        );
    }
}
