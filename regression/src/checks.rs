//! The checks of a regression run, from the outputs on disk: whether each command ran and
//! spoke the protocol (per version), whether the target behaves like the control
//! (comparisons), and whether the target keeps the protocol's promises (validations).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use crate::capture::CommandOutput;
use crate::compare::catalog;
use crate::compare::json_diff;
use crate::compare::records::{self, Destination, Limits, PrimaryKey, StreamDiff};
use crate::model::{Check, CheckKind, CheckStatus, Command, CommandRun, Side, StreamCounts};
use crate::session::RegressionError;

/// Details listed per check; the rest are counted.
const DETAILS_KEPT: usize = 20;
/// Invalid records named per stream.
const INVALID_EXAMPLES: usize = 3;

pub struct Judged {
    pub checks: Vec<Check>,
    pub streams: Vec<StreamCounts>,
    pub record_diffs: Vec<(Command, StreamDiff)>,
}

pub fn judge(
    runs: &[CommandRun],
    configured: &dyn Fn(Side, Command) -> Option<Value>,
    out_dir: &Path,
    limits: &Limits,
) -> Result<Judged, RegressionError> {
    let mut judged = Judged {
        checks: Vec::new(),
        streams: Vec::new(),
        record_diffs: Vec::new(),
    };
    for run in runs {
        judged
            .checks
            .push(execution(run.command, Side::Control, &run.control));
        judged
            .checks
            .push(execution(run.command, Side::Target, &run.target));
        match run.command {
            Command::Spec => spec_checks(run, &mut judged.checks),
            Command::Check => check_checks(run, &mut judged.checks),
            Command::Discover => discover_checks(run, &mut judged.checks),
            Command::Read | Command::ReadWithState => {
                read_checks(run, configured, out_dir, limits, &mut judged)?
            }
        }
    }
    Ok(judged)
}

fn check(
    id: &str,
    name: &str,
    command: Command,
    kind: CheckKind,
    status: CheckStatus,
    summary: impl Into<String>,
) -> Check {
    Check {
        id: id.to_string(),
        name: name.to_string(),
        command,
        kind,
        status,
        summary: summary.into(),
        details: Vec::new(),
        artifacts: Vec::new(),
    }
}

fn with_details(mut check: Check, details: Vec<String>) -> Check {
    let total = details.len();
    check.details = details.into_iter().take(DETAILS_KEPT).collect();
    if total > DETAILS_KEPT {
        check
            .details
            .push(format!("… and {} more", total - DETAILS_KEPT));
    }
    check
}

fn skipped(id: &str, name: &str, command: Command, kind: CheckKind, why: &str) -> Check {
    check(id, name, command, kind, CheckStatus::Skipped, why)
}

fn pass_fail(failed: bool) -> CheckStatus {
    if failed {
        CheckStatus::Fail
    } else {
        CheckStatus::Pass
    }
}

fn execution(command: Command, side: Side, output: &CommandOutput) -> Check {
    let id = format!("{}.{}.runs", side.as_str(), command);
    let name = format!("{command} runs on the {} version", side.as_str());
    let exit = output.ended();
    let messages: u64 = output.messages.values().sum();
    let mut summary = format!("{exit} after {:.1}s; {messages} messages", output.seconds);
    let mut details = Vec::new();
    if output.malformed > 0 {
        summary.push_str(&format!(", {} malformed", output.malformed));
        details.extend(
            output
                .malformed_examples
                .iter()
                .map(|e| format!("malformed: {e}")),
        );
    }
    if output.not_json_lines > 0 {
        summary.push_str(&format!(
            ", {} lines on stdout that are not protocol messages",
            output.not_json_lines
        ));
        details.extend(
            output
                .not_json_examples
                .iter()
                .map(|e| format!("not a message: {e}")),
        );
    }
    details.extend(output.errors.iter().map(|e| format!("error trace: {e}")));
    let status = if !output.ran_cleanly() {
        CheckStatus::Fail
    } else if output.not_json_lines > 0 {
        CheckStatus::Warn
    } else {
        CheckStatus::Pass
    };
    with_details(
        check(&id, &name, command, CheckKind::Execution, status, summary),
        details,
    )
}

