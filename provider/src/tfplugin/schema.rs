//! Schemas: the shape of a provider's, resource's or data source's
//! configuration and state, and the value types derived from them.
//!
//! The schema drives both what Terraform accepts in configuration and how
//! values are decoded: on the wire an object and a map, or a list and a set,
//! look alike, so decoding needs the type.

use std::collections::BTreeMap;

use serde_json::json;

use super::value::Value;

/// A Terraform (cty) value type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    String,
    Number,
    Bool,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Type>),
}

impl Type {
    pub fn list(element: Type) -> Self {
        Type::List(Box::new(element))
    }

    pub fn set(element: Type) -> Self {
        Type::Set(Box::new(element))
    }

    pub fn map(element: Type) -> Self {
        Type::Map(Box::new(element))
    }

    pub fn object<'a>(attributes: impl IntoIterator<Item = (&'a str, Type)>) -> Self {
        Type::Object(
            attributes
                .into_iter()
                .map(|(name, ty)| (name.to_owned(), ty))
                .collect(),
        )
    }

    /// The JSON type encoding Terraform expects in a schema attribute's
    /// `type` field: `"string"`, `["list","string"]`,
    /// `["object",{"a":"string"}]`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Type::String => json!("string"),
            Type::Number => json!("number"),
            Type::Bool => json!("bool"),
            Type::List(element) => json!(["list", element.to_json()]),
            Type::Set(element) => json!(["set", element.to_json()]),
            Type::Map(element) => json!(["map", element.to_json()]),
            Type::Object(attributes) => {
                let attributes: serde_json::Map<String, serde_json::Value> = attributes
                    .iter()
                    .map(|(name, ty)| (name.clone(), ty.to_json()))
                    .collect();
                json!(["object", attributes])
            }
        }
    }

    /// `to_json` as bytes, as the protocol carries it.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        self.to_json().to_string().into_bytes()
    }
}

/// A versioned schema for a provider, resource or data source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// Bumped when the stored state of a resource changes shape; Terraform
    /// then calls `upgrade_resource_state` with the old version.
    pub version: i64,
    pub block: Block,
}

impl Schema {
    /// A version 0 schema.
    pub fn new(block: Block) -> Self {
        Self { version: 0, block }
    }

    pub fn with_version(mut self, version: i64) -> Self {
        self.version = version;
        self
    }

    /// The type of values of this schema (the block's object type).
    pub fn value_type(&self) -> Type {
        self.block.value_type()
    }
}

/// A configuration block: attributes plus nested blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block {
    pub attributes: Vec<Attribute>,
    pub blocks: Vec<NestedBlock>,
    pub description: String,
}

impl Block {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn attribute(mut self, attribute: Attribute) -> Self {
        self.attributes.push(attribute);
        self
    }

    pub fn block(mut self, block: NestedBlock) -> Self {
        self.blocks.push(block);
        self
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// The object type of this block's values: each attribute with its
    /// type, each nested block as a list, set or single object.
    pub fn value_type(&self) -> Type {
        let mut attributes: BTreeMap<String, Type> = self
            .attributes
            .iter()
            .map(|attribute| (attribute.name.clone(), attribute.ty.clone()))
            .collect();
        for nested in &self.blocks {
            let object = nested.block.value_type();
            let ty = match nested.nesting {
                Nesting::Single => object,
                Nesting::List => Type::list(object),
                Nesting::Set => Type::set(object),
            };
            attributes.insert(nested.type_name.clone(), ty);
        }
        Type::Object(attributes)
    }

    /// Brings a value of this block into the shape Terraform insists on:
    /// list and set blocks are never null (no blocks is an empty
    /// collection, and Terraform rejects a plan that says null), absent
    /// attributes are null. Applied to every state the server returns, so
    /// providers may leave absent blocks out. `Null`/`Unknown` objects are
    /// returned unchanged; so is anything that is not an object.
    pub fn normalize(&self, value: Value) -> Value {
        let Value::Object(mut attributes) = value else {
            return value;
        };
        for attribute in &self.attributes {
            attributes
                .entry(attribute.name.clone())
                .or_insert(Value::Null);
        }
        for nested in &self.blocks {
            let current = attributes.remove(&nested.type_name).unwrap_or(Value::Null);
            let normalized = match (nested.nesting, current) {
                (Nesting::List, Value::Null) => Value::List(vec![]),
                (Nesting::Set, Value::Null) => Value::Set(vec![]),
                (Nesting::List, Value::List(items) | Value::Set(items)) => Value::List(
                    items
                        .into_iter()
                        .map(|item| nested.block.normalize(item))
                        .collect(),
                ),
                (Nesting::Set, Value::List(items) | Value::Set(items)) => Value::Set(
                    items
                        .into_iter()
                        .map(|item| nested.block.normalize(item))
                        .collect(),
                ),
                (Nesting::Single, object) => nested.block.normalize(object),
                (_, other) => other,
            };
            attributes.insert(nested.type_name.clone(), normalized);
        }
        Value::Object(attributes)
    }

    pub fn get_attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|attribute| attribute.name == name)
    }

    pub fn get_block(&self, type_name: &str) -> Option<&NestedBlock> {
        self.blocks
            .iter()
            .find(|block| block.type_name == type_name)
    }
}

/// One attribute of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub ty: Type,
    pub description: String,
    pub required: bool,
    pub optional: bool,
    pub computed: bool,
    /// Terraform hides sensitive values in plan output.
    pub sensitive: bool,
}

impl Attribute {
    fn new(name: impl Into<String>, ty: Type) -> Self {
        Self {
            name: name.into(),
            ty,
            description: String::new(),
            required: false,
            optional: false,
            computed: false,
            sensitive: false,
        }
    }

