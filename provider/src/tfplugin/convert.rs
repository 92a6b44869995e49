//! Conversions between the hand-written types and the generated protocol
//! messages.

use super::diagnostics::{AttributePath, Diagnostic, PathStep, Severity};
use super::json;
use super::msgpack;
use super::proto::tfplugin6 as pb;
use super::schema::{Attribute, Block, NestedBlock, Nesting, Schema, Type};
use super::value::{Value, ValueError};

impl From<&Schema> for pb::Schema {
    fn from(schema: &Schema) -> Self {
        pb::Schema {
            version: schema.version,
            block: Some(block_to_proto(&schema.block, schema.version)),
        }
    }
}

fn block_to_proto(block: &Block, version: i64) -> pb::schema::Block {
    pb::schema::Block {
        version,
        attributes: block.attributes.iter().map(attribute_to_proto).collect(),
        block_types: block.blocks.iter().map(nested_block_to_proto).collect(),
        description: block.description.clone(),
        description_kind: pb::StringKind::Plain.into(),
        deprecated: false,
    }
}

/// `nested_type` is never set: Terraform 1.0.3 crashes on it. Structured
/// attributes are expressed as nested blocks or as object-typed `type`s.
fn attribute_to_proto(attribute: &Attribute) -> pb::schema::Attribute {
    pb::schema::Attribute {
        name: attribute.name.clone(),
        r#type: attribute.ty.to_json_bytes(),
        description: attribute.description.clone(),
        required: attribute.required,
        optional: attribute.optional,
        computed: attribute.computed,
        sensitive: attribute.sensitive,
        description_kind: pb::StringKind::Plain.into(),
        deprecated: false,
    }
}

fn nested_block_to_proto(nested: &NestedBlock) -> pb::schema::NestedBlock {
    use pb::schema::nested_block::NestingMode;
    let nesting = match nested.nesting {
        Nesting::Single => NestingMode::Single,
        Nesting::List => NestingMode::List,
        Nesting::Set => NestingMode::Set,
    };
    pb::schema::NestedBlock {
        type_name: nested.type_name.clone(),
        // Nested blocks carry no version of their own.
        block: Some(block_to_proto(&nested.block, 0)),
        nesting: nesting.into(),
        min_items: nested.min_items,
        max_items: nested.max_items,
    }
}

impl From<&Diagnostic> for pb::Diagnostic {
    fn from(diagnostic: &Diagnostic) -> Self {
        let severity = match diagnostic.severity {
            Severity::Error => pb::diagnostic::Severity::Error,
            Severity::Warning => pb::diagnostic::Severity::Warning,
        };
        pb::Diagnostic {
            severity: severity.into(),
            summary: diagnostic.summary.clone(),
            detail: diagnostic.detail.clone(),
            attribute: diagnostic.attribute.as_ref().map(Into::into),
        }
    }
}

pub(crate) fn diagnostics_to_proto(diagnostics: &[Diagnostic]) -> Vec<pb::Diagnostic> {
    diagnostics.iter().map(Into::into).collect()
}

impl From<&AttributePath> for pb::AttributePath {
    fn from(path: &AttributePath) -> Self {
        use pb::attribute_path::step::Selector;
        let steps = path
            .steps
            .iter()
            .map(|step| pb::attribute_path::Step {
                selector: Some(match step {
                    PathStep::Attribute(name) => Selector::AttributeName(name.clone()),
                    PathStep::ElementKeyString(key) => Selector::ElementKeyString(key.clone()),
                    PathStep::ElementKeyInt(index) => Selector::ElementKeyInt(*index),
                }),
            })
            .collect();
        pb::AttributePath { steps }
    }
}

impl From<&pb::AttributePath> for AttributePath {
    fn from(path: &pb::AttributePath) -> Self {
        use pb::attribute_path::step::Selector;
        let steps = path
            .steps
            .iter()
            .filter_map(|step| {
                Some(match step.selector.as_ref()? {
                    Selector::AttributeName(name) => PathStep::Attribute(name.clone()),
                    Selector::ElementKeyString(key) => PathStep::ElementKeyString(key.clone()),
                    Selector::ElementKeyInt(index) => PathStep::ElementKeyInt(*index),
                })
            })
            .collect();
        AttributePath { steps }
    }
}

