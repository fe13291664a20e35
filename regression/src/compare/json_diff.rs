//! Differences between two JSON values, by path: what a spec diff and a changed record show.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One place where two values differ. A side is `None` where the path is absent from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// `a.b[2].c`; empty for the values themselves.
    pub path: String,
    pub control: Option<Value>,
    pub target: Option<Value>,
}

/// Every path where `control` and `target` differ: objects key by key, arrays item by item
/// when their lengths agree (else as a whole), anything else by equality.
pub fn diff(control: &Value, target: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(String::new(), Some(control), Some(target), &mut out);
    out
}

fn walk(path: String, control: Option<&Value>, target: Option<&Value>, out: &mut Vec<Difference>) {
    match (control, target) {
        (Some(Value::Object(c)), Some(Value::Object(t))) => {
            for (key, value) in c {
                walk(join(&path, key), Some(value), t.get(key), out);
            }
            for (key, value) in t {
                if !c.contains_key(key) {
                    walk(join(&path, key), None, Some(value), out);
                }
            }
        }
        (Some(Value::Array(c)), Some(Value::Array(t))) if c.len() == t.len() => {
            for (i, (cv, tv)) in c.iter().zip(t).enumerate() {
                walk(format!("{path}[{i}]"), Some(cv), Some(tv), out);
            }
        }
        (c, t) if c != t => out.push(Difference {
            path,
            control: c.cloned(),
            target: t.cloned(),
        }),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_name_what_changed_was_added_and_removed() {
        let control = json!({"a": 1, "b": {"c": [1, 2]}, "gone": true});
        let target = json!({"a": "1", "b": {"c": [1, 3]}, "new": null});
        let paths: Vec<(String, Option<Value>, Option<Value>)> = diff(&control, &target)
            .into_iter()
            .map(|d| (d.path, d.control, d.target))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("a".into(), Some(json!(1)), Some(json!("1"))),
                ("b.c[1]".into(), Some(json!(2)), Some(json!(3))),
                ("gone".into(), Some(json!(true)), None),
                ("new".into(), None, Some(json!(null))),
            ]
        );
    }

    #[test]
    fn equal_values_have_no_difference() {
        let v = json!({"x": [1, {"y": 2}]});
        assert!(diff(&v, &v.clone()).is_empty());
    }
}
