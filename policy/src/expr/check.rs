//! Checking an expression before it runs: every variable and attribute it reads is checked against
//! the shapes of the variables in scope, with the location and a "did you mean" for each problem.

use std::collections::BTreeMap;

use cel::IdedExpr;
use cel::common::ast::{CallExpr, Expr};

use super::syntax::children;
use crate::schema::{Scalar, Shape};
use crate::source::did_you_mean;

/// Where in an expression a problem is: character offsets into its source.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprProblem {
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// What is wrong.
    pub message: String,
    /// What would be valid.
    pub hint: Option<String>,
}

impl ExprProblem {
    pub(super) fn new(start: usize, end: usize, message: impl Into<String>) -> ExprProblem {
        ExprProblem {
            start,
            end,
            message: message.into(),
            hint: None,
        }
    }

    pub(super) fn hint(mut self, hint: impl Into<String>) -> ExprProblem {
        self.hint = Some(hint.into());
        self
    }
}

/// The variables a rule can read and their shapes.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Variable name → shape.
    pub vars: BTreeMap<String, Shape>,
    /// What the shapes describe, for messages (`gpucap_inference_endpoint`).
    pub subject: String,
}

/// Namespaces of the extension functions (`math.greatest`, `strings.quote`, …).
const NAMESPACES: &[&str] = &["math", "strings", "lists", "optional", "base64"];
/// Functions gpucap adds for its own rewrites start with this; rules may not call them.
const RESERVED_PREFIX: &str = "__gpucap_";
/// The type names CEL defines as values, for comparing with `type(x)`.
const TYPE_DENOTATIONS: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];
/// Functions rules may not call: `lists.range(n)` builds a list of any size in one step.
const DENIED: &[(&str, &str)] = &[(
    "lists.range",
    "it builds a list of any size in one step; iterate over the data instead",
)];

/// Walks the tree, checking every variable and attribute it reads.
pub(super) struct Checker<'a> {
    /// Where a node is in the source, by id.
    pub span: &'a dyn Fn(u64) -> (usize, usize),
    /// What is wrong so far.
    pub problems: Vec<ExprProblem>,
    /// `resource.a.b` paths read, first one first.
    pub resource_paths: Vec<Vec<String>>,
    /// The resource type the rule judges, for messages.
    pub subject: &'a str,
}

