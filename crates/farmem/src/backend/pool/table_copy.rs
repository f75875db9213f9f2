//! Repair and drains of server-side hash tables: a table is copied page by page, each page read
//! from the source streamed into a write to the target while the next page is read.
//!
//! The race rules are [`super::repair`]'s single-object ones: the entry is claimed for the whole
//! copy, the target is chosen (and counted in its `moves`) before the first write, and the copy
//! commits only if no write started or ended since the claim; a copy that does not commit is
//! dropped while the claim is held.
//!
//! Each page (its read, and the wait for the oldest write in flight) is one turn of the
//! repairer's pacing, as a batch of the batched mover is: a table copy slows down with the
//! batches when the application's latency grows.
//!
//! A page stays encoded on its way: the entries of the source's `HT_SCAN` answer are the
//! entries of the target's `HT_PUT` in the same layout, so the client only walks the page (for
//! its last key and size) and prefixes the table id. Pages come in key order, which the
//! target's table turns into whole segments without sorting (`farmem-store`'s table).

use std::collections::VecDeque;

use farmem_proto::agent::{AgentDecodeError, AgentMessage, HtScanArgs, Reader, Writer, op};

use super::Inner;
use super::member::{Member, choose, is_member_failure};
use super::pacing::MOVERS;
use super::repair::{Fix, Step, finish_copy, no_target, reserve};
use super::table::{Entry, Ix};
use crate::backend::{BackendError, ObjectId};

/// Entries per page of a table read by repair, and one write to the target per page. Small:
/// a server runs table operations as jobs, and a connection reads no further request while
/// its job runs, so the application's requests on the same connection (and its lookups of the
/// session's tables) wait behind a page: 16,384-entry pages stalled lookups up to 150-200 ms
/// after a kill, 4,096-entry pages with four writes in flight still 30-160 ms (requests to
/// one server all waiting together, with repair capped at 100 MiB/s as well).
const SCAN_PAGE: u32 = 1024;
/// Entries per page while the application is idle (no request waits behind a page). A server
/// reads a page by looking at every entry of the key-range segment it starts in (16,384 at
/// most), so 1,024-entry pages cost the source about 16 times the work per entry of pages a
/// segment long (a server table's segments hold at most 16,384 entries).
const IDLE_SCAN_PAGE: u32 = 16_384;
/// Times a page is asked again when its server stayed silent past the read patience (a loaded
/// server may take that long to produce a page).
const SCAN_PATIENCE: u32 = 8;
/// Page writes in flight to the target (each one holds a connection of the target's).
const PUTS_IN_FLIGHT: usize = 2;

/// Which end of a table copy failed.
enum CopyError {
    Source(BackendError),
    Target(BackendError),
}

/// One page of a table as the source encoded it (an `HtScanResult`).
struct Page {
    raw: Vec<u8>,
    /// Whether entries follow it.
    more: bool,
    /// Its last key.
    last: Option<Vec<u8>>,
    /// Key and value bytes of its entries.
    bytes: usize,
    /// Number of entries.
    len: usize,
}

impl Page {
    /// Checks the encoded page `raw` whole and notes what the copy needs of it.
    fn parse(raw: Vec<u8>) -> Result<Self, AgentDecodeError> {
        let mut r = Reader::new(&raw);
        let more = match r.u8()? {
            0 => false,
            1 => true,
            tag => return Err(AgentDecodeError::BadTag { what: "more", tag }),
        };
        let len = r.count(8)?;
        let (mut last, mut bytes) = (None, 0);
        for _ in 0..len {
            let k = r.byte_string()?;
            bytes += k.len() + r.byte_string()?.len();
            last = Some(k);
        }
        r.finish()?;
        let last = last.map(<[u8]>::to_vec);
        Ok(Self {
            raw,
            more,
            last,
            bytes,
            len,
        })
    }

    /// The encoded `HtPutArgs` that write this page's entries into table `id`: the page's
    /// entry list is already in their layout.
    fn put_args(&self, id: ObjectId) -> Vec<u8> {
        let mut w = Writer::from_vec(Vec::with_capacity(self.raw.len() + 8));
        w.u64(id).u8(0);
        w.buf.extend_from_slice(&self.raw[1..]);
        w.buf
    }
}