/// Decodes a `DynamicValue` with type `ty`. A missing or empty value is
/// `Null`; msgpack is preferred when both encodings are present.
pub(crate) fn decode_dynamic(
    value: Option<&pb::DynamicValue>,
    ty: &Type,
) -> Result<Value, ValueError> {
    match value {
        Some(value) if !value.msgpack.is_empty() => msgpack::decode(&value.msgpack, ty),
        Some(value) if !value.json.is_empty() => json::decode_bytes(&value.json, ty),
        _ => Ok(Value::Null),
    }
}

/// Encodes a value as a msgpack `DynamicValue` of type `ty`.
pub(crate) fn encode_dynamic(value: &Value, ty: &Type) -> Result<pb::DynamicValue, ValueError> {
    Ok(pb::DynamicValue {
        msgpack: msgpack::encode(value, ty)?,
        json: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_to_proto() {
        let schema = Schema::new(
            Block::new()
                .attribute(Attribute::computed("id", Type::String))
                .attribute(Attribute::required("password", Type::String).sensitive())
                .block(
                    NestedBlock::list(
                        "instance",
                        Block::new().attribute(Attribute::required("host", Type::String)),
                    )
                    .min_items(1)
                    .max_items(3),
                ),
        )
        .with_version(2);
        let proto = pb::Schema::from(&schema);
        assert_eq!(proto.version, 2);
        let block = proto.block.expect("block");
        assert_eq!(block.version, 2);
        assert_eq!(block.attributes[0].name, "id");
        assert_eq!(block.attributes[0].r#type, br#""string""#);
        assert!(block.attributes[0].computed);
        assert!(block.attributes[1].sensitive && block.attributes[1].required);
        let nested = &block.block_types[0];
        assert_eq!(nested.type_name, "instance");
        assert_eq!(
            nested.nesting,
            pb::schema::nested_block::NestingMode::List as i32
        );
        assert_eq!((nested.min_items, nested.max_items), (1, 3));
        assert_eq!(
            nested.block.as_ref().map(|b| b.attributes[0].name.as_str()),
            Some("host")
        );
    }

    #[test]
    fn paths_round_trip_through_proto() {
        let path = AttributePath::root("instance")
            .index(2)
            .attr("tags")
            .key("env");
        let proto = pb::AttributePath::from(&path);
        assert_eq!(proto.steps.len(), 4);
        assert_eq!(AttributePath::from(&proto), path);
    }

    #[test]
    fn diagnostics_to_proto_keep_severity_and_path() {
        let diagnostics = [
            Diagnostic::error("bad", "worse").at(AttributePath::root("name")),
            Diagnostic::warning("meh", ""),
        ];
        let proto = diagnostics_to_proto(&diagnostics);
        assert_eq!(proto[0].severity, pb::diagnostic::Severity::Error as i32);
        assert_eq!(proto[0].summary, "bad");
        assert_eq!(proto[0].detail, "worse");
        assert!(proto[0].attribute.is_some());
        assert_eq!(proto[1].severity, pb::diagnostic::Severity::Warning as i32);
        assert!(proto[1].attribute.is_none());
    }

    #[test]
    fn dynamic_values() {
        let ty = Type::object([("a", Type::String)]);
        assert_eq!(decode_dynamic(None, &ty), Ok(Value::Null));
        let empty = pb::DynamicValue::default();
        assert_eq!(decode_dynamic(Some(&empty), &ty), Ok(Value::Null));
        let value = Value::object([("a", "x".into())]);
        let encoded = encode_dynamic(&value, &ty).expect("encode");
        assert_eq!(decode_dynamic(Some(&encoded), &ty), Ok(value.clone()));
        let as_json = pb::DynamicValue {
            msgpack: Vec::new(),
            json: br#"{"a":"x"}"#.to_vec(),
        };
        assert_eq!(decode_dynamic(Some(&as_json), &ty), Ok(value));
    }
}
