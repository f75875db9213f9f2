//! Running one call per member in parallel.

use std::sync::Arc;

use super::member::Member;
use super::table::Ix;

/// Runs `f` for each `(member, work)` group and returns the results in group order: in parallel
/// when `parallel` (the first group in the calling thread), else one after another.
pub(crate) fn fan_out<T: Send, R: Send>(
    members: &[Arc<Member>],
    groups: Vec<(Ix, T)>,
    parallel: bool,
    f: &(dyn Fn(&Member, T) -> R + Sync),
) -> Vec<(Ix, R)> {
    let run = |ix: Ix, work: T| {
        let m = &members[usize::from(ix)];
        (ix, m.app_call(|| f(m, work)))
    };
    if groups.len() <= 1 || !parallel {
        return groups.into_iter().map(|(ix, w)| run(ix, w)).collect();
    }
    std::thread::scope(|s| {
        let mut it = groups.into_iter();
        let first = it.next();
        let handles: Vec<_> = it.map(|(ix, w)| s.spawn(move || run(ix, w))).collect();
        let mut out = Vec::with_capacity(handles.len() + 1);
        if let Some((ix, w)) = first {
            out.push(run(ix, w));
        }
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    })
}
