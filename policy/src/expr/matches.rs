//! `matches` with its regular expressions compiled once per thread rather than on every call: the
//! interpreter's own `matches` compiles the pattern each time, which cost more than the rest of a
//! rule like `resource.labels.slo.matches('^[0-9]+$')` over thousands of resources.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use cel::ExecutionError;
use cel::common::ast::{CallExpr, Expr};
use cel::common::types::{CelBool, CelString};
use cel::common::value::CowVal;
use regex::Regex;

use super::syntax::children_mut;

/// Name of the function `matches` calls are rewritten to.
pub(super) const MATCHES_FUNCTION: &str = "__gpucap_matches";

/// Patterns one thread keeps compiled; past this the cache starts over, so a rule that builds
/// patterns from data cannot grow it without bound.
const CACHED_PATTERNS: usize = 256;

thread_local! {
    static COMPILED: RefCell<HashMap<String, Result<Arc<Regex>, String>>> =
        RefCell::new(HashMap::new());
}

/// `text.matches(pattern)`, as CEL defines it (RE2 syntax, a match anywhere in `text`).
pub(super) fn matches<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let string = |i: usize| {
        args.get(i)
            .and_then(|v| v.downcast_ref::<CelString>())
            .map(|s| s.inner())
    };
    let (Some(text), Some(pattern)) = (string(0), string(1)) else {
        return Err(ExecutionError::function_error(
            "matches",
            "matches takes a string and a string pattern",
        ));
    };
    let regex = COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(compiled) = cache.get(pattern) {
            return compiled.clone();
        }
        if cache.len() >= CACHED_PATTERNS {
            cache.clear();
        }
        let compiled = Regex::new(pattern)
            .map(Arc::new)
            .map_err(|e| format!("'{pattern}' not a valid regex:\n{e}"));
        cache.insert(pattern.to_string(), compiled.clone());
        compiled
    });
    match regex {
        Ok(regex) => Ok(CowVal::Owned(Box::new(CelBool::from(regex.is_match(text))))),
        Err(message) => Err(ExecutionError::function_error("matches", message)),
    }
}

/// Rewrites `s.matches(p)` and `matches(s, p)` as calls to [`MATCHES_FUNCTION`].
pub(super) fn rewrite(expr: &mut cel::IdedExpr) {
    for child in children_mut(expr) {
        rewrite(child);
    }
    let Expr::Call(call) = &mut expr.expr else {
        return;
    };
    if call.func_name != "matches" {
        return;
    }
    let args = match (call.target.take(), call.args.len()) {
        (Some(target), 1) => {
            let mut args = vec![*target];
            args.append(&mut call.args);
            args
        }
        (None, 2) => std::mem::take(&mut call.args),
        // Another arity: left as written, for the interpreter to refuse with its own message.
        (target, _) => {
            call.target = target;
            return;
        }
    };
    *call = CallExpr {
        func_name: MATCHES_FUNCTION.into(),
        target: None,
        args,
    };
}
