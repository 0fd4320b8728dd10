//! Small composable validators. Each looks at one attribute by path, skips null and unknown values
//! (unknowns are checked again once known), and reports what would be valid.

use crate::diag::{Diagnostic, Diagnostics};
use crate::value::Value;

/// Follows a dotted path (`gpu.per_node`) through objects.
pub fn at<'v>(root: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(root, |v, k| v.get(k))
}

/// A string attribute must be one of `allowed`.
pub fn one_of(d: &mut Diagnostics, root: &Value, path: &str, allowed: &[&str]) {
    if let Some(s) = at(root, path).as_str()
        && !allowed.contains(&s)
    {
        d.push(Diagnostic::attr_error(
            path,
            format!("Invalid value for {path}"),
            format!("{s:?} is not valid; use one of: {}", allowed.join(", ")),
        ));
    }
}

/// A whole number within `lo..=hi`.
pub fn int_in(d: &mut Diagnostics, root: &Value, path: &str, lo: i64, hi: i64) {
    let v = at(root, path);
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

/// A number ≥ 0.
pub fn non_negative(d: &mut Diagnostics, root: &Value, path: &str) {
    if let Some(x) = at(root, path).as_f64()
        && !(x >= 0.0 && x.is_finite())
    {
        d.push(Diagnostic::attr_error(
            path,
            format!("Invalid value for {path}"),
            format!("{x} is not valid; use a number of 0 or more"),
        ));
    }
}

/// A duration such as `30s`, `5m` or `1h30m`, at most the fabric's limit (a week).
pub fn duration(d: &mut Diagnostics, root: &Value, path: &str) {
    let Some(s) = at(root, path).as_str() else {
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

/// `min ≤ max` inside a block (`nodes`, `replicas`).
pub fn min_le_max(d: &mut Diagnostics, root: &Value, block: &str) {
    let b = at(root, block);
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

/// A name used in URLs, file names and references: 1–63 of `a-z`, `0-9`, `-`, `_`, starting with a
/// letter or digit.
pub fn name(d: &mut Diagnostics, root: &Value, path: &str) {
    if let Some(s) = at(root, path).as_str()
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

/// Each element of a list of names must be a valid name and appear once.
pub fn name_list(d: &mut Diagnostics, root: &Value, path: &str) {
    let Some(items) = at(root, path).as_list() else {
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
    use crate::value::Type;
    use serde_json::json;

    fn v(j: serde_json::Value) -> Value {
        Value::from_json(&j, &Type::Dynamic).unwrap()
    }

    #[test]
    fn validators_report_paths_and_skip_unknowns() {
        let root = v(
            json!({"t": "x", "n": {"min": 3, "max": 1}, "d": "5 parsecs", "nm": "Bad Name", "f": 1.5}),
        );
        let mut d = Diagnostics::default();
        one_of(&mut d, &root, "t", &["a", "b"]);
        min_le_max(&mut d, &root, "n");
        duration(&mut d, &root, "d");
        name(&mut d, &root, "nm");
        int_in(&mut d, &root, "f", 0, 10);
        let paths: Vec<String> =
            d.0.iter()
                .map(|x| x.path.clone().unwrap().to_string())
                .collect();
        assert_eq!(paths, ["t", "n.min", "d", "nm", "f"]);
        let mut unknown = root.clone();
        unknown.set("t", Value::Unknown);
        let mut d = Diagnostics::default();
        one_of(&mut d, &unknown, "t", &["a"]);
        assert!(d.0.is_empty());
    }
}
