//! Durations as people write them in flags and configuration.

/// Parses `"90s"`, `"10m"`, `"1h30m"`, `"1.5h"`, `"30d"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err("empty duration; write e.g. \"90s\", \"10m\" or \"1h30m\"".into());
    }
    if let Ok(bare) = compact.parse::<f64>() {
        return Ok(bare);
    }
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = compact.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = String::from(c);
        while let Some(&next) = chars.peek() {
            if next.is_ascii_alphabetic() {
                unit.push(next);
                chars.next();
            } else {
                break;
            }
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: expected a number before {unit:?}"))?;
        let scale = match unit.as_str() {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            _ => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
                ));
            }
        };
        total += value * scale;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: {number:?} has no unit (use ms, s, m, h or d)"
        ));
    }
    Ok(total)
}
