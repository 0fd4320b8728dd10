//! Validation driven by the schema: each attribute's declared [`Check`]s run on its value, null and
//! unknown values skipped (unknowns are checked again once known), and every problem names the
//! attribute's path and what would be valid. Checks across attributes ([`min_le_max`]) and those
//! whose valid values are only known at run time ([`one_of`]) are called by the resource.

use serde::de::DeserializeOwned;

use crate::diag::{Diagnostic, Diagnostics};
use crate::models;
use crate::schema::{Block, Check, Nesting};
use crate::value::Value;

/// Validates a resource's configuration: the checks `block` declares, then `checks` across
/// attributes on the configuration decoded into the resource's model `M`. A value the model cannot
/// hold (a fractional count) has failed a declared check already, so `checks` is skipped then.
pub fn typed<M: DeserializeOwned>(
    block: &Block,
    config: &Value,
    checks: impl FnOnce(&M, &mut Diagnostics),
) -> Diagnostics {
    let mut d = schema(block, config);
    match models::decode::<M>(config) {
        Ok(m) => checks(&m, &mut d),
        Err(e) if !d.has_errors() => return e,
        Err(_) => {}
    }
    d
}

/// Runs the checks `block` declares on `config`, nested blocks included.
pub fn schema(block: &Block, config: &Value) -> Diagnostics {
    let mut d = Diagnostics::default();
    walk(block, config, "", &mut d);
    d
}

fn walk(block: &Block, value: &Value, prefix: &str, d: &mut Diagnostics) {
    for (name, attr) in &block.attributes {
        let path = format!("{prefix}{name}");
        for check in &attr.checks {
            run(check, d, &path, value.get(name));
        }
    }
    for (name, nested) in &block.blocks {
        let inner = value.get(name);
        match nested.nesting {
            Nesting::Single => walk(&nested.block, inner, &format!("{prefix}{name}."), d),
            Nesting::List => {
                for (i, item) in inner.as_list().unwrap_or_default().iter().enumerate() {
                    walk(&nested.block, item, &format!("{prefix}{name}[{i}]."), d);
                }
            }
        }
    }
}

/// Runs one check on the value at `path`.
fn run(check: &Check, d: &mut Diagnostics, path: &str, v: &Value) {
    match check {
        Check::OneOf(_) => one_of(d, path, v, &check.allowed()),
        Check::IntIn(lo, hi) => int_in(d, path, v, *lo, *hi),
        Check::Fraction => fraction(d, path, v),
        Check::NonNegative => non_negative(d, path, v),
        Check::Duration => duration(d, path, v),
        Check::Name => name(d, path, v),
        Check::NameList => name_list(d, path, v),
    }
}

/// A string must be one of `allowed`.
pub fn one_of(d: &mut Diagnostics, path: &str, v: &Value, allowed: &[&str]) {
    if let Some(s) = v.as_str()
        && !allowed.contains(&s)
    {
        d.push(Diagnostic::attr_error(
            path,
            format!("Invalid value for {path}"),
            format!("{s:?} is not valid; use one of: {}", allowed.join(", ")),
        ));
    }
}

fn int_in(d: &mut Diagnostics, path: &str, v: &Value, lo: i64, hi: i64) {
    if v.is_null() || v.is_unknown() {
        return;
    }
    match v.as_i64() {
        Some(n) if (lo..=hi).contains(&n) => {}
        _ => d.push(Diagnostic::attr_error(
            path,
            format!("Invalid value for {path}"),
            format!(
                "{} is not valid; use a whole number from {lo} to {hi}",
                show(v)
            ),
        )),
    }
}

fn fraction(d: &mut Diagnostics, path: &str, v: &Value) {
    if let Some(u) = v.as_f64()
        && !(0.0..=1.0).contains(&u)
    {
        d.push(Diagnostic::attr_error(
            path,
            format!("Invalid value for {path}"),
            format!("{u} is not valid; use a fraction from 0 to 1, e.g. 0.8"),
        ));
    }
}

fn non_negative(d: &mut Diagnostics, path: &str, v: &Value) {
    if let Some(x) = v.as_f64()
        && !(x >= 0.0 && x.is_finite())
    {
        d.push(Diagnostic::attr_error(
            path,
            format!("Invalid value for {path}"),
            format!("{x} is not valid; use a number of 0 or more"),
        ));
    }
}

