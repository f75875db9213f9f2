//! Repair: rebuilds the spans of sealed stripes that sit on members that are gone (or leaving),
//! and adds parity to stripes sealed with too little of it.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::layout::{
    Key, PARITY_PAGE, Phase, SlotState, Stripe, StripeId, parity_page_keys, parity_pages,
};
use super::{Engine, InFlight};
use crate::backend::BackendError;
use crate::backend::pool::fanout::fan_out;
use crate::backend::pool::member::{Member, choose, is_member_failure, room_for};
use crate::backend::pool::table::Ix;

/// A slot to fetch or write: key, offset in its span, length.
type SlotRef = (Key, u32, u32);

/// A sealed stripe as the rebuild found it.
#[derive(Debug)]
struct Snapshot {
    /// Per data span: member and its slots (key, offset, length).
    spans: Vec<(Ix, Vec<SlotRef>)>,
    parity: Vec<(Ix, Key)>,
    shard_len: usize,
}

/// Whether sealed stripe `st` has a data span on a member that is down while another member of
/// the stripe could take it as a substitute (see [`Engine::rebuild`]).
fn substitutes(st: &Stripe, members: &[Arc<Member>]) -> bool {
    let at = |ix: Ix| members.get(usize::from(ix));
    st.spans
        .iter()
        .any(|sp| !at(sp.member).is_some_and(|m| m.serves()))
        && st
            .members()
            .iter()
            .any(|&ix| at(ix).is_some_and(|m| m.takes_new()))
}

/// The member of a stripe (whose spans are on `on`) that takes a lost data span as a
/// substitute: one that takes new data, has room, and holds the fewest spans of the stripe.
fn substitute(members: &[Arc<Member>], on: &[Ix], bytes: usize) -> Option<Ix> {
    on.iter()
        .copied()
        .filter(|&ix| {
            members
                .get(usize::from(ix))
                .is_some_and(|m| m.takes_new() && m.has_room(bytes))
        })
        .min_by_key(|ix| {
            let held = on.iter().filter(|x| *x == ix).count();
            (held, std::cmp::Reverse(members[usize::from(*ix)].free()))
        })
}

/// Bytes of rebuild traffic per request to a member: small enough that a degraded read sent
/// meanwhile waits behind one chunk at most, large enough to keep rebuilds to a few round trips
/// per span.
const REBUILD_CHUNK: usize = 32 << 10;

/// The longest give-way of a rebuild chunk to degraded reads (rebuilds never starve).
const GIVE_WAY: Duration = Duration::from_millis(2);

/// Consecutive runs of items of lengths `lens`, each of about [`REBUILD_CHUNK`] bytes (at
/// least one item).
fn chunked(lens: impl Iterator<Item = usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes, mut i) = (0, 0, 0);
    for len in lens {
        if i > start && bytes + len > REBUILD_CHUNK {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += len;
        i += 1;
    }
    if i > start {
        out.push(start..i);
    }
    out
}

impl Engine {
    /// Waits (at most [`GIVE_WAY`]) until no degraded read is fetching or decoding: demand
    /// reads go before rebuild traffic. Sleeps until the last of them ends (no polling).
    fn give_way(&self) {
        if self.demand.load(Ordering::Acquire) == 0 {
            return;
        }
        let until = Instant::now() + GIVE_WAY;
        let mut g = self.demand_lock.lock();
        while self.demand.load(Ordering::Acquire) > 0 {
            if self.demand_done.wait_until(&mut g, until).timed_out() {
                break;
            }
        }
    }

    /// Whether sealed stripe `st` has a span on a member that does not take new data, two
    /// spans on one member (a substitute, see [`Engine::rebuild`]), or fewer than `m` parity
    /// spans.
    pub(crate) fn needs_rebuild(&self, st: &Stripe, members: &[Arc<Member>]) -> bool {
        st.parity.len() < self.m || self.spans_misplaced(st, members)
    }

    /// Whether stripe `st` has a span on a member that does not take new data, or two spans on
    /// one member.
    fn spans_misplaced(&self, st: &Stripe, members: &[Arc<Member>]) -> bool {
        let on = st.members();
        on.iter()
            .any(|&ix| !members.get(usize::from(ix)).is_some_and(|m| m.takes_new()))
            || on.iter().enumerate().any(|(i, ix)| on[..i].contains(ix))
    }