fn spec_checks(run: &CommandRun, checks: &mut Vec<Check>) {
    let c = Command::Spec;
    match (&run.control.spec, &run.target.spec) {
        (Some(control), Some(target)) => {
            let differences = json_diff::diff(control, target);
            let details = differences
                .iter()
                .map(|d| format!("{}: {} → {}", d.path, show(&d.control), show(&d.target)))
                .collect();
            let summary = if differences.is_empty() {
                "the specs are equal".to_string()
            } else {
                format!("{} differences", differences.len())
            };
            checks.push(with_details(
                check(
                    "spec.equal",
                    "spec is unchanged",
                    c,
                    CheckKind::Comparison,
                    pass_fail(!differences.is_empty()),
                    summary,
                ),
                details,
            ));
        }
        _ => checks.push(skipped(
            "spec.equal",
            "spec is unchanged",
            c,
            CheckKind::Comparison,
            "a version printed no SPEC message",
        )),
    }
    let name = "spec is a valid JSON schema";
    match run
        .target
        .spec
        .as_ref()
        .and_then(|s| s.get("connectionSpecification"))
    {
        Some(schema) => {
            let (status, summary) = match jsonschema::meta::validate(schema) {
                Ok(()) => (
                    CheckStatus::Pass,
                    "connectionSpecification is a valid JSON schema".to_string(),
                ),
                Err(e) => (
                    CheckStatus::Fail,
                    format!(
                        "connectionSpecification is not a valid JSON schema: {e} (at {})",
                        e.instance_path()
                    ),
                ),
            };
            checks.push(check(
                "spec.valid_schema",
                name,
                c,
                CheckKind::Validation,
                status,
                summary,
            ));
        }
        None => checks.push(check(
            "spec.valid_schema",
            name,
            c,
            CheckKind::Validation,
            CheckStatus::Fail,
            "the target printed no SPEC message",
        )),
    }
}

fn status_of(output: &CommandOutput) -> Option<&str> {
    output.connection_status.as_ref()?.get("status")?.as_str()
}

fn check_checks(run: &CommandRun, checks: &mut Vec<Check>) {
    let c = Command::Check;
    let (control, target) = (status_of(&run.control), status_of(&run.target));
    checks.push(match (control, target) {
        (Some(a), Some(b)) => check(
            "check.status_equal",
            "check answers the same",
            c,
            CheckKind::Comparison,
            pass_fail(a != b),
            format!("control {a}, target {b}"),
        ),
        _ => skipped(
            "check.status_equal",
            "check answers the same",
            c,
            CheckKind::Comparison,
            "a version printed no CONNECTION_STATUS message",
        ),
    });
    let valid = matches!(target, Some("SUCCEEDED" | "FAILED"));
    checks.push(check(
        "check.answers_status",
        "check answers a connection status",
        c,
        CheckKind::Validation,
        pass_fail(!valid),
        match target {
            Some(s) if valid => format!("status {s}"),
            Some(s) => format!("status {s:?} is neither SUCCEEDED nor FAILED"),
            None => "the target printed no CONNECTION_STATUS message".into(),
        },
    ));
}

