//! The dynamic value type that configuration, plans and state travel in.
//!
//! A `Value` carries no type of its own: the schema's [`Type`] says how to
//! read it off the wire (see the `msgpack` and `json` modules). `Unknown`
//! stands for a value Terraform will only know after apply, such as a
//! computed attribute during plan.
//!
//! [`Type`]: super::schema::Type

use std::collections::BTreeMap;
use std::fmt;

use super::diagnostics::{AttributePath, Diagnostic, PathStep};

/// A Terraform value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    /// Known only after apply.
    Unknown,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    List(Vec<Value>),
    Set(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Object(BTreeMap<String, Value>),
}

/// What `get` returns for a missing attribute.
static NULL: Value = Value::Null;

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }

    /// True when neither the value nor anything inside it is unknown.
    pub fn is_fully_known(&self) -> bool {
        match self {
            Value::Unknown => false,
            Value::List(items) | Value::Set(items) => items.iter().all(Value::is_fully_known),
            Value::Map(entries) | Value::Object(entries) => {
                entries.values().all(Value::is_fully_known)
            }
            _ => true,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<&serde_json::Number> {
        match self {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    /// The number as an integer, also when it arrived as a whole float.
    pub fn as_i64(&self) -> Option<i64> {
        let n = self.as_number()?;
        n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            let whole = f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64;
            whole.then_some(f as i64)
        })
    }

    pub fn as_f64(&self) -> Option<f64> {
        self.as_number()?.as_f64()
    }

    /// The elements of a list or set.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) | Value::Set(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a map or the attributes of an object.
    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(entries) | Value::Object(entries) => Some(entries),
            _ => None,
        }
    }

    /// An object attribute (or map entry); `Null` when absent or when `self`
    /// is not an object, so lookups can be chained:
    /// `state.get("instance").as_list()`.
    pub fn get(&self, attr: &str) -> &Value {
        match self {
            Value::Object(entries) | Value::Map(entries) => entries.get(attr).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    /// A mutable object attribute (or map entry), if present.
    pub fn get_mut(&mut self, attr: &str) -> Option<&mut Value> {
        match self {
            Value::Object(entries) | Value::Map(entries) => entries.get_mut(attr),
            _ => None,
        }
    }

    /// Builds an object from attribute names and values.
    pub fn object<'a>(attributes: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Value::Object(
            attributes
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        )
    }

    /// Builds a map from keys and values.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Self {
        Value::Map(
            entries
                .into_iter()
                .map(|(key, value)| (key.into(), value))
                .collect(),
        )
    }

    pub fn string(s: impl Into<String>) -> Self {
        Value::String(s.into())
    }

    /// Sets an attribute and returns the value. On an object or map it
    /// inserts (or replaces) the entry; anything else (typically `Null`)
    /// becomes an object holding just this attribute.
    pub fn with(mut self, attr: impl Into<String>, value: impl Into<Value>) -> Self {
        self.set_attr(attr, value);
        self
    }

    /// In-place form of [`Value::with`].
    pub fn set_attr(&mut self, attr: impl Into<String>, value: impl Into<Value>) {
        match self {
            Value::Object(entries) | Value::Map(entries) => {
                entries.insert(attr.into(), value.into());
            }
            _ => *self = Value::Object(BTreeMap::from([(attr.into(), value.into())])),
        }
    }

    /// What kind of value this is, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Unknown => "unknown",
            Value::Bool(_) => "a bool",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::List(_) => "a list",
            Value::Set(_) => "a set",
            Value::Map(_) => "a map",
            Value::Object(_) => "an object",
        }
    }
}

/// Runs `f` with `step` pushed onto `path`, popping it afterwards: the
/// codecs keep one path buffer for a whole walk instead of cloning it for
/// every element, and still report where a problem is.
pub(crate) fn nested<T>(
    path: &mut AttributePath,
    step: PathStep,
    f: impl FnOnce(&mut AttributePath) -> Result<T, ValueError>,
) -> Result<T, ValueError> {
    path.steps.push(step);
    let result = f(path);
    path.steps.pop();
    result
}

