//! The plan as other CI systems read it: `key=value` lines for GitHub Actions'
//! `$GITHUB_OUTPUT`, so a workflow can fan out on shardci's decision (`fromJSON` of a value
//! in `strategy.matrix`) without running shardci's own workers.

use std::collections::BTreeMap;

use serde_json::json;

use super::model::Plan;

/// One `key=value` line per output; every value is one line (JSON where it is structured).
///
/// - `run-tests`, `full-tests`, `all-versions`: `true` or `false`; `versions`: the mode.
/// - `connectors`: the connectors with jobs, as a JSON list.
/// - `test-types`: test types per connector, as a JSON object of lists.
/// - `matrix`: the values each matrix axis takes among the jobs, as a JSON object of lists.
/// - `jobs`: `{"include": [{"id", "connector", "test_type", "matrix"}...]}` for
///   `strategy.matrix: ${{ fromJSON(needs.plan.outputs.jobs) }}`, one CI job per job.
/// - `shards`: `{"include": [{"shard", "jobs", "expected_seconds"}...]}`, one CI job per shard,
///   balanced by measured durations like shardci's own fleet.
pub fn render_github(plan: &Plan) -> String {
    let mut test_types: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut matrix: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for job in &plan.jobs {
        let types = test_types.entry(&job.connector).or_default();
        if !types.contains(&job.test_type.as_str()) {
            types.push(&job.test_type);
        }
        for (axis, value) in &job.matrix {
            let values = matrix.entry(axis).or_default();
            if !values.contains(&value.as_str()) {
                values.push(value);
            }
        }
    }
    let jobs: Vec<_> = plan
        .jobs
        .iter()
        .map(|j| {
            json!({
                "id": j.id,
                "connector": j.connector,
                "test_type": j.test_type,
                "matrix": j.matrix,
            })
        })
        .collect();
    let shards: Vec<_> = plan
        .shards
        .iter()
        .map(|s| {
            json!({
                "shard": s.id,
                "jobs": s.jobs,
                "expected_seconds": s.expected_seconds.round(),
            })
        })
        .collect();
    let lines = [
        ("run-tests", json!(!plan.jobs.is_empty())),
        ("full-tests", json!(plan.full_tests)),
        ("all-versions", json!(plan.all_versions)),
        ("versions", json!(plan.versions.as_str())),
        ("connectors", json!(plan.connectors)),
        ("test-types", json!(test_types)),
        ("matrix", json!(matrix)),
        ("jobs", json!({ "include": jobs })),
        ("shards", json!({ "include": shards })),
    ];
    lines
        .iter()
        .map(|(key, value)| match value {
            // Scalars unquoted, as workflow conditions compare them (`== 'true'`).
            serde_json::Value::Bool(b) => format!("{key}={b}\n"),
            serde_json::Value::String(s) => format!("{key}={s}\n"),
            other => format!("{key}={other}\n"),
        })
        .collect()
}
