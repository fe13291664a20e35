//! Keeps one command's output on one version on disk as it arrives, and a small summary in
//! memory. A read of a million records streams through here to files: nothing grows with the
//! data but the per-stream counters.
//!
//! Layout of a command's folder:
//! - `stdout.log`, `stderr.log`: everything printed, secrets masked;
//! - `messages/<TYPE>.jsonl`: every message but records, as printed;
//! - `records/<stream>.jsonl`: each stream's RECORD messages, as printed;
//! - `summary.json`: the [`CommandOutput`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mask::Masker;
use crate::protocol::{self, Line, MessageType};
use crate::schema::InferredSchema;

/// Examples of a kind of problem kept in a summary; the rest are counted.
const EXAMPLES_KEPT: usize = 10;
/// A line longer than this is cut in the examples a summary keeps.
const EXAMPLE_CHARS: usize = 300;

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Exit {
    Code {
        code: i64,
    },
    TimedOut {
        after_seconds: u64,
    },
    /// The engine failed to run it at all (no such image, daemon gone).
    NotRun {
        reason: String,
    },
}

impl Exit {
    pub fn is_success(&self) -> bool {
        matches!(self, Exit::Code { code: 0 })
    }

    pub fn describe(&self) -> String {
        match self {
            Exit::Code { code } => format!("exit {code}"),
            Exit::TimedOut { after_seconds } => format!("timed out after {after_seconds}s"),
            Exit::NotRun { reason } => format!("not run: {reason}"),
        }
    }
}

/// What is known of a stream from one command's output.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamOutput {
    pub records: u64,
    /// Relative to the command's folder.
    pub file: String,
    pub schema: InferredSchema,
    /// STATE messages of type STREAM for this stream.
    pub states: u64,
    pub last_state: Option<Value>,
    /// The stream statuses traced, in order, repeats collapsed.
    pub statuses: Vec<String>,
}

/// One command's output on one version: what ran, how it ended, what it said.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CommandOutput {
    pub image: String,
    pub args: Vec<String>,
    pub exit: Option<Exit>,
    pub seconds: f64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub messages: BTreeMap<MessageType, u64>,
    pub not_json_lines: u64,
    pub not_json_examples: Vec<String>,
    pub malformed: u64,
    pub malformed_examples: Vec<String>,
    /// The payloads of the (last) SPEC, CATALOG and CONNECTION_STATUS messages.
    pub spec: Option<Value>,
    pub catalog: Option<Value>,
    pub connection_status: Option<Value>,
    pub streams: BTreeMap<String, StreamOutput>,
    /// STATE messages that are not per stream (GLOBAL, LEGACY).
    pub other_states: u64,
    /// Error TRACE messages' texts.
    pub errors: Vec<String>,
}

impl CommandOutput {
    pub fn records(&self) -> u64 {
        self.streams.values().map(|s| s.records).sum()
    }

    /// How it ended, for people: `exit 0`, `timed out after 60s`, `did not end`.
    pub fn ended(&self) -> String {
        self.exit
            .as_ref()
            .map_or_else(|| "did not end".to_string(), Exit::describe)
    }

    pub fn ran_cleanly(&self) -> bool {
        self.exit.as_ref().is_some_and(Exit::is_success) && self.malformed == 0
    }
}

/// Writes a command's output to its folder as it arrives.
pub struct Capture {
    dir: PathBuf,
    masker: Masker,
    output: CommandOutput,
    stdout_log: BufWriter<File>,
    stderr_log: BufWriter<File>,
    stdout_pending: Vec<u8>,
    stderr_pending: Vec<u8>,
    messages: BTreeMap<MessageType, BufWriter<File>>,
    records: BTreeMap<String, BufWriter<File>>,
    file_names: BTreeSet<String>,
    error: Option<std::io::Error>,
}

