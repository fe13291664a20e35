//! Log output of steps: where bytes go, and secret masking on the way.
//!
//! Masking works on whole lines, so a secret split across two reads is still caught; a
//! multi-line secret is masked line by line (each of its lines is a secret of its own), as CI
//! systems do.

/// Receives a step's output.
pub trait LogSink: Send {
    fn write(&mut self, bytes: &[u8]);
    /// The step ended: flush what is buffered.
    fn finish(&mut self) {}
}

/// Collects everything in memory (tests, small outputs).
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    pub bytes: Vec<u8>,
}

impl MemorySink {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

impl LogSink for MemorySink {
    fn write(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
}

const MASK: &[u8] = b"***";

/// Masks secret values before passing complete lines on.
pub struct MaskingSink<S: LogSink> {
    inner: S,
    secrets: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

impl<S: LogSink> MaskingSink<S> {
    pub fn new(inner: S, secret_values: &[String]) -> Self {
        let mut secrets: Vec<Vec<u8>> = secret_values
            .iter()
            .flat_map(|v| {
                v.lines()
                    .map(str::trim)
                    .filter(|l| l.len() >= 3)
                    .map(|l| l.as_bytes().to_vec())
            })
            .collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            inner,
            secrets,
            pending: Vec::new(),
        }
    }

    pub fn into_inner(mut self) -> S {
        self.flush_pending();
        self.inner
    }

    fn mask(&self, line: &[u8]) -> Vec<u8> {
        let mut out = line.to_vec();
        for secret in &self.secrets {
            let mut masked = Vec::with_capacity(out.len());
            let mut i = 0;
            while i < out.len() {
                if out[i..].starts_with(secret) {
                    masked.extend_from_slice(MASK);
                    i += secret.len();
                } else {
                    masked.push(out[i]);
                    i += 1;
                }
            }
            out = masked;
        }
        out
    }

    fn flush_pending(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            let masked = self.mask(&line);
            self.inner.write(&masked);
        }
    }
}

impl<S: LogSink> LogSink for MaskingSink<S> {
    fn write(&mut self, bytes: &[u8]) {
        if self.secrets.is_empty() {
            self.inner.write(bytes);
            return;
        }
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let masked = self.mask(&line);
            self.inner.write(&masked);
        }
    }

    fn finish(&mut self) {
        self.flush_pending();
        self.inner.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(secrets: &[&str], writes: &[&str]) -> String {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        let mut sink = MaskingSink::new(MemorySink::default(), &secrets);
        for w in writes {
            sink.write(w.as_bytes());
        }
        sink.finish();
        sink.into_inner().text()
    }

    #[test]
    fn secrets_are_masked_even_when_split_across_writes() {
        assert_eq!(
            masked(&["hunter2"], &["pass=hun", "ter2 ok\n"]),
            "pass=*** ok\n"
        );
    }

    #[test]
    fn multi_line_secrets_are_masked_line_by_line() {
        let key = "-----BEGIN KEY-----\nabcdef123456\n-----END KEY-----";
        assert_eq!(
            masked(
                &[key],
                &[
                    "-----BEGIN KEY-----\n",
                    "abcdef123456\n",
                    "tail abcdef123456 x\n"
                ]
            ),
            "***\n***\ntail *** x\n"
        );
    }

    #[test]
    fn unterminated_last_line_is_still_masked() {
        assert_eq!(masked(&["s3cr3t"], &["value s3cr3t"]), "value ***");
    }

    #[test]
    fn output_passes_through_without_secrets() {
        assert_eq!(masked(&[], &["a", "b\n"]), "ab\n");
    }
}
