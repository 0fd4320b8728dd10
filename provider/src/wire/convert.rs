//! Conversions between the protocol-free core types and the generated `tfplugin5` messages.

use crate::diag::{AttrPath, Diagnostic, Diagnostics, Severity, Step};
use crate::schema::{Block, Mode, Nesting, Schema};
use crate::value::{Type, Value};
use crate::wire::codec;
use crate::wire::proto as pb;

/// A schema as Terraform reads it.
pub fn schema(s: &Schema) -> pb::Schema {
    pb::Schema {
        version: s.version,
        block: Some(block(&s.block, s.version)),
    }
}

fn block(b: &Block, version: i64) -> pb::schema::Block {
    pb::schema::Block {
        version,
        attributes: b
            .attributes
            .iter()
            .map(|(name, a)| pb::schema::Attribute {
                name: name.clone(),
                r#type: serde_json::to_vec(&a.ty.to_json()).unwrap_or_default(),
                description: a.full_description(),
                required: a.mode == Mode::Required,
                optional: matches!(a.mode, Mode::Optional | Mode::OptionalComputed),
                computed: matches!(a.mode, Mode::Computed | Mode::OptionalComputed),
                sensitive: a.sensitive,
                description_kind: pb::StringKind::Markdown as i32,
                deprecated: false,
                write_only: false,
            })
            .collect(),
        block_types: b
            .blocks
            .iter()
            .map(|(name, nb)| {
                // Terraform requires min_items == max_items (0 or 1) for single blocks; 1 makes it required.
                let (nesting, min, max) = match nb.nesting {
                    Nesting::Single => {
                        let n = i64::from(nb.required);
                        (pb::schema::nested_block::NestingMode::Single, n, n)
                    }
                    Nesting::List => (
                        pb::schema::nested_block::NestingMode::List,
                        i64::from(nb.required),
                        0,
                    ),
                };
                pb::schema::NestedBlock {
                    type_name: name.clone(),
                    block: Some(block(&nb.block, 0)),
                    nesting: nesting as i32,
                    min_items: min,
                    max_items: max,
                }
            })
            .collect(),
        description: b.description.clone(),
        description_kind: pb::StringKind::Markdown as i32,
        deprecated: false,
    }
}

/// Diagnostics as Terraform reads them.
pub fn diagnostics(d: &Diagnostics) -> Vec<pb::Diagnostic> {
    d.0.iter().map(diagnostic).collect()
}

fn diagnostic(d: &Diagnostic) -> pb::Diagnostic {
    pb::Diagnostic {
        severity: match d.severity {
            Severity::Error => pb::diagnostic::Severity::Error,
            Severity::Warning => pb::diagnostic::Severity::Warning,
        } as i32,
        summary: d.summary.clone(),
        detail: d.detail.clone(),
        attribute: d.path.as_ref().map(attr_path),
    }
}

/// An attribute path as Terraform reads it.
pub fn attr_path(p: &AttrPath) -> pb::AttributePath {
    use pb::attribute_path::step::Selector;
    pb::AttributePath {
        steps: p
            .0
            .iter()
            .map(|s| pb::attribute_path::Step {
                selector: Some(match s {
                    Step::Attr(a) => Selector::AttributeName(a.clone()),
                    Step::Index(i) => Selector::ElementKeyInt(*i),
                    Step::Key(k) => Selector::ElementKeyString(k.clone()),
                }),
            })
            .collect(),
    }
}

/// Decodes a `DynamicValue` (msgpack, else JSON; absent is null).
pub fn decode(v: Option<&pb::DynamicValue>, ty: &Type) -> Result<Value, Diagnostics> {
    let Some(v) = v else { return Ok(Value::Null) };
    let result = if !v.msgpack.is_empty() {
        codec::decode_msgpack(&v.msgpack, ty)
    } else if !v.json.is_empty() {
        codec::decode_json(&v.json, ty)
    } else {
        Ok(Value::Null)
    };
    result.map_err(|e| {
        Diagnostic::error(
            "Unexpected value from Terraform",
            format!(
                "the gpucap provider could not decode a value at {}: {}",
                e.path, e.message
            ),
        )
        .into()
    })
}

/// Encodes a value as a msgpack `DynamicValue`.
pub fn encode(v: &Value, ty: &Type) -> Result<pb::DynamicValue, Diagnostics> {
    codec::encode_msgpack(v, ty)
        .map(|msgpack| pb::DynamicValue {
            msgpack,
            json: Vec::new(),
        })
        .map_err(|e| {
            Diagnostic::error(
                "Provider produced a value it cannot encode",
                format!("{}: {} (a bug in the gpucap provider)", e.path, e.message),
            )
            .into()
        })
}
