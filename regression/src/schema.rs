//! The schema a stream's records show: for each top-level field, the JSON types its values
//! had. Two versions that emit the same fields with the same types infer the same schema,
//! whatever their declared schemas say.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

const TYPE_NAMES: [&str; 6] = ["null", "boolean", "number", "string", "array", "object"];

fn type_bit(value: &Value) -> u8 {
    match value {
        Value::Null => 1,
        Value::Bool(_) => 1 << 1,
        Value::Number(_) => 1 << 2,
        Value::String(_) => 1 << 3,
        Value::Array(_) => 1 << 4,
        Value::Object(_) => 1 << 5,
    }
}

/// Field name → the set of JSON types seen (a bit per type, so observing is cheap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InferredSchema {
    fields: BTreeMap<String, u8>,
}

/// A field whose inferred types differ between two schemas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    /// Empty: the field is absent on that side.
    pub control: Vec<String>,
    pub target: Vec<String>,
}

impl InferredSchema {
    pub fn observe(&mut self, data: &Map<String, Value>) {
        for (field, value) in data {
            let bit = type_bit(value);
            match self.fields.get_mut(field) {
                Some(bits) => *bits |= bit,
                None => {
                    self.fields.insert(field.clone(), bit);
                }
            }
        }
    }

    pub fn types(&self, field: &str) -> Vec<String> {
        names(self.fields.get(field).copied().unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Fields added, removed or typed differently from `control` to `self`.
    pub fn changes_from(&self, control: &InferredSchema) -> Vec<FieldChange> {
        let mut fields: Vec<&String> = control.fields.keys().chain(self.fields.keys()).collect();
        fields.sort();
        fields.dedup();
        fields
            .into_iter()
            .filter(|f| control.fields.get(*f) != self.fields.get(*f))
            .map(|f| FieldChange {
                field: f.clone(),
                control: control.types(f),
                target: self.types(f),
            })
            .collect()
    }
}

fn names(bits: u8) -> Vec<String> {
    TYPE_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

impl Serialize for InferredSchema {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let readable: BTreeMap<&String, Vec<String>> =
            self.fields.iter().map(|(f, b)| (f, names(*b))).collect();
        readable.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for InferredSchema {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let readable = BTreeMap::<String, Vec<String>>::deserialize(deserializer)?;
        let fields = readable
            .into_iter()
            .map(|(field, types)| {
                let bits = types
                    .iter()
                    .filter_map(|t| TYPE_NAMES.iter().position(|n| n == t))
                    .fold(0u8, |bits, i| bits | (1 << i));
                (field, bits)
            })
            .collect();
        Ok(Self { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn infer(records: &[Value]) -> InferredSchema {
        let mut schema = InferredSchema::default();
        for r in records {
            schema.observe(r.as_object().expect("object"));
        }
        schema
    }

    #[test]
    fn changes_name_fields_added_removed_and_retyped() {
        let control = infer(&[json!({"id": 1, "age": 3, "gone": true})]);
        let target = infer(&[
            json!({"id": 2, "age": "3", "new": null}),
            json!({"id": 3, "age": null}),
        ]);
        let changes = target.changes_from(&control);
        let named: Vec<(&str, Vec<String>, Vec<String>)> = changes
            .iter()
            .map(|c| (c.field.as_str(), c.control.clone(), c.target.clone()))
            .collect();
        assert_eq!(
            named,
            vec![
                (
                    "age",
                    vec!["number".into()],
                    vec!["null".into(), "string".into()]
                ),
                ("gone", vec!["boolean".into()], vec![]),
                ("new", vec![], vec!["null".into()]),
            ]
        );
    }

    #[test]
    fn round_trips_through_json() {
        let schema = infer(&[json!({"a": [1], "b": {"c": 1}})]);
        let text = serde_json::to_string(&schema).expect("json");
        assert_eq!(text, r#"{"a":["array"],"b":["object"]}"#);
        let back: InferredSchema = serde_json::from_str(&text).expect("back");
        assert_eq!(back, schema);
    }
}
