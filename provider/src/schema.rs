//! Schemas of the provider, its resources and data sources, in a protocol-free form with builders
//! that read like the schema they describe. The wire layer converts them to `tfplugin5.Schema`; the
//! docs generator and the policy engine read them as they are.

use std::collections::BTreeMap;

use crate::value::Type;

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
            },
        );
        self
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
