//! Compares two versions' records of one stream, with memory bounded by a budget, not by the
//! data: both sides are hash-partitioned on disk by record key, then each partition pair is
//! compared in memory (the control side in a map, the target side streamed past it).
//!
//! With a primary key, records are matched by key, and a matched pair differs when its `data`
//! differs (`emitted_at` is not part of it); without one, the streams are compared as
//! multisets of records. Every difference is written to a diff file, the first few also kept
//! for the report.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::json_diff;

/// A partition's bytes on disk take about this many times more once held in the map.
const MEMORY_PER_DISK_BYTE: u64 = 2;
const MAX_PARTITIONS: u64 = 4096;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory the comparison of one partition may take.
    pub memory_bytes: u64,
    /// Differences of each kind (changed, control only, target only) kept in the report per
    /// stream; all are in the diff file.
    pub examples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            examples: 10,
        }
    }
}

/// A primary key: one or more field paths (`[["id"], ["meta", "region"]]`).
pub type PrimaryKey = Vec<Vec<String>>;

/// The comparison of one stream's records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamDiff {
    pub stream: String,
    /// Empty: compared as multisets.
    pub primary_key: PrimaryKey,
    pub control_records: u64,
    pub target_records: u64,
    pub matched: u64,
    /// Same key, different data.
    pub changed: u64,
    pub control_only: u64,
    pub target_only: u64,
    /// Records of a keyed stream without their key (compared as a multiset among themselves).
    pub without_key: u64,
    /// Lines of a records file that could not be read back.
    pub unreadable: u64,
    /// Field path → changed records in which it differs.
    pub changed_fields: BTreeMap<String, u64>,
    pub examples: Vec<Value>,
    /// Every difference, one JSON object per line (relative to the output folder).
    pub diff_file: Option<String>,
    /// Control keys absent from the target, one per line.
    pub missing_keys_file: Option<String>,
    pub partitions: u64,
}

impl StreamDiff {
    pub fn is_equal(&self) -> bool {
        self.changed == 0 && self.control_only == 0 && self.target_only == 0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("comparing records of {stream}: {source}")]
pub struct CompareError {
    stream: String,
    source: std::io::Error,
}

/// Where a stream's comparison writes: `<out>/<name>.jsonl` and `<name>.missing-keys.jsonl`,
/// relative paths in the result from `relative_to`.
pub struct Destination<'a> {
    pub out_dir: &'a Path,
    pub name: &'a str,
    pub relative_to: &'a Path,
    /// Scratch space for partitions, removed after.
    pub scratch: &'a Path,
}

/// Compares `control` and `target` (records files as captured; `None`: the side has no
/// records of the stream).
pub fn compare_stream(
    stream: &str,
    control: Option<&Path>,
    target: Option<&Path>,
    primary_key: &PrimaryKey,
    limits: &Limits,
    dest: &Destination<'_>,
) -> Result<StreamDiff, CompareError> {
    let error = |source| CompareError {
        stream: stream.to_string(),
        source,
    };
    let size = |p: Option<&Path>| {
        p.and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    };
    let biggest = size(control).max(size(target));
    let partitions = (biggest * MEMORY_PER_DISK_BYTE)
        .div_ceil(limits.memory_bytes.max(1))
        .clamp(1, MAX_PARTITIONS);
    let mut diff = StreamDiff {
        stream: stream.to_string(),
        primary_key: primary_key.clone(),
        partitions,
        ..StreamDiff::default()
    };
    std::fs::create_dir_all(dest.out_dir).map_err(error)?;
    let diff_path = dest.out_dir.join(format!("{}.jsonl", dest.name));
    let missing_path = dest
        .out_dir
        .join(format!("{}.missing-keys.jsonl", dest.name));
    let mut out = Output {
        diffs: BufWriter::new(File::create(&diff_path).map_err(error)?),
        missing: BufWriter::new(File::create(&missing_path).map_err(error)?),
        examples: limits.examples,
        kept: [0; 3],
    };
    let scratch = tempfile::Builder::new()
        .prefix("partitions-")
        .tempdir_in(dest.scratch)
        .map_err(error)?;
    let keyer = Keyer { primary_key };
    let (control_parts, target_parts) = if partitions == 1 {
        (vec![Part::Records(control)], vec![Part::Records(target)])
    } else {
        let mut counts = (0, 0);
        let c = partition(
            control,
            &keyer,
            partitions,
            &scratch.path().join("c"),
            &mut counts,
        )
        .map_err(error)?;
        let t = partition(
            target,
            &keyer,
            partitions,
            &scratch.path().join("t"),
            &mut counts,
        )
        .map_err(error)?;
        diff.unreadable += counts.0;
        diff.without_key += counts.1;
        (c, t)
    };
    for (c, t) in control_parts.iter().zip(&target_parts) {
        compare_partition(c, t, &keyer, &mut diff, &mut out).map_err(error)?;
    }
    out.diffs.flush().map_err(error)?;
    out.missing.flush().map_err(error)?;
    let relative = |p: &Path| {
        p.strip_prefix(dest.relative_to)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    if !diff.is_equal() {
        diff.diff_file = Some(relative(&diff_path));
    }
    if diff.control_only > 0 && !primary_key.is_empty() {
        diff.missing_keys_file = Some(relative(&missing_path));
    }
    Ok(diff)
}

struct Output {
    diffs: BufWriter<File>,
    missing: BufWriter<File>,
    examples: usize,
    /// Examples kept so far of each kind, so a stream where every record changed still shows
    /// which keys went missing.
    kept: [usize; 3],
}

impl Output {
    fn difference(&mut self, diff: &mut StreamDiff, entry: Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.diffs, &entry)?;
        self.diffs.write_all(b"\n")?;
        let kind = match entry["kind"].as_str() {
            Some("changed") => 0,
            Some("control_only") => 1,
            _ => 2,
        };
        if self.kept[kind] < self.examples {
            self.kept[kind] += 1;
            diff.examples.push(entry);
        }
        Ok(())
    }
}

