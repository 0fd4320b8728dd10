//! The `DynamicValue` encodings: cty's msgpack form (what Terraform sends and expects) and its JSON
//! form (a fallback Terraform may use, and the form of raw state).
//!
//! Decoding follows the schema's [`Type`]; anything that does not fit is an error naming the path,
//! never a panic. Any msgpack extension value reads as unknown: cty uses extension 0 for plain
//! unknowns and 12 for refined ones, and a future refinement must not break an old provider.

use std::collections::BTreeMap;

use rmpv::Value as Mp;

use crate::value::{Type, Value, parse_number};

/// A value that could not be decoded, with the attribute path where it went wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{path}: {message}")]
pub struct CodecError {
    /// Where, e.g. `.gpu.per_node` (empty for the root).
    pub path: String,
    /// What was wrong.
    pub message: String,
}

fn fail(path: &str, message: impl Into<String>) -> CodecError {
    CodecError {
        path: if path.is_empty() {
            ".".into()
        } else {
            path.into()
        },
        message: message.into(),
    }
}

/// msgpack nesting deeper than this is refused; no schema here is anywhere near it.
const MAX_DEPTH: usize = 64;

/// Decodes msgpack bytes as a value of type `ty`.
pub fn decode_msgpack(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    let mut cursor = bytes;
    let mp = rmpv::decode::read_value_with_max_depth(&mut cursor, MAX_DEPTH)
        .map_err(|e| fail("", format!("malformed msgpack: {e}")))?;
    if !cursor.is_empty() {
        return Err(fail(
            "",
            format!("{} trailing bytes after the value", cursor.len()),
        ));
    }
    from_msgpack(&mp, ty, "")
}

fn from_msgpack(mp: &Mp, ty: &Type, path: &str) -> Result<Value, CodecError> {
    if let Mp::Ext(..) = mp {
        return Ok(Value::Unknown);
    }
    if let Mp::Nil = mp {
        return Ok(Value::Null);
    }
    let elem = |i: usize| format!("{path}[{i}]");
    Ok(match ty {
        Type::String => match mp {
            Mp::String(s) => Value::String(
                s.as_str()
                    .ok_or_else(|| fail(path, "string is not valid UTF-8"))?
                    .to_string(),
            ),
            other => return Err(fail(path, format!("expected a string, found {other}"))),
        },
        Type::Bool => match mp {
            Mp::Boolean(b) => Value::Bool(*b),
            other => return Err(fail(path, format!("expected a bool, found {other}"))),
        },
        Type::Number => match mp {
            Mp::Integer(i) => match i.as_i64() {
                Some(v) => Value::Int(v),
                None => Value::Float(i.as_f64().unwrap_or(f64::NAN)),
            },
            Mp::F32(f) => Value::Float(f64::from(*f)),
            Mp::F64(f) => Value::Float(*f),
            Mp::String(s) => parse_number(s.as_str().unwrap_or_default())
                .map_err(|e| fail(path, e.to_string()))?,
            other => return Err(fail(path, format!("expected a number, found {other}"))),
        },
        Type::List(t) | Type::Set(t) => {
            let Mp::Array(items) = mp else {
                return Err(fail(path, format!("expected a list, found {mp}")));
            };
            let items = items
                .iter()
                .enumerate()
                .map(|(i, e)| from_msgpack(e, t, &elem(i)))
                .collect::<Result<_, _>>()?;
            if matches!(ty, Type::Set(_)) {
                Value::Set(items)
            } else {
                Value::List(items)
            }
        }
        Type::Tuple(ts) => {
            let Mp::Array(items) = mp else {
                return Err(fail(path, format!("expected a tuple, found {mp}")));
            };
            if items.len() != ts.len() {
                return Err(fail(
                    path,
                    format!(
                        "expected {} tuple elements, found {}",
                        ts.len(),
                        items.len()
                    ),
                ));
            }
            Value::List(
                items
                    .iter()
                    .zip(ts)
                    .enumerate()
                    .map(|(i, (e, t))| from_msgpack(e, t, &elem(i)))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Map(t) => Value::Map(
            map_entries(mp, path)?
                .into_iter()
                .map(|(k, v)| {
                    let p = format!("{path}[{k:?}]");
                    Ok((k, from_msgpack(v, t, &p)?))
                })
                .collect::<Result<_, CodecError>>()?,
        ),
        Type::Object(attrs) => {
            let entries = map_entries(mp, path)?;
            if let Some(extra) = entries.keys().find(|k| !attrs.contains_key(*k)) {
                return Err(fail(path, format!("unexpected attribute \"{extra}\"")));
            }
            Value::Map(
                attrs
                    .iter()
                    .map(|(k, t)| {
                        let p = format!("{path}.{k}");
                        let v = match entries.get(k) {
                            Some(v) => from_msgpack(v, t, &p)?,
                            None => Value::Null,
                        };
                        Ok((k.clone(), v))
                    })
                    .collect::<Result<_, CodecError>>()?,
            )
        }
        Type::Dynamic => {
            // `[type as JSON, value]`, the type JSON as bytes (or a string from other encoders).
            let Mp::Array(pair) = mp else {
                return Err(fail(path, "expected a dynamic value [type, value]"));
            };
            let [type_json, inner] = pair.as_slice() else {
                return Err(fail(path, "expected a dynamic value [type, value]"));
            };
            let raw = match type_json {
                Mp::Binary(b) => b.as_slice(),
                Mp::String(s) => s.as_bytes(),
                _ => return Err(fail(path, "dynamic value type is not JSON bytes")),
            };
            let type_value: serde_json::Value = serde_json::from_slice(raw)
                .map_err(|e| fail(path, format!("dynamic value type is not JSON: {e}")))?;
            let inner_ty = Type::from_json(&type_value).map_err(|e| fail(path, e.to_string()))?;
            if inner_ty == Type::Dynamic {
                return Err(fail(path, "a dynamic value cannot have the dynamic type"));
            }
            from_msgpack(inner, &inner_ty, path)?
        }
    })
}

fn map_entries<'a>(mp: &'a Mp, path: &str) -> Result<BTreeMap<String, &'a Mp>, CodecError> {
    let Mp::Map(entries) = mp else {
        return Err(fail(path, format!("expected a map or object, found {mp}")));
    };
    entries
        .iter()
        .map(|(k, v)| match k {
            Mp::String(s) => s
                .as_str()
                .map(|s| (s.to_string(), v))
                .ok_or_else(|| fail(path, "a key is not valid UTF-8")),
            other => Err(fail(path, format!("a key is not a string: {other}"))),
        })
        .collect()
}

