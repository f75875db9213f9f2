//! The rewrites of a lazy query: predicate pushdown, projection pushdown, then row limits.

use super::names::{names, right_outputs};
use super::{Plan, columns_of};
use crate::dsl::{Expr, JoinType};

/// The plan with filters moved into the scans, scans narrowed to the columns read, and the
/// scans under a `head` stopped after its rows.
pub(super) fn optimize(plan: Plan) -> Plan {
    limits(project(push_filters(plan, Vec::new()), None))
}

fn refs(e: &Expr) -> Vec<String> {
    let mut v = Vec::new();
    columns_of(e, &mut v);
    v
}

/// `input` under the filters `pending` (applied in order).
fn filtered(input: Plan, pending: Vec<Expr>) -> Plan {
    pending
        .into_iter()
        .fold(input, |p, e| Plan::Filter(Box::new(p), e))
}

/// Moves the filters `pending` (which sit above `plan`) and those inside `plan` as far down as
/// they keep their meaning.
fn push_filters(plan: Plan, mut pending: Vec<Expr>) -> Plan {
    match plan {
        Plan::Filter(input, p) => {
            // The inner filter runs first.
            pending.insert(0, p);
            push_filters(*input, pending)
        }
        Plan::Scan(mut s) => {
            s.predicates.extend(pending);
            Plan::Scan(s)
        }
        Plan::Frame(df) => filtered(Plan::Frame(df), pending),
        // A stable sort keeps the order of the rows a filter keeps.
        Plan::Sort {
            input,
            by,
            descending,
        } => Plan::Sort {
            input: Box::new(push_filters(*input, pending)),
            by,
            descending,
        },
        Plan::WithColumns(input, exprs) => {
            let made: Vec<String> = exprs.iter().map(Expr::output_name).collect();
            let (down, up): (Vec<Expr>, Vec<Expr>) = pending
                .into_iter()
                .partition(|p| refs(p).iter().all(|c| !made.contains(c)));
            let input = push_filters(*input, down);
            filtered(Plan::WithColumns(Box::new(input), exprs), up)
        }
        Plan::Select(input, exprs) => {
            let agg = exprs.iter().any(Expr::is_aggregation);
            let passed = |c: &String| exprs.iter().any(|e| matches!(e, Expr::Column(n) if n == c));
            let (down, up): (Vec<Expr>, Vec<Expr>) = pending
                .into_iter()
                .partition(|p| !agg && refs(p).iter().all(passed));
            let input = push_filters(*input, down);
            filtered(Plan::Select(Box::new(input), exprs), up)
        }
        Plan::GroupBy { input, keys, aggs } => {
            let input = Box::new(push_filters(*input, Vec::new()));
            filtered(Plan::GroupBy { input, keys, aggs }, pending)
        }
        Plan::Head(input, n) => {
            let input = Box::new(push_filters(*input, Vec::new()));
            filtered(Plan::Head(input, n), pending)
        }
        // The rows of one key all pass or all fail a filter on key columns only.
        Plan::Unique(input, subset) => {
            let (down, up): (Vec<Expr>, Vec<Expr>) = pending
                .into_iter()
                .partition(|p| subset.is_empty() || refs(p).iter().all(|c| subset.contains(c)));
            let input = push_filters(*input, down);
            filtered(Plan::Unique(Box::new(input), subset), up)
        }
        Plan::Join {
            left,
            right,
            left_on,
            right_on,
            how,
        } => {
            let (ln, rn) = (names(&left), names(&right));
            let outs = match (&ln, &rn) {
                (Some(l), Some(r)) => right_outputs(l, r, &right_on),
                _ => Vec::new(),
            };
            let (mut to_left, mut to_right, mut up) = (Vec::new(), Vec::new(), Vec::new());
            for p in pending {
                let r = refs(&p);
                // A left row's output rows all pass or all fail a filter on left columns; for an
                // inner join, the same holds for right rows (a left join keeps unmatched rows).
                if ln.as_ref().is_some_and(|l| r.iter().all(|c| l.contains(c))) {
                    to_left.push(p);
                } else if how == JoinType::Inner
                    && !outs.is_empty()
                    && r.iter()
                        .all(|c| outs.iter().any(|(o, src)| o == c && o == src))
                {
                    to_right.push(p);
                } else {
                    up.push(p);
                }
            }
            let join = Plan::Join {
                left: Box::new(push_filters(*left, to_left)),
                right: Box::new(push_filters(*right, to_right)),
                left_on,
                right_on,
                how,
            };
            filtered(join, up)
        }
    }
}

/// What each side of a join must load so that the join's output has the columns `need` under
/// the same names; `(None, None)` when that cannot be told.
fn join_needs(
    need: &[String],
    ln: &[String],
    rn: &[String],
    left_on: &[String],
    right_on: &[String],
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let push = |v: &mut Vec<String>, c: &String| {
        if !v.contains(c) {
            v.push(c.clone());
        }
    };
    let outs = right_outputs(ln, rn, right_on);
    let mut r = Vec::new();
    right_on.iter().for_each(|c| push(&mut r, c));
    let mut l = Vec::new();
    left_on.iter().for_each(|c| push(&mut l, c));
    for (o, src) in &outs {
        if need.contains(o) {
            push(&mut r, src);
            // The left name that makes this column `_right` stays, so that its name does.
            if ln.contains(src) {
                push(&mut l, src);
            }
        }
    }
    for c in ln.iter().filter(|c| need.contains(c)) {
        push(&mut l, c);
    }
    let narrowed = right_outputs(&l, &r, right_on);
    let same = outs
        .iter()
        .filter(|(o, _)| need.contains(o))
        .all(|x| narrowed.contains(x));
    if same {
        (Some(l), Some(r))
    } else {
        (None, None)
    }
}