/// What a record is matched by.
struct Keyer<'a> {
    primary_key: &'a PrimaryKey,
}

/// A record read back: its key (`None` for a multiset) and its data in canonical form.
struct Keyed {
    key: Option<String>,
    data: String,
}

#[derive(Deserialize)]
struct RecordMessage {
    record: RecordBody,
}

#[derive(Deserialize)]
struct RecordBody {
    data: Value,
}

impl Keyer<'_> {
    /// Reads a captured RECORD line. `serde_json`'s maps are sorted, so the data's text is
    /// the same for equal data whatever order the connector printed its fields in.
    fn read(&self, line: &str) -> Option<(Keyed, bool)> {
        let message: RecordMessage = serde_json::from_str(line).ok()?;
        let data = message.record.data;
        let text = serde_json::to_string(&data).ok()?;
        if self.primary_key.is_empty() {
            return Some((
                Keyed {
                    key: None,
                    data: text,
                },
                false,
            ));
        }
        let mut parts = Vec::with_capacity(self.primary_key.len());
        for path in self.primary_key {
            match lookup(&data, path) {
                Some(v) if !v.is_null() => parts.push(v),
                _ => {
                    return Some((
                        Keyed {
                            key: None,
                            data: text,
                        },
                        true,
                    ));
                }
            }
        }
        let key = serde_json::to_string(&parts).ok()?;
        Some((
            Keyed {
                key: Some(key),
                data: text,
            },
            false,
        ))
    }
}

fn lookup<'v>(data: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(data, |v, field| v.get(field))
}

/// A side's records for one partition: the captured file itself (one partition) or a
/// partition file of `key \t data` lines (`\t` never appears unescaped in JSON).
enum Part<'a> {
    Records(Option<&'a Path>),
    Partition(PathBuf),
}

fn partition(
    records: Option<&Path>,
    keyer: &Keyer<'_>,
    partitions: u64,
    dir: &Path,
    (unreadable, without_key): &mut (u64, u64),
) -> std::io::Result<Vec<Part<'static>>> {
    std::fs::create_dir_all(dir)?;
    let paths: Vec<PathBuf> = (0..partitions).map(|i| dir.join(format!("{i}"))).collect();
    let mut writers = paths
        .iter()
        .map(|p| File::create(p).map(|f| BufWriter::with_capacity(32 << 10, f)))
        .collect::<std::io::Result<Vec<_>>>()?;
    if let Some(records) = records {
        let mut reader = BufReader::with_capacity(1 << 20, File::open(records)?);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            match keyer.read(line.trim_end()) {
                Some((keyed, missing_key)) => {
                    *without_key += u64::from(missing_key);
                    let key = keyed.key.as_deref().unwrap_or("");
                    let slot = if keyed.key.is_some() {
                        bucket(key, partitions)
                    } else {
                        bucket(&keyed.data, partitions)
                    };
                    let w = &mut writers[slot];
                    w.write_all(key.as_bytes())?;
                    w.write_all(b"\t")?;
                    w.write_all(keyed.data.as_bytes())?;
                    w.write_all(b"\n")?;
                }
                None => *unreadable += 1,
            }
            line.clear();
        }
    }
    for w in &mut writers {
        w.flush()?;
    }
    Ok(paths.into_iter().map(Part::Partition).collect())
}

