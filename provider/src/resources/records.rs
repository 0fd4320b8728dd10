//! Apply, read and import for objects that exist as records in `state_dir` (pools and burst
//! policies of the `local` driver): the record is the object, so state matches reality exactly
//! when the record matches the state.

use crate::api::{Applied, Ctx};
use crate::diag::{Diagnostic, Diagnostics};
use crate::value::{Type, Value};
use gpucap_fabric::store;

fn path(ctx: &Ctx, kind: &str, name: &str) -> std::path::PathBuf {
    store::kind_dir(&ctx.config.state_dir, kind).join(format!("{name}.json"))
}

/// Writes (or, when `planned` is null, removes) the record. On failure the prior state is kept,
/// since nothing changed.
pub fn apply(ctx: &Ctx, kind: &str, what: &str, prior: Value, planned: Value) -> Applied {
    let name = planned
        .get("name")
        .as_str()
        .or(prior.get("name").as_str())
        .unwrap_or_default()
        .to_string();
    let path = path(ctx, kind, &name);
    let failed = |summary: String, detail: String, prior: Value| Applied {
        state: prior,
        diagnostics: Diagnostic::error(summary, detail).into(),
    };
    if planned.is_null() {
        return match store::remove(&path) {
            Ok(()) => Applied {
                state: Value::Null,
                diagnostics: Diagnostics::default(),
            },
            Err(e) => failed(
                format!("Cannot remove the {what}'s record"),
                format!("{}: {e}", path.display()),
                prior,
            ),
        };
    }
    let Some(json) = planned.to_json() else {
        return failed(
            format!("The {what}'s plan has unknown values at apply"),
            "this is a bug in the gpucap provider".into(),
            prior,
        );
    };
    if !prior.is_null()
        && let Some(old) = prior.get("name").as_str()
        && old != name
    {
        let _ = store::remove(&self::path(ctx, kind, old));
    }
    match store::write_json(&path, &json) {
        Ok(()) => Applied {
            state: planned,
            diagnostics: Diagnostics::default(),
        },
        Err(e) => failed(
            format!("Cannot record the {what}"),
            format!(
                "cannot write {}: {e}; check that state_dir is writable",
                path.display()
            ),
            prior,
        ),
    }
}

/// The state if the record still exists, null (gone, so the next plan recreates it) if not.
pub fn read(ctx: &Ctx, kind: &str, what: &str, state: Value) -> Result<Value, Diagnostics> {
    let name = state.get("name").as_str().unwrap_or_default();
    let recorded: Option<serde_json::Value> =
        store::read_json(&path(ctx, kind, name)).map_err(|e| {
            Diagnostic::error(format!("Cannot read the {what}'s record"), e.to_string())
        })?;
    Ok(if recorded.is_some() {
        state
    } else {
        Value::Null
    })
}

/// The recorded state of the object named `name`.
pub fn import(
    ctx: &Ctx,
    kind: &str,
    type_name: &str,
    name: &str,
    ty: &Type,
) -> Result<Value, Diagnostics> {
    let recorded: Option<serde_json::Value> = store::read_json(&path(ctx, kind, name))
        .map_err(|e| Diagnostic::error("Cannot read the record", e.to_string()))?;
    let Some(json) = recorded else {
        return Err(Diagnostic::error(
            "Nothing to import",
            format!(
                "no {type_name} named {name:?} is recorded in {}; import takes the object's name, e.g. \
                 terraform import {type_name}.example {name}",
                ctx.config.state_dir.display()
            ),
        )
        .into());
    };
    Value::from_json(&json, ty).map_err(|e| {
        Diagnostic::error("The record does not match the schema", e.to_string()).into()
    })
}