/// Adds the columns `e` reads to `need`.
fn add(need: &mut Vec<String>, es: &[Expr]) {
    for e in es {
        columns_of(e, need);
    }
}

/// Narrows the scans under `plan` to the columns read; `need` is what the steps above read of
/// `plan`'s output (`None`: everything).
fn project(plan: Plan, need: Option<Vec<String>>) -> Plan {
    match plan {
        Plan::Scan(mut s) => {
            if let Some(mut need) = need {
                add(&mut need, &s.predicates);
                // A scan that reads no column still has to count rows: load them all.
                if !need.is_empty() {
                    s.columns = Some(match s.columns.take() {
                        Some(own) => own.into_iter().filter(|c| need.contains(c)).collect(),
                        None => need,
                    });
                }
            }
            Plan::Scan(s)
        }
        Plan::Frame(df) => Plan::Frame(df),
        Plan::Filter(input, p) => {
            let need = need.map(|mut n| {
                columns_of(&p, &mut n);
                n
            });
            Plan::Filter(Box::new(project(*input, need)), p)
        }
        Plan::Select(input, exprs) => {
            let mut n = Vec::new();
            add(&mut n, &exprs);
            Plan::Select(Box::new(project(*input, Some(n))), exprs)
        }
        Plan::WithColumns(input, exprs) => {
            let need = need.map(|n| {
                let made: Vec<String> = exprs.iter().map(Expr::output_name).collect();
                let mut n: Vec<String> = n.into_iter().filter(|c| !made.contains(c)).collect();
                add(&mut n, &exprs);
                n
            });
            Plan::WithColumns(Box::new(project(*input, need)), exprs)
        }
        Plan::GroupBy { input, keys, aggs } => {
            let mut n = Vec::new();
            add(&mut n, &keys);
            add(&mut n, &aggs);
            let input = Box::new(project(*input, Some(n)));
            Plan::GroupBy { input, keys, aggs }
        }
        Plan::Sort {
            input,
            by,
            descending,
        } => {
            let need = need.map(|mut n| {
                for b in &by {
                    if !n.contains(b) {
                        n.push(b.clone());
                    }
                }
                n
            });
            Plan::Sort {
                input: Box::new(project(*input, need)),
                by,
                descending,
            }
        }
        Plan::Head(input, n) => Plan::Head(Box::new(project(*input, need)), n),
        // Distinct rows over all columns need all columns.
        Plan::Unique(input, subset) => {
            let need = need.filter(|_| !subset.is_empty()).map(|mut n| {
                for c in &subset {
                    if !n.contains(c) {
                        n.push(c.clone());
                    }
                }
                n
            });
            Plan::Unique(Box::new(project(*input, need)), subset)
        }
        Plan::Join {
            left,
            right,
            left_on,
            right_on,
            how,
        } => {
            let (l, r) = match (need, names(&left), names(&right)) {
                (Some(need), Some(ln), Some(rn)) => {
                    join_needs(&need, &ln, &rn, &left_on, &right_on)
                }
                _ => (None, None),
            };
            Plan::Join {
                left: Box::new(project(*left, l)),
                right: Box::new(project(*right, r)),
                left_on,
                right_on,
                how,
            }
        }
    }
}

/// Applies `f` to each input of `plan`.
fn map_inputs(plan: Plan, f: &mut impl FnMut(Plan) -> Plan) -> Plan {
    let mut g = |b: Box<Plan>| Box::new(f(*b));
    match plan {
        p @ (Plan::Scan(_) | Plan::Frame(_)) => p,
        Plan::Filter(i, e) => Plan::Filter(g(i), e),
        Plan::Select(i, e) => Plan::Select(g(i), e),
        Plan::WithColumns(i, e) => Plan::WithColumns(g(i), e),
        Plan::GroupBy { input, keys, aggs } => Plan::GroupBy {
            input: g(input),
            keys,
            aggs,
        },
        Plan::Sort {
            input,
            by,
            descending,
        } => Plan::Sort {
            input: g(input),
            by,
            descending,
        },
        Plan::Join {
            left,
            right,
            left_on,
            right_on,
            how,
        } => Plan::Join {
            left: g(left),
            right: g(right),
            left_on,
            right_on,
            how,
        },
        Plan::Head(i, n) => Plan::Head(g(i), n),
        Plan::Unique(i, s) => Plan::Unique(g(i), s),
    }
}

/// Stops the scans under each `head` (through steps that keep rows one for one) after its
/// rows. The `head` stays: the rows are the same.
fn limits(plan: Plan) -> Plan {
    match map_inputs(plan, &mut limits) {
        Plan::Head(i, n) => Plan::Head(Box::new(sink(*i, n as u64)), n),
        p => p,
    }
}

/// `plan` reading at most the first `n` rows of its scan, where the first `n` output rows
/// need no more.
fn sink(plan: Plan, n: u64) -> Plan {
    let row_wise = |e: &[Expr]| !e.iter().any(Expr::is_aggregation);
    match plan {
        Plan::Scan(mut s) if s.predicates.is_empty() => {
            s.limit = Some(s.limit.map_or(n, |m| m.min(n)));
            Plan::Scan(s)
        }
        Plan::WithColumns(i, e) if row_wise(&e) => Plan::WithColumns(Box::new(sink(*i, n)), e),
        Plan::Select(i, e) if row_wise(&e) && !e.is_empty() => {
            Plan::Select(Box::new(sink(*i, n)), e)
        }
        Plan::Head(i, m) => Plan::Head(Box::new(sink(*i, n.min(m as u64))), m),
        p => p,
    }
}
