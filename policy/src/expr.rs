//! CEL expressions in rules: compiled once with bounds on size and depth, checked against the
//! shapes of the variables they read, and evaluated with a step budget.
//!
//! The `cel` crate has no type checker and no evaluation budget, and its recursive parser and
//! interpreter can exhaust a thread's stack. So: the source length is capped before parsing; the
//! parser's own nesting limit is kept and the tree's depth is checked again after macro expansion;
//! every attribute a rule reads from `resource`, `prior`, `pools`, `policy` and `cost` is checked
//! against the resource schemas here; every comprehension step goes through a counting function
//! that stops evaluation past the budget; and all parsing and evaluation runs on threads with a
//! large stack ([`on_large_stack`]).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{CallExpr, EntryExpr, Expr};
use cel::common::value::CowVal;
use cel::{Context, Env, ExecutionError, IdedExpr, Value};
use serde_json::Value as Json;

use crate::hoist::{self, Hoisted};
use crate::schema::{Scalar, Shape};
use crate::source::did_you_mean;
use crate::value::{self, CelVal};

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
    fn new(start: usize, end: usize, message: impl Into<String>) -> ExprProblem {
        ExprProblem {
            start,
            end,
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> ExprProblem {
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

/// Name of the function every comprehension step passes through, counting steps.
const STEP_FUNCTION: &str = "__gpucap_step";
/// Namespaces of the extension functions (`math.greatest`, `strings.quote`, …).
const NAMESPACES: &[&str] = &["math", "strings", "lists", "optional", "base64"];
/// Functions rules may not call: `lists.range(n)` builds a list of any size in one step.
const DENIED: &[(&str, &str)] = &[(
    "lists.range",
    "it builds a list of any size in one step; iterate over the data instead",
)];

/// A checked, compiled expression, ready to evaluate any number of times.
#[derive(Debug)]
pub struct Compiled {
    /// The expression as written (with step counting).
    expr: IdedExpr,
    /// The same with its placement-only parts replaced by variables, when it has such parts.
    placed: Option<(IdedExpr, Vec<Hoisted>)>,
    /// `resource.a.b` paths the expression reads, first one first: the attribute a finding
    /// concerns when the rule names none.
    pub resource_paths: Vec<Vec<String>>,
}

/// The environment shared by every expression: the standard library, the string, list, math and
/// encoder extensions and the step counter.
pub fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // These only fail on duplicate declarations, which would be a bug caught by every test.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        let _ = env.add_extension(cel::extensions::encoders);
        let _ = env.add_overload(
            STEP_FUNCTION,
            "gpucap_step_dyn",
            vec![cel::common::types::DYN_TYPE],
            count_step,
        );
        Arc::new(env)
    })
    .clone()
}

