//! Schemas of the provider, its resources and data sources, in a protocol-free form with builders
//! that read like the schema they describe. The wire layer converts them to `tfplugin5.Schema`; the
//! docs generator and the policy engine read them as they are.

use std::collections::BTreeMap;

use crate::value::{Type, Value};

/// A schema: a version (for state upgrades) and the root block.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Bumped when the stored state's shape changes; `UpgradeResourceState` upgrades older ones.
    pub version: i64,
    /// The root block.
    pub block: Block,
}

/// A block: attributes and nested blocks.
#[derive(Debug, Clone, Default)]
pub struct Block {
    /// What the block is for (Markdown).
    pub description: String,
    /// Attributes by name.
    pub attributes: BTreeMap<String, Attribute>,
    /// Nested blocks by type name.
    pub blocks: BTreeMap<String, NestedBlock>,
}

/// Whether the user sets an attribute, the provider does, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The user must set it.
    Required,
    /// The user may set it; absent means null.
    Optional,
    /// The user may set it; absent, the provider fills it in.
    OptionalComputed,
    /// Only the provider sets it.
    Computed,
}

/// One attribute.
#[derive(Debug, Clone)]
pub struct Attribute {
    /// Its type.
    pub ty: Type,
    /// Who sets it.
    pub mode: Mode,
    /// What it means (Markdown).
    pub description: String,
    /// A change to it replaces the resource.
    pub force_new: bool,
    /// Shown as `(sensitive value)`.
    pub sensitive: bool,
    /// The default the provider applies when the user leaves it unset (for docs and planning).
    pub default: Option<serde_json::Value>,
    /// What a valid value is: checked by validation, described in the docs.
    pub checks: Vec<Check>,
}

/// A check on an attribute's value, declared with the attribute: validation runs it
/// ([`crate::validate::schema`]) and [`Attribute::full_description`] describes it, so what is
/// valid is stated once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// One of these strings, each with what it means (empty when the name says it).
    OneOf(&'static [(&'static str, &'static str)]),
    /// A whole number within the range.
    IntIn(i64, i64),
    /// A number from 0 to 1.
    Fraction,
    /// A number of 0 or more.
    NonNegative,
    /// A duration such as `30s`, at most the fabric's longest.
    Duration,
    /// An object name: used in URLs, file names and references.
    Name,
    /// A list of distinct object names.
    NameList,
}

impl Check {
    /// The check as a sentence of the attribute's description.
    pub fn describe(&self) -> String {
        match self {
            Check::OneOf(values) => {
                let items: Vec<String> = values
                    .iter()
                    .map(|(v, means)| {
                        if means.is_empty() {
                            format!("`{v}`")
                        } else {
                            format!("`{v}` ({means})")
                        }
                    })
                    .collect();
                match items.as_slice() {
                    [a, b] => format!("Either {a} or {b}."),
                    _ => format!("One of {}.", or_list(&items)),
                }
            }
            Check::IntIn(lo, hi) => format!("A whole number from {lo} to {hi}."),
            Check::Fraction => "A fraction from 0 to 1.".into(),
            Check::NonNegative => "A number of 0 or more.".into(),
            Check::Duration => format!(
                "A duration such as `30s`, `5m` or `1h30m`, at most {} days.",
                gpucap_fabric::config::MAX_DURATION.as_secs() / 86_400
            ),
            Check::Name => {
                "A name of 1 to 63 lowercase letters, digits, `-` or `_`, starting with a \
                 letter or digit."
                    .into()
            }
            Check::NameList => {
                "Names of 1 to 63 lowercase letters, digits, `-` or `_`, each listed once.".into()
            }
        }
    }

    /// The allowed strings of a [`Check::OneOf`].
    pub fn allowed(&self) -> Vec<&'static str> {
        match self {
            Check::OneOf(values) => values.iter().map(|(v, _)| *v).collect(),
            _ => Vec::new(),
        }
    }
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// A default as descriptions show it: strings and bools as code, numbers as they are.
fn show_default(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

impl Attribute {
    /// What the attribute means, then what its checks accept and its default: the one text
    /// Terraform, the registry docs and the policy schema show.
    pub fn full_description(&self) -> String {
        let mut text = self.description.trim().to_string();
        for check in &self.checks {
            sentence(&mut text, &check.describe());
        }
        if let Some(default) = &self.default {
            sentence(&mut text, &format!("Default: {}.", show_default(default)));
        }
        text
    }
}

/// Appends a sentence, ending the text before it with a full stop.
pub fn sentence(text: &mut String, s: &str) {
    if !text.is_empty() {
        if !text.ends_with(['.', '!', '?']) {
            text.push('.');
        }
        text.push(' ');
    }
    text.push_str(s);
}

/// How many of a nested block there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// At most one; absent is null.
    Single,
    /// An ordered list.
    List,
}

/// A nested block type.
#[derive(Debug, Clone)]
pub struct NestedBlock {
    /// The block's content.
    pub block: Block,
    /// Single or list.
    pub nesting: Nesting,
    /// Whether at least one is required.
    pub required: bool,
    /// An absent block means its attributes' defaults (`batching {}` and no `batching` behave
    /// alike), rather than the absence of what the block configures.
    pub absent_means_defaults: bool,
}