/// Encodes a value of type `ty` as msgpack.
pub fn encode_msgpack(v: &Value, ty: &Type) -> Result<Vec<u8>, CodecError> {
    let mp = to_msgpack(v, ty, "")?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &mp).map_err(|e| fail("", e.to_string()))?;
    Ok(out)
}

fn to_msgpack(v: &Value, ty: &Type, path: &str) -> Result<Mp, CodecError> {
    Ok(match (ty, v) {
        (_, Value::Unknown) => Mp::Ext(0, vec![0]),
        (_, Value::Null) => Mp::Nil,
        (Type::Dynamic, v) => {
            let inner_ty = infer_type(v);
            let type_json = serde_json::to_vec(&inner_ty.to_json()).unwrap_or_default();
            Mp::Array(vec![Mp::Binary(type_json), to_msgpack(v, &inner_ty, path)?])
        }
        (Type::String, Value::String(s)) => Mp::from(s.as_str()),
        (Type::Bool, Value::Bool(b)) => Mp::Boolean(*b),
        (Type::Number, Value::Int(i)) => Mp::from(*i),
        (Type::Number, Value::Float(f)) => Mp::F64(*f),
        (Type::List(t) | Type::Set(t), Value::List(items) | Value::Set(items)) => Mp::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, e)| to_msgpack(e, t, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        (Type::Tuple(ts), Value::List(items)) if ts.len() == items.len() => Mp::Array(
            items
                .iter()
                .zip(ts)
                .enumerate()
                .map(|(i, (e, t))| to_msgpack(e, t, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        (Type::Map(t), Value::Map(m)) => Mp::Map(
            m.iter()
                .map(|(k, e)| {
                    Ok((
                        Mp::from(k.as_str()),
                        to_msgpack(e, t, &format!("{path}[{k:?}]"))?,
                    ))
                })
                .collect::<Result<_, CodecError>>()?,
        ),
        (Type::Object(attrs), Value::Map(m)) => {
            if let Some(extra) = m.keys().find(|k| !attrs.contains_key(*k)) {
                return Err(fail(
                    path,
                    format!("attribute \"{extra}\" is not in the schema"),
                ));
            }
            Mp::Map(
                attrs
                    .iter()
                    .map(|(k, t)| {
                        let e = m.get(k).unwrap_or(&Value::Null);
                        Ok((
                            Mp::from(k.as_str()),
                            to_msgpack(e, t, &format!("{path}.{k}"))?,
                        ))
                    })
                    .collect::<Result<_, CodecError>>()?,
            )
        }
        (ty, v) => {
            return Err(fail(
                path,
                format!("value {v:?} does not fit type {}", ty.to_json()),
            ));
        }
    })
}

/// The most specific type of a known value, for encoding dynamic values.
fn infer_type(v: &Value) -> Type {
    match v {
        Value::Null | Value::Unknown => Type::Dynamic,
        Value::Bool(_) => Type::Bool,
        Value::Int(_) | Value::Float(_) => Type::Number,
        Value::String(_) => Type::String,
        Value::List(items) | Value::Set(items) => {
            Type::Tuple(items.iter().map(infer_type).collect())
        }
        Value::Map(m) => Type::Object(m.iter().map(|(k, v)| (k.clone(), infer_type(v))).collect()),
    }
}

/// Decodes the JSON form of a value of type `ty`.
pub fn decode_json(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| fail("", format!("malformed JSON: {e}")))?;
    Value::from_json(&json, ty).map_err(|e| fail("", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool_type() -> Type {
        Type::Object(BTreeMap::from([
            ("name".into(), Type::String),
            ("price".into(), Type::Number),
            ("on".into(), Type::Bool),
            ("labels".into(), Type::Map(Box::new(Type::String))),
            ("zones".into(), Type::Set(Box::new(Type::String))),
            (
                "gpu".into(),
                Type::Object(BTreeMap::from([("per_node".into(), Type::Number)])),
            ),
            ("pair".into(), Type::Tuple(vec![Type::String, Type::Number])),
            ("any".into(), Type::Dynamic),
        ]))
    }

    fn sample() -> Value {
        Value::Map(BTreeMap::from([
            ("name".into(), Value::String("eu".into())),
            ("price".into(), Value::Float(2.5)),
            ("on".into(), Value::Bool(true)),
            (
                "labels".into(),
                Value::Map(BTreeMap::from([(
                    "team".into(),
                    Value::String("ml".into()),
                )])),
            ),
            ("zones".into(), Value::Set(vec![Value::String("a".into())])),
            (
                "gpu".into(),
                Value::Map(BTreeMap::from([("per_node".into(), Value::Unknown)])),
            ),
            (
                "pair".into(),
                Value::List(vec![Value::String("x".into()), Value::Int(-7)]),
            ),
            (
                "any".into(),
                Value::List(vec![Value::Int(1), Value::String("two".into())]),
            ),
        ]))
    }

    #[test]
    fn msgpack_round_trips_every_kind() {
        let bytes = encode_msgpack(&sample(), &pool_type()).unwrap();
        assert_eq!(decode_msgpack(&bytes, &pool_type()).unwrap(), sample());
    }

    #[test]
    fn any_extension_type_is_unknown_and_decimal_strings_are_numbers() {
        // A refined unknown: extension 12 with a payload.
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &Mp::Ext(12, vec![0x81, 0x01, 0xc3])).unwrap();
        assert_eq!(
            decode_msgpack(&bytes, &Type::String).unwrap(),
            Value::Unknown
        );
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &Mp::from("12345678901234567890.5")).unwrap();
        assert_eq!(
            decode_msgpack(&bytes, &Type::Number).unwrap(),
            Value::Float(12345678901234567890.5)
        );
    }

    #[test]
    fn wrong_shapes_name_the_path() {
        let mp = Mp::Map(vec![(
            Mp::from("gpu"),
            Mp::Map(vec![(Mp::from("per_node"), Mp::from("lots"))]),
        )]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &mp).unwrap();
        let err = decode_msgpack(&bytes, &pool_type()).unwrap_err();
        assert_eq!(err.path, ".gpu.per_node");
        assert!(err.message.contains("not a number"), "{err}");
        let err = decode_msgpack(&[0x92, 0x01], &pool_type()).unwrap_err();
        assert!(err.message.contains("malformed msgpack"), "{err}");
    }

    #[test]
    fn json_fallback_decodes() {
        let v = decode_json(br#"{"name":"eu","price":3}"#, &pool_type()).unwrap();
        assert_eq!(v.get("price"), &Value::Int(3));
        assert!(decode_json(b"{", &pool_type()).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_msgpack(&bytes, &pool_type());
            let _ = decode_msgpack(&bytes, &Type::Dynamic);
            let _ = decode_json(&bytes, &pool_type());
        }

        #[test]
        fn known_scalars_round_trip(s in ".*", i in any::<i64>(), f in -1e300f64..1e300, b in any::<bool>()) {
            let ty = Type::Tuple(vec![Type::String, Type::Number, Type::Number, Type::Bool]);
            let v = Value::List(vec![Value::String(s), Value::Int(i), Value::Float(f), Value::Bool(b)]);
            let bytes = encode_msgpack(&v, &ty).unwrap();
            prop_assert_eq!(decode_msgpack(&bytes, &ty).unwrap(), v);
        }
    }
}
