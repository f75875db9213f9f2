//! The rewrites of a lazy query: predicate pushdown, then projection pushdown.

use super::{Plan, columns_of};
use crate::dsl::Expr;

/// The plan with filters moved into the scans and scans narrowed to the columns read.
pub(super) fn optimize(plan: Plan) -> Plan {
    project(push_filters(plan, Vec::new()), None)
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
    }
}
