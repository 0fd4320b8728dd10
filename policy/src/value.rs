//! CEL values built from JSON, with containers shared rather than copied.
//!
//! The `cel` interpreter copies a value whenever it needs one of its own: each element a
//! comprehension binds (`pools.all(p, …)` copies every pool), a variable put in a list literal, and
//! so on. Its built-in maps and lists copy deeply, which made those copies most of the cost of
//! evaluating a rule. Here every map and list sits behind an [`Arc`] in a [`Shared`] value that
//! answers as the built-in container inside it, so a copy is a reference count, and the values of
//! a pool are built once for all the resources placed on it.

use std::collections::HashMap;
use std::sync::Arc;

use cel::Value;
use cel::common::traits::{
    Adder, Comparer, Container, Divider, Indexer, Iterable, Modder, Multiplier, Negator, Sizer,
    Subtractor, Zeroer,
};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, DYN_TYPE, Type,
};
use cel::common::value::{Builtin, BuiltinRef, Val};
use serde_json::Value as Json;

/// A CEL value that lives for the whole evaluation and is cheap to copy.
pub type CelVal = Box<dyn Val + 'static>;

/// A CEL value from JSON: whole numbers are `int`, others `double`; objects are maps; maps and
/// lists are [`Shared`].
pub fn from_json(v: &Json) -> CelVal {
    match v {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // Terraform writes whole numbers as floats when a number attribute went through
                // a float: rules compare them with ints, so they are ints where exact.
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Box::new(CelInt::from(f as i64))
                } else {
                    Box::new(CelDouble::from(f))
                }
            }
        },
        Json::String(s) => Box::new(CelString::from(s.clone())),
        Json::Array(items) => Shared::boxed(CelList::from(
            items.iter().map(from_json).collect::<Vec<_>>(),
        )),
        Json::Object(map) => Shared::boxed(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.clone()), from_json(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// A value the interpreter computed, with its maps and lists made [`Shared`]; `None` for one
/// that has no boxed form (none of its results, but the conversion is fallible).
pub fn from_cel(v: Value) -> Option<CelVal> {
    Some(match v {
        Value::List(items) => list(
            items
                .iter()
                .cloned()
                .map(from_cel)
                .collect::<Option<Vec<_>>>()?,
        ),
        Value::Map(map) => Shared::boxed(CelMap::from(
            map.map
                .iter()
                .map(|(k, v)| Some((CelMapKey::from(k.clone()), from_cel(v.clone())?)))
                .collect::<Option<HashMap<_, _>>>()?,
        )),
        other => Box::<dyn Val>::try_from(other).ok()?,
    })
}

/// A list of already built values, shared like the lists [`from_json`] builds.
pub fn list(items: Vec<CelVal>) -> CelVal {
    Shared::boxed(CelList::from(items))
}

/// A built-in CEL container behind an [`Arc`]: it answers every operator, function and downcast
/// as the container itself does, and copies by reference count. Only taking the container out by
/// value (rare: indexing a temporary) copies its top level.
#[derive(Debug, Clone)]
pub struct Shared(Arc<CelVal>);

impl Shared {
    fn boxed(inner: impl Val + 'static) -> CelVal {
        Box::new(Shared(Arc::new(Box::new(inner))))
    }

    fn into_unshared(self) -> CelVal {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| shared.clone_as_boxed())
    }
}

impl Val for Shared {
    fn get_type(&self) -> &Type {
        self.0.get_type()
    }