/// Compiles and checks `source` against `scope`. Must run on a large stack ([`on_large_stack`]).
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
    selects_as_index(&mut expr, &mut next_id);
    let mut rewritten = expr.clone();
    let hoisted = hoist::hoist(&mut rewritten, &mut next_id);
    Ok(Compiled {
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

/// The direct subexpressions of `expr`.
pub(crate) fn children(expr: &IdedExpr) -> Vec<&IdedExpr> {
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
pub(crate) fn children_mut(expr: &mut IdedExpr) -> Vec<&mut IdedExpr> {
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

fn depth(expr: &IdedExpr) -> usize {
    1 + children(expr).into_iter().map(depth).max().unwrap_or(0)
}

fn max_id(expr: &IdedExpr) -> u64 {
    children(expr)
        .into_iter()
        .map(max_id)
        .fold(expr.id, u64::max)
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

/// Wraps every comprehension's step in the counting function.
fn count_steps(expr: &mut IdedExpr, next_id: &mut u64) {
    for child in children_mut(expr) {
        count_steps(child, next_id);
    }
    if let Expr::Comprehension(c) = &mut expr.expr {
        *next_id += 1;
        c.loop_step = IdedExpr {
            id: *next_id,
            expr: Expr::Call(CallExpr {
                func_name: STEP_FUNCTION.into(),
                target: None,
                args: vec![std::mem::take(&mut c.loop_step)],
            }),
        };
    }
}

/// Walks the tree, checking every variable and attribute it reads.
struct Checker<'a> {
    span: &'a dyn Fn(u64) -> (usize, usize),
    problems: Vec<ExprProblem>,
    resource_paths: Vec<Vec<String>>,
    subject: &'a str,
}

impl Checker<'_> {
    /// Checks `expr` with `vars` in scope (innermost last) and returns its shape.
    fn check(&mut self, expr: &IdedExpr, vars: &mut Vec<(String, Shape)>) -> Shape {
        match &expr.expr {
            Expr::Ident(name) => match vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, shape)) => shape.clone(),
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
        if call.func_name == STEP_FUNCTION {
            let (s, e) = (self.span)(expr.id);
            self.problems.push(ExprProblem::new(
                s,
                e,
                format!("`{STEP_FUNCTION}` is reserved"),
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

thread_local! {
    static STEPS: Cell<u64> = const { Cell::new(0) };
    static BUDGET: Cell<u64> = const { Cell::new(u64::MAX) };
}

fn count_step<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let steps = STEPS.with(|s| {
        s.set(s.get() + 1);
        s.get()
    });
    if steps > BUDGET.with(Cell::get) {
        return Err(ExecutionError::function_error(
            "budget",
            format!(
                "evaluation budget of {} steps exceeded",
                BUDGET.with(Cell::get)
            ),
        ));
    }
    args.into_iter()
        .next()
        .ok_or_else(ExecutionError::missing_argument_or_target)
}

/// Why an evaluation gave no usable value.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// CEL's own error (missing key, division by zero, no such overload, …).
    Cel(String),
    /// The step budget ran out.
    Budget(u64),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Cel(m) => write!(f, "{m}"),
            EvalError::Budget(n) => write!(
                f,
                "evaluation budget exceeded: more than {n} comprehension steps"
            ),
        }
    }
}

impl Compiled {
    /// Evaluates against `ctx` with a budget of `max_steps` comprehension steps.
    pub fn eval(&self, ctx: &Context, max_steps: u64) -> Result<Value, EvalError> {
        run(&self.expr, ctx, max_steps)
    }

    /// The values of its placement-only parts in `ctx` (which needs only `pools`, `policy` and
    /// `now`): what [`Compiled::eval_placed`] takes for every resource of that placement. A part
    /// that fails has no value, and the expression is then evaluated whole.
    pub fn placement_values(&self, ctx: &Context, max_steps: u64) -> Vec<Option<CelVal>> {
        let Some((_, hoisted)) = &self.placed else {
            return Vec::new();
        };
        hoisted
            .iter()
            .map(|h| run(&h.expr, ctx, max_steps).ok().and_then(value::from_cel))
            .collect()
    }

    /// Evaluates as [`Compiled::eval`] does, taking the placement-only parts from `values`
    /// ([`Compiled::placement_values`] for the resource's placement).
    pub fn eval_placed(
        &self,
        ctx: &Context,
        max_steps: u64,
        values: &[Option<CelVal>],
    ) -> Result<Value, EvalError> {
        let Some((rewritten, hoisted)) = &self.placed else {
            return self.eval(ctx, max_steps);
        };
        if values.len() != hoisted.len() || values.iter().any(Option::is_none) {
            return self.eval(ctx, max_steps);
        }
        let mut inner = ctx.new_inner_scope();
        for (h, v) in hoisted.iter().zip(values.iter().flatten()) {
            inner.add_variable_as_val(&h.name, v.clone());
        }
        run(rewritten, &inner, max_steps)
    }
}

/// Evaluates `expr` against `ctx` with a budget of `max_steps` comprehension steps.
fn run(expr: &IdedExpr, ctx: &Context, max_steps: u64) -> Result<Value, EvalError> {
    STEPS.with(|s| s.set(0));
    BUDGET.with(|b| b.set(max_steps));
    let result = Value::resolve(expr, ctx);
    let used = STEPS.with(Cell::get);
    match result {
        Ok(v) => Ok(v),
        Err(_) if used > max_steps => Err(EvalError::Budget(max_steps)),
        Err(e) => Err(EvalError::Cel(explain(e.to_string()))),
    }
}

/// CEL's message for `a.b` on something that is not a map names the index operator (selections
/// are evaluated as indexing, see [`selects_as_index`]): say it in the rule's terms.
fn explain(message: String) -> String {
    let operand = message
        .strip_prefix("found no matching overload for '_[_]' applied to '(")
        .and_then(|rest| rest.strip_suffix(", string)'"));
    match operand {
        Some("null_type") => "cannot read a field of null: the attribute or block is not set; \
             guard the expression with `x != null && …`"
            .to_string(),
        Some(kind) => format!("cannot read a field of a {kind} value: only objects have fields"),
        None => message,
    }
}

/// A CEL value as JSON, for `gpucap-policy eval` and messages: timestamps and durations as RFC 3339
/// and seconds strings, bytes as base64.
pub fn to_json(v: &Value) -> Json {
    match v.json() {
        Ok(j) => j,
        Err(_) => Json::String(format!("{v:?}")),
    }
}

/// Why work could not run on a large-stack thread: never a panic of the caller, since a panic in
/// the provider would end the provider process under Terraform.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StackError {
    /// The system is out of threads or memory.
    #[error("cannot start a policy evaluation thread: {0}")]
    Spawn(String),
    /// The work panicked (a bug in the engine or the CEL interpreter).
    #[error("policy evaluation failed unexpectedly: {0}")]
    Panicked(String),
}

/// Stack size of evaluation threads: enough for the deepest expression the limits allow.
pub(crate) const STACK_SIZE: usize = 256 << 20;

/// Starts `f` on a thread of `scope` with a large stack.
pub fn spawn_large_stack<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, T>, StackError> {
    std::thread::Builder::new()
        .name("gpucap-policy".into())
        .stack_size(STACK_SIZE)
        .spawn_scoped(scope, f)
        .map_err(|e| StackError::Spawn(e.to_string()))
}

/// Waits for a thread of [`spawn_large_stack`]; its panic becomes an error.
pub fn join_large_stack<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> Result<T, StackError> {
    handle
        .join()
        .map_err(|panic| StackError::Panicked(panic_message(panic.as_ref())))
}

/// What a panic said, when it said it as text.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Runs `f` on a thread with a large stack and waits for it.
pub fn on_large_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, StackError> {
    std::thread::scope(|s| join_large_stack(spawn_large_stack(s, f)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let endpoint = crate::schema::Schemas::gpucap()
            .resource("gpucap_inference_endpoint")
            .unwrap()
            .clone();
        let pool = crate::schema::Schemas::gpucap()
            .resource("gpucap_gpu_pool")
            .unwrap()
            .clone();
        Scope {
            vars: BTreeMap::from([
                ("resource".to_string(), endpoint),
                ("pools".to_string(), Shape::List(Box::new(pool))),
                ("action".to_string(), Shape::Scalar(Scalar::String)),
            ]),
            subject: "gpucap_inference_endpoint".into(),
        }
    }

    fn compile_err(src: &str) -> Vec<ExprProblem> {
        match on_large_stack(|| compile(src, &scope(), &Limits::default())).unwrap() {
            Ok(_) => panic!("compiled: {}", &src[..src.len().min(80)]),
            Err(p) => p,
        }
    }

    #[test]
    fn field_selection_reads_maps_and_explains_what_is_not_one() {
        let endpoint = json!({"name": "e", "labels": {"team": "risk"}, "replicas": null});
        let vars = [("resource", endpoint)];
        assert_eq!(eval("resource.labels.team", &vars), Ok(json!("risk")));
        assert_eq!(
            eval(
                "has(resource.labels.team) && !has(resource.labels.x)",
                &vars
            ),
            Ok(json!(true))
        );
        assert_eq!(
            eval("resource.labels.x", &vars),
            Err(EvalError::Cel("No such key: x".into()))
        );
        let Err(EvalError::Cel(null)) = eval("resource.replicas.max > 1", &vars) else {
            panic!("a field of null must be an error");
        };
        assert!(null.starts_with("cannot read a field of null"), "{null}");
        assert_eq!(
            eval(
                "resource.replicas != null && resource.replicas.max > 1",
                &vars
            ),
            Ok(json!(false))
        );
    }

    fn eval(src: &str, vars: &[(&str, Json)]) -> Result<Json, EvalError> {
        on_large_stack(|| {
            let c = compile(src, &scope(), &Limits::default()).unwrap();
            let mut ctx = Context::with_env(env());
            for (k, v) in vars {
                ctx.add_variable_as_val(*k, crate::value::from_json(v));
            }
            c.eval(&ctx, 1000).map(|v| to_json(&v))
        })
        .unwrap()
    }

    #[test]
    fn unknown_attributes_and_variables_are_located_with_hints() {
        let p = compile_err("resource.data_residency.clasification == 'pii'");
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].message,
            "`resource.data_residency` has no attribute `clasification`"
        );
        assert_eq!(p[0].hint.as_deref(), Some("did you mean `classification`?"));
        assert_eq!((p[0].start, p[0].end), (24, 37));

        let p = compile_err("pools.all(p, p.jurisdction == 'EU')");
        assert_eq!(p[0].message, "`p` has no attribute `jurisdction`");
        let p = compile_err("resorce.name == 'x'");
        assert_eq!(p[0].message, "unknown variable `resorce`");
        assert_eq!(p[0].hint.as_deref(), Some("did you mean `resource`?"));
        let p = compile_err("resource.nam == 'x'");
        assert_eq!(
            p[0].message,
            "`gpucap_inference_endpoint` has no attribute `nam`"
        );
    }

    #[test]
    fn syntax_errors_point_into_the_expression() {
        let p = compile_err("resource.name == ");
        assert!(p[0].message.starts_with("CEL syntax error"), "{p:?}");
        assert!(p[0].start >= 14, "{p:?}");
    }

    #[test]
    fn size_and_depth_are_bounded_without_overflowing_the_stack() {
        let long = format!("resource.name == '{}'", "x".repeat(9000));
        assert!(compile_err(&long)[0].message.contains("limit is 8192"));
        let deep = format!("{}1{}", "(".repeat(3000), ")".repeat(3000));
        assert!(!compile_err(&deep).is_empty());
        let chain = format!("1{}", " + 1".repeat(2000));
        assert!(!compile_err(&chain).is_empty());
        // The parser folds runs of `!`; what matters is that nothing overflows.
        let nots = format!("{}true", "!".repeat(5000));
        assert!(
            on_large_stack(|| compile(&nots, &scope(), &Limits::default()))
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn numbers_strings_and_extensions_evaluate() {
        let r = json!({"name": "Fraud", "replicas": {"min": 2, "max": 2.5}});
        assert_eq!(
            eval("resource.replicas.min + 1", &[("resource", r.clone())]),
            Ok(json!(3))
        );
        assert_eq!(
            eval("resource.replicas.max * 2.0", &[("resource", r.clone())]),
            Ok(json!(5.0))
        );
        assert_eq!(
            eval(
                "resource.name.lowerAscii() + '-' + ['a', 'b'].join(',')",
                &[("resource", r.clone())]
            ),
            Ok(json!("fraud-a,b"))
        );
        assert_eq!(eval("math.greatest(1, 5, 3)", &[]), Ok(json!(5)));
        assert!(matches!(eval("1 / 0 == 1", &[]), Err(EvalError::Cel(_))));
        assert!(matches!(
            eval(
                "resource.labels['team'] == 'x'",
                &[("resource", json!({"labels": {}}))]
            ),
            Err(EvalError::Cel(_))
        ));
    }

    #[test]
    fn comprehensions_run_within_the_budget() {
        let pools: Vec<Json> = (0..40)
            .map(|i| json!({"region": format!("r{i}")}))
            .collect();
        let vars = [("pools", Json::Array(pools))];
        assert_eq!(eval("pools.all(p, p.region != '')", &vars), Ok(json!(true)));
        assert_eq!(
            eval("pools.all(p, pools.all(q, q.region != ''))", &vars),
            Err(EvalError::Budget(1000))
        );
    }

    #[test]
    fn denied_functions_are_refused_at_load() {
        let p = compile_err("lists.range(1000000000).size() > 0");
        assert!(
            p[0].message.contains("`lists.range` is not available"),
            "{p:?}"
        );
    }

    #[test]
    fn resource_paths_keep_the_longest_reads_in_order() {
        let c = on_large_stack(|| {
            compile(
                "resource.data_residency.classification == 'pii' && resource.replicas.min > 0 && has(resource.listen.port)",
                &scope(),
                &Limits::default(),
            )
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            c.resource_paths,
            vec![
                vec!["data_residency".to_string(), "classification".to_string()],
                vec!["replicas".to_string(), "min".to_string()],
                vec!["listen".to_string()],
            ]
        );
    }
}
