//! Human-friendly quantities in `shardci.toml`: durations ("90s", "10m", "1h30m") and sizes
//! ("512MiB", "2G"). Parsed at load time so a typo is reported at its line and column.

use serde::{Deserialize, Deserializer};

/// A duration in seconds, written as a number of seconds or a string with units.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Seconds(pub f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let seconds = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => n,
            Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom)?,
        };
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(serde::de::Error::custom(format!(
                "a duration must be a non-negative number of seconds, found {seconds}"
            )));
        }
        Ok(Seconds(seconds))
    }
}

pub use shardci_types::parse_duration;

/// A size in bytes, written as an integer or a string such as "512MiB", "2G", "100k".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Bytes(n)),
            Raw::Text(text) => parse_size(&text)
                .map(Bytes)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses sizes with binary (KiB, MiB, GiB) or decimal-looking (K, M, G: treated as binary, as
/// Docker does) suffixes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let split = compact
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(compact.len());
    let (number, unit) = compact.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected a number, e.g. \"512MiB\""))?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {unit:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    Ok((value * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(90.0));
        assert_eq!(parse_duration("10m"), Ok(600.0));
        assert_eq!(parse_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_duration("1.5h"), Ok(5400.0));
        assert_eq!(parse_duration("250ms"), Ok(0.25));
        assert_eq!(parse_duration("42"), Ok(42.0));
    }

    #[test]
    fn durations_reject_nonsense() {
        assert!(
            parse_duration("10 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5m3").unwrap_err().contains("no unit"));
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("2G"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 bananas").is_err());
    }
}
