//! What a regression run is made of: the commands, the two versions, the checks and the report
//! they end in.

use serde::{Deserialize, Serialize};

use crate::capture::CommandOutput;
use crate::compare::records::StreamDiff;

/// The connector commands of the Airbyte protocol that can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    Spec,
    Check,
    Discover,
    Read,
    ReadWithState,
}

impl Command {
    pub const ALL: [Command; 5] = [
        Command::Spec,
        Command::Check,
        Command::Discover,
        Command::Read,
        Command::ReadWithState,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Spec => "spec",
            Command::Check => "check",
            Command::Discover => "discover",
            Command::Read => "read",
            Command::ReadWithState => "read-with-state",
        }
    }

    pub fn parse(text: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == text)
    }

    pub fn is_read(self) -> bool {
        matches!(self, Command::Read | Command::ReadWithState)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which version an output is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Control,
    Target,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Control => "control",
            Side::Target => "target",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The command ran and spoke the protocol, on one version.
    Execution,
    /// Control against target.
    Comparison,
    /// The target alone, against what the protocol promises.
    Validation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    /// Worth a look, not a failure (log lines on stdout, states not per stream).
    Warn,
    /// Could not be judged: an input it needs is missing (the command failed).
    Skipped,
    Fail,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Skipped => "skipped",
            CheckStatus::Fail => "fail",
        }
    }
}

/// One named check and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Stable id: `read.records_equal`, `target.read.runs`.
    pub id: String,
    pub name: String,
    pub command: Command,
    pub kind: CheckKind,
    pub status: CheckStatus,
    /// One line.
    pub summary: String,
    /// What failed, by stream, key and field.
    pub details: Vec<String>,
    /// Files holding the whole difference, relative to the report.
    pub artifacts: Vec<String>,
}

/// A command's outputs on both versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRun {
    pub command: Command,
    pub control: CommandOutput,
    pub target: CommandOutput,
    /// The folders of each side's outputs, relative to the report.
    pub control_dir: String,
    pub target_dir: String,
}

/// Record counts of a stream side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamCounts {
    pub command: Command,
    pub stream: String,
    pub control: u64,
    pub target: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    pub connector: String,
    pub control_image: String,
    pub target_image: String,
    pub commands: Vec<CommandRun>,
    pub checks: Vec<Check>,
    pub streams: Vec<StreamCounts>,
    /// Per read command, per stream.
    pub record_diffs: Vec<(Command, StreamDiff)>,
    pub seconds: f64,
}

impl RegressionReport {
    pub fn failed(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .collect()
    }

    pub fn passed(&self) -> bool {
        self.failed().is_empty()
    }

    pub fn count(&self, status: CheckStatus) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}
