//! What the objects rules read look like: one [`Shape`] per resource type, read from the JSON form
//! of `terraform providers schema -json`. gpucap's own shapes are generated from the provider's
//! schema (`policy/schema/gpucap.json`, rewritten by `gpucap-docgen` and checked by its staleness
//! test), so the rules' checker and the provider cannot drift apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value as Json;

/// The gpucap provider's schema, as `gpucap-docgen` writes it.
const GPUCAP_SCHEMA: &str = include_str!("../schema/gpucap.json");

/// The shape of a value a rule can read.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Anything: no checks below this point (dynamic values, other providers' resources).
    Any,
    /// A scalar: string, number or bool.
    Scalar(Scalar),
    /// A list or set of one shape.
    List(Box<Shape>),
    /// A map with string keys.
    Map(Box<Shape>),
    /// An object with known attributes (an attribute outside them is an error in a rule).
    Object(Arc<BTreeMap<String, Shape>>),
}

/// The scalar types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// `string`
    String,
    /// `number`: CEL `int` when whole, `double` otherwise.
    Number,
    /// `bool`
    Bool,
}

/// Why a provider schema document could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// Not JSON, or not in the form of `terraform providers schema -json`.
    #[error("not a provider schema document: {0}")]
    NotADocument(String),
    /// A type cty does not have.
    #[error("unknown type {0}")]
    UnknownType(String),
    /// An attribute without a type.
    #[error("attribute {0} has no type")]
    Untyped(String),
    /// A problem inside a resource, block or attribute.
    #[error("{at}: {source}")]
    Within {
        /// Where.
        at: String,
        /// What.
        source: Box<SchemaError>,
    },
}

impl SchemaError {
    fn within(self, at: String) -> SchemaError {
        SchemaError::Within {
            at,
            source: Box::new(self),
        }
    }
}

impl Shape {
    /// The shape of a cty type in its JSON form (`"string"`, `["list","string"]`, …).
    pub fn from_cty_json(ty: &Json) -> Result<Shape, SchemaError> {
        match ty {
            Json::String(s) => match s.as_str() {
                "string" => Ok(Shape::Scalar(Scalar::String)),
                "number" => Ok(Shape::Scalar(Scalar::Number)),
                "bool" => Ok(Shape::Scalar(Scalar::Bool)),
                "dynamic" => Ok(Shape::Any),
                other => Err(SchemaError::UnknownType(format!("{other:?}"))),
            },
            Json::Array(parts) => match (parts.first().and_then(Json::as_str), parts.get(1)) {
                (Some("list" | "set"), Some(inner)) => {
                    Ok(Shape::List(Box::new(Shape::from_cty_json(inner)?)))
                }
                (Some("map"), Some(inner)) => {
                    Ok(Shape::Map(Box::new(Shape::from_cty_json(inner)?)))
                }
                (Some("object"), Some(Json::Object(attrs))) => Ok(Shape::Object(Arc::new(
                    attrs
                        .iter()
                        .map(|(k, t)| Ok((k.clone(), Shape::from_cty_json(t)?)))
                        .collect::<Result<_, SchemaError>>()?,
                ))),
                // A tuple's elements may differ; rules read them without checks.
                (Some("tuple"), Some(_)) => Ok(Shape::List(Box::new(Shape::Any))),
                _ => Err(SchemaError::UnknownType(ty.to_string())),
            },
            _ => Err(SchemaError::UnknownType(ty.to_string())),
        }
    }

    /// The shape of a schema block (`{"attributes": …, "block_types": …}`): attributes by their
    /// types; single nested blocks as objects; list and set blocks as lists of objects.
    pub fn from_block_json(block: &Json) -> Result<Shape, SchemaError> {
        let mut fields = BTreeMap::new();
        if let Some(attrs) = block.get("attributes").and_then(Json::as_object) {
            for (name, attr) in attrs {
                let ty = attr
                    .get("type")
                    .ok_or_else(|| SchemaError::Untyped(name.clone()))?;
                let shape = Shape::from_cty_json(ty);
                fields.insert(
                    name.clone(),
                    shape.map_err(|e| e.within(format!("attribute {name}")))?,
                );
            }
        }
        if let Some(blocks) = block.get("block_types").and_then(Json::as_object) {
            for (name, nested) in blocks {
                let inner = Shape::from_block_json(nested.get("block").unwrap_or(&Json::Null))
                    .map_err(|e| e.within(format!("block {name}")))?;
                let shape = match nested.get("nesting_mode").and_then(Json::as_str) {
                    Some("single" | "group") => inner,
                    Some("map") => Shape::Map(Box::new(inner)),
                    _ => Shape::List(Box::new(inner)),
                };
                fields.insert(name.clone(), shape);
            }
        }
        Ok(Shape::Object(Arc::new(fields)))
    }

    /// The attributes of an object shape.
    pub fn fields(&self) -> Option<&BTreeMap<String, Shape>> {
        match self {
            Shape::Object(f) => Some(f),
            _ => None,
        }
    }

    /// `value` with every attribute of this shape present (null where absent) and numbers as the
    /// rule language sees them, so plan time and review read identical objects.
    pub fn normalize(&self, value: &Json) -> Json {
        self.normalize_owned(value.clone())
    }