impl Capture {
    pub fn create(
        dir: &Path,
        image: &str,
        args: &[String],
        masker: Masker,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("messages"))?;
        std::fs::create_dir_all(dir.join("records"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            masker,
            output: CommandOutput {
                image: image.to_string(),
                args: args.to_vec(),
                ..CommandOutput::default()
            },
            stdout_log: BufWriter::new(File::create(dir.join("stdout.log"))?),
            stderr_log: BufWriter::new(File::create(dir.join("stderr.log"))?),
            stdout_pending: Vec::new(),
            stderr_pending: Vec::new(),
            messages: BTreeMap::new(),
            records: BTreeMap::new(),
            file_names: BTreeSet::new(),
            error: None,
        })
    }

    pub fn stdout(&mut self, bytes: &[u8]) {
        self.output.stdout_bytes += bytes.len() as u64;
        self.stdout_pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(offset) = self.stdout_pending[start..]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = start + offset;
            let line = String::from_utf8_lossy(&self.stdout_pending[start..end]).into_owned();
            self.line(&line);
            start = end + 1;
        }
        self.stdout_pending.drain(..start);
    }

    pub fn stderr(&mut self, bytes: &[u8]) {
        self.output.stderr_bytes += bytes.len() as u64;
        // Masked whole lines at a time, like stdout: a secret split across two chunks is
        // still one line.
        self.stderr_pending.extend_from_slice(bytes);
        if let Some(end) = self.stderr_pending.iter().rposition(|&b| b == b'\n') {
            let lines: Vec<u8> = self.stderr_pending.drain(..=end).collect();
            self.stderr_text(&lines);
        }
    }

    fn stderr_text(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let masked = self.masker.mask(&text).into_owned();
        self.keep(|c| c.stderr_log.write_all(masked.as_bytes()));
    }

    /// Ends the capture: the last unterminated line, the files flushed, `summary.json`.
    pub fn finish(mut self, exit: Exit, seconds: f64) -> std::io::Result<CommandOutput> {
        if !self.stdout_pending.is_empty() {
            let line =
                String::from_utf8_lossy(&std::mem::take(&mut self.stdout_pending)).into_owned();
            self.line(&line);
        }
        let rest = std::mem::take(&mut self.stderr_pending);
        if !rest.is_empty() {
            self.stderr_text(&rest);
        }
        self.output.exit = Some(exit);
        self.output.seconds = seconds;
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.stdout_log.flush()?;
        self.stderr_log.flush()?;
        for writer in self.messages.values_mut().chain(self.records.values_mut()) {
            writer.flush()?;
        }
        let summary = serde_json::to_vec_pretty(&self.output).map_err(std::io::Error::other)?;
        std::fs::write(self.dir.join("summary.json"), summary)?;
        Ok(self.output)
    }

    fn keep(&mut self, write: impl FnOnce(&mut Self) -> std::io::Result<()>) {
        if self.error.is_none()
            && let Err(e) = write(self)
        {
            self.error = Some(e);
        }
    }

    fn line(&mut self, raw: &str) {
        let masked = self.masker.mask(raw).into_owned();
        self.keep(|c| {
            c.stdout_log.write_all(masked.as_bytes())?;
            c.stdout_log.write_all(b"\n")
        });
        match protocol::parse_line(&masked) {
            Line::NotJson => {
                if masked.trim().is_empty() {
                    return;
                }
                self.output.not_json_lines += 1;
                if self.output.not_json_examples.len() < EXAMPLES_KEPT {
                    self.output.not_json_examples.push(cut(&masked));
                }
            }
            Line::Malformed(reason) => {
                self.output.malformed += 1;
                if self.output.malformed_examples.len() < EXAMPLES_KEPT {
                    self.output
                        .malformed_examples
                        .push(format!("{reason}: {}", cut(&masked)));
                }
            }
            Line::Message(kind, payload) => {
                *self.output.messages.entry(kind).or_default() += 1;
                self.message(kind, payload, &masked);
            }
        }
    }

    fn message(&mut self, kind: MessageType, payload: Value, line: &str) {
        match kind {
            MessageType::Record => {
                let stream = protocol::record_stream(&payload);
                self.record_line(&stream, line);
                let entry = self.output.streams.entry(stream).or_default();
                entry.records += 1;
                if let Some(Value::Object(data)) = payload.get("data") {
                    entry.schema.observe(data);
                }
                return;
            }
            MessageType::Spec => self.output.spec = Some(payload.clone()),
            MessageType::Catalog => self.output.catalog = Some(payload.clone()),
            MessageType::ConnectionStatus => self.output.connection_status = Some(payload.clone()),
            MessageType::State => self.state(&payload),
            MessageType::Trace => self.trace(&payload),
            MessageType::Log | MessageType::Control => {}
        }
        if self.error.is_some() {
            return;
        }
        if !self.messages.contains_key(&kind) {
            let path = self.dir.join("messages").join(format!("{kind}.jsonl"));
            match File::create(path) {
                Ok(file) => {
                    self.messages.insert(kind, BufWriter::new(file));
                }
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
        if let Some(writer) = self.messages.get_mut(&kind)
            && let Err(e) = append(writer, line)
        {
            self.error = Some(e);
        }
    }

    /// Appends a record to its stream's file, opened on the stream's first record.
    fn record_line(&mut self, stream: &str, line: &str) {
        if self.error.is_some() {
            return;
        }
        if !self.records.contains_key(stream) {
            let name = file_name(stream, &self.file_names);
            self.file_names.insert(name.clone());
            let relative = format!("records/{name}.jsonl");
            match File::create(self.dir.join(&relative)) {
                Ok(file) => {
                    self.records
                        .insert(stream.to_string(), BufWriter::new(file));
                    self.output
                        .streams
                        .entry(stream.to_string())
                        .or_default()
                        .file = relative;
                }
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
        if let Some(writer) = self.records.get_mut(stream)
            && let Err(e) = append(writer, line)
        {
            self.error = Some(e);
        }
    }

    fn state(&mut self, state: &Value) {
        let per_stream = state.get("type").and_then(Value::as_str) == Some("STREAM");
        let stream = state
            .get("stream")
            .and_then(|s| protocol::descriptor_stream(s.get("stream_descriptor")));
        match (per_stream, stream) {
            (true, Some(stream)) => {
                let entry = self.output.streams.entry(stream).or_default();
                entry.states += 1;
                entry.last_state = Some(state.clone());
            }
            _ => self.output.other_states += 1,
        }
    }

    fn trace(&mut self, trace: &Value) {
        match trace.get("type").and_then(Value::as_str) {
            Some("STREAM_STATUS") => {
                let status = trace.get("stream_status");
                let stream =
                    protocol::descriptor_stream(status.and_then(|s| s.get("stream_descriptor")));
                let value = status.and_then(|s| s.get("status")).and_then(Value::as_str);
                if let (Some(stream), Some(value)) = (stream, value) {
                    let statuses = &mut self.output.streams.entry(stream).or_default().statuses;
                    if statuses.last().map(String::as_str) != Some(value) {
                        statuses.push(value.to_string());
                    }
                }
            }
            Some("ERROR") => {
                let message = trace
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("(an error trace without a message)");
                if self.output.errors.len() < EXAMPLES_KEPT {
                    self.output.errors.push(cut(message));
                }
            }
            _ => {}
        }
    }
}

fn append(writer: &mut BufWriter<File>, line: &str) -> std::io::Result<()> {
    writer.write_all(line.as_bytes())?;
    writer.write_all(b"\n")
}

/// A file name for a stream: its name where that is safe, else a safe form and a hash.
pub(crate) fn file_name(stream: &str, taken: &BTreeSet<String>) -> String {
    let safe: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let safe = safe.trim_start_matches('.').to_string();
    if safe == stream && !taken.contains(&safe) && !safe.is_empty() {
        return safe;
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    stream.hash(&mut hasher);
    format!("{safe}-{:08x}", hasher.finish() as u32)
}

fn cut(text: &str) -> String {
    if text.chars().count() <= EXAMPLE_CHARS {
        return text.to_string();
    }
    let mut short: String = text.chars().take(EXAMPLE_CHARS).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(dir: &Path, chunks: &[&str]) -> CommandOutput {
        let mut c = Capture::create(
            dir,
            "img",
            &["read".into()],
            Masker::new(["s3cr3t".to_string()]),
        )
        .expect("capture");
        for chunk in chunks {
            c.stdout(chunk.as_bytes());
        }
        c.stderr(b"warning: s3c");
        c.stderr(b"r3t\nand then s3cr3t");
        c.finish(Exit::Code { code: 0 }, 1.0).expect("finish")
    }

    #[test]
    fn records_go_to_their_stream_file_and_lines_split_across_chunks_are_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = capture(
            dir.path(),
            &[
                "{\"type\":\"RECORD\",\"record\":{\"stream\":\"users\",\"data\":{\"id\":1}}}\n{\"type\":\"REC",
                "ORD\",\"record\":{\"stream\":\"a/b\",\"data\":{\"id\":\"s3cr3t\"}}}\nhello\n",
                "{\"type\":\"LOG\",\"log\":{\"level\":\"INFO\",\"message\":\"x\"}}\n{\"type\":1}",
            ],
        );
        assert_eq!(output.records(), 2);
        assert_eq!(output.not_json_lines, 1);
        assert_eq!(output.malformed, 1);
        assert_eq!(output.messages.get(&MessageType::Log), Some(&1));
        let users = std::fs::read_to_string(dir.path().join("records/users.jsonl")).expect("users");
        assert_eq!(users.lines().count(), 1);
        let odd = &output.streams["a/b"].file;
        assert!(odd.starts_with("records/a_b-"), "{odd}");
        let odd = std::fs::read_to_string(dir.path().join(odd)).expect("a/b");
        assert!(
            odd.contains("**********") && !odd.contains("s3cr3t"),
            "{odd}"
        );
        let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).expect("stderr");
        assert_eq!(stderr, "warning: **********\nand then **********");
        assert!(dir.path().join("summary.json").exists());
    }

    #[test]
    fn states_and_statuses_are_kept_per_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = capture(
            dir.path(),
            &[
                "{\"type\":\"STATE\",\"state\":{\"type\":\"STREAM\",\"stream\":{\"stream_descriptor\":{\"name\":\"users\"},\"stream_state\":{\"cursor\":3}}}}\n",
                "{\"type\":\"STATE\",\"state\":{\"type\":\"GLOBAL\",\"global\":{}}}\n",
                "{\"type\":\"TRACE\",\"trace\":{\"type\":\"STREAM_STATUS\",\"stream_status\":{\"stream_descriptor\":{\"name\":\"users\"},\"status\":\"STARTED\"}}}\n",
                "{\"type\":\"TRACE\",\"trace\":{\"type\":\"STREAM_STATUS\",\"stream_status\":{\"stream_descriptor\":{\"name\":\"users\"},\"status\":\"COMPLETE\"}}}\n",
                "{\"type\":\"TRACE\",\"trace\":{\"type\":\"ERROR\",\"error\":{\"message\":\"boom\"}}}\n",
            ],
        );
        let users = &output.streams["users"];
        assert_eq!(users.states, 1);
        assert_eq!(users.statuses, ["STARTED", "COMPLETE"]);
        assert_eq!(output.other_states, 1);
        assert_eq!(output.errors, ["boom"]);
    }
}
