//! Terraform values (cty) as the provider sees them: a [`Value`] tree that may hold unknowns, the
//! [`Type`] that gives it shape, and typed conversion to and from Rust structs.
//!
//! The wire encodings (msgpack and JSON `DynamicValue`s) live in [`crate::wire::codec`]; this module
//! is protocol-free so resource logic can be written and tested without gRPC.

use std::collections::BTreeMap;

/// A cty type: what the schema declares and what the wire encoding follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// `string`
    String,
    /// `number` (arbitrary precision in Terraform; `f64`/`i64` here)
    Number,
    /// `bool`
    Bool,
    /// `dynamic`: the value carries its own type on the wire.
    Dynamic,
    /// `list(T)`
    List(Box<Type>),
    /// `set(T)`
    Set(Box<Type>),
    /// `map(T)`
    Map(Box<Type>),
    /// `object({...})`
    Object(BTreeMap<String, Type>),
    /// `tuple([...])`
    Tuple(Vec<Type>),
}

impl Type {
    /// The type in cty's JSON form, as schemas send it (`"string"`, `["list","string"]`, ...).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Type::String => json!("string"),
            Type::Number => json!("number"),
            Type::Bool => json!("bool"),
            Type::Dynamic => json!("dynamic"),
            Type::List(t) => json!(["list", t.to_json()]),
            Type::Set(t) => json!(["set", t.to_json()]),
            Type::Map(t) => json!(["map", t.to_json()]),
            Type::Object(attrs) => {
                let m: serde_json::Map<_, _> = attrs
                    .iter()
                    .map(|(k, t)| (k.clone(), t.to_json()))
                    .collect();
                json!(["object", m])
            }
            Type::Tuple(ts) => json!(["tuple", ts.iter().map(Type::to_json).collect::<Vec<_>>()]),
        }
    }

    /// Parses cty's JSON type form, as found inside dynamic values.
    pub fn from_json(v: &serde_json::Value) -> Result<Type, ValueError> {
        use serde_json::Value as J;
        match v {
            J::String(s) => match s.as_str() {
                "string" => Ok(Type::String),
                "number" => Ok(Type::Number),
                "bool" => Ok(Type::Bool),
                "dynamic" => Ok(Type::Dynamic),
                other => Err(ValueError::NotAType(format!(
                    "unknown primitive type {other:?}"
                ))),
            },
            J::Array(parts) if parts.len() == 2 => {
                let kind = parts[0].as_str().unwrap_or_default();
                match kind {
                    "list" => Ok(Type::List(Box::new(Type::from_json(&parts[1])?))),
                    "set" => Ok(Type::Set(Box::new(Type::from_json(&parts[1])?))),
                    "map" => Ok(Type::Map(Box::new(Type::from_json(&parts[1])?))),
                    "object" => {
                        let attrs = parts[1].as_object().ok_or_else(|| {
                            ValueError::NotAType("object type without attributes".into())
                        })?;
                        let attrs = attrs
                            .iter()
                            .map(|(k, t)| Ok((k.clone(), Type::from_json(t)?)))
                            .collect::<Result<_, ValueError>>()?;
                        Ok(Type::Object(attrs))
                    }
                    "tuple" => {
                        let elems = parts[1].as_array().ok_or_else(|| {
                            ValueError::NotAType("tuple type without elements".into())
                        })?;
                        Ok(Type::Tuple(
                            elems
                                .iter()
                                .map(Type::from_json)
                                .collect::<Result<_, _>>()?,
                        ))
                    }
                    other => Err(ValueError::NotAType(format!(
                        "unknown type constructor {other:?}"
                    ))),
                }
            }
            // `["object", {...}, ["optional", ...]]` carries optional-attribute markers we can ignore.
            J::Array(parts) if parts.len() == 3 && parts[0] == "object" => {
                Type::from_json(&J::Array(parts[..2].to_vec()))
            }
            other => Err(ValueError::NotAType(format!("not a type: {other}"))),
        }
    }
}

/// Why JSON is not a type, or not a value of the type asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// Not cty's JSON form of a type.
    #[error("{0}")]
    NotAType(String),
    /// An object has an attribute its type lacks.
    #[error("unsupported attribute \"{0}\"")]
    UnsupportedAttribute(String),
    /// A value of another type.
    #[error("expected {expected}, found {found}")]
    Mismatch {
        /// The type, in cty's JSON form.
        expected: String,
        /// The JSON found.
        found: String,
    },
    /// A string that should be a number.
    #[error("{0:?} is not a number")]
    NotANumber(String),
    /// A problem inside an attribute.
    #[error("{path}: {source}")]
    At {
        /// The attribute.
        path: String,
        /// What is wrong in it.
        source: Box<ValueError>,
    },
}

