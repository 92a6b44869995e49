//! Diagnostics and attribute paths: how a provider tells Terraform what went
//! wrong and where.
//!
//! Terraform shows a diagnostic's summary and detail, and when an attribute
//! path is attached it points at the offending line of the configuration.

use std::fmt;

/// How bad a diagnostic is. Any error fails the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub summary: String,
    pub detail: String,
    /// The attribute the message is about, if any.
    pub attribute: Option<AttributePath>,
}

/// A list of diagnostics, as every provider call returns.
pub type Diagnostics = Vec<Diagnostic>;

impl Diagnostic {
    pub fn error(summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            summary: summary.into(),
            detail: detail.into(),
            attribute: None,
        }
    }

    pub fn warning(summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(summary, detail)
        }
    }

    /// An error whose detail is an `anyhow` error with its whole chain of
    /// causes on one line. `{:#}` never includes a backtrace, which matters
    /// because `RUST_BACKTRACE=1` is set on the machines that run Terraform.
    pub fn from_error(summary: impl Into<String>, error: &anyhow::Error) -> Self {
        Self::error(summary, format!("{error:#}"))
    }

    /// Attaches the attribute the diagnostic is about.
    pub fn at(mut self, path: AttributePath) -> Self {
        self.attribute = Some(path);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}: {}", self.summary)?;
        if let Some(path) = &self.attribute {
            write!(f, " (at {path})")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// True when any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

/// One step into a value: an object attribute, a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathStep {
    Attribute(String),
    ElementKeyString(String),
    ElementKeyInt(i64),
}

/// The location of an attribute inside a resource's value, such as
/// `instance[0].host`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttributePath {
    pub steps: Vec<PathStep>,
}

impl AttributePath {
    /// A path to a top-level attribute.
    pub fn root(attr: impl Into<String>) -> Self {
        Self {
            steps: vec![PathStep::Attribute(attr.into())],
        }
    }

    /// The empty path: the whole value.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn attr(mut self, name: impl Into<String>) -> Self {
        self.steps.push(PathStep::Attribute(name.into()));
        self
    }

    /// A list (or set, by position) element.
    pub fn index(mut self, index: i64) -> Self {
        self.steps.push(PathStep::ElementKeyInt(index));
        self
    }

    /// A map element.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.steps.push(PathStep::ElementKeyString(key.into()));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl fmt::Display for AttributePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                PathStep::Attribute(name) if i == 0 => write!(f, "{name}")?,
                PathStep::Attribute(name) => write!(f, ".{name}")?,
                PathStep::ElementKeyString(key) => write!(f, "[{key:?}]")?,
                PathStep::ElementKeyInt(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display() {
        let path = AttributePath::root("instance").index(0).attr("host");
        assert_eq!(path.to_string(), "instance[0].host");
        let path = AttributePath::root("tags").key("env");
        assert_eq!(path.to_string(), r#"tags["env"]"#);
        assert_eq!(AttributePath::empty().to_string(), "");
    }

    #[test]
    fn diagnostic_builders() {
        let diag =
            Diagnostic::error("Bad port", "must be below 65536").at(AttributePath::root("port"));
        assert!(diag.is_error());
        assert_eq!(
            diag.to_string(),
            "error: Bad port (at port): must be below 65536"
        );
        let warning = Diagnostic::warning("Deprecated", "");
        assert!(!warning.is_error());
        assert!(has_errors(&[warning.clone(), diag]));
        assert!(!has_errors(&[warning]));
    }

    #[test]
    fn anyhow_errors_have_no_backtrace() {
        let err = anyhow::anyhow!("connection refused").context("reaching the broker");
        let diag = Diagnostic::from_error("Cannot create queue", &err);
        assert_eq!(diag.detail, "reaching the broker: connection refused");
    }
}
