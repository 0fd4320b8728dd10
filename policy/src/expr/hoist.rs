//! Hoisting the parts of an expression that depend only on where a resource runs.
//!
//! Rules often iterate over `pools` (`pools.all(p, p.jurisdiction in …)`), and in a review
//! thousands of endpoints share one burst policy and so the same pools. A subexpression that reads
//! nothing but `pools`, `policy` and `now` has one value per placement: it is cut out of the
//! expression at compile time, replaced by a variable, and evaluated once per placement.

use std::sync::atomic::{AtomicU64, Ordering};

use cel::IdedExpr;
use cel::common::ast::Expr;

use super::syntax::{children, children_mut};

/// The variables whose values are the same for every resource of a placement.
const PLACEMENT_VARIABLES: &[&str] = &["pools", "policy", "now"];

/// A subexpression cut out of an expression, and the variable that stands for it.
#[derive(Debug)]
pub struct Hoisted {
    /// The variable in the rewritten expression.
    pub name: String,
    /// The subexpression.
    pub expr: IdedExpr,
}

/// Replaces each largest subexpression that reads only placement variables and iterates (the
/// cost worth saving is in comprehensions) with a fresh variable; returns the subexpressions.
pub fn hoist(expr: &mut IdedExpr, next_id: &mut u64) -> Vec<Hoisted> {
    let mut out = Vec::new();
    visit(expr, next_id, &mut out);
    out
}

fn visit(expr: &mut IdedExpr, next_id: &mut u64, out: &mut Vec<Hoisted>) {
    if iterates(expr) && reads_only_placement(expr, &mut Vec::new()) {
        // Unique across programs, so that no rule's variable can shadow another's.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("__gpucap_placed_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        *next_id += 1;
        let stand_in = IdedExpr {
            id: *next_id,
            expr: Expr::Ident(name.clone()),
        };
        let expr = std::mem::replace(expr, stand_in);
        out.push(Hoisted { name, expr });
        return;
    }
    for child in children_mut(expr) {
        visit(child, next_id, out);
    }
}

fn iterates(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Comprehension(_) => true,
        _ => children(expr).into_iter().any(iterates),
    }
}

/// Whether every name `expr` reads is a placement variable or bound by a comprehension within it.
fn reads_only_placement(expr: &IdedExpr, bound: &mut Vec<String>) -> bool {
    match &expr.expr {
        Expr::Ident(name) => {
            PLACEMENT_VARIABLES.contains(&name.as_str()) || bound.iter().any(|b| b == name)
        }
        Expr::Comprehension(c) => {
            if !reads_only_placement(&c.iter_range, bound)
                || !reads_only_placement(&c.accu_init, bound)
            {
                return false;
            }
            let outer = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            let inner = [&c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .all(|e| reads_only_placement(e, bound));
            bound.truncate(outer);
            inner
        }
        _ => children(expr)
            .into_iter()
            .all(|e| reads_only_placement(e, bound)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hoisted(src: &str) -> Vec<String> {
        let mut expr = cel::Env::stdlib()
            .parser()
            .parse_with_source_info(src)
            .unwrap()
            .0;
        let mut next_id = 10_000;
        hoist(&mut expr, &mut next_id)
            .into_iter()
            .map(|h| format!("{:?}", h.expr.expr).chars().take(40).collect())
            .collect()
    }

    #[test]
    fn only_placement_comprehensions_are_hoisted() {
        assert_eq!(
            hoisted("resource.x > 1 && pools.all(p, p.region.startsWith('eu'))").len(),
            1
        );
        assert_eq!(hoisted("pools.exists(p, p.name == resource.name)").len(), 0);
        assert_eq!(
            hoisted("pools.size() > 1").len(),
            0,
            "no iteration, nothing saved"
        );
        // `x` is bound by the outer comprehension, which reads `resource`: the inner one cannot go.
        assert_eq!(
            hoisted("resource.tags.all(x, pools.exists(p, p.name == x))").len(),
            0
        );
        assert_eq!(
            hoisted("policy.base_pools.all(n, pools.exists(p, p.name == n)) ? 1 : resource.y")
                .len(),
            1
        );
    }
}
