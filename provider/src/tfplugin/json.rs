//! JSON encoding of values, as Terraform stores state and as it sends
//! `DynamicValue.json`.
//!
//! Decoding is deliberately lenient in two ways that matter for stored
//! state: attributes that are not in the type are dropped (a state written
//! before an attribute was removed must still load), and primitives are
//! converted the way `cty` converts them (`"5"` is a number, `"true"` a
//! bool). JSON cannot express unknown values.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::diagnostics::{AttributePath, PathStep};
use super::schema::Type;
use super::value::{nested, parse_number, Value, ValueError};

/// Decodes JSON bytes as a value of type `ty`.
pub fn decode_bytes(bytes: &[u8], ty: &Type) -> Result<Value, ValueError> {
    let json: Json = serde_json::from_slice(bytes)
        .map_err(|err| ValueError::new(&AttributePath::empty(), format!("invalid JSON: {err}")))?;
    decode(&json, ty)
}

/// Decodes a parsed JSON document as a value of type `ty`.
pub fn decode(json: &Json, ty: &Type) -> Result<Value, ValueError> {
    from_json(json, ty, &mut AttributePath::empty())
}

/// Encodes a value of type `ty` as JSON, every object attribute present.
/// Fails on unknown values, which JSON cannot represent.
pub fn encode(value: &Value, ty: &Type) -> Result<Json, ValueError> {
    to_json(value, ty, &mut AttributePath::empty())
}

fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a bool",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn from_json(json: &Json, ty: &Type, path: &mut AttributePath) -> Result<Value, ValueError> {
    match (json, ty) {
        (Json::Null, _) => Ok(Value::Null),
        (Json::String(s), Type::String) => Ok(Value::String(s.clone())),
        (Json::Number(n), Type::String) => Ok(Value::String(n.to_string())),
        (Json::Bool(b), Type::String) => Ok(Value::String(b.to_string())),
        (Json::Number(n), Type::Number) => Ok(Value::Number(n.clone())),
        (Json::String(s), Type::Number) => {
            parse_number(s).ok_or_else(|| ValueError::new(path, format!("{s:?} is not a number")))
        }
        (Json::Bool(b), Type::Bool) => Ok(Value::Bool(*b)),
        (Json::String(s), Type::Bool) if s == "true" || s == "false" => {
            Ok(Value::Bool(s == "true"))
        }
        (Json::Array(items), Type::List(element) | Type::Set(element)) => {
            let items = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    nested(path, PathStep::ElementKeyInt(i as i64), |path| {
                        from_json(item, element, path)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match ty {
                Type::Set(_) => Value::Set(items),
                _ => Value::List(items),
            })
        }
        (Json::Object(entries), Type::Map(element)) => {
            let mut map = BTreeMap::new();
            for (key, item) in entries {
                let item = nested(path, PathStep::ElementKeyString(key.clone()), |path| {
                    from_json(item, element, path)
                })?;
                map.insert(key.clone(), item);
            }
            Ok(Value::Map(map))
        }
        (Json::Object(entries), Type::Object(attributes)) => {
            let mut object = BTreeMap::new();
            for (name, attribute_type) in attributes {
                let item = match entries.get(name) {
                    Some(item) => nested(path, PathStep::Attribute(name.clone()), |path| {
                        from_json(item, attribute_type, path)
                    })?,
                    None => Value::Null,
                };
                object.insert(name.clone(), item);
            }
            Ok(Value::Object(object))
        }
        (json, ty) => Err(ValueError::new(
            path,
            format!("expected {}, got {}", ty.to_json(), json_kind(json)),
        )),
    }
}