    /// Rebuilds every stripe that needs it.
    pub(crate) fn rebuild_all(&self) {
        let members = self.pool.members();
        let todo: Vec<StripeId> = {
            let l = self.layout.read();
            l.stripes
                .iter()
                .filter(|(_, st)| {
                    st.phase == Phase::Sealed && !st.busy && self.needs_rebuild(st, &members)
                })
                // Nowhere to put a span: don't read the stripe for nothing.
                .filter(|(_, st)| {
                    let inside = st.members();
                    (0..members.len())
                        .any(|i| members[i].takes_new() && !inside.contains(&(i as Ix)))
                        || substitutes(st, &members)
                })
                // Only short of parity, with no room for more of it than it has (members
                // full): a new set would be as short.
                .filter(|(_, st)| {
                    if self.spans_misplaced(st, &members) {
                        return true;
                    }
                    let data: Vec<Ix> = st.spans.iter().map(|s| s.member).collect();
                    room_for(&members, &data, st.shard_len) > st.parity.len()
                })
                .map(|(&sid, _)| sid)
                .collect()
        };
        for sid in todo {
            if let Err(e) = self.rebuild(sid) {
                tracing::warn!(error = %e, "coded pool: stripe not rebuilt yet");
            }
        }
    }

    /// Rebuilds stripe `sid`: decodes it from any `k` of its spans and writes each lost span to
    /// a member outside the stripe.
    ///
    /// When no member outside the stripe can take a lost *data* span (a pool of exactly
    /// `k + m` members), it goes to a member of the stripe that holds another of its spans: a
    /// *substitute*, so that reads of its objects are one request again instead of a decode.
    /// This never lowers what the stripe survives: with `f` members lost and the span on a
    /// substitute, losing the substitute too loses two spans, `f + 1` in all, as many as losing
    /// one more member would without it. A substitute counts as degraded, and the span moves
    /// to a member outside the stripe as soon as there is one.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when fewer than `k` of its spans can be read, or there is
    /// no member to put a lost span on.
    pub(crate) fn rebuild(&self, sid: StripeId) -> Result<(), BackendError> {
        let snap = {
            let mut l = self.layout.write();
            let Some(st) = l.stripes.get_mut(&sid) else {
                return Ok(());
            };
            if st.phase != Phase::Sealed || st.busy {
                return Ok(());
            }
            st.busy = true;
            Snapshot {
                spans: st
                    .spans
                    .iter()
                    .map(|sp| {
                        let slots = sp
                            .slots
                            .iter()
                            .filter(|s| s.state != SlotState::Gone)
                            .map(|s| (s.key, s.off, s.len))
                            .collect();
                        (sp.member, slots)
                    })
                    .collect(),
                parity: st.parity.clone(),
                shard_len: st.shard_len,
            }
        };
        let r = self.rebuild_snapshot(sid, &snap);
        let freed = {
            let mut l = self.layout.write();
            if let Some(st) = l.stripes.get_mut(&sid) {
                st.busy = false;
            }
            l.reap(sid)
        };
        self.free_keys(freed);
        r
    }