/// Parses a number sent as text (cty does so for numbers that fit no
/// binary number type): integers exactly, anything else as f64.
pub(crate) fn parse_number(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(Value::Number(n.into()));
    }
    if let Ok(n) = text.parse::<u64>() {
        return Some(Value::Number(n.into()));
    }
    let f = text.parse::<f64>().ok()?;
    serde_json::Number::from_f64(f).map(Value::Number)
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::String(s.clone())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Number(n.into())
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Number(n.into())
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Number(n.into())
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Number(n.into())
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Number(n.into())
    }
}

/// NaN and infinities have no Terraform number form and become `Null`.
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

impl From<serde_json::Number> for Value {
    fn from(n: serde_json::Number) -> Self {
        Value::Number(n)
    }
}

/// `None` becomes `Null`.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(option: Option<T>) -> Self {
        option.map_or(Value::Null, Into::into)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}

/// A value that does not fit its type, found while decoding or encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// Where in the value the problem is.
    pub path: AttributePath,
    pub message: String,
}

impl ValueError {
    pub(crate) fn new(path: &AttributePath, message: impl Into<String>) -> Self {
        Self {
            path: path.clone(),
            message: message.into(),
        }
    }

    /// An error diagnostic pointing at the offending attribute.
    pub fn to_diagnostic(&self, summary: impl Into<String>) -> Diagnostic {
        let diagnostic = Diagnostic::error(summary, self.to_string());
        if self.path.is_empty() {
            diagnostic
        } else {
            diagnostic.at(self.path.clone())
        }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ValueError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let value = Value::object([
            ("name", Value::string("orders")),
            ("durable", true.into()),
            ("port", 5672i64.into()),
            ("ratio", 2.0f64.into()),
            ("hosts", Value::List(vec!["a".into(), "b".into()])),
            ("users", Value::Set(vec!["x".into()])),
            ("tags", Value::map([("env", Value::from("prod"))])),
        ]);
        assert_eq!(value.get("name").as_str(), Some("orders"));
        assert_eq!(value.get("durable").as_bool(), Some(true));
        assert_eq!(value.get("port").as_i64(), Some(5672));
        assert_eq!(value.get("ratio").as_i64(), Some(2));
        assert_eq!(value.get("ratio").as_f64(), Some(2.0));
        assert_eq!(value.get("hosts").as_list().map(<[Value]>::len), Some(2));
        assert_eq!(value.get("users").as_list().map(<[Value]>::len), Some(1));
        assert_eq!(value.get("tags").get("env").as_str(), Some("prod"));
        assert!(value.get("missing").is_null());
        assert!(value.get("name").get("nested").is_null());
        assert_eq!(Value::from(1.5f64).as_i64(), None);
        assert!(Value::from(f64::NAN).is_null());
        assert!(Value::from(None::<String>).is_null());
        assert_eq!(Value::from(Some("x")), Value::string("x"));
    }

    #[test]
    fn with_builds_objects() {
        let value = Value::Null.with("id", "q1").with("size", 3i64);
        assert_eq!(
            value,
            Value::object([("id", "q1".into()), ("size", 3i64.into())])
        );
        let replaced = value.with("id", "q2");
        assert_eq!(replaced.get("id").as_str(), Some("q2"));
    }

    #[test]
    fn knownness() {
        let value = Value::object([("id", Value::Unknown), ("name", "n".into())]);
        assert!(!value.is_fully_known());
        assert!(!value.is_unknown());
        assert!(value.get("id").is_unknown());
        let nested = Value::List(vec![Value::object([("x", Value::Unknown)])]);
        assert!(!nested.is_fully_known());
        assert!(Value::object([("id", "a".into())]).is_fully_known());
    }

    #[test]
    fn value_error_display_and_diagnostic() {
        let err = ValueError::new(&AttributePath::root("instance").index(0), "expected string");
        assert_eq!(err.to_string(), "instance[0]: expected string");
        let diag = err.to_diagnostic("Invalid value");
        assert_eq!(
            diag.attribute,
            Some(AttributePath::root("instance").index(0))
        );
        let root = ValueError::new(&AttributePath::empty(), "not msgpack");
        assert_eq!(root.to_diagnostic("x").attribute, None);
    }
}
