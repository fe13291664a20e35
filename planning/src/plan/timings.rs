//! Duration history: what jobs and steps took before, so shards are balanced by measurement
//! rather than guesses. The file is JSON; missing entries fall back to configured defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    #[serde(default = "format_version")]
    pub version: u32,
    /// Per job id.
    #[serde(default)]
    pub jobs: BTreeMap<String, DurationStats>,
    /// Per test type (one step of that type).
    #[serde(default)]
    pub test_types: BTreeMap<String, DurationStats>,
    /// Per connector: the time its steps ran in each run (a duration trend for reports).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connectors: BTreeMap<String, DurationStats>,
}

fn format_version() -> u32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DurationStats {
    #[serde(default)]
    pub p50_seconds: Option<f64>,
    #[serde(default)]
    pub p90_seconds: Option<f64>,
    /// Recent durations, oldest first.
    #[serde(default)]
    pub samples: Vec<f64>,
}

impl DurationStats {
    /// The estimate used for planning: the stored median, else the median of the samples.
    pub fn estimate(&self) -> Option<f64> {
        let value = self.p50_seconds.or_else(|| median(&self.samples))?;
        (value.is_finite() && value >= 0.0).then_some(value)
    }
}

fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|s| s.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TimingsError {
    #[error("failed to read timing history {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: timing history is not valid: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Timings {
    pub fn load(path: &Path) -> Result<Timings, TimingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| TimingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| TimingsError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    pub fn job(&self, id: &str) -> Option<f64> {
        self.jobs.get(id).and_then(DurationStats::estimate)
    }

    pub fn test_type(&self, name: &str) -> Option<f64> {
        self.test_types.get(name).and_then(DurationStats::estimate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_prefer_the_stored_median_then_the_samples() {
        let stats = DurationStats {
            p50_seconds: Some(10.0),
            p90_seconds: None,
            samples: vec![1.0],
        };
        assert_eq!(stats.estimate(), Some(10.0));
        let stats = DurationStats {
            p50_seconds: None,
            p90_seconds: None,
            samples: vec![5.0, 1.0, 3.0, 100.0],
        };
        assert_eq!(stats.estimate(), Some(4.0));
        assert_eq!(DurationStats::default().estimate(), None);
    }

    #[test]
    fn malformed_history_names_the_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timings.json");
        std::fs::write(&path, "{\"jobs\": {\"a\": {\"p50_seconds\": \"soon\"}}}").unwrap();
        let err = Timings::load(&path).unwrap_err().to_string();
        assert!(err.contains("timings.json:1:"), "{err}");
        assert!(err.contains("timing history is not valid"), "{err}");
    }
}