fn discover_checks(run: &CommandRun, checks: &mut Vec<Check>) {
    let c = Command::Discover;
    let name = "catalog is unchanged";
    match (&run.control.catalog, &run.target.catalog) {
        (Some(control), Some(target)) => {
            let d = catalog::diff(control, target);
            let mut details = Vec::new();
            details.extend(
                d.streams_removed
                    .iter()
                    .map(|s| format!("stream {s} removed")),
            );
            details.extend(d.streams_added.iter().map(|s| format!("stream {s} added")));
            for change in &d.changed {
                let s = &change.stream;
                details.extend(
                    change
                        .fields_removed
                        .iter()
                        .map(|f| format!("{s}: field {f} removed")),
                );
                details.extend(
                    change
                        .fields_added
                        .iter()
                        .map(|f| format!("{s}: field {f} added")),
                );
                details.extend(
                    change
                        .types_changed
                        .iter()
                        .map(|(f, a, b)| format!("{s}: field {f} type {a} → {b}")),
                );
                if let Some((a, b)) = &change.primary_key {
                    details.push(format!("{s}: primary key {a} → {b}"));
                }
            }
            let summary = if d.is_empty() {
                "the catalogs are equal".to_string()
            } else {
                format!(
                    "{} streams removed, {} added, {} changed",
                    d.streams_removed.len(),
                    d.streams_added.len(),
                    d.changed.len()
                )
            };
            checks.push(with_details(
                check(
                    "discover.catalog_equal",
                    name,
                    c,
                    CheckKind::Comparison,
                    pass_fail(!d.is_empty()),
                    summary,
                ),
                details,
            ));
        }
        _ => checks.push(skipped(
            "discover.catalog_equal",
            name,
            c,
            CheckKind::Comparison,
            "a version printed no CATALOG message",
        )),
    }
    let name = "catalog is valid";
    let Some(target) = &run.target.catalog else {
        checks.push(check(
            "discover.catalog_valid",
            name,
            c,
            CheckKind::Validation,
            CheckStatus::Fail,
            "the target printed no CATALOG message",
        ));
        return;
    };
    let mut problems = Vec::new();
    for (i, entry) in target
        .get("streams")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(stream) = entry.get("name").and_then(Value::as_str) else {
            problems.push(format!("stream {i} has no name"));
            continue;
        };
        match entry.get("json_schema") {
            Some(schema @ Value::Object(_)) => {
                if let Err(e) = jsonschema::meta::validate(schema) {
                    problems.push(format!(
                        "{stream}: json_schema is not a valid JSON schema: {e}"
                    ));
                }
            }
            _ => problems.push(format!("{stream}: no json_schema")),
        }
    }
    let summary = if problems.is_empty() {
        format!(
            "{} streams, each with a valid schema",
            catalog::streams(target).len()
        )
    } else {
        format!("{} problems", problems.len())
    };
    checks.push(with_details(
        check(
            "discover.catalog_valid",
            name,
            c,
            CheckKind::Validation,
            pass_fail(!problems.is_empty()),
            summary,
        ),
        problems,
    ));
}

