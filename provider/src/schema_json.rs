//! The provider's schemas in the JSON form of `terraform providers schema -json`: the file the
//! policy engine checks rules against (`policy/schema/gpucap.json`, written by `gpucap-docgen`).

use serde_json::{Map, Value as Json, json};

use crate::provider::Provider;
use crate::schema::{Block, Mode, Nesting};

/// Every resource schema of the provider, pretty-printed with a trailing newline.
pub fn providers_schema_json(provider: &Provider) -> String {
    let resources: Map<String, Json> = provider
        .resources()
        .map(|r| {
            let s = r.schema();
            (
                r.type_name().to_string(),
                json!({"version": s.version, "block": block_json(&s.block)}),
            )
        })
        .collect();
    let doc = json!({
        "format_version": "1.0",
        "provider_schemas": {
            "registry.terraform.io/gpucap/gpucap": {"resource_schemas": resources}
        }
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// One block, its attributes and nested blocks.
fn block_json(block: &Block) -> Json {
    let attributes: Map<String, Json> = block
        .attributes
        .iter()
        .map(|(name, a)| {
            let mut attr = json!({"type": a.ty.to_json(), "description": a.full_description()});
            let flag = match a.mode {
                Mode::Required => "required",
                Mode::Optional => "optional",
                Mode::OptionalComputed | Mode::Computed => "computed",
            };
            attr[flag] = json!(true);
            if a.mode == Mode::OptionalComputed {
                attr["optional"] = json!(true);
            }
            (name.clone(), attr)
        })
        .collect();
    let block_types: Map<String, Json> = block
        .blocks
        .iter()
        .map(|(name, b)| {
            let mut nested = json!({
                "nesting_mode": match b.nesting { Nesting::Single => "single", Nesting::List => "list" },
                "block": block_json(&b.block),
            });
            if b.required {
                nested["min_items"] = json!(1);
            }
            (name.clone(), nested)
        })
        .collect();
    json!({"attributes": attributes, "block_types": block_types, "description": block.description})
}
