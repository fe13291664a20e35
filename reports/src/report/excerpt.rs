//! What a report shows of a failed step's log: its last lines and, folded above them, the
//! earlier lines that look like the failure (an error, a traceback, a failed assertion), so a
//! long log's cause is not cut off above a tail of clean-up output. The whole log is linked.

/// Lines shown from the end of the log.
pub const TAIL_LINES: usize = 40;
/// Earlier lines kept because they look like the failure.
const FAILURE_LINES: usize = 20;
/// Longest line shown; longer ones are cut.
const LINE_CHARS: usize = 400;

/// Words that mark a line as a likely cause, lower case.
const PATTERNS: &[&str] = &[
    "error",
    "fail",
    "exception",
    "traceback",
    "panicked",
    "assert",
    "fatal",
    "denied",
    "timed out",
    "timeout",
    "killed",
    "segmentation fault",
    "cannot ",
    "unable to",
    "not found",
];

/// Whether `line` looks like a failure: it names one, and not as "0 errors" or "no failures".
fn looks_like_failure(line: &str) -> bool {
    let lower = line.to_lowercase();
    PATTERNS.iter().any(|pattern| {
        lower.match_indices(pattern).any(|(at, _)| {
            let before = lower[..at].trim_end();
            !(before.ends_with(" 0") || before == "0" || before.ends_with("no"))
        })
    })
}

fn cut(line: &str) -> String {
    match line.char_indices().nth(LINE_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// The excerpt of `log` (its end, as read: possibly only its last part) a report shows.
pub fn excerpt(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().collect();
    let split = lines.len().saturating_sub(TAIL_LINES);
    let (earlier, tail) = lines.split_at(split);
    if earlier.is_empty() {
        return tail.join("\n");
    }
    let failures: Vec<&&str> = earlier
        .iter()
        .filter(|line| looks_like_failure(line))
        .collect();
    let mut out = String::new();
    if failures.is_empty() {
        out.push_str(&format!(
            "[shardci] … {} earlier line(s) not shown; the whole log is linked above\n",
            earlier.len()
        ));
    } else {
        let shown = failures.len().min(FAILURE_LINES);
        out.push_str(&format!(
            "[shardci] … {} earlier line(s) not shown; {} of them look like the failure{}:\n",
            earlier.len(),
            failures.len(),
            if failures.len() > shown {
                format!(" (the first {shown})")
            } else {
                String::new()
            }
        ));
        for line in failures.iter().take(FAILURE_LINES) {
            out.push_str(&cut(line));
            out.push('\n');
        }
        out.push_str(&format!("[shardci] … the last {} line(s):\n", tail.len()));
    }
    out.push_str(&tail.join("\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_log_is_shown_whole() {
        assert_eq!(excerpt(b"one\ntwo"), "one\ntwo");
    }

    #[test]
    fn the_cause_above_a_long_tail_is_kept_and_the_rest_folded() {
        let mut log = String::from("starting\n");
        log.push_str("Traceback (most recent call last):\n");
        log.push_str("AssertionError: expected 3 records, got 2\n");
        log.push_str("ran 10 tests, 0 errors in the setup\n");
        for i in 0..100 {
            log.push_str(&format!("cleaning up {i}\n"));
        }
        let shown = excerpt(log.as_bytes());
        assert!(
            shown.contains("AssertionError: expected 3 records"),
            "{shown}"
        );
        assert!(shown.contains("Traceback"), "{shown}");
        assert!(!shown.contains("starting"), "folded: {shown}");
        assert!(!shown.contains("0 errors"), "not a failure: {shown}");
        assert!(
            shown.contains("64 earlier line(s) not shown; 2 of them"),
            "{shown}"
        );
        assert!(shown.ends_with("cleaning up 99"));
        assert_eq!(shown.matches("cleaning up").count(), TAIL_LINES);
    }

    #[test]
    fn a_long_clean_log_says_what_it_folded_and_long_lines_are_cut() {
        let log: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let shown = excerpt(log.as_bytes());
        assert!(shown.starts_with("[shardci] … 10 earlier line(s) not shown;"));
        let long = format!("{}\n{}", "error ".repeat(200), "x\n".repeat(TAIL_LINES));
        let shown = excerpt(long.as_bytes());
        assert!(shown.contains('…'));
        assert!(shown.lines().all(|l| l.chars().count() <= LINE_CHARS + 1));
    }
}