    /// [`Shape::normalize`] of a value it may take apart: attributes are moved, not copied, and
    /// only absent ones get a new key.
    pub fn normalize_owned(&self, value: Json) -> Json {
        match (self, value) {
            (Shape::Object(fields), Json::Object(mut map)) => {
                map.retain(|k, _| fields.contains_key(k));
                for (k, shape) in fields.iter() {
                    match map.get_mut(k) {
                        Some(v) => *v = shape.normalize_owned(std::mem::take(v)),
                        None => {
                            map.insert(k.clone(), Json::Null);
                        }
                    }
                }
                Json::Object(map)
            }
            (Shape::List(inner), Json::Array(items)) => Json::Array(
                items
                    .into_iter()
                    .map(|v| inner.normalize_owned(v))
                    .collect(),
            ),
            (Shape::Map(inner), Json::Object(mut map)) => {
                for v in map.values_mut() {
                    *v = inner.normalize_owned(std::mem::take(v));
                }
                Json::Object(map)
            }
            (_, value) => value,
        }
    }
}

/// The shapes of every resource type rules may name.
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    resources: BTreeMap<String, Shape>,
}

impl Schemas {
    /// gpucap's resources, from the schema generated off the provider; parsed once per process,
    /// since the provider needs them on every planned resource.
    pub fn gpucap() -> &'static Schemas {
        static GPUCAP: std::sync::OnceLock<Schemas> = std::sync::OnceLock::new();
        // The embedded file is checked by a test; failing here would be a packaging bug.
        GPUCAP.get_or_init(|| Schemas::from_providers_json(GPUCAP_SCHEMA).unwrap_or_default())
    }

    /// Reads `terraform providers schema -json` output; every provider's resources are included.
    pub fn from_providers_json(text: &str) -> Result<Schemas, SchemaError> {
        let json: Json =
            serde_json::from_str(text).map_err(|e| SchemaError::NotADocument(e.to_string()))?;
        let providers = json
            .get("provider_schemas")
            .and_then(Json::as_object)
            .ok_or_else(|| {
                SchemaError::NotADocument(
                    "no \"provider_schemas\" object (write it with `terraform providers schema -json`)"
                        .into(),
                )
            })?;
        let mut resources = BTreeMap::new();
        for (provider, schema) in providers {
            let Some(types) = schema.get("resource_schemas").and_then(Json::as_object) else {
                continue;
            };
            for (type_name, resource) in types {
                let block = resource.get("block").unwrap_or(&Json::Null);
                let shape = Shape::from_block_json(block)
                    .map_err(|e| e.within(format!("{provider} {type_name}")))?;
                resources.insert(type_name.clone(), shape);
            }
        }
        Ok(Schemas { resources })
    }

    /// Adds (or replaces) the types of `other`.
    pub fn extend(&mut self, other: Schemas) {
        self.resources.extend(other.resources);
    }

    /// The shape of a resource type, if known.
    pub fn resource(&self, type_name: &str) -> Option<&Shape> {
        self.resources.get(type_name)
    }

    /// `value` as rules see a `type_name` object: every attribute of the type present (absent ones
    /// `null`). Null stays null; types without a schema are taken as they are.
    pub fn normalize(&self, type_name: &str, value: &Json) -> Json {
        self.normalize_owned(type_name, value.clone())
    }

    /// [`Schemas::normalize`] of a value it may take apart.
    pub fn normalize_owned(&self, type_name: &str, value: Json) -> Json {
        match self.resource(type_name) {
            Some(shape) if !value.is_null() => shape.normalize_owned(value),
            _ => value,
        }
    }

    /// Every known resource type.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.resources.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_generated_gpucap_schema_has_every_resource() {
        let s = Schemas::from_providers_json(GPUCAP_SCHEMA).unwrap();
        let names: Vec<_> = s.type_names().collect();
        assert_eq!(
            names,
            [
                "gpucap_api_key",
                "gpucap_burst_policy",
                "gpucap_gpu_pool",
                "gpucap_inference_endpoint",
                "gpucap_join_token"
            ]
        );
        let endpoint = s.resource("gpucap_inference_endpoint").unwrap();
        let residency = &endpoint.fields().unwrap()["data_residency"];
        assert_eq!(
            residency.fields().unwrap()["classification"],
            Shape::Scalar(Scalar::String)
        );
    }

    #[test]
    fn normalize_fills_absent_attributes_with_null() {
        let shape = Shape::from_block_json(&json!({
            "attributes": {"a": {"type": "string"}, "b": {"type": ["list", "number"]}},
            "block_types": {"c": {"nesting_mode": "single", "block": {"attributes": {"d": {"type": "bool"}}}}}
        }))
        .unwrap();
        assert_eq!(
            shape.normalize(&json!({"a": "x", "c": {}})),
            json!({"a": "x", "b": null, "c": {"d": null}})
        );
        for value in [
            json!({"a": "x", "c": {}, "extra": 1}),
            json!({"b": [1, 2], "c": [{"d": true}]}),
            json!({"c": null}),
            json!([1]),
            json!("s"),
        ] {
            assert_eq!(
                shape.normalize_owned(value.clone()),
                shape.normalize(&value),
                "{value}"
            );
        }
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(Schemas::from_providers_json("{").is_err());
        assert!(Schemas::from_providers_json("{}").is_err());
        let bad = r#"{"provider_schemas": {"p": {"resource_schemas": {"t": {"block": {"attributes": {"a": {"type": "strin"}}}}}}}}"#;
        assert_eq!(
            Schemas::from_providers_json(bad).unwrap_err().to_string(),
            "p t: attribute a: unknown type \"strin\""
        );
    }
}
