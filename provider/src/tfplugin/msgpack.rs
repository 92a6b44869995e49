//! MessagePack encoding of values, as Terraform's `cty` library does it.
//!
//! The wire format carries no types: a msgpack map may be an object or a
//! map, an array a list or a set, so both directions walk the schema type.
//! An unknown value is msgpack extension type 0. Encoding always emits every
//! attribute of an object type (nil when the value lacks it), because
//! Terraform checks the shape of what the provider returns.

use std::collections::BTreeMap;

use rmpv::Value as Mp;

use super::diagnostics::{AttributePath, PathStep};
use super::schema::Type;
use super::value::{nested, parse_number, Value, ValueError};

/// The extension type `cty` uses for unknown values.
const UNKNOWN_EXT: i8 = 0;
/// The extension type newer Terraform versions use for unknown values that
/// carry refinements (e.g. "not null"); read as a plain unknown.
const REFINED_UNKNOWN_EXT: i8 = 12;

/// Decodes msgpack bytes as a value of type `ty`.
pub fn decode(bytes: &[u8], ty: &Type) -> Result<Value, ValueError> {
    let mut reader = bytes;
    let raw = rmpv::decode::read_value(&mut reader).map_err(|err| {
        ValueError::new(&AttributePath::empty(), format!("invalid msgpack: {err}"))
    })?;
    from_msgpack(raw, ty, &mut AttributePath::empty())
}

/// Encodes a value of type `ty` as msgpack bytes.
pub fn encode(value: &Value, ty: &Type) -> Result<Vec<u8>, ValueError> {
    let raw = to_msgpack(value, ty, &mut AttributePath::empty())?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &raw).map_err(|err| {
        ValueError::new(
            &AttributePath::empty(),
            format!("cannot write msgpack: {err}"),
        )
    })?;
    Ok(out)
}

fn describe(raw: &Mp) -> &'static str {
    match raw {
        Mp::Nil => "nil",
        Mp::Boolean(_) => "a bool",
        Mp::Integer(_) | Mp::F32(_) | Mp::F64(_) => "a number",
        Mp::String(_) => "a string",
        Mp::Binary(_) => "binary data",
        Mp::Array(_) => "an array",
        Mp::Map(_) => "a map",
        Mp::Ext(..) => "an extension value",
    }
}

fn mismatch(path: &AttributePath, ty: &Type, raw: &Mp) -> ValueError {
    ValueError::new(
        path,
        format!("expected {}, got {}", ty.to_json(), describe(raw)),
    )
}

fn from_msgpack(raw: Mp, ty: &Type, path: &mut AttributePath) -> Result<Value, ValueError> {
    match (raw, ty) {
        (Mp::Nil, _) => Ok(Value::Null),
        (Mp::Ext(UNKNOWN_EXT | REFINED_UNKNOWN_EXT, _), _) => Ok(Value::Unknown),
        (Mp::String(s), Type::String) => s
            .into_str()
            .map(Value::String)
            .ok_or_else(|| ValueError::new(path, "string is not valid UTF-8")),
        (Mp::Binary(bytes), Type::String) => String::from_utf8(bytes)
            .map(Value::String)
            .map_err(|_| ValueError::new(path, "string is not valid UTF-8")),
        (Mp::Boolean(b), Type::Bool) => Ok(Value::Bool(b)),
        (Mp::Integer(i), Type::Number) => {
            let number = match (i.as_i64(), i.as_u64()) {
                (Some(n), _) => serde_json::Number::from(n),
                (None, Some(n)) => serde_json::Number::from(n),
                (None, None) => return Err(ValueError::new(path, "integer out of range")),
            };
            Ok(Value::Number(number))
        }
        (Mp::F32(f), Type::Number) => float(f64::from(f), path),
        (Mp::F64(f), Type::Number) => float(f, path),
        // cty sends numbers that fit no msgpack number type as strings.
        (Mp::String(s), Type::Number) => {
            let text = s.as_str().unwrap_or_default();
            parse_number(text)
                .ok_or_else(|| ValueError::new(path, format!("{text:?} is not a number")))
        }
        (Mp::Array(items), Type::List(element) | Type::Set(element)) => {
            let items = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    nested(path, PathStep::ElementKeyInt(i as i64), |path| {
                        from_msgpack(item, element, path)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match ty {
                Type::Set(_) => Value::Set(items),
                _ => Value::List(items),
            })
        }
        (Mp::Map(entries), Type::Map(element)) => {
            let mut map = BTreeMap::new();
            for (key, item) in entries {
                let key = map_key(key, path)?;
                let item = nested(path, PathStep::ElementKeyString(key.clone()), |path| {
                    from_msgpack(item, element, path)
                })?;
                map.insert(key, item);
            }
            Ok(Value::Map(map))
        }
        (Mp::Map(entries), Type::Object(attributes)) => {
            let mut object = BTreeMap::new();
            for (key, item) in entries {
                let key = map_key(key, path)?;
                let Some(attribute_type) = attributes.get(&key) else {
                    return Err(ValueError::new(
                        path,
                        format!("unsupported attribute {key:?}"),
                    ));
                };
                let item = nested(path, PathStep::Attribute(key.clone()), |path| {
                    from_msgpack(item, attribute_type, path)
                })?;
                object.insert(key, item);
            }
            for name in attributes.keys() {
                object.entry(name.clone()).or_insert(Value::Null);
            }
            Ok(Value::Object(object))
        }
        (raw, ty) => Err(mismatch(path, ty, &raw)),
    }
}

fn float(f: f64, path: &AttributePath) -> Result<Value, ValueError> {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| ValueError::new(path, format!("{f} is not a finite number")))
}