/// A Terraform value. `Unknown` stands for "known after apply" anywhere in the tree.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`
    #[default]
    Null,
    /// Not known until apply.
    Unknown,
    /// A bool.
    Bool(bool),
    /// A number that fits an `i64` exactly.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    String(String),
    /// A list or tuple.
    List(Vec<Value>),
    /// A set (kept in wire order; Terraform does not rely on it).
    Set(Vec<Value>),
    /// A map or object.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether this is unknown (the value itself, not something inside it).
    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }

    /// Whether the value holds no unknown anywhere.
    pub fn is_wholly_known(&self) -> bool {
        match self {
            Value::Unknown => false,
            Value::List(v) | Value::Set(v) => v.iter().all(Value::is_wholly_known),
            Value::Map(m) => m.values().all(Value::is_wholly_known),
            _ => true,
        }
    }

    /// An attribute of an object, or `Null` when absent or when `self` is not an object.
    pub fn get(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        match self {
            Value::Map(m) => m.get(name).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    /// Sets an attribute of an object (no-op on non-objects).
    pub fn set(&mut self, name: &str, v: Value) {
        if let Value::Map(m) = self {
            m.insert(name.to_string(), v);
        }
    }

    /// The string, if this is a known string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is a known bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number as `f64`, if this is a known number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The number as `i64`, if this is a known whole number.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            _ => None,
        }
    }

    /// The elements, if this is a known list or set.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Set(v) => Some(v),
            _ => None,
        }
    }

    /// Converts to JSON, or `None` when something inside is unknown.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        self.is_wholly_known()
            .then(|| self.to_json_unknown_as_null())
    }

    /// Converts to JSON with unknown values as null: how plan JSON shows what apply will decide,
    /// and so how policy rules see a planned object.
    pub fn to_json_unknown_as_null(&self) -> serde_json::Value {
        self.to_json_with(Marks::None)
    }

    /// Builds a value of type `ty` from JSON: objects get every attribute of the type (absent ones
    /// null), numbers become `Int` where whole, lists and sets follow the type.
    pub fn from_json(j: &serde_json::Value, ty: &Type) -> Result<Value, ValueError> {
        Value::from_json_with(j, ty, Marks::None)
    }

    /// Converts to JSON with each unknown as [`UNKNOWN_MARK`], for typed models
    /// ([`crate::models`]) that keep unknowns; whole numbers are JSON integers so they decode into
    /// integer and float fields alike.
    pub fn to_marked_json(&self) -> serde_json::Value {
        self.to_json_with(Marks::Unknowns)
    }

    fn to_json_with(&self, marks: Marks) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Unknown if marks == Marks::Unknowns => unknown_mark(),
            Value::Unknown | Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) if marks == Marks::Unknowns && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                J::from(*f as i64)
            }
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::List(v) | Value::Set(v) => {
                J::Array(v.iter().map(|e| e.to_json_with(marks)).collect())
            }
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.to_json_with(marks)))
                    .collect(),
            ),
        }
    }

    /// The inverse of [`Value::to_marked_json`]: [`UNKNOWN_MARK`] becomes `Unknown`.
    pub fn from_marked_json(j: &serde_json::Value, ty: &Type) -> Result<Value, ValueError> {
        Value::from_json_with(j, ty, Marks::Unknowns)
    }

    fn from_json_with(j: &serde_json::Value, ty: &Type, marks: Marks) -> Result<Value, ValueError> {
        use serde_json::Value as J;
        Ok(match (ty, j) {
            (_, J::Null) => Value::Null,
            (_, j) if marks == Marks::Unknowns && is_unknown_mark(j) => Value::Unknown,
            (Type::Dynamic, j) => Value::from_untyped_json(j),
            (Type::String, J::String(s)) => Value::String(s.clone()),
            (Type::String, J::Number(n)) => Value::String(n.to_string()),
            (Type::String, J::Bool(b)) => Value::String(b.to_string()),
            (Type::Bool, J::Bool(b)) => Value::Bool(*b),
            (Type::Bool, J::String(s)) if s == "true" || s == "false" => Value::Bool(s == "true"),
            (Type::Number, J::Number(n)) => number_from_json(n),
            (Type::Number, J::String(s)) => parse_number(s)?,
            (Type::List(t), J::Array(a)) => Value::List(
                a.iter()
                    .map(|e| Value::from_json_with(e, t, marks))
                    .collect::<Result<_, _>>()?,
            ),
            (Type::Set(t), J::Array(a)) => Value::Set(
                a.iter()
                    .map(|e| Value::from_json_with(e, t, marks))
                    .collect::<Result<_, _>>()?,
            ),
            (Type::Tuple(ts), J::Array(a)) if ts.len() == a.len() => Value::List(
                a.iter()
                    .zip(ts)
                    .map(|(e, t)| Value::from_json_with(e, t, marks))
                    .collect::<Result<_, _>>()?,
            ),
            (Type::Map(t), J::Object(o)) => Value::Map(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), Value::from_json_with(v, t, marks)?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
            (Type::Object(attrs), J::Object(o)) => {
                if let Some(extra) = o.keys().find(|k| !attrs.contains_key(*k)) {
                    return Err(ValueError::UnsupportedAttribute(extra.clone()));
                }
                Value::Map(
                    attrs
                        .iter()
                        .map(|(k, t)| {
                            let v = o.get(k).unwrap_or(&J::Null);
                            Ok((
                                k.clone(),
                                Value::from_json_with(v, t, marks).map_err(|e| ValueError::At {
                                    path: k.clone(),
                                    source: Box::new(e),
                                })?,
                            ))
                        })
                        .collect::<Result<_, ValueError>>()?,
                )
            }
            (ty, j) => {
                return Err(ValueError::Mismatch {
                    expected: ty.to_json().to_string(),
                    found: j.to_string(),
                });
            }
        })
    }

    fn from_untyped_json(j: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => number_from_json(n),
            J::String(s) => Value::String(s.clone()),
            J::Array(a) => Value::List(a.iter().map(Value::from_untyped_json).collect()),
            J::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_untyped_json(v)))
                    .collect(),
            ),
        }
    }
}

