//! Repair: rebuilds the spans of sealed stripes that sit on members that are gone (or leaving),
//! and adds parity to stripes sealed with too little of it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Engine;
use super::layout::{Key, Phase, SlotState, Stripe, StripeId, parity_page_keys, parity_pages};
use crate::backend::BackendError;
use crate::backend::pool::fanout::fan_out;
use crate::backend::pool::member::{Member, choose, is_member_failure};
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

impl Engine {
    /// Whether sealed stripe `st` has a span on a member that does not take new data, or
    /// fewer than `m` parity spans.
    pub(crate) fn needs_rebuild(&self, st: &Stripe, members: &[Arc<Member>]) -> bool {
        st.parity.len() < self.m
            || st
                .members()
                .iter()
                .any(|&ix| !members.get(usize::from(ix)).is_some_and(|m| m.takes_new()))
    }

    /// Rebuilds every stripe that needs it.
    pub(crate) fn rebuild_all(&self) {
        let members = self.pool.members();
        let todo: Vec<StripeId> = {
            let l = self.layout.lock();
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

    /// Rebuilds stripe `sid`.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when fewer than `k` of its spans can be read, or there is
    /// no member to put a lost span on.
    pub(crate) fn rebuild(&self, sid: StripeId) -> Result<(), BackendError> {
        let snap = {
            let mut l = self.layout.lock();
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
            let mut l = self.layout.lock();
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
        // Fetch every span that can be read (a draining member can still be read).
        let mut work: Vec<(Ix, usize)> = Vec::new();
        for (j, (ix, _)) in snap.spans.iter().enumerate() {
            if serves(*ix) {
                work.push((*ix, j));
            }
        }
        for (p, (ix, _)) in snap.parity.iter().enumerate() {
            if serves(*ix) {
                work.push((*ix, k + p));
            }
        }
        let results = fan_out(&members, work, true, &|m, j: usize| {
            let r = if j < k {
                let slots = &snap.spans[j].1;
                let keys: Vec<Key> = slots.iter().map(|s| s.0).collect();
                m.backend.get_many(&keys).map(|vals| {
                    let mut v = vec![0u8; len];
                    for ((_, off, _), val) in slots.iter().zip(vals) {
                        let off = *off as usize;
                        let end = (off + val.len()).min(len);
                        if off < end {
                            v[off..end].copy_from_slice(&val[..end - off]);
                        }
                    }
                    v
                })
            } else {
                let first = snap.parity[j - k].1;
                let keys: Vec<Key> = (first..first + parity_pages(len) as Key).collect();
                m.backend.get_many(&keys).map(|pages| {
                    let mut p = pages.concat();
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
                Err(e) if is_member_failure(&e) => self.pool.mark_down(ix, &e),
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
        self.codec.reconstruct(k, &mut shards)?;
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
        for (j, (ix, slots)) in snap.spans.iter().enumerate() {
            if stays(*ix) {
                continue;
            }
            let Some(&to) = choose(&members, &keep, 1, len, &self.pool.dice).first() else {
                return Err(BackendError::Unavailable {
                    id: 0,
                    servers: "no member outside the stripe for a lost span".into(),
                });
            };
            let puts: Vec<(u64, &[u8])> = slots
                .iter()
                .map(|&(key, off, l)| (key, &data[j][off as usize..(off + l) as usize]))
                .collect();
            match members[usize::from(to)].backend.put_many(&puts) {
                Ok(()) => {}
                Err(e) => {
                    if is_member_failure(&e) {
                        self.pool.mark_down(to, &e);
                    }
                    return Err(e);
                }
            }
            wrote += puts.iter().map(|p| p.1.len() as u64).sum::<u64>();
            keep.push(to);
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
            let mut l = self.layout.lock();
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