fn bucket(text: &str, partitions: u64) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    (hasher.finish() % partitions) as usize
}

/// Calls `f` with each record of a part; counts lines that cannot be read.
fn for_each(
    part: &Part<'_>,
    keyer: &Keyer<'_>,
    unreadable: &mut u64,
    without_key: &mut u64,
    mut f: impl FnMut(Keyed) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let path = match part {
        Part::Records(None) => return Ok(()),
        Part::Records(Some(p)) => *p,
        Part::Partition(p) => p.as_path(),
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        let text = line.trim_end_matches('\n');
        match part {
            Part::Records(_) => match keyer.read(text) {
                Some((keyed, missing_key)) => {
                    *without_key += u64::from(missing_key);
                    f(keyed)?;
                }
                None => *unreadable += 1,
            },
            Part::Partition(_) => match text.split_once('\t') {
                Some((key, data)) => f(Keyed {
                    key: (!key.is_empty()).then(|| key.to_string()),
                    data: data.to_string(),
                })?,
                None => *unreadable += 1,
            },
        }
        line.clear();
    }
    Ok(())
}

/// The control side of a partition, in memory.
#[derive(Default)]
struct ControlSide {
    by_key: HashMap<Box<str>, Box<str>>,
    /// Further records with a key already taken (duplicate keys).
    duplicates: HashMap<Box<str>, Vec<Box<str>>>,
    /// Records without a key: data → count.
    multiset: HashMap<Box<str>, u64>,
}

fn compare_partition(
    control: &Part<'_>,
    target: &Part<'_>,
    keyer: &Keyer<'_>,
    diff: &mut StreamDiff,
    out: &mut Output,
) -> std::io::Result<()> {
    let mut side = ControlSide::default();
    let (mut unreadable, mut without_key, mut count) = (0, 0, 0u64);
    for_each(control, keyer, &mut unreadable, &mut without_key, |r| {
        count += 1;
        match r.key {
            Some(key) => match side.by_key.entry(key.into()) {
                Entry::Occupied(taken) => side
                    .duplicates
                    .entry(taken.key().clone())
                    .or_default()
                    .push(r.data.into()),
                Entry::Vacant(free) => {
                    free.insert(r.data.into());
                }
            },
            None => *side.multiset.entry(r.data.into()).or_default() += 1,
        }
        Ok(())
    })?;
    diff.control_records += count;
    let mut target_count = 0u64;
    let mut target_without_key = 0;
    for_each(
        target,
        keyer,
        &mut unreadable,
        &mut target_without_key,
        |r| {
            target_count += 1;
            match r.key {
                Some(key) => {
                    let found = side.by_key.remove(key.as_str()).or_else(|| {
                        side.duplicates
                            .get_mut(key.as_str())
                            .and_then(|list| list.pop())
                    });
                    match found {
                        Some(c) if *c == *r.data => diff.matched += 1,
                        Some(c) => {
                            diff.changed += 1;
                            changed(diff, out, &key, &c, &r.data)?;
                        }
                        None => {
                            diff.target_only += 1;
                            let entry = json!({"kind": "target_only", "key": parse(&key), "data": parse(&r.data)});
                            out.difference(diff, entry)?;
                        }
                    }
                }
                None => match side.multiset.get_mut(r.data.as_str()) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        diff.matched += 1;
                    }
                    _ => {
                        diff.target_only += 1;
                        let entry = json!({"kind": "target_only", "data": parse(&r.data)});
                        out.difference(diff, entry)?;
                    }
                },
            }
            Ok(())
        },
    )?;
    diff.target_records += target_count;
    diff.unreadable += unreadable;
    diff.without_key += without_key + target_without_key;
    // What the target did not match is the control's alone, in a stable order.
    let mut left: Vec<(Box<str>, Box<str>)> = side.by_key.into_iter().collect();
    for (key, rest) in side.duplicates {
        left.extend(rest.into_iter().map(|d| (key.clone(), d)));
    }
    left.sort_unstable();
    for (key, data) in left {
        diff.control_only += 1;
        let key = parse(&key);
        out.difference(
            diff,
            json!({"kind": "control_only", "key": key, "data": parse(&data)}),
        )?;
        serde_json::to_writer(&mut out.missing, &key)?;
        out.missing.write_all(b"\n")?;
    }
    let mut left: Vec<(Box<str>, u64)> =
        side.multiset.into_iter().filter(|(_, n)| *n > 0).collect();
    left.sort_unstable();
    for (data, n) in left {
        diff.control_only += n;
        let entry = json!({"kind": "control_only", "count": n, "data": parse(&data)});
        out.difference(diff, entry)?;
    }
    Ok(())
}

