//! Planning pieces every resource shares, driven by its schema: defaults, computed values that
//! apply decides, and the attributes whose change forces replacement.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{PlanRequest, Planned};
use crate::diag::{AttrPath, Diagnostics, Step};
use crate::models;
use crate::schema::{Block, Mode, Schema};
use crate::value::{Type, Value};

/// Plans a create, update or destroy the way every resource does. A destroy plans null.
/// Otherwise the proposal, with defaults filled in (`start`) and the id set to the name (every
/// gpucap object is known by its name), is decoded into the resource's model `M`; `compute` fills
/// in what the resource derives and returns its warnings, or the errors that fail the plan; and
/// the attributes whose change replaces the object are found.
pub fn typed<M: Serialize + DeserializeOwned>(
    schema: &Schema,
    ty: &Type,
    req: &PlanRequest,
    compute: impl FnOnce(&mut M) -> Result<Diagnostics, Diagnostics>,
) -> Result<Planned, Diagnostics> {
    if req.proposed.is_null() {
        return Ok(Planned::default());
    }
    let creating = req.prior.is_null();
    let mut state = start(&schema.block, &req.proposed, &req.config, creating);
    if let Some(name) = state.get("name").as_str() {
        state.set("id", Value::String(name.to_string()));
    }
    let mut model: M = models::decode(&state)?;
    let diagnostics = compute(&mut model)?;
    let state = models::encode(&model, ty)?;
    let requires_replace = if creating {
        Vec::new()
    } else {
        requires_replace(&schema.block, &req.prior, &state)
    };
    Ok(Planned {
        state,
        requires_replace,
        diagnostics,
    })
}

/// Starts a plan from Terraform's proposal: defaults filled in where the configuration leaves an
/// attribute unset, and — on create — every computed attribute without a default unknown.
fn start(block: &Block, proposed: &Value, config: &Value, creating: bool) -> Value {
    let mut state = proposed.clone();
    fill(block, &mut state, config, creating);
    state
}

fn fill(block: &Block, state: &mut Value, config: &Value, creating: bool) {
    let Value::Map(map) = state else { return };
    for (name, attr) in &block.attributes {
        let configured = config.get(name);
        if let Some(default) = &attr.default
            && configured.is_null()
        {
            let v = Value::from_json(default, &attr.ty).unwrap_or(Value::Null);
            map.insert(name.clone(), v);
        } else if creating
            && (attr.mode == Mode::Computed
                || (attr.mode == Mode::OptionalComputed && configured.is_null()))
        {
            map.insert(name.clone(), Value::Unknown);
        }
    }
    for (name, nested) in &block.blocks {
        if let Some(inner) = map.get_mut(name) {
            fill(&nested.block, inner, config.get(name), creating);
        }
    }
}

/// Paths of replace-on-change attributes that differ between prior state and the plan.
fn requires_replace(block: &Block, prior: &Value, planned: &Value) -> Vec<AttrPath> {
    let mut out = Vec::new();
    collect_replace(block, prior, planned, &mut Vec::new(), &mut out);
    out
}

fn collect_replace(
    block: &Block,
    prior: &Value,
    planned: &Value,
    at: &mut Vec<Step>,
    out: &mut Vec<AttrPath>,
) {
    for (name, attr) in &block.attributes {
        if attr.force_new && prior.get(name) != planned.get(name) {
            let mut p = at.clone();
            p.push(Step::Attr(name.clone()));
            out.push(AttrPath(p));
        }
    }
    for (name, nested) in &block.blocks {
        at.push(Step::Attr(name.clone()));
        collect_replace(&nested.block, prior.get(name), planned.get(name), at, out);
        at.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Mode;
    use crate::value::Type;
    use serde_json::json;

    fn block() -> Block {
        Block::new("t")
            .attr("name", Type::String, Mode::Required, "")
            .force_new("name")
            .attr("id", Type::String, Mode::Computed, "")
            .attr("host", Type::String, Mode::OptionalComputed, "")
            .default_value("host", json!("127.0.0.1"))
            .single(
                "listen",
                false,
                Block::new("")
                    .attr("port", Type::Number, Mode::OptionalComputed, "")
                    .default_value("port", json!(0)),
            )
    }

    fn obj(j: serde_json::Value) -> Value {
        Value::from_json(&j, &block().implied_type()).unwrap()
    }

    #[test]
    fn create_fills_defaults_and_unknowns() {
        let config = obj(json!({"name": "a", "listen": {}}));
        let planned = start(&block(), &config, &config, true);
        assert_eq!(planned.get("host").as_str(), Some("127.0.0.1"));
        assert!(planned.get("id").is_unknown());
        assert_eq!(planned.get("listen").get("port").as_i64(), Some(0));
    }

    #[test]
    fn replace_is_reported_on_force_new_changes_only() {
        let prior = obj(json!({"name": "a", "id": "a", "host": "h"}));
        let planned = obj(json!({"name": "b", "id": "a", "host": "x"}));
        let paths = requires_replace(&block(), &prior, &planned);
        assert_eq!(paths, vec![AttrPath::parse("name")]);
    }
}