    /// Must be set in configuration.
    pub fn required(name: impl Into<String>, ty: Type) -> Self {
        Self {
            required: true,
            ..Self::new(name, ty)
        }
    }

    /// May be set in configuration; null otherwise.
    pub fn optional(name: impl Into<String>, ty: Type) -> Self {
        Self {
            optional: true,
            ..Self::new(name, ty)
        }
    }

    /// Set by the provider only.
    pub fn computed(name: impl Into<String>, ty: Type) -> Self {
        Self {
            computed: true,
            ..Self::new(name, ty)
        }
    }

    /// May be set in configuration; the provider fills it in otherwise.
    pub fn optional_computed(name: impl Into<String>, ty: Type) -> Self {
        Self {
            optional: true,
            computed: true,
            ..Self::new(name, ty)
        }
    }

    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }
}

/// How a nested block may repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// At most one block; the value is an object (null when absent).
    Single,
    /// An ordered list of blocks; the value is a list of objects.
    List,
    /// An unordered set of blocks; the value is a set of objects.
    Set,
}

/// A block nested in another, like `instance { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedBlock {
    pub type_name: String,
    pub block: Block,
    pub nesting: Nesting,
    /// 0 means no minimum.
    pub min_items: i64,
    /// 0 means no maximum.
    pub max_items: i64,
}

impl NestedBlock {
    pub fn new(type_name: impl Into<String>, nesting: Nesting, block: Block) -> Self {
        Self {
            type_name: type_name.into(),
            block,
            nesting,
            min_items: 0,
            max_items: 0,
        }
    }

    pub fn list(type_name: impl Into<String>, block: Block) -> Self {
        Self::new(type_name, Nesting::List, block)
    }

    pub fn set(type_name: impl Into<String>, block: Block) -> Self {
        Self::new(type_name, Nesting::Set, block)
    }

    pub fn single(type_name: impl Into<String>, block: Block) -> Self {
        Self::new(type_name, Nesting::Single, block)
    }

    pub fn min_items(mut self, min: i64) -> Self {
        self.min_items = min;
        self
    }

    pub fn max_items(mut self, max: i64) -> Self {
        self.max_items = max;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_json_encoding() {
        assert_eq!(Type::String.to_json_bytes(), br#""string""#);
        assert_eq!(Type::Number.to_json().to_string(), r#""number""#);
        assert_eq!(Type::Bool.to_json().to_string(), r#""bool""#);
        assert_eq!(
            Type::list(Type::String).to_json().to_string(),
            r#"["list","string"]"#
        );
        assert_eq!(
            Type::set(Type::Number).to_json().to_string(),
            r#"["set","number"]"#
        );
        assert_eq!(
            Type::map(Type::Bool).to_json().to_string(),
            r#"["map","bool"]"#
        );
        assert_eq!(
            Type::object([("a", Type::String), ("b", Type::list(Type::Number))])
                .to_json()
                .to_string(),
            r#"["object",{"a":"string","b":["list","number"]}]"#
        );
    }

    #[test]
    fn block_value_type_includes_nested_blocks() {
        let instance = Block::new()
            .attribute(Attribute::required("host", Type::String))
            .attribute(Attribute::optional("port", Type::Number));
        let block = Block::new()
            .attribute(Attribute::computed("id", Type::String))
            .block(NestedBlock::list("instance", instance.clone()).min_items(1))
            .block(NestedBlock::set("user", instance.clone()))
            .block(NestedBlock::single("window", instance));
        let object = Type::object([("host", Type::String), ("port", Type::Number)]);
        assert_eq!(
            block.value_type(),
            Type::object([
                ("id", Type::String),
                ("instance", Type::list(object.clone())),
                ("user", Type::set(object.clone())),
                ("window", object),
            ])
        );
    }

    #[test]
    fn normalize_fills_blocks_and_attributes() {
        let inner = Block::new()
            .attribute(Attribute::required("host", Type::String))
            .block(NestedBlock::set(
                "tag",
                Block::new().attribute(Attribute::required("k", Type::String)),
            ));
        let block = Block::new()
            .attribute(Attribute::computed("id", Type::String))
            .block(NestedBlock::list("instance", inner.clone()))
            .block(NestedBlock::set("user", inner.clone()))
            .block(NestedBlock::single("window", inner));
        let value = Value::object([(
            "instance",
            Value::List(vec![Value::object([("host", "h".into())])]),
        )]);
        let normalized = block.normalize(value);
        assert_eq!(
            normalized,
            Value::object([
                ("id", Value::Null),
                (
                    "instance",
                    Value::List(vec![Value::object([
                        ("host", "h".into()),
                        ("tag", Value::Set(vec![])),
                    ])]),
                ),
                ("user", Value::Set(vec![])),
                ("window", Value::Null),
            ])
        );
        assert_eq!(block.normalize(Value::Null), Value::Null);
        assert_eq!(block.normalize(Value::Unknown), Value::Unknown);
        let unknown_list = Value::object([("instance", Value::Unknown)]);
        assert!(block.normalize(unknown_list).get("instance").is_unknown());
    }

    #[test]
    fn attribute_builders() {
        let attribute = Attribute::optional_computed("password", Type::String)
            .sensitive()
            .description("The password");
        assert!(attribute.optional && attribute.computed && attribute.sensitive);
        assert!(!attribute.required);
        assert_eq!(attribute.description, "The password");
        assert!(Attribute::required("name", Type::String).required);
        let computed = Attribute::computed("id", Type::String);
        assert!(computed.computed && !computed.optional);
    }
}