fn duration(d: &mut Diagnostics, path: &str, v: &Value) {
    let Some(s) = v.as_str() else {
        return;
    };
    let problem = match humantime::parse_duration(s) {
        Err(_) => format!("{s:?} is not a duration; write it like 30s, 5m or 1h30m"),
        Ok(t) if t > gpucap_fabric::config::MAX_DURATION => format!(
            "{s:?} is longer than {}, the longest a policy duration may be",
            humantime::format_duration(gpucap_fabric::config::MAX_DURATION)
        ),
        Ok(_) => return,
    };
    d.push(Diagnostic::attr_error(
        path,
        format!("Invalid duration for {path}"),
        problem,
    ));
}

/// `min ≤ max` inside a block (`nodes`, `replicas`) of `root`.
pub fn min_le_max(d: &mut Diagnostics, root: &Value, block: &str) {
    let b = root.get(block);
    if let (Some(min), Some(max)) = (b.get("min").as_i64(), b.get("max").as_i64())
        && min > max
    {
        d.push(Diagnostic::attr_error(
            &format!("{block}.min"),
            format!("{block}.min is larger than {block}.max"),
            format!("min = {min} and max = {max}; min must not exceed max"),
        ));
    }
}

fn name(d: &mut Diagnostics, path: &str, v: &Value) {
    if let Some(s) = v.as_str()
        && !is_valid_name(s)
    {
        d.push(Diagnostic::attr_error(
            path,
            format!("Invalid {path}"),
            format!(
                "{s:?} is not a valid name; use 1 to 63 lowercase letters, digits, '-' or '_', \
                 starting with a letter or digit"
            ),
        ));
    }
}

/// Whether `s` is a valid object name.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn name_list(d: &mut Diagnostics, path: &str, v: &Value) {
    let Some(items) = v.as_list() else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let Some(s) = item.as_str() else { continue };
        let p = format!("{path}[{i}]");
        if !is_valid_name(s) {
            d.push(Diagnostic::attr_error(
                &p,
                format!("Invalid name in {path}"),
                format!("{s:?} is not a valid name; use lowercase letters, digits, '-' or '_'"),
            ));
        } else if !seen.insert(s) {
            d.push(Diagnostic::attr_error(
                &p,
                format!("Duplicate name in {path}"),
                format!("{s:?} is listed more than once"),
            ));
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Mode, list_of_strings};
    use crate::value::Type;
    use serde_json::json;

    fn block() -> Block {
        Block::new("A thing.")
            .attr("t", Type::String, Mode::Optional, "")
            .check("t", Check::OneOf(&[("a", ""), ("b", "")]))
            .attr("d", Type::String, Mode::Optional, "")
            .check("d", Check::Duration)
            .attr("nm", Type::String, Mode::Optional, "")
            .check("nm", Check::Name)
            .attr("f", Type::Number, Mode::Optional, "")
            .check("f", Check::IntIn(0, 10))
            .attr("names", list_of_strings(), Mode::Optional, "")
            .check("names", Check::NameList)
            .single(
                "n",
                false,
                Block::new("")
                    .attr("u", Type::Number, Mode::Optional, "")
                    .check("u", Check::Fraction),
            )
    }

    fn v(j: serde_json::Value) -> Value {
        Value::from_json(&j, &block().implied_type()).unwrap()
    }

    #[test]
    fn declared_checks_report_paths_and_skip_unknowns() {
        let root = v(
            json!({"t": "x", "d": "5 parsecs", "nm": "Bad Name", "f": 1.5,
                            "names": ["a", "a"], "n": {"u": 80}}),
        );
        let paths: Vec<String> = schema(&block(), &root)
            .0
            .iter()
            .map(|x| x.path.clone().unwrap().to_string())
            .collect();
        assert_eq!(paths, ["d", "f", "names[1]", "nm", "t", "n.u"]);
        let mut unknown = root.clone();
        for k in ["t", "d", "nm", "f", "names", "n"] {
            unknown.set(k, Value::Unknown);
        }
        assert!(schema(&block(), &unknown).0.is_empty());
    }

    #[test]
    fn min_above_max_is_reported_on_min() {
        let root = Value::from_json(&json!({"n": {"min": 3, "max": 1}}), &Type::Dynamic).unwrap();
        let mut d = Diagnostics::default();
        min_le_max(&mut d, &root, "n");
        assert_eq!(d.0[0].path.clone().unwrap().to_string(), "n.min");
    }

    #[test]
    fn checks_describe_themselves() {
        let placement = Check::OneOf(&[("ordered", "in the order listed"), ("cheapest", "")]);
        assert_eq!(
            placement.describe(),
            "Either `ordered` (in the order listed) or `cheapest`."
        );
        let three = Check::OneOf(&[("a", ""), ("b", ""), ("c", "")]);
        assert_eq!(three.describe(), "One of `a`, `b` or `c`.");
        assert_eq!(
            Check::IntIn(1, 64).describe(),
            "A whole number from 1 to 64."
        );
    }
}