impl Checker<'_> {
    /// Checks `expr` with `vars` in scope (innermost last) and returns its shape.
    pub(super) fn check(&mut self, expr: &IdedExpr, vars: &mut Vec<(String, Shape)>) -> Shape {
        match &expr.expr {
            Expr::Ident(name) => match vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, shape)) => shape.clone(),
                // `type(x) == int`: the standard types are values too (the environment has them).
                None if TYPE_DENOTATIONS.contains(&name.as_str()) => Shape::Any,
                None => {
                    let (s, e) = (self.span)(expr.id);
                    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
                    let mut p = ExprProblem::new(s, e, format!("unknown variable `{name}`"));
                    p = match did_you_mean(name, names.iter().copied()) {
                        Some(m) => p.hint(format!("did you mean `{m}`?")),
                        None => p.hint(format!("rules can read {}", names.join(", "))),
                    };
                    self.problems.push(p);
                    Shape::Any
                }
            },
            Expr::Select(sel) => {
                let operand = self.check(&sel.operand, vars);
                let shape = self.field(expr.id, &operand, &sel.field, &sel.operand);
                if !sel.test {
                    self.note_resource_path(expr);
                }
                shape
            }
            Expr::Call(call) => self.call(expr, call, vars),
            Expr::Comprehension(c) => {
                let range = self.check(&c.iter_range, vars);
                let (first, second) = match &range {
                    Shape::List(inner) => (Shape::Scalar(Scalar::Number), (**inner).clone()),
                    Shape::Map(inner) => (Shape::Scalar(Scalar::String), (**inner).clone()),
                    _ => (Shape::Any, Shape::Any),
                };
                self.check(&c.accu_init, vars);
                let mark = vars.len();
                match &c.iter_var2 {
                    Some(v2) => {
                        vars.push((c.iter_var.clone(), first));
                        vars.push((v2.clone(), second));
                    }
                    // One variable: a list's elements, a map's keys.
                    None => vars.push((
                        c.iter_var.clone(),
                        if matches!(range, Shape::Map(_)) {
                            first
                        } else {
                            second
                        },
                    )),
                }
                vars.push((c.accu_var.clone(), Shape::Any));
                self.check(&c.loop_cond, vars);
                self.check(&c.loop_step, vars);
                vars.truncate(mark);
                vars.push((c.accu_var.clone(), Shape::Any));
                self.check(&c.result, vars);
                vars.truncate(mark);
                Shape::Any
            }
            Expr::List(l) => {
                let shapes: Vec<Shape> = l.elements.iter().map(|e| self.check(e, vars)).collect();
                match shapes.first() {
                    Some(first) if shapes.iter().all(|s| s == first) => {
                        Shape::List(Box::new(first.clone()))
                    }
                    _ => Shape::List(Box::new(Shape::Any)),
                }
            }
            Expr::Map(_) | Expr::Struct(_) => {
                for child in children(expr) {
                    self.check(child, vars);
                }
                Shape::Any
            }
            Expr::Literal(_) | Expr::Unspecified => Shape::Any,
        }
    }

    fn call(&mut self, expr: &IdedExpr, call: &CallExpr, vars: &mut Vec<(String, Shape)>) -> Shape {
        let namespace = match call.target.as_deref() {
            Some(IdedExpr {
                expr: Expr::Ident(ns),
                ..
            }) if NAMESPACES.contains(&ns.as_str()) && !vars.iter().any(|(n, _)| n == ns) => {
                Some(ns.as_str())
            }
            _ => None,
        };
        let qualified = match namespace {
            Some(ns) => format!("{ns}.{}", call.func_name),
            None => call.func_name.clone(),
        };
        if let Some((_, why)) = DENIED.iter().find(|(f, _)| *f == qualified) {
            let (s, e) = (self.span)(expr.id);
            self.problems.push(ExprProblem::new(
                s,
                e,
                format!("`{qualified}` is not available in gpucap rules: {why}"),
            ));
        }
        if call.func_name.starts_with(RESERVED_PREFIX) {
            let (s, e) = (self.span)(expr.id);
            self.problems.push(ExprProblem::new(
                s,
                e,
                format!("`{}` is reserved", call.func_name),
            ));
        }
        // A method's receiver is checked like any operand; a namespace (`math.`) is no value.
        if let (None, Some(t)) = (namespace, call.target.as_deref()) {
            self.check(t, vars);
        }
        let args: Vec<Shape> = call.args.iter().map(|a| self.check(a, vars)).collect();
        match (call.func_name.as_str(), args.as_slice()) {
            // Indexing: `list[i]`, `map[k]`, `object['attr']`.
            ("_[_]", [container, _]) => match (container, &call.args[1].expr) {
                (Shape::List(inner) | Shape::Map(inner), _) => (**inner).clone(),
                (Shape::Object(_), Expr::Literal(cel::common::ast::LiteralValue::String(s))) => {
                    self.field(call.args[1].id, container, s.inner(), &call.args[0])
                }
                _ => Shape::Any,
            },
            _ => Shape::Any,
        }
    }

    /// The shape of `operand.field`, reporting attributes the operand does not have.
    fn field(&mut self, id: u64, operand: &Shape, field: &str, operand_expr: &IdedExpr) -> Shape {
        match operand {
            Shape::Object(fields) => match fields.get(field) {
                Some(shape) => shape.clone(),
                None => {
                    // A selection's node sits on its dot; underline the name after it.
                    let (s, _) = (self.span)(id);
                    let (s, e) = (s + 1, s + 1 + field.chars().count());
                    let what = describe_operand(operand_expr, self.subject);
                    let mut p =
                        ExprProblem::new(s, e, format!("{what} has no attribute `{field}`"));
                    p = match did_you_mean(field, fields.keys().map(String::as_str)) {
                        Some(m) => p.hint(format!("did you mean `{m}`?")),
                        None => p.hint(format!(
                            "its attributes are {}",
                            fields.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    };
                    self.problems.push(p);
                    Shape::Any
                }
            },
            Shape::Map(inner) => (**inner).clone(),
            _ => Shape::Any,
        }
    }

    fn note_resource_path(&mut self, expr: &IdedExpr) {
        let mut segments = Vec::new();
        let mut e = expr;
        loop {
            match &e.expr {
                Expr::Select(s) if !s.test => {
                    segments.push(s.field.clone());
                    e = &s.operand;
                }
                Expr::Ident(name) if name == "resource" => break,
                _ => return,
            }
        }
        segments.reverse();
        // `resource.a.b` also visits `resource.a`: keep only the longest path of each chain.
        if let Some(last) = self.resource_paths.last()
            && segments.starts_with(last)
        {
            self.resource_paths.pop();
        }
        if !self.resource_paths.iter().any(|p| p.starts_with(&segments)) {
            self.resource_paths.push(segments);
        }
    }
}

/// `gpucap_inference_endpoint`, `a pool`, `the burst policy`, `cost` or `this object`, for messages.
fn describe_operand(operand: &IdedExpr, subject: &str) -> String {
    let mut e = operand;
    let mut depth = 0;
    loop {
        match &e.expr {
            Expr::Select(s) => {
                e = &s.operand;
                depth += 1;
            }
            Expr::Ident(name) => {
                return match (name.as_str(), depth) {
                    ("resource" | "prior", 0) => format!("`{subject}`"),
                    ("policy", 0) => "`gpucap_burst_policy`".into(),
                    ("cost", 0) => "`cost`".into(),
                    _ => format!("`{}`", expr_text(operand)),
                };
            }
            _ => return "this object".into(),
        }
    }
}

fn expr_text(e: &IdedExpr) -> String {
    match &e.expr {
        Expr::Ident(n) => n.clone(),
        Expr::Select(s) => format!("{}.{}", expr_text(&s.operand), s.field),
        _ => "…".into(),
    }
}