    /// Never asked of a `Shared`: only overload macros use it, and none names this type.
    fn cel_type() -> &'static Type {
        &DYN_TYPE
    }

    fn as_adder<'b, 'v>(&'b self) -> Option<&'b (dyn Adder + 'v)>
    where
        Self: 'v,
    {
        self.0.as_adder()
    }

    fn as_comparer(&self) -> Option<&dyn Comparer> {
        self.0.as_comparer()
    }

    fn as_container(&self) -> Option<&dyn Container> {
        self.0.as_container()
    }

    fn as_divider<'b, 'v>(&'b self) -> Option<&'b (dyn Divider + 'v)>
    where
        Self: 'v,
    {
        self.0.as_divider()
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        self.0.as_indexer()
    }

    fn into_indexer<'v>(self: Box<Self>) -> Option<Box<dyn Indexer + 'v>>
    where
        Self: 'v,
    {
        self.into_unshared().into_indexer()
    }

    fn as_iterable<'b, 'v>(&'b self) -> Option<&'b (dyn Iterable + 'v)>
    where
        Self: 'v,
    {
        self.0.as_iterable()
    }

    fn as_modder<'b, 'v>(&'b self) -> Option<&'b (dyn Modder + 'v)>
    where
        Self: 'v,
    {
        self.0.as_modder()
    }

    fn as_multiplier<'b, 'v>(&'b self) -> Option<&'b (dyn Multiplier + 'v)>
    where
        Self: 'v,
    {
        self.0.as_multiplier()
    }

    fn as_negator<'b, 'v>(&'b self) -> Option<&'b (dyn Negator + 'v)>
    where
        Self: 'v,
    {
        self.0.as_negator()
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        self.0.as_sizer()
    }

    fn as_subtractor<'b, 'v>(&'b self) -> Option<&'b (dyn Subtractor + 'v)>
    where
        Self: 'v,
    {
        self.0.as_subtractor()
    }

    fn as_zeroer(&self) -> Option<&dyn Zeroer> {
        self.0.as_zeroer()
    }

    fn equals(&self, other: &dyn Val) -> bool {
        self.0.equals(other)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(self.clone())
    }

    // The interpreter and the standard library recognise built-in containers (for equality,
    // `size`, conversions, …) through these two: answering as the inner container is what makes
    // a `Shared` list a list everywhere.
    fn as_builtin<'b, 'v>(&'b self) -> BuiltinRef<'b, 'v>
    where
        Self: 'v,
    {
        self.0.as_builtin()
    }

    fn into_builtin<'v>(self: Box<Self>) -> Option<Builtin<'v>>
    where
        Self: 'v,
    {
        self.into_unshared().into_builtin()
    }
}

/// A CEL value as JSON, for `gpucap-policy eval` and messages: timestamps and durations as RFC 3339
/// and seconds strings, bytes as base64.
pub fn to_json(v: &Value) -> Json {
    match v.json() {
        Ok(j) => j,
        Err(_) => Json::String(format!("{v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::{Context, Program};
    use serde_json::json;

    fn eval(expr: &str, vars: &[(&str, Json)]) -> Result<Value, String> {
        let program = Program::compile(expr).map_err(|e| e.to_string())?;
        let mut ctx = Context::default();
        for (name, v) in vars {
            ctx.add_variable_as_val(*name, from_json(v));
        }
        program.execute(&ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn shared_containers_behave_as_built_in_ones() {
        let pools = json!([{"name": "a", "gpus": 8, "tags": {"t": "x"}}, {"name": "b", "gpus": 2.5, "tags": {}}]);
        let m = json!({"k": [1, 2], "n": {"x": 1}});
        let vars = [("pools", pools), ("m", m)];
        for (expr, want) in [
            ("pools.all(p, p.name in ['a', 'b'])", Value::Bool(true)),
            ("pools.exists(p, p.gpus == 2.5)", Value::Bool(true)),
            ("pools.map(p, p.name) == ['a', 'b']", Value::Bool(true)),
            (
                "size(pools) == 2 && size(m) == 2 && size(pools[0].tags) == 1",
                Value::Bool(true),
            ),
            ("m == {'k': [1, 2], 'n': {'x': 1}}", Value::Bool(true)),
            ("{'k': [1, 2], 'n': {'x': 1}} == m", Value::Bool(true)),
            ("[pools[0].tags][0] == {'t': 'x'}", Value::Bool(true)),
            ("m.k + [3] == [1, 2, 3]", Value::Bool(true)),
            ("'k' in m && 2 in m.k && !('z' in m)", Value::Bool(true)),
            ("type(m) == map && type(m.k) == list", Value::Bool(true)),
            ("has(m.n.x) && !has(m.n.y)", Value::Bool(true)),
            (
                "pools.filter(p, p.gpus > 4)[0].tags.t",
                Value::String(Arc::new("x".into())),
            ),
            ("m.n.x == 1.0 && m.k[1] == 2u", Value::Bool(true)),
            ("dyn(m.k)[0] + 1", Value::Int(2)),
        ] {
            assert_eq!(eval(expr, &vars), Ok(want), "{expr}");
        }
        assert!(eval("m.missing", &vars).unwrap_err().contains("missing"));
        let whole = eval("m", &vars).unwrap();
        assert_eq!(to_json(&whole), json!({"k": [1, 2], "n": {"x": 1}}));
    }
}
