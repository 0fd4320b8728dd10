//! Evaluating compiled expressions within a budget of comprehension steps, whole or with their
//! placement-only parts given.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use cel::common::value::CowVal;
use cel::{Context, Env, ExecutionError, IdedExpr, Value};

use super::hoist::Hoisted;
use crate::value::{self, CelVal};

/// Name of the function every comprehension step passes through, counting steps.
pub(super) const STEP_FUNCTION: &str = "__gpucap_step";

/// A checked, compiled expression, ready to evaluate any number of times.
#[derive(Debug)]
pub struct Compiled {
    /// The source it was compiled from: two expressions with the same source evaluate alike.
    pub source: String,
    /// The expression as written (with step counting).
    pub(super) expr: IdedExpr,
    /// The same with its placement-only parts replaced by variables, when it has such parts.
    pub(super) placed: Option<(IdedExpr, Vec<Hoisted>)>,
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
            super::matches::MATCHES_FUNCTION,
            "gpucap_matches_dyn_dyn",
            vec![cel::common::types::DYN_TYPE, cel::common::types::DYN_TYPE],
            super::matches::matches,
        );
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
    /// Adds the variables it may read to `names` (with any names its comprehensions bind).
    pub fn variables(&self, names: &mut BTreeSet<String>) {
        super::syntax::identifiers(&self.expr, names);
    }

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
/// are evaluated as indexing, see `compile::selects_as_index`): say it in the rule's terms.
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
