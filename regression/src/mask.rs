//! Keeps a connection config's secrets out of everything written: logs, messages, records
//! (connectors echo config values back, in errors and sometimes in data), diffs and reports.
//!
//! Which config values are secret is the spec's to say (`airbyte_secret: true`); when no spec
//! says (the spec command failed, or was not run), every string value of the config is masked.
//! Masking is applied to control and target alike, so it never makes a difference appear.

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

pub const MASK: &str = "**********";

/// Shorter values are not masked: they would hide half of every line ("id", "us").
const MIN_SECRET_LEN: usize = 4;

/// Field names that are secret whatever the spec says.
const SECRET_NAMES: [&str; 8] = [
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "client_secret",
    "credentials",
];

#[derive(Debug, Clone, Default)]
pub struct Masker {
    automaton: Option<AhoCorasick>,
    count: usize,
}

impl Masker {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = secrets
            .into_iter()
            .flat_map(|s| {
                // A multi-line value (a key file) is masked line by line, as it may be printed.
                s.lines().map(|l| l.trim().to_string()).collect::<Vec<_>>()
            })
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        values.sort();
        values.dedup();
        let count = values.len();
        let automaton = (!values.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&values)
                    .ok()
            })
            .flatten();
        Self { automaton, count }
    }

    /// The secrets of `config`: values under `airbyte_secret` fields of any of `specs`, and
    /// values of fields named like secrets; every string value when no spec is known.
    pub fn for_config(config: &Value, specs: &[&Value]) -> Self {
        let mut secrets = Vec::new();
        if specs.is_empty() {
            collect_strings(config, &mut secrets);
        } else {
            for spec in specs {
                if let Some(schema) = spec.get("connectionSpecification") {
                    collect_marked(schema, config, &mut secrets);
                }
            }
            collect_named(config, &mut secrets);
        }
        Masker::new(secrets)
    }

    /// How many distinct values are masked.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `text` with every secret replaced by [`MASK`]; borrowed when there is none.
    pub fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.automaton {
            Some(automaton) if automaton.is_match(text) => {
                std::borrow::Cow::Owned(automaton.replace_all(text, &vec![MASK; self.count]))
            }
            _ => std::borrow::Cow::Borrowed(text),
        }
    }
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Walks the spec's schema beside the config: a property marked `airbyte_secret` gives its
/// config value; `oneOf`/`anyOf` branches are all walked, since the config may follow any.
fn collect_marked(schema: &Value, config: &Value, out: &mut Vec<String>) {
    if schema.get("airbyte_secret").and_then(Value::as_bool) == Some(true) {
        collect_strings(config, out);
        return;
    }
    if let (Some(Value::Object(properties)), Value::Object(values)) =
        (schema.get("properties"), config)
    {
        for (name, property) in properties {
            if let Some(value) = values.get(name) {
                collect_marked(property, value, out);
            }
        }
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(branches)) = schema.get(combinator) {
            for branch in branches {
                collect_marked(branch, config, out);
            }
        }
    }
    if let (Some(items), Value::Array(values)) = (schema.get("items"), config) {
        for value in values {
            collect_marked(items, value, out);
        }
    }
}

fn collect_named(config: &Value, out: &mut Vec<String>) {
    match config {
        Value::Object(map) => {
            for (name, value) in map {
                let lower = name.to_ascii_lowercase();
                if SECRET_NAMES.iter().any(|s| lower.contains(s)) {
                    collect_strings(value, out);
                } else {
                    collect_named(value, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_named(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn marked_fields_are_masked_and_others_are_not() {
        let spec = json!({"connectionSpecification": {"properties": {
            "api_key": {"type": "string", "airbyte_secret": true},
            "auth": {"oneOf": [{"properties": {"pass_phrase": {"airbyte_secret": true}}}]},
            "region": {"type": "string"}
        }}});
        let config = json!({"api_key": "abcd1234", "auth": {"pass_phrase": "open sesame"}, "region": "eu-west-1"});
        let masker = Masker::for_config(&config, &[&spec]);
        assert_eq!(
            masker.mask("key abcd1234 in eu-west-1, phrase open sesame"),
            format!("key {MASK} in eu-west-1, phrase {MASK}")
        );
    }

    #[test]
    fn without_a_spec_every_string_value_is_masked() {
        let config = json!({"host": "db.internal", "port": 5432, "tags": ["alpha-team"]});
        let masker = Masker::for_config(&config, &[]);
        assert_eq!(masker.len(), 2);
        assert_eq!(
            masker.mask("db.internal:5432 alpha-team"),
            format!("{MASK}:5432 {MASK}")
        );
    }

    #[test]
    fn fields_named_like_secrets_are_masked_even_if_the_spec_forgets() {
        let spec = json!({"connectionSpecification": {"properties": {}}});
        let config =
            json!({"credentials": {"refresh_token": "r3fr3sh"}, "client_password": "pw-123"});
        let masker = Masker::for_config(&config, &[&spec]);
        assert_eq!(masker.mask("r3fr3sh pw-123"), format!("{MASK} {MASK}"));
    }

    #[test]
    fn the_longest_secret_wins_where_two_overlap() {
        let masker = Masker::new(["hunter".to_string(), "hunter2222".to_string()]);
        assert_eq!(masker.mask("x hunter2222 y"), format!("x {MASK} y"));
    }
}
