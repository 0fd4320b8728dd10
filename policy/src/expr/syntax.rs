//! Walking CEL syntax trees: the children of a node, to read or to rewrite, and measures of a tree.

use std::collections::BTreeSet;

use cel::IdedExpr;
use cel::common::ast::{EntryExpr, Expr};

/// The direct subexpressions of `expr`.
pub fn children(expr: &IdedExpr) -> Vec<&IdedExpr> {
    match &expr.expr {
        Expr::Call(c) => c.target.iter().map(|t| &**t).chain(c.args.iter()).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => entries(&m.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Select(s) => vec![&s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

/// The direct subexpressions of `expr`, to rewrite.
pub fn children_mut(expr: &mut IdedExpr) -> Vec<&mut IdedExpr> {
    match &mut expr.expr {
        Expr::Call(c) => c
            .target
            .iter_mut()
            .map(|t| &mut **t)
            .chain(c.args.iter_mut())
            .collect(),
        Expr::Comprehension(c) => vec![
            &mut c.iter_range,
            &mut c.accu_init,
            &mut c.loop_cond,
            &mut c.loop_step,
            &mut c.result,
        ],
        Expr::List(l) => l.elements.iter_mut().collect(),
        Expr::Map(m) => m.entries.iter_mut().flat_map(entry_mut).collect(),
        Expr::Struct(s) => s.entries.iter_mut().flat_map(entry_mut).collect(),
        Expr::Select(s) => vec![&mut s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn entry_mut(e: &mut cel::common::ast::IdedEntryExpr) -> Vec<&mut IdedExpr> {
    match &mut e.expr {
        EntryExpr::MapEntry(m) => vec![&mut m.key, &mut m.value],
        EntryExpr::StructField(f) => vec![&mut f.value],
    }
}

fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&IdedExpr> {
    entries
        .iter()
        .flat_map(|e| match &e.expr {
            EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
            EntryExpr::StructField(f) => vec![&f.value],
        })
        .collect()
}

/// Adds every identifier the tree names to `names`: the variables it reads, and the names its
/// comprehensions bind.
pub fn identifiers(expr: &IdedExpr, names: &mut BTreeSet<String>) {
    if let Expr::Ident(name) = &expr.expr {
        names.insert(name.clone());
    }
    for child in children(expr) {
        identifiers(child, names);
    }
}

/// How deep the tree is.
pub fn depth(expr: &IdedExpr) -> usize {
    1 + children(expr).into_iter().map(depth).max().unwrap_or(0)
}

/// The largest node id in the tree: new nodes are numbered after it.
pub fn max_id(expr: &IdedExpr) -> u64 {
    children(expr)
        .into_iter()
        .map(max_id)
        .fold(expr.id, u64::max)
}
