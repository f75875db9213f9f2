//! The write path: new versions appended to the open stripe, sent one request per member per
//! batch, stripes sealed by the writer that fills them (see the module docs of `coded`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Engine;
use super::layout::{
    Key, Layout, Loc, PARITY_PAGE, Phase, SlotState, StripeId, parity_page_keys, parity_pages,
};
use crate::backend::pool::fanout::fan_out;
use crate::backend::pool::member::{Member, choose, is_member_failure, room_for};
use crate::backend::pool::table::Ix;
use crate::backend::{BackendError, ObjectId};

/// One object of a batch on its way to its member.
#[derive(Clone, Copy, Debug)]
struct Send {
    item: usize,
    stripe: StripeId,
    span: usize,
    key: Key,
    /// The version this one replaces, brought back if a member refuses this one.
    prev: Option<Loc>,
}

/// Attempts at sending a batch (each after moving the spans of failed members).
const ATTEMPTS: usize = 4;

fn unavailable(what: &str) -> BackendError {
    BackendError::Unavailable {
        id: 0,
        servers: format!("no live member left for {what}"),
    }
}

impl Engine {
    /// Stores objects (see [`Engine::write`]).
    pub(crate) fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        self.write(items, None)
    }

    /// Writes `items` as new versions; with `cond`, item `i` only if its current version has
    /// key `cond[i]` (compaction: a racing application write wins).
    pub(crate) fn write(
        &self,
        items: &[(ObjectId, &[u8])],
        cond: Option<&[Key]>,
    ) -> Result<(), BackendError> {
        if items.is_empty() {
            return Ok(());
        }
        let members = self.pool.members();
        let mut sends = Vec::with_capacity(items.len());
        let mut touched: Vec<StripeId> = Vec::new();
        let mut pinned: Vec<StripeId> = Vec::new();
        let mut freed = Vec::new();
        let mut first_err = None;
        let created = {
            let mut l = self.layout.write();
            let dead_before = l.dead_bytes;
            for (i, &(id, data)) in items.iter().enumerate() {
                if let Some(c) = cond
                    && l.key_of(id) != c.get(i).copied()
                {
                    continue;
                }
                let sid = match l.open {
                    Some(s) => s,
                    None => match self.open_stripe(&mut l, &members, data.len()) {
                        Ok(s) => s,
                        Err(e) => {
                            first_err = Some(e);
                            break;
                        }
                    },
                };
                // The previous version stays where it is until this one is taken: a sealed
                // (or sealing) one's stripe is pinned, and the version is kept as dead space;
                // an open one's slots stay in the client's copy until the seal, which a version
                // brought back before then joins.
                let prev = l.index.get(&id).copied().filter(|p| {
                    l.stripes
                        .get_mut(&p.stripe)
                        .is_some_and(|st| match st.phase {
                            Phase::Sealed | Phase::Sealing => {
                                st.pins += 1;
                                pinned.push(p.stripe);
                                true
                            }
                            Phase::Open => true,
                        })
                });
                let (loc, key, f) = l.append(sid, id, data);
                freed.extend(f);
                // Full when every span has its share: balanced spans keep padding (and so
                // parity) small whatever the object size.
                let full = l.least_filled(sid) >= self.opts.span_bytes;
                let st = l.stripes.get_mut(&sid).expect("open stripe exists");
                if !touched.contains(&sid) {
                    touched.push(sid);
                    st.pending += 1;
                }
                if full {
                    st.full = true;
                    l.open = None;
                }
                sends.push(Send {
                    item: i,
                    stripe: sid,
                    span: usize::from(loc.span),
                    key,
                    prev,
                });
            }
            l.dead_bytes.saturating_sub(dead_before)
        };
        self.free_keys(freed);
        let sent = self.send(items, sends);
        let (to_seal, freed) = {
            let mut l = self.layout.write();
            let mut freed = Vec::new();
            for sid in pinned {
                if let Some(st) = l.stripes.get_mut(&sid) {
                    st.pins -= 1;
                }
                freed.extend(l.reap(sid));
            }
            let to_seal: Vec<StripeId> = touched
                .into_iter()
                .filter(|sid| {
                    l.stripes.get_mut(sid).is_some_and(|st| {
                        st.pending -= 1;
                        let seal = st.full && st.pending == 0 && st.phase == Phase::Open;
                        if seal {
                            st.phase = Phase::Sealing;
                        }
                        seal
                    })
                })
                .collect();
            (to_seal, freed)
        };
        self.free_keys(freed);
        for sid in to_seal {
            if let Err(e) = self.seal(sid) {
                // The client still holds the stripe; maintenance seals it later.
                tracing::warn!(error = %e, "coded pool: stripe left unsealed");
            }
        }
        if cond.is_none() {
            self.compact_behind(created);
        }
        match first_err {
            Some(e) => Err(e),
            None => sent,
        }
    }

    /// Opens a stripe on `min(k, live members)` distinct members.
    fn open_stripe(
        &self,
        l: &mut Layout,
        members: &[Arc<Member>],
        bytes: usize,
    ) -> Result<StripeId, BackendError> {
        let placed = choose(
            members,
            &[],
            self.k,
            bytes.max(self.opts.span_bytes),
            &self.pool.dice,
        );
        if placed.is_empty() {
            return Err(BackendError::OutOfCapacity {
                needed: bytes as u64,
                available: 0,
            });
        }
        Ok(l.open(&placed))
    }

    /// Sends each object to its span's member, moving the spans of members that fail.
    fn send(&self, items: &[(ObjectId, &[u8])], mut todo: Vec<Send>) -> Result<(), BackendError> {
        for _ in 0..ATTEMPTS {
            if todo.is_empty() {
                return Ok(());
            }
            let members = self.pool.members();
            let mut groups: Vec<(Ix, Vec<Send>)> = Vec::new();
            {
                let l = self.layout.read();
                for s in todo.drain(..) {
                    let Some(st) = l.stripes.get(&s.stripe) else {
                        continue;
                    };
                    let ix = st.spans[s.span].member;
                    match groups.iter_mut().find(|g| g.0 == ix) {
                        Some(g) => g.1.push(s),
                        None => groups.push((ix, vec![s])),
                    }
                }
            }
            let parallel = groups.len() > 1;
            let results = fan_out(&members, groups, parallel, &|m, batch: Vec<Send>| {
                let r = if m.serves() {
                    let puts: Vec<(u64, &[u8])> =
                        batch.iter().map(|s| (s.key, items[s.item].1)).collect();
                    m.backend.put_many(&puts)
                } else {
                    Err(BackendError::ServerDown {
                        addr: m.name.clone(),
                        reason: "marked down by the pool".into(),
                    })
                };
                (r, batch)
            });
            let mut refused = None;
            for (ix, (r, batch)) in results {
                match r {
                    Ok(()) => {}
                    Err(e) if is_member_failure(&e) => {
                        self.pool.mark_down(&members, ix, &e);
                        self.wake();
                        for s in &batch {
                            if let Err(e) = self.relocate(s.stripe, s.span, ix) {
                                self.drop_unsent(items, &batch);
                                refused.get_or_insert(e);
                                break;
                            }
                        }
                        if refused.is_none() {
                            todo.extend(batch);
                        }
                    }
                    Err(e @ BackendError::OutOfCapacity { .. }) => {
                        // Full: its spans of these (unsealed) stripes move to members with
                        // room, and the objects go there; where none has room, those
                        // versions never existed.
                        let _ = members[usize::from(ix)].refresh();
                        let mut moved: Vec<StripeId> = Vec::new();
                        let mut stuck = false;
                        for s in &batch {
                            if moved.contains(&s.stripe) {
                                continue;
                            }
                            if self.relocate(s.stripe, s.span, ix).is_err() {
                                stuck = true;
                                break;
                            }
                            moved.push(s.stripe);
                        }
                        if stuck {
                            self.drop_unsent(items, &batch);
                            refused.get_or_insert(e);
                        } else {
                            todo.extend(batch);
                        }
                    }
                    Err(e) => {
                        // Refused (too large, quota): those versions never existed.
                        self.drop_unsent(items, &batch);
                        refused.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = refused {
                self.drop_unsent(items, &todo);
                return Err(e);
            }
        }
        if todo.is_empty() {
            Ok(())
        } else {
            self.drop_unsent(items, &todo);
            Err(unavailable("a write"))
        }
    }

    /// Takes versions a member refused out of the index (the write failed; the caller keeps
    /// its data); each object gets its previous version back where there is one.
    fn drop_unsent(&self, items: &[(ObjectId, &[u8])], batch: &[Send]) {
        let freed: Vec<(Ix, Key)> = {
            let mut l = self.layout.write();
            let mut freed = Vec::new();
            for s in batch {
                let id = items[s.item].0;
                if l.key_of(id) != Some(s.key) {
                    continue;
                }
                freed.extend(l.remove(id));
                if let Some(prev) = s.prev {
                    l.revive(id, prev);
                }
            }
            freed
        };
        self.free_keys(freed);
    }

    /// Moves span `span` of unsealed stripe `sid` off member `dead` (failed, or full): picks a
    /// member outside the stripe and writes every slot of the span there from the client's
    /// copy, then frees them on `dead` if it still serves. Nothing to do when the span already
    /// moved or its stripe is sealed (parity covers it).
    pub(crate) fn relocate(
        &self,
        sid: StripeId,
        span: usize,
        dead: Ix,
    ) -> Result<(), BackendError> {
        // Where the span was, and where the last attempt put it: a relocation that does not
        // complete puts it back, so that the layout never leaves a span on a member that did
        // not take its slots (a seal moves it again from there, `rejoin.rs` relies on it).
        let mut orig: Option<Ix> = None;
        let mut tried: Option<Ix> = None;
        for _ in 0..ATTEMPTS {
            let members = self.pool.members();
            let (from, to, copies) = {
                let mut l = self.layout.write();
                let Some(st) = l.stripes.get_mut(&sid) else {
                    return Ok(());
                };
                if st.phase == Phase::Sealed {
                    return Ok(());
                }
                let from = st.spans[span].member;
                if from != dead && members[usize::from(from)].serves() {
                    return Ok(());
                }
                let bytes = st.spans[span].buf.as_ref().map_or(0, Vec::len);
                let exclude = st.members();
                let Some(&to) = choose(&members, &exclude, 1, bytes, &self.pool.dice).first()
                else {
                    drop(l);
                    self.put_back(sid, span, tried, orig);
                    return Err(unavailable("a span of an unsealed stripe"));
                };
                orig.get_or_insert(from);
                tried = Some(to);
                let sp = &mut st.spans[span];
                sp.member = to;
                let buf = sp.buf.as_deref().unwrap_or_default();
                let copies: Vec<(Key, Vec<u8>)> = sp
                    .slots
                    .iter()
                    .filter(|s| s.state != SlotState::Gone)
                    .map(|s| {
                        let r = s.off as usize..(s.off + s.len) as usize;
                        (s.key, buf[r].to_vec())
                    })
                    .collect();
                (from, to, copies)
            };
            tracing::info!(to = %members[usize::from(to)].name, slots = copies.len(), "coded pool: unsealed span moved");
            let puts: Vec<(u64, &[u8])> = copies.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            match members[usize::from(to)].backend.put_many(&puts) {
                Ok(()) => {
                    if members[usize::from(from)].serves() {
                        self.free_keys(copies.iter().map(|(k, _)| (from, *k)).collect());
                    }
                    return Ok(());
                }
                Err(e) if is_member_failure(&e) => self.pool.mark_down(&members, to, &e),
                Err(e) => {
                    self.put_back(sid, span, tried, orig);
                    return Err(e);
                }
            }
        }
        self.put_back(sid, span, tried, orig);
        Err(unavailable("a span of an unsealed stripe"))
    }

    /// Puts span `span` of unsealed stripe `sid` back on member `orig` if it is still on
    /// `tried`, a member a relocation chose that did not take its slots.
    fn put_back(&self, sid: StripeId, span: usize, tried: Option<Ix>, orig: Option<Ix>) {
        let (Some(tried), Some(orig)) = (tried, orig) else {
            return;
        };
        let mut l = self.layout.write();
        if let Some(st) = l.stripes.get_mut(&sid)
            && st.phase != Phase::Sealed
            && st.spans[span].member == tried
        {
            st.spans[span].member = orig;
        }
    }

    /// Seals stripe `sid` (in phase [`Phase::Sealing`]): computes its parity from the client's
    /// copy, writes it to members outside the stripe, then drops the copy. Returns whether it
    /// is sealed: a stripe is *held* instead (open and full, in the client) while too few
    /// members can take its `m` parity spans and the client holds less than
    /// [`CodingOptions::hold_unsealed`](super::CodingOptions::hold_unsealed) of unsealed
    /// stripes. On failure or hold the stripe is open again (and full), for maintenance to
    /// retry.
    pub(crate) fn seal(&self, sid: StripeId) -> Result<bool, BackendError> {
        let r = self.try_seal(sid);
        if !matches!(r, Ok(true)) {
            let mut l = self.layout.write();
            if let Some(st) = l.stripes.get_mut(&sid) {
                st.phase = Phase::Open;
                st.full = true;
            }
        }
        r
    }

    fn try_seal(&self, sid: StripeId) -> Result<bool, BackendError> {
        // Every data span on a serving member first (moved from the client's copy if not). A
        // revived member's spans (`rejoin.rs`) move too where another member can take them, so
        // that it can be let go sooner; where none can, the span is sealed where it is (the
        // member took its slots: a span is on a member only once it took them, `relocate`),
        // and rebuilt off it later like the spans of stripes sealed before it went down.
        let spans = match self.layout.read().stripes.get(&sid) {
            Some(st) => st.spans.iter().map(|s| s.member).collect::<Vec<_>>(),
            None => return Ok(true),
        };
        let members = self.pool.members();
        for (i, ix) in spans.into_iter().enumerate() {
            let m = &members[usize::from(ix)];
            if !m.serves() {
                self.relocate(sid, i, ix)?;
            } else if m.is_revived()
                && let Err(e) = self.relocate(sid, i, ix)
            {
                tracing::debug!(member = %m.name, error = %e, "coded pool: span of a revived member sealed where it is");
            }
        }
        if self.hold(sid, &members) {
            return Ok(false);
        }
        // The layout: live slots end to end (slots that died before now are left out).
        let (shards, offsets, data_members, gone) = {
            let l = self.layout.read();
            let Some(st) = l.stripes.get(&sid) else {
                return Ok(true);
            };
            let mut shards = Vec::with_capacity(st.spans.len());
            let mut offsets = Vec::with_capacity(st.spans.len());
            let mut gone = Vec::new();
            for sp in &st.spans {
                let buf = sp.buf.as_deref().unwrap_or_default();
                let mut shard = Vec::new();
                let mut offs = Vec::with_capacity(sp.slots.len());
                for s in &sp.slots {
                    if s.state == SlotState::Gone {
                        gone.push((sp.member, s.key));
                        offs.push(None);
                        continue;
                    }
                    offs.push(Some(shard.len() as u32));
                    shard.extend_from_slice(&buf[s.off as usize..(s.off + s.len) as usize]);
                }
                shards.push(shard);
                offsets.push(offs);
            }
            (shards, offsets, st.members(), gone)
        };
        let shard_len = shards.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut shards = shards;
        for s in &mut shards {
            s.resize(shard_len, 0);
        }
        let parity = self.write_parity(&shards, &data_members, self.m)?;
        let freed = {
            let mut l = self.layout.write();
            let mut held = 0;
            let Some(st) = l.stripes.get_mut(&sid) else {
                drop(l);
                self.free_keys(parity_page_keys(&parity, shard_len));
                return Ok(true);
            };
            for (sp, offs) in st.spans.iter_mut().zip(&offsets) {
                for (s, off) in sp.slots.iter_mut().zip(offs) {
                    match off {
                        Some(o) => s.off = *o,
                        None => s.state = SlotState::Gone,
                    }
                }
                if let Some(buf) = sp.buf.take() {
                    held += buf.len() as u64;
                }
            }
            st.parity = parity;
            st.shard_len = shard_len;
            st.phase = Phase::Sealed;
            l.unsealed_bytes -= held;
            let mut freed = gone;
            freed.extend(l.reap(sid));
            freed
        };
        self.free_keys(freed);
        Ok(true)
    }

    /// Whether full stripe `sid` stays in the client for now: fewer than `m` members outside
    /// it can take its parity, and the client holds at most
    /// [`CodingOptions::hold_unsealed`](super::CodingOptions::hold_unsealed) of unsealed data.
    /// Sealing it with less parity would leave it unable to survive `m` failures until repair
    /// adds the rest; held, its client copy keeps it whole through any number of them.
    fn hold(&self, sid: StripeId, members: &[Arc<Member>]) -> bool {
        let (room, unsealed) = {
            let l = self.layout.read();
            let Some(st) = l.stripes.get(&sid) else {
                return false;
            };
            let len = st
                .spans
                .iter()
                .map(|s| s.buf.as_ref().map_or(0, Vec::len))
                .max()
                .unwrap_or(0);
            (room_for(members, &st.members(), len), l.unsealed_bytes)
        };
        if room >= self.m {
            if self.holding.swap(false, Ordering::Relaxed) {
                tracing::info!("coded pool: members for full parity again; held stripes seal");
            }
            return false;
        }
        let hold = unsealed <= self.opts.hold_unsealed as u64;
        if hold && !self.holding.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                want = self.m,
                room,
                unsealed,
                "coded pool: too few members for full parity; full stripes stay in the client"
            );
        }
        hold
    }

    /// Encodes `want` parity spans of `shards` (or as many as there are members outside
    /// `exclude`) and writes each to its own member. Returns the (member, key) of each, in
    /// code order.
    pub(crate) fn write_parity(
        &self,
        shards: &[Vec<u8>],
        exclude: &[Ix],
        want: usize,
    ) -> Result<Vec<(Ix, Key)>, BackendError> {
        let shard_len = shards.first().map_or(0, Vec::len);
        for _ in 0..ATTEMPTS {
            let members = self.pool.members();
            let placed = choose(&members, exclude, want, shard_len, &self.pool.dice);
            let short = placed.len() < want;
            // Once per spell of too few members, not once per stripe sealed during it.
            if short && !self.parity_short.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    want,
                    got = placed.len(),
                    "coded pool: too few members for full parity; repair adds the rest later"
                );
            } else if !short && self.parity_short.swap(false, Ordering::Relaxed) {
                tracing::info!("coded pool: full parity again for new stripes");
            }
            let parity = self.codec.encode(shards, placed.len())?;
            let pages = parity_pages(shard_len);
            let keys: Vec<Key> = {
                let mut l = self.layout.write();
                placed.iter().map(|_| l.keys(pages)).collect()
            };
            let work: Vec<(Ix, usize)> = placed.iter().copied().zip(0..).collect();
            let parallel = work.len() > 1;
            let results = fan_out(&members, work, parallel, &|m, p: usize| {
                let puts: Vec<(u64, &[u8])> = (0..pages)
                    .map(|i| {
                        let end = ((i + 1) * PARITY_PAGE).min(parity[p].len());
                        let start = (i * PARITY_PAGE).min(end);
                        (keys[p] + i as Key, &parity[p][start..end])
                    })
                    .collect();
                m.backend.put_many(&puts)
            });
            let mut failed = false;
            for (ix, r) in results {
                match r {
                    Ok(()) => {}
                    Err(e) if is_member_failure(&e) => {
                        self.pool.mark_down(&members, ix, &e);
                        failed = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            let written: Vec<(Ix, Key)> = placed.into_iter().zip(keys).collect();
            if !failed {
                if short {
                    self.counters.sealed_short.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(written);
            }
            self.free_keys(parity_page_keys(&written, shard_len));
        }
        Err(unavailable("parity"))
    }

    /// Seals every stripe that is full with no write in flight, or open and idle for
    /// [`CodingOptions::seal_after`](super::CodingOptions::seal_after) (every unsealed one
    /// with no write in flight, with `all`).
    pub(crate) fn seal_idle(&self, all: bool) {
        let ready: Vec<StripeId> = {
            let mut l = self.layout.write();
            let after = self.opts.seal_after;
            let open = l.open;
            let ids: Vec<StripeId> = l
                .stripes
                .iter()
                .filter(|(_, st)| {
                    st.phase == Phase::Open
                        && st.pending == 0
                        && (all || st.full || st.opened.elapsed() >= after)
                })
                .map(|(&sid, _)| sid)
                .collect();
            for sid in &ids {
                if open == Some(*sid) {
                    l.open = None;
                }
                if let Some(st) = l.stripes.get_mut(sid) {
                    st.full = true;
                    st.phase = Phase::Sealing;
                }
            }
            ids
        };
        for sid in ready {
            if let Err(e) = self.seal(sid) {
                tracing::warn!(error = %e, "coded pool: stripe left unsealed");
            }
        }
    }
}
