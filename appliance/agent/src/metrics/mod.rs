//! Prometheus metrics (the CloudWatch equivalent): per broker, what its engine reports, under
//! Prometheus-style names whose HELP text starts with the Amazon MQ metric they stand for (so a
//! dashboard written for Amazon MQ maps one to one), plus the host's CPU, memory and the
//! broker's volume usage.
//!
//! Names are `ferrymq_<engine>_<what>[_<unit>]` rather than Amazon MQ's CamelCase names:
//! Prometheus expects snake case with units (`_bytes`, `_total`), and a name per engine keeps
//! RabbitMQ's and ActiveMQ's different meanings of "ConnectionCount" apart.
//!
//! Collection runs when scraped (no background polling): a scrape costs one management API
//! round trip (RabbitMQ) or one STOMP query (ActiveMQ) per broker.

pub mod host;
pub mod http;

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One value of one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    /// The Amazon MQ metric it stands for and what it measures.
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Sample {
            name,
            help,
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    pub fn counter(name: &'static str, help: &'static str, value: f64) -> Self {
        Sample {
            kind: Kind::Counter,
            ..Sample::gauge(name, help, value)
        }
    }

    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((key, value.into()));
        self
    }
}

/// Adds the broker's labels to samples an engine reported.
pub fn for_broker(samples: Vec<Sample>, broker_id: &str, broker_name: &str) -> Vec<Sample> {
    samples
        .into_iter()
        .map(|mut s| {
            s.labels.splice(
                0..0,
                [
                    ("broker_id", broker_id.to_string()),
                    ("broker_name", broker_name.to_string()),
                ],
            );
            s
        })
        .collect()
}

/// The Prometheus text exposition format (version 0.0.4): samples grouped by name, each name's
/// HELP and TYPE once.
pub fn render(samples: &[Sample]) -> String {
    let mut names: Vec<&'static str> = Vec::new();
    for s in samples {
        if !names.contains(&s.name) {
            names.push(s.name);
        }
    }
    let mut out = String::new();
    for name in names {
        let mut family = samples.iter().filter(|s| s.name == name).peekable();
        if let Some(first) = family.peek() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(first.help));
            let _ = writeln!(out, "# TYPE {name} {}", first.kind.as_str());
        }
        for s in family {
            out.push_str(name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(s.value));
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_groups_families_and_escapes_labels() {
        let samples = for_broker(
            vec![
                Sample::gauge("ferrymq_x_queue_messages", "MessageCount: messages", 3.0)
                    .label("queue", "a\"b"),
                Sample::counter("ferrymq_x_total", "TotalEnqueueCount", 7.0),
                Sample::gauge("ferrymq_x_queue_messages", "MessageCount: messages", 0.5)
                    .label("queue", "c\\d"),
            ],
            "b-1",
            "orders",
        );
        assert_eq!(
            render(&samples),
            "# HELP ferrymq_x_queue_messages MessageCount: messages\n\
             # TYPE ferrymq_x_queue_messages gauge\n\
             ferrymq_x_queue_messages{broker_id=\"b-1\",broker_name=\"orders\",queue=\"a\\\"b\"} 3\n\
             ferrymq_x_queue_messages{broker_id=\"b-1\",broker_name=\"orders\",queue=\"c\\\\d\"} 0.5\n\
             # HELP ferrymq_x_total TotalEnqueueCount\n\
             # TYPE ferrymq_x_total counter\n\
             ferrymq_x_total{broker_id=\"b-1\",broker_name=\"orders\"} 7\n"
        );
    }
}
