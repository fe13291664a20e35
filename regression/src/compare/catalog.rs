//! How two discovered catalogs differ: streams added or removed, and per stream the schema's
//! fields added, removed or retyped, and a changed primary key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::stream_name;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogDiff {
    pub streams_added: Vec<String>,
    pub streams_removed: Vec<String>,
    pub changed: Vec<StreamSchemaChange>,
}

impl CatalogDiff {
    pub fn is_empty(&self) -> bool {
        self.streams_added.is_empty() && self.streams_removed.is_empty() && self.changed.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamSchemaChange {
    pub stream: String,
    pub fields_added: Vec<String>,
    pub fields_removed: Vec<String>,
    /// (field, control type, target type).
    pub types_changed: Vec<(String, String, String)>,
    /// (control, target) when the source-defined primary key changed.
    pub primary_key: Option<(Value, Value)>,
}

/// The streams of a catalog (discovered or configured), by name.
pub fn streams(catalog: &Value) -> BTreeMap<String, &Value> {
    let mut out = BTreeMap::new();
    for entry in catalog
        .get("streams")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // A configured catalog wraps each stream; a discovered one does not.
        let stream = entry.get("stream").unwrap_or(entry);
        if let Some(name) = stream.get("name").and_then(Value::as_str) {
            out.insert(
                stream_name(name, stream.get("namespace").and_then(Value::as_str)),
                stream,
            );
        }
    }
    out
}

pub fn diff(control: &Value, target: &Value) -> CatalogDiff {
    let control = streams(control);
    let target = streams(target);
    let mut out = CatalogDiff {
        streams_added: target
            .keys()
            .filter(|s| !control.contains_key(*s))
            .cloned()
            .collect(),
        streams_removed: control
            .keys()
            .filter(|s| !target.contains_key(*s))
            .cloned()
            .collect(),
        changed: Vec::new(),
    };
    for (name, c) in &control {
        let Some(t) = target.get(name) else { continue };
        let cf = fields(c.get("json_schema"));
        let tf = fields(t.get("json_schema"));
        let mut change = StreamSchemaChange {
            stream: name.clone(),
            fields_added: tf
                .keys()
                .filter(|f| !cf.contains_key(*f))
                .cloned()
                .collect(),
            fields_removed: cf
                .keys()
                .filter(|f| !tf.contains_key(*f))
                .cloned()
                .collect(),
            types_changed: cf
                .iter()
                .filter_map(|(f, ct)| {
                    let tt = tf.get(f)?;
                    (ct != tt).then(|| (f.clone(), ct.clone(), tt.clone()))
                })
                .collect(),
            primary_key: None,
        };
        let cpk = c
            .get("source_defined_primary_key")
            .cloned()
            .unwrap_or(Value::Null);
        let tpk = t
            .get("source_defined_primary_key")
            .cloned()
            .unwrap_or(Value::Null);
        if cpk != tpk {
            change.primary_key = Some((cpk, tpk));
        }
        if !change.fields_added.is_empty()
            || !change.fields_removed.is_empty()
            || !change.types_changed.is_empty()
            || change.primary_key.is_some()
        {
            out.changed.push(change);
        }
    }
    out
}

/// A schema's fields, nested ones as `a.b`, with their declared type (`["null","string"]`
/// reads `null|string`, order-insensitive).
fn fields(schema: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(schema) = schema {
        collect("", schema, &mut out);
    }
    out
}

fn collect(prefix: &str, schema: &Value, out: &mut BTreeMap<String, String>) {
    let Some(Value::Object(properties)) = schema.get("properties") else {
        return;
    };
    for (name, property) in properties {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        out.insert(path.clone(), type_of(property));
        collect(&path, property, out);
    }
}

fn type_of(property: &Value) -> String {
    match property.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => {
            let mut names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            names.sort_unstable();
            names.join("|")
        }
        _ => "any".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog(streams: Value) -> Value {
        json!({ "streams": streams })
    }

    #[test]
    fn renamed_streams_and_retyped_fields_are_named() {
        let control = catalog(json!([
            {"name": "users", "json_schema": {"properties": {"id": {"type": "integer"}, "age": {"type": ["null", "integer"]}, "meta": {"type": "object", "properties": {"tag": {"type": "string"}}}}}, "source_defined_primary_key": [["id"]]},
            {"name": "events", "json_schema": {"properties": {}}}
        ]));
        let target = catalog(json!([
            {"name": "users", "json_schema": {"properties": {"id": {"type": "integer"}, "age": {"type": ["string", "null"]}, "meta": {"type": "object", "properties": {}}, "email": {"type": "string"}}}, "source_defined_primary_key": [["id"]]},
            {"name": "activities", "json_schema": {"properties": {}}}
        ]));
        let d = diff(&control, &target);
        assert_eq!(d.streams_added, ["activities"]);
        assert_eq!(d.streams_removed, ["events"]);
        assert_eq!(d.changed.len(), 1);
        let users = &d.changed[0];
        assert_eq!(users.fields_added, ["email"]);
        assert_eq!(users.fields_removed, ["meta.tag"]);
        assert_eq!(
            users.types_changed,
            [(
                "age".to_string(),
                "integer|null".to_string(),
                "null|string".to_string()
            )]
        );
        assert!(users.primary_key.is_none());
    }

    #[test]
    fn same_catalog_has_no_diff_whatever_the_type_order() {
        let a = catalog(
            json!([{"name": "s", "json_schema": {"properties": {"x": {"type": ["null", "string"]}}}}]),
        );
        let b = catalog(
            json!([{"name": "s", "json_schema": {"properties": {"x": {"type": ["string", "null"]}}}}]),
        );
        assert!(diff(&a, &b).is_empty());
    }
}