    fn rebuild_snapshot(&self, sid: StripeId, snap: &Snapshot) -> Result<(), BackendError> {
        let members = self.pool.members();
        let stays = |ix: Ix| members.get(usize::from(ix)).is_some_and(|m| m.takes_new());
        let serves = |ix: Ix| members.get(usize::from(ix)).is_some_and(|m| m.serves());
        let k = snap.spans.len();
        let len = snap.shard_len;
        // Fetch `k` spans that can be read (a draining member can still be read), data first:
        // decoding needs no more.
        let mut work: Vec<(Ix, usize)> = Vec::new();
        for (j, (ix, _)) in snap.spans.iter().enumerate() {
            if serves(*ix) && work.len() < k {
                work.push((*ix, j));
            }
        }
        for (p, (ix, _)) in snap.parity.iter().enumerate() {
            if serves(*ix) && work.len() < k {
                work.push((*ix, k + p));
            }
        }
        let _busy = InFlight::enter(&self.rebuilding);
        // In chunks, each after the degraded reads in flight: a demand read never queues behind
        // more than one chunk of rebuild traffic on a member.
        let results = fan_out(&members, work, true, &|m, j: usize| {
            let r = if j < k {
                let slots = &snap.spans[j].1;
                let mut v = vec![0u8; len];
                let mut r = Ok(());
                for part in chunked(slots.iter().map(|s| s.2 as usize)) {
                    self.give_way();
                    let part = &slots[part];
                    let keys: Vec<Key> = part.iter().map(|s| s.0).collect();
                    match m.backend.get_many(&keys) {
                        Ok(vals) => {
                            for ((_, off, _), val) in part.iter().zip(vals) {
                                let off = *off as usize;
                                let end = (off + val.len()).min(len);
                                if off < end {
                                    v[off..end].copy_from_slice(&val[..end - off]);
                                }
                            }
                        }
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r.map(|()| v)
            } else {
                let first = snap.parity[j - k].1;
                let keys: Vec<Key> = (first..first + parity_pages(len) as Key).collect();
                let mut p = Vec::with_capacity(len);
                let mut r = Ok(());
                for part in chunked(keys.iter().map(|_| PARITY_PAGE)) {
                    self.give_way();
                    match m.backend.get_many(&keys[part]) {
                        Ok(pages) => pages.iter().for_each(|x| p.extend_from_slice(x)),
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r.map(|()| {
                    p.resize(len, 0);
                    p
                })
            };
            (j, r)
        });
        let total = k + snap.parity.len();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
        for (ix, (j, r)) in results {
            match r {
                Ok(v) => shards[j] = Some(v),
                Err(e) if is_member_failure(&e) => self.pool.mark_down(&members, ix, &e),
                Err(e) => tracing::warn!(error = %e, "coded pool: span unreadable"),
            }
        }
        let present = shards.iter().filter(|s| s.is_some()).count();
        if present < k {
            return Err(BackendError::Unavailable {
                id: 0,
                servers: format!("stripe with {present} of {k} spans readable"),
            });
        }
        self.codec.reconstruct_data(k, &mut shards)?;
        let data: Vec<Vec<u8>> = shards[..k]
            .iter()
            .map(|s| s.clone().unwrap_or_default())
            .collect();
        // Data spans to move, onto members outside the stripe.
        let mut keep: Vec<Ix> = snap
            .spans
            .iter()
            .map(|s| s.0)
            .chain(snap.parity.iter().map(|p| p.0))
            .filter(|&ix| stays(ix))
            .collect();
        let mut moved: Vec<(usize, Ix)> = Vec::new();
        let mut wrote = 0u64;
        // Where each span is now (data, then parity), as spans move.
        let mut on: Vec<Ix> = snap
            .spans
            .iter()
            .map(|s| s.0)
            .chain(snap.parity.iter().map(|p| p.0))
            .collect();
        for (j, (ix, slots)) in snap.spans.iter().enumerate() {
            // On a substitute: the member also holds a span before this one, or a parity span.
            let doubled = on[..j].contains(ix) || on[k..].contains(ix);
            if stays(*ix) && !doubled {
                continue;
            }
            let to = match choose(&members, &keep, 1, len, &self.pool.dice).first() {
                Some(&to) => to,
                // Still readable where it is (a draining member, or a substitute): leave it.
                None if serves(*ix) => continue,
                None => match substitute(&members, &on, len) {
                    Some(to) => to,
                    None => {
                        return Err(BackendError::Unavailable {
                            id: 0,
                            servers: "no member for a lost span".into(),
                        });
                    }
                },
            };
            let puts: Vec<(u64, &[u8])> = slots
                .iter()
                .map(|&(key, off, l)| (key, &data[j][off as usize..(off + l) as usize]))
                .collect();
            for part in chunked(puts.iter().map(|p| p.1.len())) {
                self.give_way();
                if let Err(e) = members[usize::from(to)].backend.put_many(&puts[part]) {
                    if is_member_failure(&e) {
                        self.pool.mark_down(&members, to, &e);
                    }
                    return Err(e);
                }
            }
            wrote += puts.iter().map(|p| p.1.len() as u64).sum::<u64>();
            if !keep.contains(&to) {
                keep.push(to);
            }
            on[j] = to;
            moved.push((j, to));
        }
        // Parity: keep what stays when nothing else changes, else write a full new set.
        let parity_ok = snap.parity.len() >= self.m && snap.parity.iter().all(|p| stays(p.0));
        let (new_parity, old_parity) = if parity_ok {
            (None, Vec::new())
        } else {
            let data_members: Vec<Ix> = snap
                .spans
                .iter()
                .enumerate()
                .map(|(j, s)| moved.iter().find(|x| x.0 == j).map_or(s.0, |x| x.1))
                .collect();
            let p = self.write_parity(&data, &data_members, self.m)?;
            wrote += (p.len() * len) as u64;
            (Some(p), parity_page_keys(&snap.parity, len))
        };
        let rebuilt = moved.len() + new_parity.as_ref().map_or(0, Vec::len);
        let mut stale: Vec<(Ix, Key)> = old_parity;
        {
            let mut l = self.layout.write();
            let Some(st) = l.stripes.get_mut(&sid) else {
                return Ok(());
            };
            for &(j, to) in &moved {
                let from = st.spans[j].member;
                // A draining member still holds the old copies.
                stale.extend(st.spans[j].slots.iter().map(|s| (from, s.key)));
                st.spans[j].member = to;
            }
            if let Some(p) = new_parity {
                st.parity = p;
            }
        }
        self.free_keys(stale);
        self.counters
            .rebuilt_spans
            .fetch_add(rebuilt as u64, Ordering::Relaxed);
        self.counters
            .rebuilt_bytes
            .fetch_add(wrote, Ordering::Relaxed);
        let _ = sid;
        Ok(())
    }
}
