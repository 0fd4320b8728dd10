//! Each resource type's schema and typed model, one module per type. A resource decodes its
//! configuration, plan and state into the model, a `#[derive(Serialize, Deserialize)]` struct
//! whose fields are [`Attr`]s, works on fields, and encodes the result back: a misspelt attribute
//! is a compile error, not a silent null. Each model's test checks it holds every attribute of
//! its schema.
//!
//! Terraform values may be unknown until apply anywhere in the tree, so every attribute is an
//! [`Attr`]: unknown, null or known. Values cross into serde as JSON in which an unknown is a
//! marker object ([`crate::value::UNKNOWN_MARK`]); [`Attr`] reads and writes that marker.

pub mod api_key;
pub mod burst_policy;
pub mod data_sources;
pub mod endpoint;
pub mod join_token;
pub mod pool;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::diag::{Diagnostic, Diagnostics};
use crate::schema::Block;
use crate::value::{Type, Value, is_unknown_mark, unknown_mark};

/// A list of names (pools, regions, jurisdictions), any of which may be unknown.
pub type Names = Attr<Vec<Attr<String>>>;

/// One attribute's value in a model.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Attr<T> {
    /// Not known until apply.
    Unknown,
    /// Not set.
    #[default]
    Null,
    /// Known.
    Known(T),
}

impl<T> Attr<T> {
    /// The value when known.
    pub fn known(&self) -> Option<&T> {
        match self {
            Attr::Known(v) => Some(v),
            _ => None,
        }
    }

    /// The value when known, to change.
    pub fn known_mut(&mut self) -> Option<&mut T> {
        match self {
            Attr::Known(v) => Some(v),
            _ => None,
        }
    }

    /// The value when known, by value.
    pub fn into_known(self) -> Option<T> {
        match self {
            Attr::Known(v) => Some(v),
            _ => None,
        }
    }

    /// Whether it is unknown.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Attr::Unknown)
    }

    /// Whether it is null.
    pub fn is_null(&self) -> bool {
        matches!(self, Attr::Null)
    }
}

impl Attr<String> {
    /// The string when known.
    pub fn as_str(&self) -> Option<&str> {
        self.known().map(String::as_str)
    }
}

impl<T: Copy> Attr<T> {
    /// A copy of the value when known.
    pub fn get(&self) -> Option<T> {
        self.known().copied()
    }
}

impl<T> Attr<Vec<Attr<T>>> {
    /// The elements, when the list and every element are known.
    pub fn all_known(&self) -> Option<Vec<&T>> {
        self.known()?.iter().map(Attr::known).collect()
    }
}

impl<T> From<Option<T>> for Attr<T> {
    /// `None` is null.
    fn from(v: Option<T>) -> Attr<T> {
        v.map_or(Attr::Null, Attr::Known)
    }
}

impl<T: Serialize> Serialize for Attr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Attr::Unknown => unknown_mark().serialize(s),
            Attr::Null => s.serialize_none(),
            Attr::Known(v) => v.serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Attr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Attr<T>, D::Error> {
        let json = serde_json::Value::deserialize(d)?;
        if json.is_null() {
            Ok(Attr::Null)
        } else if is_unknown_mark(&json) {
            Ok(Attr::Unknown)
        } else {
            T::deserialize(json)
                .map(Attr::Known)
                .map_err(D::Error::custom)
        }
    }
}

/// Decodes a value into a model. A value that does not fit is a bug in the model (the schema and
/// the model disagree), reported with the attribute path.
pub fn decode<T: DeserializeOwned>(v: &Value) -> Result<T, Diagnostics> {
    serde_path_to_error::deserialize(v.to_marked_json()).map_err(|e| model_mismatch(e.to_string()))
}

/// Decodes an object that may not exist (a prior state on create, a plan on destroy): null is
/// `None`.
pub fn decode_object<T: DeserializeOwned>(v: &Value) -> Result<Option<T>, Diagnostics> {
    match v {
        Value::Null => Ok(None),
        v => decode(v).map(Some),
    }
}

/// Decodes the settings a value stands for ([`Block::effective`]: defaults filled in), for code
/// that acts on them rather than plans them.
pub fn decode_effective<T: DeserializeOwned>(block: &Block, v: &Value) -> Result<T, Diagnostics> {
    decode(&block.effective(v))
}

