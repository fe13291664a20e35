//! Airbyte protocol messages as a connector prints them on stdout, one JSON object per line.
//!
//! A line is judged on its own: a line that is not JSON is a log line (connectors and their
//! runtimes print those), a JSON line whose shape breaks the protocol is `Malformed` with the
//! reason, and nothing a connector prints can make the reader fail.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol's message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageType {
    Record,
    State,
    Log,
    Trace,
    Spec,
    Catalog,
    ConnectionStatus,
    Control,
}

impl MessageType {
    pub const ALL: [MessageType; 8] = [
        MessageType::Record,
        MessageType::State,
        MessageType::Log,
        MessageType::Trace,
        MessageType::Spec,
        MessageType::Catalog,
        MessageType::ConnectionStatus,
        MessageType::Control,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Record => "RECORD",
            MessageType::State => "STATE",
            MessageType::Log => "LOG",
            MessageType::Trace => "TRACE",
            MessageType::Spec => "SPEC",
            MessageType::Catalog => "CATALOG",
            MessageType::ConnectionStatus => "CONNECTION_STATUS",
            MessageType::Control => "CONTROL",
        }
    }

    fn parse(text: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The field of the message that holds its payload.
    fn payload_field(self) -> &'static str {
        match self {
            MessageType::Record => "record",
            MessageType::State => "state",
            MessageType::Log => "log",
            MessageType::Trace => "trace",
            MessageType::Spec => "spec",
            MessageType::Catalog => "catalog",
            MessageType::ConnectionStatus => "connectionStatus",
            MessageType::Control => "control",
        }
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one line of stdout is.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A protocol message and its payload.
    Message(MessageType, Value),
    /// Not JSON (or not a JSON object): kept as a log line.
    NotJson,
    /// JSON that breaks the protocol, with why.
    Malformed(String),
}

/// Reads one line (without its newline).
pub fn parse_line(line: &str) -> Line {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return Line::NotJson;
    }
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(trimmed) else {
        return Line::NotJson;
    };
    let kind = match message.get("type") {
        Some(Value::String(text)) => match MessageType::parse(text) {
            Some(kind) => kind,
            None => return Line::Malformed(format!("unknown message type {text:?}")),
        },
        Some(_) => return Line::Malformed("`type` is not a string".into()),
        None => return Line::Malformed("no `type` field".into()),
    };
    let field = kind.payload_field();
    let payload = match message.remove(field) {
        Some(payload @ Value::Object(_)) => payload,
        Some(_) => return Line::Malformed(format!("{kind}: `{field}` is not an object")),
        None => return Line::Malformed(format!("{kind} without `{field}`")),
    };
    if let Err(reason) = check_payload(kind, &payload) {
        return Line::Malformed(format!("{kind}: {reason}"));
    }
    Line::Message(kind, payload)
}

/// The fields each payload must have for the reader to use it.
fn check_payload(kind: MessageType, payload: &Value) -> Result<(), String> {
    match kind {
        MessageType::Record => {
            if !payload.get("stream").is_some_and(Value::is_string) {
                return Err("`stream` is missing or not a string".into());
            }
            if !payload.get("data").is_some_and(Value::is_object) {
                return Err("`data` is missing or not an object".into());
            }
        }
        MessageType::ConnectionStatus if !payload.get("status").is_some_and(Value::is_string) => {
            return Err("`status` is missing or not a string".into());
        }
        MessageType::Catalog if !payload.get("streams").is_some_and(Value::is_array) => {
            return Err("`streams` is missing or not an array".into());
        }
        MessageType::Spec if payload.get("connectionSpecification").is_none() => {
            return Err("`connectionSpecification` is missing".into());
        }
        _ => {}
    }
    Ok(())
}

/// How a stream is named in outputs: `namespace.name`, or `name` without a namespace.
pub fn stream_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

/// The stream a RECORD payload belongs to.
pub fn record_stream(record: &Value) -> String {
    stream_name(
        record.get("stream").and_then(Value::as_str).unwrap_or(""),
        record.get("namespace").and_then(Value::as_str),
    )
}

/// The stream a `stream_descriptor` object names.
pub fn descriptor_stream(descriptor: Option<&Value>) -> Option<String> {
    let descriptor = descriptor?;
    Some(stream_name(
        descriptor.get("name")?.as_str()?,
        descriptor.get("namespace").and_then(Value::as_str),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_by_type() {
        let line =
            r#"{"type":"RECORD","record":{"stream":"users","data":{"id":1},"emitted_at":5}}"#;
        let Line::Message(kind, payload) = parse_line(line) else {
            panic!("not a message")
        };
        assert_eq!(kind, MessageType::Record);
        assert_eq!(record_stream(&payload), "users");
    }

    #[test]
    fn lines_that_are_not_json_objects_are_logs() {
        assert_eq!(parse_line("Starting source..."), Line::NotJson);
        assert_eq!(parse_line("[1,2]"), Line::NotJson);
        assert_eq!(parse_line("{not json"), Line::NotJson);
        assert_eq!(parse_line(""), Line::NotJson);
    }

    #[test]
    fn wrong_shapes_are_malformed_with_a_reason() {
        let cases = [
            (r#"{"record":{}}"#, "no `type` field"),
            (r#"{"type":"RECORDS"}"#, "unknown message type \"RECORDS\""),
            (r#"{"type":"RECORD"}"#, "RECORD without `record`"),
            (
                r#"{"type":"RECORD","record":{"stream":"s","data":[1]}}"#,
                "RECORD: `data` is missing or not an object",
            ),
            (
                r#"{"type":"CONNECTION_STATUS","connectionStatus":{}}"#,
                "CONNECTION_STATUS: `status` is missing or not a string",
            ),
        ];
        for (line, reason) in cases {
            assert_eq!(parse_line(line), Line::Malformed(reason.into()), "{line}");
        }
    }

    #[test]
    fn namespaces_prefix_stream_names() {
        assert_eq!(stream_name("users", Some("public")), "public.users");
        assert_eq!(stream_name("users", Some("")), "users");
    }
}
