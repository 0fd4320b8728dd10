//! Compiling an expression: its size bounded before parsing, its depth after, its reads checked,
//! then rewritten for evaluation (steps counted, selections as indexing, placement-only parts
//! hoisted).

use cel::IdedExpr;
use cel::common::ast::{CallExpr, Expr};

use super::check::{Checker, ExprProblem, Scope};
use super::eval::{Compiled, STEP_FUNCTION, env};
use super::syntax::{children_mut, depth, max_id};
use super::{hoist, matches};
use crate::schema::Shape;

/// Bounds on rules' expressions.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Characters an expression may have.
    pub max_length: usize,
    /// Depth of the expression tree, after macros are expanded.
    pub max_depth: usize,
    /// Comprehension steps (`all`, `exists`, `map`, `filter`, … iterations) one evaluation may take.
    pub max_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_length: 8192,
            max_depth: 64,
            max_steps: 100_000,
        }
    }
}

/// Compiles and checks `source` against `scope`. Must run on a large stack ([`super::on_large_stack`]).
pub fn compile(source: &str, scope: &Scope, limits: &Limits) -> Result<Compiled, Vec<ExprProblem>> {
    let chars = source.chars().count();
    if chars > limits.max_length {
        return Err(vec![
            ExprProblem::new(
                0,
                chars,
                format!(
                    "expression is {chars} characters long; the limit is {}",
                    limits.max_length
                ),
            )
            .hint("split the rule, or move shared logic into the rule's `when`"),
        ]);
    }
    if source.trim().is_empty() {
        return Err(vec![ExprProblem::new(0, chars, "empty expression")]);
    }
    if let Some(at) = source.find("${") {
        let start = source[..at].chars().count();
        return Err(vec![
            ExprProblem::new(start, start + 2, "`${` is HCL interpolation, not CEL")
                .hint("rules are CEL: write `'text ' + resource.name` instead of `\"text ${resource.name}\"`"),
        ]);
    }
    let (mut expr, info) = env()
        .parser()
        .parse_with_source_info(source)
        .map_err(|errors| {
            errors
                .errors
                .iter()
                .map(|e| {
                    let start = char_offset_of(source, e.pos.0, e.pos.1);
                    ExprProblem::new(start, start + 1, parse_message(&e.msg))
                })
                .collect::<Vec<_>>()
        })?;
    let span = |id: u64| -> (usize, usize) {
        info.offset_for(id).map_or((0, chars), |(s, e)| {
            (s as usize, (e as usize).max(s as usize + 1))
        })
    };
    let depth = depth(&expr);
    if depth > limits.max_depth {
        return Err(vec![
            ExprProblem::new(
                0,
                chars,
                format!(
                    "expression nests {depth} levels deep; the limit is {}",
                    limits.max_depth
                ),
            )
            .hint("split it into simpler conditions"),
        ]);
    }
    let mut checker = Checker {
        span: &span,
        problems: Vec::new(),
        resource_paths: Vec::new(),
        subject: &scope.subject,
    };
    let mut vars: Vec<(String, Shape)> = scope.vars.clone().into_iter().collect();
    checker.check(&expr, &mut vars);
    if !checker.problems.is_empty() {
        return Err(checker.problems);
    }
    let resource_paths = checker.resource_paths;
    let mut next_id = max_id(&expr) + 1;
    count_steps(&mut expr, &mut next_id);
    matches::rewrite(&mut expr);
    selects_as_index(&mut expr, &mut next_id);
    let mut rewritten = expr.clone();
    let hoisted = hoist::hoist(&mut rewritten, &mut next_id);
    Ok(Compiled {
        source: source.to_string(),
        expr,
        placed: (!hoisted.is_empty()).then_some((rewritten, hoisted)),
        resource_paths,
    })
}

/// The character offset of a parser position (1-based line, 0-based column).
fn char_offset_of(source: &str, line: isize, column: isize) -> usize {
    let line = usize::try_from(line).unwrap_or(1).max(1);
    let column = usize::try_from(column).unwrap_or(0);
    let before: usize = source
        .split_inclusive('\n')
        .take(line - 1)
        .map(|l| l.chars().count())
        .sum();
    (before + column).min(source.chars().count().saturating_sub(1))
}

/// The parser's messages come from ANTLR; make the common ones read as sentences.
fn parse_message(msg: &str) -> String {
    let msg = msg.strip_prefix("Syntax error: ").unwrap_or(msg);
    format!("CEL syntax error: {msg}")
}

/// Rewrites field selections (`a.b`) as indexing (`a['b']`), which means the same on the maps
/// rules read: the interpreter resolves a selection chain as a qualified name first, trying
/// every prefix of `a.b.c` as a variable and as a type, which costs more than the lookup itself.
/// `has(a.b)` stays a selection: it tests presence.
fn selects_as_index(expr: &mut IdedExpr, next_id: &mut u64) {
    for child in children_mut(expr) {
        selects_as_index(child, next_id);
    }
    let Expr::Select(select) = &mut expr.expr else {
        return;
    };
    if select.test {
        return;
    }
    *next_id += 1;
    let key = IdedExpr {
        id: *next_id,
        expr: Expr::Literal(cel::common::ast::LiteralValue::String(
            std::mem::take(&mut select.field).into(),
        )),
    };
    let operand = std::mem::take(&mut *select.operand);
    expr.expr = Expr::Call(CallExpr {
        func_name: cel::common::ast::operators::INDEX.into(),
        target: None,
        args: vec![operand, key],
    });
}

/// Wraps every comprehension's loop condition in the counting function. The condition is
/// evaluated before every element and its error ends the loop at once; the step is left as the
/// macro wrote it, because the interpreter recognises `accu && p` and `accu || p` there and, as
/// the specification says, lets a later `false` (`all`) or `true` (`exists`) override an error.
fn count_steps(expr: &mut IdedExpr, next_id: &mut u64) {
    for child in children_mut(expr) {
        count_steps(child, next_id);
    }
    if let Expr::Comprehension(c) = &mut expr.expr {
        *next_id += 1;
        c.loop_cond = IdedExpr {
            id: *next_id,
            expr: Expr::Call(CallExpr {
                func_name: STEP_FUNCTION.into(),
                target: None,
                args: vec![std::mem::take(&mut c.loop_cond)],
            }),
        };
    }
}