fn changed(
    diff: &mut StreamDiff,
    out: &mut Output,
    key: &str,
    control: &str,
    target: &str,
) -> std::io::Result<()> {
    let differences = json_diff::diff(&parse(control), &parse(target));
    let mut fields = serde_json::Map::new();
    for d in &differences {
        *diff.changed_fields.entry(d.path.clone()).or_default() += 1;
        fields.insert(
            d.path.clone(),
            json!({"control": d.control, "target": d.target}),
        );
    }
    out.difference(
        diff,
        json!({"kind": "changed", "key": parse(key), "fields": fields}),
    )
}

/// Text this module wrote as JSON, back as a value.
fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, records: &[Value]) -> PathBuf {
        let path = dir.join(name);
        let mut text = String::new();
        for (i, data) in records.iter().enumerate() {
            let message =
                json!({"type": "RECORD", "record": {"stream": "s", "data": data, "emitted_at": i}});
            text.push_str(&message.to_string());
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    fn run(control: &[Value], target: &[Value], pk: &[&str], memory: u64) -> StreamDiff {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = write(dir.path(), "c.jsonl", control);
        let t = write(dir.path(), "t.jsonl", target);
        let pk: PrimaryKey = pk.iter().map(|f| vec![f.to_string()]).collect();
        let limits = Limits {
            memory_bytes: memory,
            examples: 100,
        };
        let dest = Destination {
            out_dir: &dir.path().join("diff"),
            name: "s",
            relative_to: dir.path(),
            scratch: dir.path(),
        };
        compare_stream("s", Some(&c), Some(&t), &pk, &limits, &dest).expect("compare")
    }

    fn users(n: u64) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": i, "age": i % 90, "name": format!("user {i}")}))
            .collect()
    }

    #[test]
    fn keyed_streams_name_changed_fields_and_missing_keys() {
        let control = users(100);
        let mut target: Vec<Value> = users(100)
            .into_iter()
            .filter(|u| u["id"] != json!(7))
            .collect();
        target[3]["age"] = json!("3");
        target.push(json!({"id": 1000, "age": 1, "name": "new"}));
        target.reverse();
        for memory in [1 << 30, 512] {
            let d = run(&control, &target, &["id"], memory);
            assert_eq!(
                (d.matched, d.changed, d.control_only, d.target_only),
                (98, 1, 1, 1),
                "memory {memory}"
            );
            assert_eq!(d.changed_fields, BTreeMap::from([("age".to_string(), 1)]));
            assert_eq!(
                d.missing_keys_file.as_deref(),
                Some("diff/s.missing-keys.jsonl")
            );
            assert!(
                d.examples
                    .iter()
                    .any(|e| e["kind"] == "control_only" && e["key"] == json!([7]))
            );
            if memory == 512 {
                assert!(d.partitions > 1, "{}", d.partitions);
            }
        }
    }

    #[test]
    fn field_order_and_emitted_at_do_not_count() {
        let control = vec![json!({"a": 1, "b": {"x": 1, "y": 2}})];
        let target: Vec<Value> =
            vec![serde_json::from_str(r#"{"b": {"y": 2, "x": 1}, "a": 1}"#).expect("json")];
        let d = run(&control, &target, &["a"], 1 << 30);
        assert!(d.is_equal(), "{d:?}");
    }

    #[test]
    fn streams_without_a_key_compare_as_multisets() {
        let a = json!({"v": 1});
        let b = json!({"v": 2});
        for memory in [1 << 30, 16] {
            let d = run(
                &[a.clone(), a.clone(), b.clone()],
                &[b.clone(), a.clone(), b.clone()],
                &[],
                memory,
            );
            assert_eq!(
                (d.matched, d.control_only, d.target_only),
                (2, 1, 1),
                "memory {memory}"
            );
        }
    }

    #[test]
    fn duplicate_keys_pair_up_and_records_without_their_key_are_counted() {
        let control = vec![
            json!({"id": 1, "v": 1}),
            json!({"id": 1, "v": 1}),
            json!({"v": 9}),
        ];
        let target = vec![json!({"id": 1, "v": 1}), json!({"v": 9})];
        let d = run(&control, &target, &["id"], 1 << 30);
        assert_eq!((d.matched, d.control_only, d.without_key), (2, 1, 2));
    }
}