/// One page of at most `max` entries of table `id` on `m` after key `after`, asked again while the server is slow.
fn scan_page(
    m: &Member,
    id: ObjectId,
    after: Option<Vec<u8>>,
    max: u32,
) -> Result<Page, BackendError> {
    let args = HtScanArgs {
        table: id,
        max,
        after,
    }
    .encode();
    let mut silent = 0;
    let out = loop {
        match m.backend.compute(id, op::HT_SCAN, &args) {
            Err(BackendError::Silent { .. }) if silent < SCAN_PATIENCE => silent += 1,
            r => break r?,
        }
    };
    Page::parse(out).map_err(|e| BackendError::Protocol(e.into()))
}

/// Replaces table `id` on `dst` by a copy of `src`'s, page by page with the writes of earlier
/// pages in flight while the next is read (submitted from this thread, so the target runs them
/// in order after the drop of its old copy), each page in a turn of `inner`'s pacing; returns
/// the bytes copied.
fn stream(inner: &Inner, src: &Member, dst: &Member, id: ObjectId) -> Result<usize, CopyError> {
    let members = inner.members();
    let mut inflight = VecDeque::with_capacity(PUTS_IN_FLIGHT + 1);
    inflight.push_back(dst.backend.submit_compute(id, op::HT_DROP, &id.encode()));
    let mut after = None;
    let mut bytes = 0;
    loop {
        let _turn = inner.repair.pace(&members, MOVERS);
        let max = if inner.repair.pacer.app_idle() {
            IDLE_SCAN_PAGE
        } else {
            SCAN_PAGE
        };
        let page = scan_page(src, id, after.take(), max).map_err(CopyError::Source)?;
        after.clone_from(&page.last);
        if page.len > 0 {
            bytes += page.bytes;
            while inflight.len() >= PUTS_IN_FLIGHT
                && let Some(p) = inflight.pop_front()
            {
                p.wait().map_err(CopyError::Target)?;
            }
            inflight.push_back(
                dst.backend
                    .submit_compute(id, op::HT_PUT, &page.put_args(id)),
            );
            inner.repair.take(page.bytes);
        }
        if !page.more || after.is_none() {
            break;
        }
    }
    for p in inflight {
        p.wait().map_err(CopyError::Target)?;
    }
    Ok(bytes)
}

/// The copy step of [`super::repair`]'s `fix` for the claimed table entry `e`: copies the table
/// from one of `draining` (or `live`) to a new member in place of `from`. Returns what `fix`'s
/// step returns: the outcome, a member holding a copy the entry does not name, the member whose
/// `moves` count was raised.
pub(super) fn step(
    inner: &Inner,
    id: ObjectId,
    e: &Entry,
    live: &[Ix],
    draining: &[Ix],
    from: Option<Ix>,
    evict: Option<Ix>,
) -> (Step, Option<Ix>, Option<Ix>) {
    let members = inner.members();
    // The size is known only once copied; the next statistics refresh corrects the estimate.
    let Some(&t) = choose(&members, e.members(), 1, 0, &inner.dice).first() else {
        return no_target(inner, id, e, from, !live.is_empty(), evict);
    };
    let target = &members[usize::from(t)];
    if !reserve(target) {
        return (Step::Again, None, Some(t));
    }
    // A leaving copy first: the live members serve the application's reads meanwhile.
    for &s in draining.iter().chain(live) {
        match stream(inner, &members[usize::from(s)], target, id) {
            Ok(bytes) => {
                target.charge(bytes);
                return finish_copy(inner, id, e, from, t, bytes);
            }
            Err(CopyError::Source(err)) if is_member_failure(&err) => {
                inner.mark_down(&members, s, &err)
            }
            Err(CopyError::Source(err)) => {
                tracing::debug!(id, error = %err, "repair could not read a table copy");
            }
            Err(CopyError::Target(err)) if is_member_failure(&err) => {
                inner.mark_down(&members, t, &err);
                return (Step::Again, None, Some(t));
            }
            Err(CopyError::Target(err)) => {
                tracing::debug!(id, member = %target.name, error = %err, "table copy refused");
                return (Step::Finished(Fix::NoRoom), Some(t), Some(t));
            }
        }
    }
    // No source could be read: the target may hold part of a copy.
    (Step::Finished(Fix::Raced), Some(t), Some(t))
}