fn to_json(value: &Value, ty: &Type, path: &mut AttributePath) -> Result<Json, ValueError> {
    match (value, ty) {
        (Value::Null, _) => Ok(Json::Null),
        (Value::Unknown, _) => Err(ValueError::new(
            path,
            "unknown values cannot be stored as JSON",
        )),
        (Value::String(s), Type::String) => Ok(Json::String(s.clone())),
        (Value::Bool(b), Type::Bool) => Ok(Json::Bool(*b)),
        (Value::Number(n), Type::Number) => Ok(Json::Number(n.clone())),
        (Value::List(items) | Value::Set(items), Type::List(element) | Type::Set(element)) => {
            let items = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    nested(path, PathStep::ElementKeyInt(i as i64), |path| {
                        to_json(item, element, path)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Json::Array(items))
        }
        (Value::Map(entries) | Value::Object(entries), Type::Map(element)) => {
            let mut map = serde_json::Map::new();
            for (key, item) in entries {
                let item = nested(path, PathStep::ElementKeyString(key.clone()), |path| {
                    to_json(item, element, path)
                })?;
                map.insert(key.clone(), item);
            }
            Ok(Json::Object(map))
        }
        (Value::Object(entries) | Value::Map(entries), Type::Object(attributes)) => {
            if let Some(extra) = entries.keys().find(|key| !attributes.contains_key(*key)) {
                return Err(ValueError::new(
                    path,
                    format!("attribute {extra:?} is not in the schema"),
                ));
            }
            let mut map = serde_json::Map::new();
            for (name, attribute_type) in attributes {
                let item = match entries.get(name) {
                    Some(item) => nested(path, PathStep::Attribute(name.clone()), |path| {
                        to_json(item, attribute_type, path)
                    })?,
                    None => Json::Null,
                };
                map.insert(name.clone(), item);
            }
            Ok(Json::Object(map))
        }
        (value, ty) => Err(ValueError::new(
            path,
            format!("expected {}, got {}", ty.to_json(), value.kind()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource_type() -> Type {
        let instance = Type::object([("host", Type::String), ("port", Type::Number)]);
        Type::object([
            ("id", Type::String),
            ("durable", Type::Bool),
            ("ratio", Type::Number),
            ("users", Type::set(Type::String)),
            ("tags", Type::map(Type::String)),
            ("instance", Type::list(instance.clone())),
            ("window", instance),
        ])
    }

    #[test]
    fn round_trip_every_type() {
        let ty = resource_type();
        let value = Value::object([
            ("id", "q1".into()),
            ("durable", false.into()),
            ("ratio", 0.25f64.into()),
            ("users", Value::Set(vec!["a".into(), "b".into()])),
            ("tags", Value::map([("env", Value::from("prod"))])),
            (
                "instance",
                Value::List(vec![Value::object([
                    ("host", "h".into()),
                    ("port", 5672i64.into()),
                ])]),
            ),
            ("window", Value::Null),
        ]);
        let json = encode(&value, &ty).expect("encode");
        assert_eq!(json["instance"][0]["port"], json!(5672));
        assert_eq!(json["window"], Json::Null);
        assert_eq!(decode(&json, &ty), Ok(value.clone()));
        let bytes = serde_json::to_vec(&json).expect("serialize");
        assert_eq!(decode_bytes(&bytes, &ty), Ok(value));
    }

    #[test]
    fn lenient_decoding_of_stored_state() {
        let ty = resource_type();
        let state = json!({
            "id": 7,
            "durable": "true",
            "ratio": "1.5",
            "removed_attribute": "ignored",
            "instance": [{"host": "h", "port": "5672", "old": 1}],
        });
        let value = decode(&state, &ty).expect("decode");
        assert_eq!(value.get("id").as_str(), Some("7"));
        assert_eq!(value.get("durable").as_bool(), Some(true));
        assert_eq!(value.get("ratio").as_f64(), Some(1.5));
        assert!(value.get("users").is_null());
        assert_eq!(
            value
                .get("instance")
                .as_list()
                .map(|items| items[0].get("port").as_i64()),
            Some(Some(5672))
        );
    }

    #[test]
    fn errors() {
        let ty = resource_type();
        let err = decode(&json!({"instance": [{"port": "x"}]}), &ty).expect_err("must fail");
        assert_eq!(
            err.path,
            AttributePath::root("instance").index(0).attr("port")
        );
        assert!(decode_bytes(b"{", &ty).is_err());
        let unknown = Value::object([("id", Value::Unknown)]);
        let err = encode(&unknown, &ty).expect_err("must fail");
        assert_eq!(err.path, AttributePath::root("id"));
    }
}