fn map_key(key: Mp, path: &AttributePath) -> Result<String, ValueError> {
    match key {
        Mp::String(s) => s
            .into_str()
            .ok_or_else(|| ValueError::new(path, "map key is not valid UTF-8")),
        other => Err(ValueError::new(
            path,
            format!("map key must be a string, got {}", describe(&other)),
        )),
    }
}

fn to_msgpack(value: &Value, ty: &Type, path: &mut AttributePath) -> Result<Mp, ValueError> {
    match (value, ty) {
        (Value::Null, _) => Ok(Mp::Nil),
        (Value::Unknown, _) => Ok(Mp::Ext(UNKNOWN_EXT, vec![0])),
        (Value::String(s), Type::String) => Ok(Mp::String(s.as_str().into())),
        (Value::Bool(b), Type::Bool) => Ok(Mp::Boolean(*b)),
        (Value::Number(n), Type::Number) => Ok(if let Some(i) = n.as_i64() {
            Mp::from(i)
        } else if let Some(u) = n.as_u64() {
            Mp::from(u)
        } else {
            Mp::F64(n.as_f64().unwrap_or_default())
        }),
        (Value::List(items) | Value::Set(items), Type::List(element) | Type::Set(element)) => {
            let items = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    nested(path, PathStep::ElementKeyInt(i as i64), |path| {
                        to_msgpack(item, element, path)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Mp::Array(items))
        }
        (Value::Map(entries) | Value::Object(entries), Type::Map(element)) => {
            let entries = entries
                .iter()
                .map(|(key, item)| {
                    let item = nested(path, PathStep::ElementKeyString(key.clone()), |path| {
                        to_msgpack(item, element, path)
                    })?;
                    Ok((Mp::String(key.as_str().into()), item))
                })
                .collect::<Result<Vec<_>, ValueError>>()?;
            Ok(Mp::Map(entries))
        }
        (Value::Object(entries) | Value::Map(entries), Type::Object(attributes)) => {
            if let Some(extra) = entries.keys().find(|key| !attributes.contains_key(*key)) {
                return Err(ValueError::new(
                    path,
                    format!("attribute {extra:?} is not in the schema"),
                ));
            }
            let entries = attributes
                .iter()
                .map(|(name, attribute_type)| {
                    let item = match entries.get(name) {
                        Some(item) => nested(path, PathStep::Attribute(name.clone()), |path| {
                            to_msgpack(item, attribute_type, path)
                        })?,
                        None => Mp::Nil,
                    };
                    Ok((Mp::String(name.as_str().into()), item))
                })
                .collect::<Result<Vec<_>, ValueError>>()?;
            Ok(Mp::Map(entries))
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

    fn round_trip(value: &Value, ty: &Type) -> Value {
        let bytes = encode(value, ty).expect("encode");
        decode(&bytes, ty).expect("decode")
    }

    fn resource_type() -> Type {
        let instance = Type::object([("host", Type::String), ("port", Type::Number)]);
        Type::object([
            ("id", Type::String),
            ("name", Type::String),
            ("durable", Type::Bool),
            ("size", Type::Number),
            ("hosts", Type::list(Type::String)),
            ("users", Type::set(Type::String)),
            ("tags", Type::map(Type::String)),
            ("instance", Type::list(instance.clone())),
            ("window", instance),
        ])
    }

    #[test]
    fn primitives_round_trip() {
        for (value, ty) in [
            (Value::string("héllo"), Type::String),
            (Value::from(true), Type::Bool),
            (Value::from(42i64), Type::Number),
            (Value::from(-7i64), Type::Number),
            (Value::from(u64::MAX), Type::Number),
            (Value::from(2.5f64), Type::Number),
            (Value::Null, Type::String),
            (Value::Unknown, Type::Number),
            (Value::Unknown, Type::list(Type::String)),
        ] {
            assert_eq!(round_trip(&value, &ty), value, "{ty:?}");
        }
    }

    #[test]
    fn collections_round_trip_with_unknowns() {
        let ty = resource_type();
        let value = Value::object([
            ("id", Value::Unknown),
            ("name", "orders".into()),
            ("durable", true.into()),
            ("size", 3i64.into()),
            ("hosts", Value::List(vec!["a".into(), Value::Unknown])),
            ("users", Value::Set(vec!["x".into(), "y".into()])),
            (
                "tags",
                Value::map([("env", Value::from("prod")), ("x", Value::Null)]),
            ),
            (
                "instance",
                Value::List(vec![
                    Value::object([("host", "h1".into()), ("port", 5672i64.into())]),
                    Value::object([("host", Value::Unknown), ("port", Value::Null)]),
                ]),
            ),
            ("window", Value::Null),
        ]);
        assert_eq!(round_trip(&value, &ty), value);
    }

    #[test]
    fn encode_fills_absent_attributes_with_nil() {
        let ty = resource_type();
        let value = Value::object([("name", "orders".into())]);
        let decoded = round_trip(&value, &ty);
        let Value::Object(attributes) = &decoded else {
            panic!("not an object: {decoded:?}");
        };
        assert_eq!(attributes.len(), 9);
        assert!(decoded.get("id").is_null());
        assert_eq!(decoded.get("name").as_str(), Some("orders"));
    }

    #[test]
    fn unknown_is_extension_zero() {
        let bytes = encode(&Value::Unknown, &Type::String).expect("encode");
        assert_eq!(bytes, [0xd4, 0x00, 0x00]);
        // A refined unknown from newer Terraform versions.
        let mut refined = Vec::new();
        rmpv::encode::write_value(&mut refined, &Mp::Ext(12, vec![0x80])).expect("write");
        assert_eq!(decode(&refined, &Type::String), Ok(Value::Unknown));
    }

    #[test]
    fn sets_and_maps_decode_by_type() {
        let raw = Mp::Array(vec![Mp::from("a")]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &raw).expect("write");
        assert_eq!(
            decode(&bytes, &Type::set(Type::String)),
            Ok(Value::Set(vec!["a".into()]))
        );
        assert_eq!(
            decode(&bytes, &Type::list(Type::String)),
            Ok(Value::List(vec!["a".into()]))
        );
        let raw = Mp::Map(vec![(Mp::from("a"), Mp::from(1))]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &raw).expect("write");
        assert_eq!(
            decode(&bytes, &Type::map(Type::Number)),
            Ok(Value::map([("a", Value::from(1i64))]))
        );
        assert_eq!(
            decode(
                &bytes,
                &Type::object([("a", Type::Number), ("b", Type::String)])
            ),
            Ok(Value::object([("a", 1i64.into()), ("b", Value::Null)]))
        );
    }

    #[test]
    fn numbers_as_strings_and_floats() {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &Mp::from("12345678901234567890123")).expect("w");
        assert!(matches!(
            decode(&bytes, &Type::Number),
            Ok(Value::Number(_))
        ));
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &Mp::F64(3.0)).expect("w");
        assert_eq!(
            decode(&bytes, &Type::Number).map(|v| v.as_i64()),
            Ok(Some(3))
        );
    }

    #[test]
    fn decode_errors_carry_paths() {
        let ty = resource_type();
        let bad = Mp::Map(vec![(
            Mp::from("instance"),
            Mp::Array(vec![Mp::Map(vec![(Mp::from("host"), Mp::from(1))])]),
        )]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &bad).expect("write");
        let err = decode(&bytes, &ty).expect_err("must fail");
        assert_eq!(
            err.path,
            AttributePath::root("instance").index(0).attr("host")
        );
        assert_eq!(
            err.to_string(),
            r#"instance[0].host: expected "string", got a number"#
        );

        let unknown_attr = Mp::Map(vec![(Mp::from("nope"), Mp::Nil)]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &unknown_attr).expect("write");
        assert!(decode(&bytes, &ty).is_err());

        assert!(decode(&[0x92, 0x01], &ty).is_err(), "truncated array");
        assert!(decode(&[], &ty).is_err(), "empty input");
    }

    #[test]
    fn encode_errors_carry_paths() {
        let ty = resource_type();
        let value = Value::object([("tags", Value::map([("env", Value::from(1i64))]))]);
        let err = encode(&value, &ty).expect_err("must fail");
        assert_eq!(err.path, AttributePath::root("tags").key("env"));
        let extra = Value::object([("bogus", "x".into())]);
        assert!(encode(&extra, &ty).is_err());
    }
}