/// Encodes a model as a value of the resource's type.
pub fn encode<T: Serialize>(model: &T, ty: &Type) -> Result<Value, Diagnostics> {
    let json = serde_json::to_value(model).map_err(|e| model_mismatch(e.to_string()))?;
    Value::from_marked_json(&json, ty).map_err(|e| model_mismatch(e.to_string()))
}

fn model_mismatch(detail: String) -> Diagnostics {
    Diagnostic::error(
        "Internal error in the gpucap provider",
        format!(
            "a value does not match the resource's model ({detail}). This is a bug; please report \
             it with the configuration that caused it."
        ),
    )
    .into()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::schema::{Nesting, Schema};

    /// `v` with every null attribute left out, at every depth.
    fn without_nulls(v: &Value) -> Value {
        match v {
            Value::Map(m) => Value::Map(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), without_nulls(v)))
                    .collect(),
            ),
            Value::List(items) => Value::List(items.iter().map(without_nulls).collect()),
            other => other.clone(),
        }
    }

    /// A value of `block` with every attribute unknown, nested blocks included.
    fn all_unknown(block: &Block) -> Value {
        let mut m: BTreeMap<String, Value> = block
            .attributes
            .keys()
            .map(|k| (k.clone(), Value::Unknown))
            .collect();
        for (k, b) in &block.blocks {
            let inner = all_unknown(&b.block);
            m.insert(
                k.clone(),
                match b.nesting {
                    Nesting::Single => inner,
                    Nesting::List => Value::List(vec![inner]),
                },
            );
        }
        Value::Map(m)
    }

    /// A model that drops or renames an attribute fails this: an all-unknown value would come
    /// back with a null (or an error), and so would an all-null one with defaults filled in.
    pub(crate) fn round_trips<T: Serialize + DeserializeOwned>(schema: &Schema) {
        let ty = schema.block.implied_type();
        let unknown = all_unknown(&schema.block);
        let model: T = decode(&unknown).expect("decodes");
        assert_eq!(encode(&model, &ty).expect("encodes"), unknown);
        let effective = schema.block.effective(&Value::Map(BTreeMap::new()));
        let model: T = decode(&effective).expect("decodes");
        let back = encode(&model, &ty).expect("encodes");
        // Every attribute comes back (null where it has no default), with the defaults' values.
        assert_eq!(
            without_nulls(&back),
            without_nulls(&effective),
            "defaults survive, and nothing else appears"
        );
        assert_eq!(
            back,
            schema.block.effective(&back),
            "nothing is left to default"
        );
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Thing {
        name: Attr<String>,
        count: Attr<i64>,
        price: Attr<f64>,
        zones: Attr<Vec<Attr<String>>>,
    }

    fn ty() -> Type {
        Type::Object(BTreeMap::from([
            ("name".into(), Type::String),
            ("count".into(), Type::Number),
            ("price".into(), Type::Number),
            ("zones".into(), Type::List(Box::new(Type::String))),
        ]))
    }

    #[test]
    fn unknowns_survive_a_round_trip_at_any_depth() {
        let mut v = Value::from_json(
            &serde_json::json!({"name": "a", "count": 2, "price": 2.0, "zones": ["x", "y"]}),
            &ty(),
        )
        .unwrap();
        v.set("count", Value::Unknown);
        if let Value::Map(m) = &mut v {
            m.insert(
                "zones".into(),
                Value::List(vec![Value::String("x".into()), Value::Unknown]),
            );
        }
        let thing: Thing = decode(&v).unwrap();
        assert_eq!(thing.name.as_str(), Some("a"));
        assert!(thing.count.is_unknown());
        assert_eq!(
            thing.price.get(),
            Some(2.0),
            "a whole float reads as a float"
        );
        assert_eq!(thing.zones.all_known(), None, "one zone is unknown");
        assert_eq!(encode(&thing, &ty()).unwrap(), v);
    }

    #[test]
    fn a_value_the_model_cannot_hold_names_its_path() {
        let v = Value::from_json(&serde_json::json!({"count": 2.5}), &ty()).unwrap();
        let err = decode::<Thing>(&v).unwrap_err();
        assert!(err.0[0].detail.contains("count"), "{:?}", err);
    }
}