fn read_checks(
    run: &CommandRun,
    configured: &dyn Fn(Side, Command) -> Option<Value>,
    out_dir: &Path,
    limits: &Limits,
    judged: &mut Judged,
) -> Result<(), RegressionError> {
    let c = run.command;
    let id = |name: &str| format!("{c}.{name}");
    let control_catalog = configured(Side::Control, c);
    let target_catalog = configured(Side::Target, c);
    let streams: BTreeSet<&String> = run
        .control
        .streams
        .keys()
        .chain(run.target.streams.keys())
        .filter(|s| {
            let records = |o: &CommandOutput| o.streams.get(*s).map_or(0, |x| x.records);
            records(&run.control) + records(&run.target) > 0
        })
        .collect();
    let count = |o: &CommandOutput, s: &str| o.streams.get(s).map_or(0, |x| x.records);

    // Record counts.
    let mut details = Vec::new();
    for stream in &streams {
        let (a, b) = (count(&run.control, stream), count(&run.target, stream));
        judged.streams.push(StreamCounts {
            command: c,
            stream: (*stream).clone(),
            control: a,
            target: b,
        });
        if a != b {
            details.push(format!("{stream}: {a} → {b} ({:+})", b as i64 - a as i64));
        }
    }
    judged.checks.push(with_details(
        check(
            &id("record_counts"),
            "record count per stream is unchanged",
            c,
            CheckKind::Comparison,
            pass_fail(!details.is_empty()),
            format!(
                "{} records in control, {} in target, {} streams differ",
                run.control.records(),
                run.target.records(),
                details.len()
            ),
        ),
        details,
    ));

    // Records, by key.
    let control_root = out_dir.join(&run.control_dir);
    let target_root = out_dir.join(&run.target_dir);
    let mut diffs = Vec::new();
    let mut names = BTreeSet::new();
    for stream in &streams {
        let key = primary_key(control_catalog.as_ref(), stream)
            .or_else(|| primary_key(target_catalog.as_ref(), stream))
            .unwrap_or_default();
        let file = |root: &Path, o: &CommandOutput| {
            o.streams
                .get(*stream)
                .filter(|s| !s.file.is_empty())
                .map(|s| root.join(&s.file))
        };
        let control_file = file(&control_root, &run.control);
        let target_file = file(&target_root, &run.target);
        let name = crate::capture::file_name(stream, &names);
        names.insert(name.clone());
        let dest = Destination {
            out_dir: &out_dir.join("diff").join(c.as_str()),
            name: &name,
            relative_to: out_dir,
            scratch: out_dir,
        };
        diffs.push(records::compare_stream(
            stream,
            control_file.as_deref(),
            target_file.as_deref(),
            &key,
            limits,
            &dest,
        )?);
    }
    let mut details = Vec::new();
    let mut artifacts = Vec::new();
    let mut missing = Vec::new();
    let mut missing_artifacts = Vec::new();
    for d in &diffs {
        if d.is_equal() {
            continue;
        }
        let fields: Vec<String> = d
            .changed_fields
            .iter()
            .map(|(f, n)| format!("{f} in {n}"))
            .collect();
        let by = if d.primary_key.is_empty() {
            "as a multiset".to_string()
        } else {
            format!("by {}", show_key(&d.primary_key))
        };
        details.push(format!(
            "{}: {} changed{}, {} only in control, {} only in target ({by})",
            d.stream,
            d.changed,
            if fields.is_empty() {
                String::new()
            } else {
                format!(" ({})", fields.join(", "))
            },
            d.control_only,
            d.target_only
        ));
        for kind in ["changed", "control_only", "target_only"] {
            if let Some(example) = d.examples.iter().find(|e| e["kind"] == kind) {
                details.push(format!("{}: {}", d.stream, example_line(example)));
            }
        }
        artifacts.extend(d.diff_file.clone());
        if !d.primary_key.is_empty() && d.control_only > 0 {
            let keys: Vec<String> = d
                .examples
                .iter()
                .filter(|e| e["kind"] == "control_only")
                .take(5)
                .map(|e| e["key"].to_string())
                .collect();
            missing.push(format!(
                "{}: {} control keys missing from the target, e.g. {}",
                d.stream,
                d.control_only,
                keys.join(", ")
            ));
            missing_artifacts.extend(d.missing_keys_file.clone());
        }
    }
    let mut keys_check = with_details(
        check(
            &id("primary_keys_present"),
            "every control primary key is in the target",
            c,
            CheckKind::Comparison,
            pass_fail(!missing.is_empty()),
            if missing.is_empty() {
                "no key missing".to_string()
            } else {
                format!("keys missing in {} streams", missing.len())
            },
        ),
        missing,
    );
    keys_check.artifacts = missing_artifacts;
    judged.checks.push(keys_check);
    let differing = diffs.iter().filter(|d| !d.is_equal()).count();
    let compared: u64 = diffs
        .iter()
        .map(|d| d.control_records.max(d.target_records))
        .sum();
    let mut records_check = with_details(
        check(
            &id("records_equal"),
            "records are equal (by primary key, ignoring emitted_at)",
            c,
            CheckKind::Comparison,
            pass_fail(differing > 0),
            format!(
                "{compared} records compared in {} streams, {differing} differ",
                diffs.len()
            ),
        ),
        details,
    );
    records_check.artifacts = artifacts;
    judged.checks.push(records_check);

    // Inferred schemas.
    let mut details = Vec::new();
    for stream in &streams {
        let (Some(a), Some(b)) = (
            run.control.streams.get(*stream),
            run.target.streams.get(*stream),
        ) else {
            continue;
        };
        if a.records == 0 || b.records == 0 {
            continue;
        }
        for change in b.schema.changes_from(&a.schema) {
            let side = |t: &[String]| {
                if t.is_empty() {
                    "absent".to_string()
                } else {
                    t.join("|")
                }
            };
            details.push(format!(
                "{stream}: {} {} → {}",
                change.field,
                side(&change.control),
                side(&change.target)
            ));
        }
    }
    judged.checks.push(with_details(
        check(
            &id("inferred_schema_equal"),
            "records' inferred schema is unchanged",
            c,
            CheckKind::Comparison,
            pass_fail(!details.is_empty()),
            format!(
                "{} fields differ in the streams both versions read",
                details.len()
            ),
        ),
        details,
    ));

    // States.
    let mut details = Vec::new();
    let with_states = |o: &CommandOutput| -> BTreeMap<String, u64> {
        o.streams
            .iter()
            .filter(|(_, s)| s.states > 0)
            .map(|(n, s)| (n.clone(), s.states))
            .collect()
    };
    let (a, b) = (with_states(&run.control), with_states(&run.target));
    for stream in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        let (x, y) = (
            a.get(stream).copied().unwrap_or(0),
            b.get(stream).copied().unwrap_or(0),
        );
        if x != y {
            details.push(format!("{stream}: {x} states → {y}"));
        }
    }
    if run.control.other_states != run.target.other_states {
        details.push(format!(
            "global or legacy states: {} → {}",
            run.control.other_states, run.target.other_states
        ));
    }
    judged.checks.push(with_details(
        check(
            &id("states_comparable"),
            "states are emitted for the same streams, as often",
            c,
            CheckKind::Comparison,
            pass_fail(!details.is_empty()),
            format!(
                "{} streams with states in control, {} in target",
                a.len(),
                b.len()
            ),
        ),
        details,
    ));

    validations(run, target_catalog.as_ref(), &target_root, judged);
    judged
        .record_diffs
        .extend(diffs.into_iter().map(|d| (c, d)));
    Ok(())
}