/// How JSON may stand for an unknown value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marks {
    /// It cannot: JSON from users and files has no unknowns, and JSON for plans and rules shows
    /// them as null.
    None,
    /// As [`UNKNOWN_MARK`], in JSON made by [`Value::to_marked_json`] for typed models.
    Unknowns,
}

/// The key of the one-entry object that stands for an unknown value in marked JSON. No attribute
/// or map key Terraform accepts starts with a NUL character, so it cannot collide with data.
pub const UNKNOWN_MARK: &str = "\u{0}unknown";

/// The marked-JSON form of an unknown value.
pub fn unknown_mark() -> serde_json::Value {
    serde_json::json!({ UNKNOWN_MARK: true })
}

/// Whether `j` is the marked-JSON form of an unknown value.
pub fn is_unknown_mark(j: &serde_json::Value) -> bool {
    j.as_object()
        .is_some_and(|o| o.len() == 1 && o.contains_key(UNKNOWN_MARK))
}

fn number_from_json(n: &serde_json::Number) -> Value {
    match n.as_i64() {
        Some(i) => Value::Int(i),
        None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// Parses a number written as a decimal string (cty sends numbers too large for msgpack's ints this
/// way).
pub fn parse_number(s: &str) -> Result<Value, ValueError> {
    if let Ok(i) = s.trim().parse::<i64>() {
        return Ok(Value::Int(i));
    }
    match s.trim().parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Value::Float(f)),
        _ => Err(ValueError::NotANumber(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj_type() -> Type {
        Type::Object(BTreeMap::from([
            ("name".into(), Type::String),
            ("count".into(), Type::Number),
            ("tags".into(), Type::Map(Box::new(Type::String))),
            ("zones".into(), Type::List(Box::new(Type::String))),
        ]))
    }

    #[test]
    fn type_json_round_trips() {
        let t = Type::Object(BTreeMap::from([
            ("a".into(), Type::Set(Box::new(Type::Number))),
            ("b".into(), Type::Tuple(vec![Type::Bool, Type::Dynamic])),
        ]));
        assert_eq!(Type::from_json(&t.to_json()).unwrap(), t);
        assert_eq!(
            obj_type().to_json(),
            json!(["object", {"count": "number", "name": "string", "tags": ["map", "string"], "zones": ["list", "string"]}])
        );
    }

    #[test]
    fn json_objects_fill_absent_attributes_with_null() {
        let v = Value::from_json(&json!({"name": "a", "count": 2}), &obj_type()).unwrap();
        assert_eq!(v.get("name").as_str(), Some("a"));
        assert_eq!(v.get("count").as_i64(), Some(2));
        assert!(v.get("tags").is_null());
        let err = Value::from_json(&json!({"nope": 1}), &obj_type()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = Value::from_json(&json!({"count": "x"}), &obj_type()).unwrap_err();
        assert!(err.to_string().starts_with("count:"), "{err}");
    }
}
