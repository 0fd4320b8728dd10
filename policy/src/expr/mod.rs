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
//!
//! The code is split by job: `syntax` walks the tree, `check` checks what an expression reads,
//! `compile` bounds, checks and rewrites it, `eval` evaluates it within its budget, `hoist`
//! cuts out the parts that depend only on placement, `stack` runs work on large stacks, and `worker` keeps such threads for evaluations one at a time.

mod check;
mod compile;
mod eval;
mod hoist;
mod matches;
mod stack;
mod syntax;
pub(crate) mod worker;

pub use crate::value::to_json;
pub use check::{ExprProblem, Scope};
pub use compile::{Limits, compile};
pub use eval::{Compiled, EvalError, env};
pub(crate) use stack::{STACK_SIZE, panic_message};
pub use stack::{
    StackError, in_parts_on_large_stacks, join_large_stack, on_large_stack, spawn_large_stack,
};

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;