fn validations(run: &CommandRun, catalog: Option<&Value>, root: &Path, judged: &mut Judged) {
    let c = run.command;
    let id = |name: &str| format!("{c}.{name}");
    let Some(catalog) = catalog else {
        for (name, title) in [
            (
                "records_conform",
                "records conform to their stream's schema",
            ),
            ("records_have_keys", "records carry their primary key"),
            (
                "records_in_configured_streams",
                "records belong to configured streams",
            ),
            ("states_per_stream", "states are emitted per stream"),
            ("stream_statuses_complete", "stream statuses reach COMPLETE"),
        ] {
            judged.checks.push(skipped(
                &id(name),
                title,
                c,
                CheckKind::Validation,
                "the target had no configured catalog",
            ));
        }
        return;
    };
    let configured = catalog::streams(catalog);
    let target = &run.target;

    let outside: Vec<String> = target
        .streams
        .iter()
        .filter(|(s, o)| o.records > 0 && !configured.contains_key(*s))
        .map(|(s, o)| format!("{s}: {} records of a stream not in the catalog", o.records))
        .collect();
    judged.checks.push(with_details(
        check(
            &id("records_in_configured_streams"),
            "records belong to configured streams",
            c,
            CheckKind::Validation,
            pass_fail(!outside.is_empty()),
            format!("{} streams outside the catalog", outside.len()),
        ),
        outside,
    ));

    let mut invalid_details = Vec::new();
    let mut keyless_details = Vec::new();
    let mut invalid_total = 0u64;
    for (stream, output) in &target.streams {
        let Some(definition) = configured.get(stream) else {
            continue;
        };
        if output.file.is_empty() {
            continue;
        }
        let validator = definition
            .get("json_schema")
            .and_then(|schema| jsonschema::validator_for(schema).ok());
        let key = primary_key(Some(catalog), stream).unwrap_or_default();
        let scan = scan_records(&root.join(&output.file), validator.as_ref(), &key);
        invalid_total += scan.invalid;
        if scan.invalid > 0 {
            invalid_details.push(format!(
                "{stream}: {} of {} records do not conform",
                scan.invalid, output.records
            ));
            invalid_details.extend(scan.examples.into_iter().map(|e| format!("{stream}: {e}")));
        }
        if scan.without_key > 0 {
            keyless_details.push(format!(
                "{stream}: {} records lack their primary key {}",
                scan.without_key,
                show_key(&key)
            ));
        }
    }
    judged.checks.push(with_details(
        check(
            &id("records_conform"),
            "records conform to their stream's schema",
            c,
            CheckKind::Validation,
            pass_fail(invalid_total > 0),
            format!("{invalid_total} records do not conform"),
        ),
        invalid_details,
    ));
    judged.checks.push(with_details(
        check(
            &id("records_have_keys"),
            "records carry their primary key",
            c,
            CheckKind::Validation,
            pass_fail(!keyless_details.is_empty()),
            format!(
                "{} streams with records lacking their key",
                keyless_details.len()
            ),
        ),
        keyless_details,
    ));

    let read: Vec<&String> = target
        .streams
        .iter()
        .filter(|(s, o)| o.records > 0 && configured.contains_key(*s))
        .map(|(s, _)| s)
        .collect();
    let stateless: Vec<String> = read
        .iter()
        .filter(|s| target.streams[**s].states == 0)
        .map(|s| format!("{s}: records but no per-stream state"))
        .collect();
    let status = match (stateless.is_empty(), target.other_states > 0) {
        (true, _) => CheckStatus::Pass,
        (false, true) => CheckStatus::Warn,
        (false, false) => CheckStatus::Fail,
    };
    judged.checks.push(with_details(
        check(
            &id("states_per_stream"),
            "states are emitted per stream",
            c,
            CheckKind::Validation,
            status,
            format!(
                "{} of {} streams read have per-stream states",
                read.len() - stateless.len(),
                read.len()
            ),
        ),
        stateless,
    ));

    let incomplete: Vec<String> = configured
        .keys()
        .filter_map(|s| {
            let last = target.streams.get(s).and_then(|o| o.statuses.last());
            match last.map(String::as_str) {
                Some("COMPLETE") => None,
                Some(other) => Some(format!("{s}: last status {other}")),
                None => Some(format!("{s}: no stream status")),
            }
        })
        .collect();
    judged.checks.push(with_details(
        check(
            &id("stream_statuses_complete"),
            "stream statuses reach COMPLETE",
            c,
            CheckKind::Validation,
            pass_fail(!incomplete.is_empty()),
            format!(
                "{} of {} configured streams complete",
                configured.len() - incomplete.len(),
                configured.len()
            ),
        ),
        incomplete,
    ));
}