impl Block {
    /// An empty block with a description.
    pub fn new(description: &str) -> Block {
        Block {
            description: description.into(),
            ..Block::default()
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, name: &str, ty: Type, mode: Mode, description: &str) -> Block {
        self.attributes.insert(
            name.into(),
            Attribute {
                ty,
                mode,
                description: description.into(),
                force_new: false,
                sensitive: false,
                default: None,
                checks: Vec::new(),
            },
        );
        self
    }

    /// Marks the last-named attribute as replacing the resource when it changes.
    pub fn force_new(mut self, name: &str) -> Block {
        if let Some(a) = self.attributes.get_mut(name) {
            a.force_new = true;
        }
        self
    }

    /// Declares a check on the named attribute's value.
    pub fn check(mut self, name: &str, check: Check) -> Block {
        if let Some(a) = self.attributes.get_mut(name) {
            a.checks.push(check);
        }
        self
    }

    /// Records the default of an optional+computed attribute.
    pub fn default_value(mut self, name: &str, value: serde_json::Value) -> Block {
        if let Some(a) = self.attributes.get_mut(name) {
            a.default = Some(value);
        }
        self
    }

    /// Adds a single nested block.
    pub fn single(mut self, name: &str, required: bool, block: Block) -> Block {
        self.blocks.insert(
            name.into(),
            NestedBlock {
                block,
                nesting: Nesting::Single,
                required,
                absent_means_defaults: false,
            },
        );
        self
    }

    /// Adds a list of nested blocks (any number, in order).
    pub fn list(mut self, name: &str, block: Block) -> Block {
        self.blocks.insert(
            name.into(),
            NestedBlock {
                block,
                nesting: Nesting::List,
                required: false,
                absent_means_defaults: false,
            },
        );
        self
    }

    /// Marks the last-named attribute as sensitive: Terraform never shows its value.
    pub fn sensitive(mut self, name: &str) -> Block {
        if let Some(a) = self.attributes.get_mut(name) {
            a.sensitive = true;
        }
        self
    }

    /// Marks the named single nested block as meaning its defaults when absent.
    pub fn absent_means_defaults(mut self, name: &str) -> Block {
        if let Some(b) = self.blocks.get_mut(name) {
            b.absent_means_defaults = true;
        }
        self
    }

    /// The settings a value of this block stands for: null attributes take their defaults, and
    /// absent blocks that mean their defaults are filled in. Code that acts on settings reads
    /// this, so each default is stated once, in the schema.
    pub fn effective(&self, v: &Value) -> Value {
        let Value::Map(map) = v else {
            return v.clone();
        };
        let mut out = map.clone();
        for (name, attr) in &self.attributes {
            if let Some(default) = &attr.default
                && out.get(name).is_none_or(Value::is_null)
            {
                out.insert(
                    name.clone(),
                    Value::from_json(default, &attr.ty).unwrap_or(Value::Null),
                );
            }
        }
        for (name, nested) in &self.blocks {
            let inner = out.get(name).cloned().unwrap_or(Value::Null);
            let inner = match (&inner, nested.nesting) {
                (Value::Null, Nesting::Single) if nested.absent_means_defaults => {
                    nested.block.effective(&Value::Map(BTreeMap::new()))
                }
                (Value::Map(_), Nesting::Single) => nested.block.effective(&inner),
                (Value::List(items), Nesting::List) => {
                    Value::List(items.iter().map(|i| nested.block.effective(i)).collect())
                }
                _ => inner,
            };
            out.insert(name.clone(), inner);
        }
        Value::Map(out)
    }

    /// The cty object type values of this block have.
    pub fn implied_type(&self) -> Type {
        let mut attrs: BTreeMap<String, Type> = self
            .attributes
            .iter()
            .map(|(k, a)| (k.clone(), a.ty.clone()))
            .collect();
        for (k, b) in &self.blocks {
            let inner = b.block.implied_type();
            attrs.insert(
                k.clone(),
                match b.nesting {
                    Nesting::Single => inner,
                    Nesting::List => Type::List(Box::new(inner)),
                },
            );
        }
        Type::Object(attrs)
    }
}

/// Shorthand for `list(string)`.
pub fn list_of_strings() -> Type {
    Type::List(Box::new(Type::String))
}

/// Shorthand for `map(string)`.
pub fn map_of_strings() -> Type {
    Type::Map(Box::new(Type::String))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn block() -> Block {
        Block::new("")
            .attr("name", Type::String, Mode::Required, "")
            .attr("mode", Type::String, Mode::OptionalComputed, "How.")
            .check("mode", Check::OneOf(&[("a", "first"), ("b", "")]))
            .default_value("mode", json!("a"))
            .single(
                "tuning",
                false,
                Block::new("")
                    .attr("size", Type::Number, Mode::OptionalComputed, "")
                    .default_value("size", json!(3)),
            )
            .absent_means_defaults("tuning")
            .single(
                "budget",
                false,
                Block::new("").attr("max", Type::Number, Mode::Required, ""),
            )
    }

    #[test]
    fn effective_settings_take_defaults_and_keep_absent_optional_blocks_absent() {
        let b = block();
        let v = Value::from_json(&json!({"name": "x"}), &b.implied_type()).unwrap();
        let e = b.effective(&v);
        assert_eq!(e.get("mode").as_str(), Some("a"));
        assert_eq!(e.get("tuning").get("size").as_i64(), Some(3));
        assert!(e.get("budget").is_null(), "an absent budget is no budget");
        let set = Value::from_json(
            &json!({"name": "x", "mode": "b", "tuning": {"size": 9}}),
            &b.implied_type(),
        )
        .unwrap();
        let e = b.effective(&set);
        assert_eq!(e.get("mode").as_str(), Some("b"));
        assert_eq!(e.get("tuning").get("size").as_i64(), Some(9));
    }

    #[test]
    fn the_full_description_adds_what_is_valid_and_the_default() {
        let b = block();
        assert_eq!(
            b.attributes["mode"].full_description(),
            "How. Either `a` (first) or `b`. Default: `a`."
        );
    }
}