struct Scan {
    invalid: u64,
    without_key: u64,
    examples: Vec<String>,
}

fn scan_records(path: &Path, validator: Option<&jsonschema::Validator>, key: &PrimaryKey) -> Scan {
    let mut scan = Scan {
        invalid: 0,
        without_key: 0,
        examples: Vec::new(),
    };
    let Ok(file) = File::open(path) else {
        return scan;
    };
    for (n, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(data) = message.get("record").and_then(|r| r.get("data")) else {
            continue;
        };
        if let Some(validator) = validator
            && let Err(e) = validator.validate(data)
        {
            scan.invalid += 1;
            if scan.examples.len() < INVALID_EXAMPLES {
                let at = e.instance_path().to_string();
                scan.examples.push(format!(
                    "record {}: {}{e}",
                    n + 1,
                    if at.is_empty() {
                        String::new()
                    } else {
                        format!("{at}: ")
                    }
                ));
            }
        }
        if !key.is_empty()
            && key.iter().any(|path| {
                path.iter()
                    .try_fold(data, |v, f| v.get(f))
                    .is_none_or(Value::is_null)
            })
        {
            scan.without_key += 1;
        }
    }
    scan
}

/// A configured stream's primary key (or its source-defined one).
fn primary_key(catalog: Option<&Value>, stream: &str) -> Option<PrimaryKey> {
    let catalog = catalog?;
    for entry in catalog.get("streams")?.as_array()? {
        let definition = entry.get("stream").unwrap_or(entry);
        let name = crate::protocol::stream_name(
            definition.get("name").and_then(Value::as_str).unwrap_or(""),
            definition.get("namespace").and_then(Value::as_str),
        );
        if name != stream {
            continue;
        }
        let key = entry
            .get("primary_key")
            .filter(|k| k.as_array().is_some_and(|a| !a.is_empty()))
            .or_else(|| definition.get("source_defined_primary_key"))?;
        let paths: PrimaryKey = key
            .as_array()?
            .iter()
            .filter_map(|path| {
                path.as_array().map(|p| {
                    p.iter()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect()
                })
            })
            .filter(|p: &Vec<String>| !p.is_empty())
            .collect();
        return (!paths.is_empty()).then_some(paths);
    }
    None
}

fn show_key(key: &PrimaryKey) -> String {
    key.iter()
        .map(|p| p.join("."))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(value: &Option<Value>) -> String {
    match value {
        Some(v) => {
            let text = v.to_string();
            if text.len() > 120 {
                format!("{}…", &text[..text.floor_char_boundary(120)])
            } else {
                text
            }
        }
        None => "absent".into(),
    }
}

/// One difference from a diff file, for a person.
pub fn example_line(example: &Value) -> String {
    let key = example.get("key").map(Value::to_string);
    match example.get("kind").and_then(Value::as_str) {
        Some("changed") => {
            let fields: Vec<String> = example
                .get("fields")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(f, v)| {
                    format!(
                        "{f} {} → {}",
                        show(&v.get("control").cloned()),
                        show(&v.get("target").cloned())
                    )
                })
                .collect();
            format!(
                "key {} changed: {}",
                key.unwrap_or_default(),
                fields.join("; ")
            )
        }
        Some(kind) => {
            let side = if kind == "control_only" {
                "only in control"
            } else {
                "only in target"
            };
            match key {
                Some(key) => format!("key {key} {side}"),
                None => format!("{side}: {}", show(&example.get("data").cloned())),
            }
        }
        None => example.to_string(),
    }
}
